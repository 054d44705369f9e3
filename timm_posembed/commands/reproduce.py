""" ``timm-posembed reproduce TABLE [OPTIONS] [-- TRAIN.PY ARGS]``: train every row of a paper's table with timm's
train.py and the recipe the package ships, then print our numbers beside the paper's. The work is done by
``timm_posembed.reproduce.drivers`` (the repository's ``benchmarks/train_<table>.py`` scripts call the same). """
import argparse

from ..reproduce.tables import list_paper_tables


def register(subparsers) -> None:
    tables = list_paper_tables()
    p = subparsers.add_parser(
        'reproduce', help='train every row of a paper\'s table with timm\'s train.py, then print the table',
        description='Trains the rows of TABLE through timm\'s train.py (found with --timm-repo or TIMM_REPO) with '
                    'the table\'s recipe, seeds fixed, and prints our numbers beside the paper\'s. '
                    '`timm-posembed reproduce TABLE --help` lists the options (rows, seeds, recipe, torchrun); '
                    f'arguments after -- go to train.py. Tables: {", ".join(tables)}.',
    )
    p.add_argument('table', choices=tables, metavar='TABLE', help=f'one of {", ".join(tables)}')
    p.add_argument('options', nargs=argparse.REMAINDER, metavar='...',
                   help='the driver\'s options (see TABLE --help), then -- and train.py\'s own arguments')
    p.set_defaults(func=run)


def run(args) -> int:
    from ..reproduce.drivers import table_driver_main
    return table_driver_main(args.table, args.options, prog=f'timm-posembed reproduce {args.table}')
