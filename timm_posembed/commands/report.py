""" ``timm-posembed report RUN_DIRS... --table ID``: a paper's table with our train.py runs beside the paper's
numbers, and a training-curve PNG. The work is done by ``timm_posembed.reproduce.report``. """
import sys
from pathlib import Path

from ..reproduce.report import REPORT_FORMATS
from ..reproduce.tables import list_paper_tables
from ._errors import FAILED, fail


def register(subparsers) -> None:
    p = subparsers.add_parser(
        'report', help='a paper\'s table with our train.py runs beside the paper\'s numbers, and training curves',
        description='Reads summary.csv and args.yaml of timm train.py output folders. With --table, places each '
                    'run in the row of its model / model kwargs / epochs and prints the table with the paper\'s '
                    'numbers; without, lists the runs.',
    )
    p.add_argument('runs', nargs='+', type=Path, metavar='RUN_DIR',
                   help='train.py output folders (OUTPUT/<experiment>/), or folders holding them')
    p.add_argument('--table', choices=list_paper_tables(), default=None,
                   help='the paper table to fill (timm_posembed/reproduce/paper_tables.yaml)')
    p.add_argument('--recipe', default=None, metavar='RECIPE',
                   help='with --table: the runs were trained with this recipe (a train.py --config file, or the name '
                        'of one the package ships, e.g. fashion_mnist_study.yaml) instead of the table\'s; its '
                        'num_classes and model_kwargs place them, and the table says they are not the paper\'s setting')
    p.add_argument('--format', choices=REPORT_FORMATS, default='markdown', help='output format')
    p.add_argument('--plot', type=Path, default=None, metavar='PNG',
                   help='also write validation top-1 / training loss curves (needs matplotlib)')
    p.add_argument('--no-params', action='store_true',
                   help='skip counting each row\'s parameters (which builds the models on the meta device)')
    p.set_defaults(func=run)


def run(args) -> int:
    from .._output_files import output_path_problem, write_error_message
    from ..reproduce import report as rep
    from ..reproduce.runs import RunFormatError, load_runs
    from ..reproduce.tables import paper_table

    problem = output_path_problem('--plot', args.plot, 'curves.png')
    if problem:  # before reading and matching the runs
        return fail('report', problem)
    try:
        runs = load_runs(args.runs)
        if args.recipe is not None and not args.table:
            raise ValueError('--recipe places runs in a table: pass --table as well')
        if args.table:
            table = paper_table(args.table)
            study = {}
            if args.recipe is not None:
                from ..reproduce.launch import load_recipe
                from ..reproduce.tables import resolve_recipe
                recipe = load_recipe(resolve_recipe(args.recipe))
                study = dict(num_classes=recipe['num_classes'], recipe_kwargs=recipe.get('model_kwargs') or {})
            report = rep.match_table(table, runs, count_params=not args.no_params, **study)
            print(rep.format_table_report(report, args.format))
            series = [(_series_label(result.row.label, run, len(result.runs)), run)
                      for result in report.rows for run in result.runs]
            title = table.title
        else:
            from ..models import list_model_info
            baselines = {info.name: info.baseline for info in list_model_info()}
            print(rep.format_runs_report(runs, baselines=baselines, fmt=args.format))
            series = [(_series_label(f'{r.model} {r.model_kwargs or ""}'.strip(), r, 1), r) for r in runs]
            title = ''
        if args.plot:
            try:
                path = rep.plot_curves(series, args.plot, title)
            except OSError as e:  # disk full, read-only file system, the folder removed meanwhile
                return fail('report', write_error_message('--plot', args.plot, e), FAILED)
            print(f'wrote {path}', file=sys.stderr)
    except (RunFormatError, ValueError, RuntimeError, FileNotFoundError) as e:
        return fail('report', str(e))
    return 0


def _series_label(label: str, run, runs_in_row: int) -> str:
    return f'{label} (seed {run.seed})' if runs_in_row > 1 else label
