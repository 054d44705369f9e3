""" ``timm-posembed card NAME[.TAG]``: print the Hub README.md that ``publish`` would write for a model, or check that
every registered model's card in MODEL_CARDS.md is well formed and renders (``--check``). """
import sys

from ._errors import FAILED, fail


def register(subparsers) -> None:
    p = subparsers.add_parser(
        'card', help='print the Hub README.md generated from MODEL_CARDS.md for a model, or --check all cards',
        description='Renders the Hub model card of NAME[.TAG] from MODEL_CARDS.md, with params / GMACs / '
                    'activations measured on the meta device. --check renders every registered model and reports '
                    'which cards are missing or malformed (exit status 1 if any).',
    )
    p.add_argument('model', nargs='?', default=None,
                   help='model name, e.g. vit_tiny_cope or vit_tiny_cope.tiny_imagenet')
    p.add_argument('--check', action='store_true', help='check every registered model\'s card instead')
    p.add_argument('--repo-id', default=None, help='Hub repo the card is for (default: the registered one)')
    p.add_argument('--dataset', default=None, help='dataset for the card (default: from the tag)')
    p.add_argument('--cards', default=None, metavar='MODEL_CARDS.md',
                   help='model cards file (default: the one this package carries)')
    p.set_defaults(func=run)


def run(args) -> int:
    from ..hub.card_format import ModelCardError
    from ..hub.cards import hub_readme
    from ..hub.checkpoints import PublishError
    from ..hub.naming import check_repo_id, default_repo_id, resolve_model_name, tag_from_repo_id
    from ..models import list_model_info

    if bool(args.model) == bool(args.check):
        return fail('card', 'give a model name, or --check (not both)')
    names = [i.name for i in list_model_info()] if args.check else [args.model]
    failures = 0
    for name in names:
        try:
            arch, tag, registered = resolve_model_name(name, tag_from_repo_id(name, args.repo_id))
            repo_id = check_repo_id(args.repo_id or default_repo_id(arch, tag))
            text = hub_readme(arch, tag, registered, repo_id, {}, dataset=args.dataset, cards_path=args.cards)
        except (PublishError, ModelCardError) as e:
            failures += 1
            print(f'{name}: {e}', file=sys.stderr)
            continue
        if args.check:
            print(f'{name}: ok ({len(text.splitlines())} lines)')
        else:
            sys.stdout.write(text)
    return FAILED if failures else 0
