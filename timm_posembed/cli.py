""" ``timm-posembed`` command line.

Each sub-command lives in its own module under ``timm_posembed.commands`` and exposes ``register(subparsers)``, which
adds its parser and sets ``func(args) -> int`` as the handler. Command modules import torch, timm and the models
inside their handlers, never at the top: building the parser (``--help``, an argument error) stays fast.
"""
import argparse
import importlib
import sys
from typing import List, Optional

from .version import __version__

# Order here is the order in --help.
COMMAND_MODULES = (
    'list_models',
    'demo',
    'run_script',
    'prepare',
    'reproduce',
    'report',
    'bench',
    'publish',
    'card',
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='timm-posembed',
        description='timm plugin with COPE ViTs, super-token conv embedding ViTs and clustering CoaT-Lite.',
    )
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name in COMMAND_MODULES:
        importlib.import_module(f'{__package__}.commands.{name}').register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'func', None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
