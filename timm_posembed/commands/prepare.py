""" ``timm-posembed prepare DATASET ...``: lay out a benchmark dataset as ``DST/{train,val}/<class>/`` for timm's
train.py (``--data-dir DST``). The work is done by ``timm_posembed.data`` (one module per dataset). """
from .. import data as prep
from ._errors import FAILED, fail


def register(subparsers) -> None:
    p = subparsers.add_parser(
        'prepare', help='lay out Tiny-ImageNet / ImageNet100 / Fashion-MNIST as class folders for timm\'s train.py',
        description='Builds DST/train/<class>/ and DST/val/<class>/ (links, not copies, where the source has '
                    'image files), verifies the counts, and is safe to re-run. It reads only inside the source '
                    '(links out of it are refused) and writes only DST, built in a staging folder beside it and '
                    'renamed into place: a run that fails or is interrupted leaves DST as it was.',
    )
    datasets = p.add_subparsers(dest='dataset', metavar='DATASET', required=True)

    tiny = datasets.add_parser(
        'tiny-imagenet', help='Tiny-ImageNet (200 classes) from the extracted tiny-imagenet-200 folder',
        description='Flattens train/<wnid>/images/ into train/<wnid>/ and sorts val/images/ into val/<wnid>/ by '
                    'val/val_annotations.txt.')
    tiny.add_argument('src', help='the extracted tiny-imagenet-200 folder (holds wnids.txt, train/, val/)')
    tiny.add_argument('dst', help='output folder')
    _add_link_option(tiny)
    tiny.set_defaults(func=_run_tiny_imagenet)

    in100 = datasets.add_parser(
        'imagenet100', help='ImageNet100 (the CMC 100-class subset) from an ImageNet-1k folder tree',
        description='Links the 100 classes of the CMC ImageNet100 list (shipped with this package) from '
                    'IMAGENET_ROOT/{train,val}/<wnid>/. Alternative without a new folder: train.py '
                    '--data-dir IMAGENET_ROOT --class-map LIST (class indices then follow the list order).')
    in100.add_argument('imagenet_root', help='ImageNet-1k root with train/<wnid>/ and val/<wnid>/')
    in100.add_argument('dst', help='output folder')
    in100.add_argument('--class-list', default=str(prep.IMAGENET100_CLASS_LIST),
                       help='wnids to keep, one per line (default: the shipped CMC ImageNet100 list)')
    _add_link_option(in100)
    in100.set_defaults(func=_run_imagenet100)

    fmnist = datasets.add_parser(
        'fashion-mnist', help='Fashion-MNIST from Debian\'s dataset-fashion-mnist package (no download)',
        description='Decodes the idx files into PNG class folders (train: 60k, val: the 10k test set), or '
                    'with --layout torchvision lays them out for train.py --dataset torch/fashion_mnist (whose '
                    'images stay greyscale: add --in-chans 1 --mean 0.286 --std 0.353).')
    fmnist.add_argument('dst', help='output folder')
    fmnist.add_argument('--src', default=str(prep.DEBIAN_FASHION_MNIST_DIR),
                        help='folder with the four *-ubyte(.gz) idx files (default: %(default)s, '
                             'from `apt-get install dataset-fashion-mnist`)')
    fmnist.add_argument('--layout', choices=prep.FASHION_MNIST_LAYOUTS, default='imagefolder',
                        help='imagefolder (PNG class folders, default) or torchvision (raw idx files)')
    fmnist.add_argument('--train-per-class', type=int, default=None, metavar='N',
                        help='keep only the first N training images of each class (imagefolder only)')
    fmnist.add_argument('--val-per-class', type=int, default=None, metavar='N',
                        help='keep only the first N validation images of each class (imagefolder only)')
    fmnist.set_defaults(func=_run_fashion_mnist)


def _add_link_option(parser) -> None:
    parser.add_argument('--link', choices=prep.LINK_MODES, default='auto',
                        help='how images are placed: auto (hard links, symlinks across file systems; default), '
                             'hardlink, symlink or copy')


def _run_tiny_imagenet(args) -> int:
    return _report(lambda: prep.prepare_tiny_imagenet(args.src, args.dst, link=args.link))


def _run_imagenet100(args) -> int:
    return _report(lambda: prep.prepare_imagenet100(
        args.imagenet_root, args.dst, class_list=args.class_list, link=args.link))


def _run_fashion_mnist(args) -> int:
    limits = {split: n for split, n in ((prep.TRAIN_SPLIT, args.train_per_class),
                                        (prep.VAL_SPLIT, args.val_per_class)) if n is not None}
    return _report(lambda: prep.prepare_fashion_mnist(
        args.dst, src=args.src, layout=args.layout, max_per_class=limits or None))


def _report(work) -> int:
    try:
        result = work()
    except (prep.DatasetLayoutError, ValueError) as e:
        return fail('prepare', str(e))
    except OSError as e:  # e.g. no permission or no space at the destination; the message names the path
        return fail('prepare', f'{e}; nothing was written to the destination', FAILED)
    print(result.summary())
    return 0
