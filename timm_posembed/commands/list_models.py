""" ``timm-posembed list``: every model this package registers, with its size, cost, tags and paper. """
import fnmatch

from ._errors import FAILED, fail
from ._table import format_table


def register(subparsers) -> None:
    p = subparsers.add_parser('list', help='list the registered models: params, GMACs, pretrained tags, paper')
    p.add_argument('pattern', nargs='?', default='*', help="shell-style filter on the model name, e.g. '*cope*'")
    p.add_argument('--num-classes', type=int, default=None,
                   help='count parameters with this many classes (default: the default tag\'s)')
    p.set_defaults(func=run)


def run(args) -> int:
    import timm

    from ..measure.complexity import model_complexity
    from ..models import list_model_info

    infos = [i for i in list_model_info() if fnmatch.fnmatch(i.name, args.pattern)]
    if not infos:
        return fail('list', f'no timm_posembed model matches {args.pattern!r}; `timm-posembed list` shows all',
                    FAILED)
    kwargs = {} if args.num_classes is None else {'num_classes': args.num_classes}
    rows = []
    for info in infos:
        c = model_complexity(info.name, **kwargs)
        tags = [n.split('.', 1)[1] for n in timm.list_pretrained(info.name + '.*')]
        rows.append((info.name, f'{c.params / 1e6:.2f}M', f'{c.gmacs:.2f}', f'{c.input_size[1]}',
                     ','.join(tags), info.baseline, info.paper.citation))
    print(format_table(('model', 'params', 'GMACs', 'img', 'pretrained tags', 'timm baseline', 'paper'), rows))
    return 0
