""" The command line of the training drivers: ``timm-posembed reproduce TABLE`` and the repository's thin scripts
``benchmarks/train_<table>.py`` (one per paper table) and ``benchmarks/fashion_mnist_sanity.py``. Options, then
``timm_posembed.reproduce.launch`` to run timm's train.py, then ``timm_posembed.reproduce.report`` for the table. """
import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Sequence

from .launch import Launch, RunOutcome, Runner, RunSpec, load_recipe, run_specs, runs_for_table
from .tables import paper_table, resolve_recipe
from .timm_repo import TIMM_REPO_ENV, resolve_timm_script

__all__ = ['table_driver_main', 'sanity_driver_main']


def _driver_parser(description: str, prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument('--data-dir', type=Path, help='prepared dataset (DST of `timm-posembed prepare ...`)')
    p.add_argument('--timm-repo', default=None,
                   help=f'checkout of timm\'s git repository holding train.py (default: ${TIMM_REPO_ENV})')
    p.add_argument('--output', type=Path, default=Path('output/benchmarks'),
                   help='parent folder of the runs (default: %(default)s)')
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument('--seeds', type=int, nargs='+', default=None, metavar='SEED',
                       help='train every row once per seed (the report gives mean ± std over them); default: the '
                            'recipe\'s seed')
    seeds.add_argument('--seed', type=int, default=None, help='one seed instead of the recipe\'s')
    p.add_argument('--resume', action='store_true', help='continue unfinished runs from their last.pth.tar')
    p.add_argument('--dry-run', action='store_true', help='print the train.py commands only')
    dist = p.add_argument_group('several GPUs / nodes (torchrun; the recipe\'s batch is split over all processes)')
    dist.add_argument('--nproc', type=int, default=1, help='processes (GPUs) per node')
    dist.add_argument('--nnodes', type=int, default=1, help='nodes (run the same command on each)')
    dist.add_argument('--node-rank', type=int, default=None, help='this node\'s rank, 0 .. nnodes-1')
    dist.add_argument('--rdzv-endpoint', default=None, metavar='HOST:PORT',
                      help='rendezvous address (the first node\'s), the same on every node')
    dist.add_argument('--rdzv-backend', default=None, help='torchrun\'s rendezvous backend (static or c10d)')
    dist.add_argument('--rdzv-id', default=None, help='job id shared by the nodes (with --rdzv-backend c10d)')
    p.add_argument('train_args', nargs=argparse.REMAINDER,
                   help='after "--": more train.py arguments, e.g. -- --amp --amp-dtype bfloat16 --workers 8')
    return p


def _launch(p: argparse.ArgumentParser, args) -> Launch:
    try:
        return Launch(nproc=args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
                      rdzv_endpoint=args.rdzv_endpoint, rdzv_backend=args.rdzv_backend, rdzv_id=args.rdzv_id)
    except ValueError as e:
        p.error(str(e).replace('nproc', '--nproc').replace('nnodes', '--nnodes').replace('node_rank', '--node-rank')
                .replace('rdzv_', '--rdzv-'))


def _extra(args) -> List[str]:
    extra = list(args.train_args)
    return extra[1:] if extra[:1] == ['--'] else extra


def _seeds(args) -> List[Optional[int]]:
    if args.seeds:
        return list(dict.fromkeys(args.seeds))
    return [args.seed]


def _train_all(specs: Sequence[RunSpec], recipe: Path, args, launch: Launch, extra: List[str],
               runner: Optional[Runner] = None) -> List[RunOutcome]:
    # Seeds outer, rows inner: an interrupted study has every row at n seeds before any row gets n + 1.
    outcomes: List[RunOutcome] = []
    for seed in _seeds(args):
        outcomes += run_specs(
            specs, recipe, args.output, args.data_dir, timm_repo=args.timm_repo, seed=seed, resume=args.resume,
            dry_run=args.dry_run, extra_args=extra, launch=launch, runner=runner)
    return outcomes


def _finish(outcomes: List[RunOutcome]) -> int:
    failed = [o for o in outcomes if o.status in ('failed', 'unfinished')]
    for o in failed:
        print(f'{o.status.upper()}: {o.spec.label or o.spec.model} ({o.run_dir})', file=sys.stderr)
    return 1 if failed else 0


def _finished_runs(outcomes: List[RunOutcome]):
    from .runs import load_runs
    return load_runs([o.run_dir for o in outcomes if (o.run_dir / 'summary.csv').is_file()])


def table_driver_main(table_id: str, argv: Optional[Sequence[str]] = None,
                      runner: Optional[Runner] = None, prog: Optional[str] = None) -> int:
    """``timm-posembed reproduce TABLE`` and ``benchmarks/train_<table>.py``: train the table's rows, then print the
    report. ``runner``: see ``timm_posembed.reproduce.launch.run_specs``."""
    table = paper_table(table_id)
    p = _driver_parser(f'{table.title}. Trains every row with timm\'s train.py and the recipe {table.recipe}, '
                       f'then prints our numbers beside the paper\'s.', prog)
    p.add_argument('--rows', nargs='+', default=None, choices=[r.id for r in table.rows],
                   help='train only these rows (default: all)')
    p.add_argument('--recipe', default=None, metavar='RECIPE',
                   help=f'another train.py --config file, or the name of one the package ships (e.g. '
                        f'fashion_mnist_study.yaml, a smaller study); default: {table.recipe}. Its num_classes and '
                        f'model_kwargs (e.g. img_size) then place the runs in the table')
    p.add_argument('--epochs', type=int, default=None,
                   help='train every row this many epochs (a short check; rows that differ only in epochs are then '
                        'one run)')
    args = p.parse_args(argv)
    launch = _launch(p, args)
    if args.data_dir is None and not args.dry_run:
        p.error(f'--data-dir is required: the prepared {table.dataset} folder')
    if args.epochs is not None and args.epochs < 1:
        p.error(f'--epochs must be >= 1, got {args.epochs}')
    try:
        recipe_path = resolve_recipe(args.recipe) if args.recipe else table.recipe_path
        load_recipe(recipe_path)  # a hostile or mistyped recipe is refused before anything is launched
        resolve_timm_script('train.py', args.timm_repo)  # and a missing train.py, as a usage error
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    specs = [s for s, r in zip(runs_for_table(table), table.rows) if args.rows is None or r.id in args.rows]
    if args.epochs is not None:
        unique = {}
        for s in specs:
            unique.setdefault((s.model, repr(sorted(s.model_kwargs.items()))), replace(s, epochs=args.epochs))
        specs = list(unique.values())
    outcomes = _train_all(specs, recipe_path, args, launch, _extra(args), runner)
    if not args.dry_run and args.node_rank in (None, 0):  # the other nodes hold no outputs to report
        from .report import format_table_report, match_table
        recipe = load_recipe(recipe_path)
        report = match_table(table, _finished_runs(outcomes), num_classes=recipe['num_classes'],
                             recipe_kwargs=recipe.get('model_kwargs') or {})
        print(format_table_report(report))
    return _finish(outcomes)


def sanity_driver_main(recipe_path: Path, argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``benchmarks/fashion_mnist_sanity.py``: each model of the package and its timm baseline."""
    from ..models import list_model_info
    infos = list_model_info()
    p = _driver_parser('Fashion-MNIST sanity run: every model of timm_posembed and its timm baseline, briefly, '
                       f'through timm\'s train.py with {Path(recipe_path).name}.')
    p.add_argument('--models', nargs='+', default=None,
                   help='models of this package to run, each followed by its baseline (default: all)')
    p.add_argument('--img-size', type=int, default=None, help='override the recipe\'s image size (data and model)')
    p.add_argument('--epochs', type=int, default=None, help='override the recipe\'s epochs')
    args = p.parse_args(argv)
    launch = _launch(p, args)
    if args.data_dir is None and not args.dry_run:
        p.error('--data-dir is required: the folder made by `timm-posembed prepare fashion-mnist DST`')
    known = {i.name: i for i in infos}
    unknown = [m for m in args.models or [] if m not in known]
    if unknown:
        p.error(f'not models of this package: {unknown}; known: {sorted(known)}')
    try:
        load_recipe(Path(recipe_path))
        resolve_timm_script('train.py', args.timm_repo)
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    kwargs = {'img_size': args.img_size} if args.img_size else {}
    names: List[str] = []
    for info in (known[m] for m in args.models) if args.models else infos:
        names += [n for n in (info.name, info.baseline) if n not in names]
    specs = [RunSpec(n, dict(kwargs), args.epochs, label=n) for n in names]
    extra = _extra(args) + (['--img-size', str(args.img_size)] if args.img_size else [])
    outcomes = _train_all(specs, Path(recipe_path), args, launch, extra)
    if not args.dry_run:
        from .report import format_runs_report
        wall = {o.run_dir: o.wall_s for o in outcomes if o.status == 'trained'}
        print(format_runs_report(_finished_runs(outcomes), baselines={i.name: i.baseline for i in infos},
                                 wall_s=wall))
    return _finish(outcomes)
