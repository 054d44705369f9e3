""" Launching timm's train.py for the benchmarks: every row of a paper table (``benchmarks/train_<table>.py``) or
every model of the package beside its baseline (``benchmarks/fashion_mnist_sanity.py``).

A run is ``train.py --config RECIPE --model M --model-kwargs ...``, under ``torchrun`` when several processes are
asked for. The recipe's ``batch_size`` is the global batch: it is split over the processes so a row trains with the
same optimisation whatever the GPU count. Each run writes to ``OUTPUT/<run name>/`` (``summary.csv``,
``args.yaml``, checkpoints); the name is derived from the configuration, so a row shared by several tables (e.g.
the proposed model of seed 001's tables 6, 7 and 8) is trained once and a finished run is never repeated.

timm's train.py is run with ``PYTHONSAFEPATH=1`` so that the ``timm/`` folder next to it in the repository does not
shadow the installed timm this package is tested against (Python >= 3.11; older Pythons import the repository's).
"""
import argparse
import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from timm_posembed.paper_tables import PaperTable, paper_table
from timm_posembed.settings import TIMM_REPO_ENV, resolve_timm_script

__all__ = [
    'RunSpec', 'RunOutcome', 'load_recipe', 'run_name', 'train_command', 'train_env', 'runs_for_table', 'run_specs',
    'table_driver_main', 'sanity_driver_main',
]


@dataclass(frozen=True)
class RunSpec:
    """One train.py run: a model configuration trained with a recipe."""
    model: str
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    epochs: Optional[int] = None  # None: the recipe's
    label: str = ''


def load_recipe(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no recipe {path}')
    recipe = yaml.safe_load(path.read_text()) or {}
    for key in ('epochs', 'batch_size', 'seed', 'num_classes'):
        if key not in recipe:
            raise ValueError(f'recipe {path} must set {key!r} (the drivers name and split runs by it)')
    return recipe


def _format_kwarg(value: Any) -> str:
    return repr(value).replace(' ', '')  # one argv word; train.py's ParseKwargs reads it back with literal_eval


def run_name(recipe_path: Path, spec: RunSpec, recipe: Dict[str, Any], seed: Optional[int] = None) -> str:
    """Output folder name of a run: recipe, model, kwargs, epochs and seed, so equal configurations share it."""
    kwargs = ''.join(f'-{k}{_format_kwarg(v)}' for k, v in sorted(spec.model_kwargs.items()))
    kwargs = kwargs.replace("'", '').replace('/', '_')
    epochs = spec.epochs or recipe['epochs']
    seed = recipe['seed'] if seed is None else seed
    return f'{Path(recipe_path).stem}-{spec.model}{kwargs}-ep{epochs}-seed{seed}'


def train_command(
        train_py: Path,
        recipe_path: Path,
        spec: RunSpec,
        output: Path,
        experiment: str,
        data_dir: Optional[Path] = None,
        nproc: int = 1,
        seed: Optional[int] = None,
        resume: Optional[Path] = None,
        extra_args: Sequence[str] = (),
) -> List[str]:
    """The argv that trains ``spec`` with the recipe, under torchrun when ``nproc > 1``."""
    recipe = load_recipe(recipe_path)
    if nproc < 1:
        raise ValueError(f'nproc must be >= 1, got {nproc}')
    if recipe['batch_size'] % nproc:
        raise ValueError(
            f'the recipe\'s global batch {recipe["batch_size"]} does not split evenly over {nproc} processes')
    if nproc > 1:
        launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    else:
        launcher = [sys.executable]
    argv = launcher + [str(train_py), '--config', str(recipe_path), '--model', spec.model]
    model_kwargs = {**(recipe.get('model_kwargs') or {}), **spec.model_kwargs}
    if model_kwargs:  # the CLI value replaces the recipe's dict, so pass the merged one
        argv += ['--model-kwargs'] + [f'{k}={_format_kwarg(v)}' for k, v in model_kwargs.items()]
    if data_dir is not None:
        argv += ['--data-dir', str(data_dir)]
    if spec.epochs is not None:
        argv += ['--epochs', str(spec.epochs)]
    if nproc > 1:
        argv += ['--batch-size', str(recipe['batch_size'] // nproc)]
    if seed is not None:
        argv += ['--seed', str(seed)]
    if resume is not None:
        argv += ['--resume', str(resume)]
    argv += ['--output', str(output), '--experiment', experiment]
    return argv + list(extra_args)


def train_env() -> Dict[str, str]:
    """Environment for train.py: keeps the repository's timm/ folder off sys.path (see the module docstring)."""
    return dict(os.environ, PYTHONSAFEPATH='1')


def runs_for_table(table: PaperTable) -> List[RunSpec]:
    return [RunSpec(r.model, dict(r.model_kwargs), r.epochs, label=f'{table.id}/{r.id}') for r in table.rows]


def _completed_epochs(summary: Path) -> int:
    if not summary.is_file():
        return 0
    with summary.open(newline='') as f:
        return len({row.get('epoch') for row in csv.DictReader(f)})


@dataclass
class RunOutcome:
    spec: RunSpec
    run_dir: Path
    status: str  # 'done' (complete before this call), 'trained', 'failed', 'unfinished' (not resumed), 'dry-run'
    wall_s: float = 0.0


def run_specs(
        specs: Sequence[RunSpec],
        recipe_path: Path,
        output: Path,
        data_dir: Optional[Path],
        timm_repo: Optional[str] = None,
        nproc: int = 1,
        seed: Optional[int] = None,
        resume: bool = False,
        dry_run: bool = False,
        extra_args: Sequence[str] = (),
) -> List[RunOutcome]:
    """Train every spec in turn (skipping finished runs); keeps going after a failed run and reports it."""
    train_py = resolve_timm_script('train.py', timm_repo)
    recipe = load_recipe(recipe_path)
    outcomes = []
    for spec in specs:
        name = run_name(recipe_path, spec, recipe, seed)
        run_dir = output / name
        planned = spec.epochs or recipe['epochs']
        done = _completed_epochs(run_dir / 'summary.csv')
        if done >= planned:
            print(f'[{spec.label or spec.model}] {run_dir}: complete ({done} epochs), not re-run', flush=True)
            outcomes.append(RunOutcome(spec, run_dir, 'done'))
            continue
        resume_from = None
        if done:
            if not resume:
                print(f'[{spec.label or spec.model}] {run_dir} holds an unfinished run ({done}/{planned} epochs): '
                      f'pass --resume to continue it from its last.pth.tar, or delete the folder to start over',
                      file=sys.stderr, flush=True)
                outcomes.append(RunOutcome(spec, run_dir, 'unfinished'))
                continue
            resume_from = run_dir / 'last.pth.tar'
        argv = train_command(
            train_py, recipe_path, spec, output, name, data_dir=data_dir, nproc=nproc, seed=seed,
            resume=resume_from, extra_args=extra_args)
        print(f'[{spec.label or spec.model}] ' + ' '.join(argv), flush=True)
        if dry_run:
            outcomes.append(RunOutcome(spec, run_dir, 'dry-run'))
            continue
        start = time.perf_counter()
        rc = subprocess.run(argv, env=train_env()).returncode
        outcomes.append(RunOutcome(spec, run_dir, 'trained' if rc == 0 else 'failed', time.perf_counter() - start))
        if rc:
            print(f'[{spec.label or spec.model}] train.py exited with {rc}', file=sys.stderr, flush=True)
    return outcomes


def _driver_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument('--data-dir', type=Path, help='prepared dataset (DST of `timm-posembed prepare ...`)')
    p.add_argument('--timm-repo', default=None,
                   help=f'checkout of timm\'s git repository holding train.py (default: ${TIMM_REPO_ENV})')
    p.add_argument('--output', type=Path, default=Path('output/benchmarks'),
                   help='parent folder of the runs (default: %(default)s)')
    p.add_argument('--nproc', type=int, default=1,
                   help='processes (GPUs) per run, through torchrun; the recipe\'s batch is split over them')
    p.add_argument('--seed', type=int, default=None, help='override the recipe\'s seed')
    p.add_argument('--resume', action='store_true', help='continue unfinished runs from their last.pth.tar')
    p.add_argument('--dry-run', action='store_true', help='print the train.py commands only')
    p.add_argument('train_args', nargs=argparse.REMAINDER,
                   help='after "--": more train.py arguments, e.g. -- --amp --amp-dtype bfloat16 --workers 8')
    return p


def _extra(args) -> List[str]:
    extra = list(args.train_args)
    return extra[1:] if extra[:1] == ['--'] else extra


def _finish(outcomes: List[RunOutcome]) -> int:
    failed = [o for o in outcomes if o.status in ('failed', 'unfinished')]
    for o in failed:
        print(f'{o.status.upper()}: {o.spec.label or o.spec.model} ({o.run_dir})', file=sys.stderr)
    return 1 if failed else 0


def table_driver_main(table_id: str, recipes_dir: Path, argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``benchmarks/train_<table>.py``: train the table's rows, then print the report."""
    table = paper_table(table_id)
    p = _driver_parser(f'{table.title}. Trains every row with timm\'s train.py and benchmarks/recipes/{table.recipe}, '
                       f'then prints our numbers beside the paper\'s.')
    p.add_argument('--rows', nargs='+', default=None, choices=[r.id for r in table.rows],
                   help='train only these rows (default: all)')
    args = p.parse_args(argv)
    if args.data_dir is None and not args.dry_run:
        p.error(f'--data-dir is required: the prepared {table.dataset} folder')
    specs = [s for s, r in zip(runs_for_table(table), table.rows) if args.rows is None or r.id in args.rows]
    outcomes = run_specs(
        specs, Path(recipes_dir) / table.recipe, args.output, args.data_dir, timm_repo=args.timm_repo,
        nproc=args.nproc, seed=args.seed, resume=args.resume, dry_run=args.dry_run, extra_args=_extra(args))
    if not args.dry_run:
        from timm_posembed.report import format_table_report, load_runs, match_table
        runs = load_runs([o.run_dir for o in outcomes if (o.run_dir / 'summary.csv').is_file()])
        print(format_table_report(match_table(table, runs)))
    return _finish(outcomes)


def sanity_driver_main(recipe_path: Path, argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``benchmarks/fashion_mnist_sanity.py``: each model of the package and its timm baseline."""
    from timm_posembed.models import list_model_info
    infos = list_model_info()
    p = _driver_parser('Fashion-MNIST sanity run: every model of timm_posembed and its timm baseline, briefly, '
                       f'through timm\'s train.py with {Path(recipe_path).name}.')
    p.add_argument('--models', nargs='+', default=None,
                   help='models of this package to run, each followed by its baseline (default: all)')
    p.add_argument('--img-size', type=int, default=None, help='override the recipe\'s image size (data and model)')
    p.add_argument('--epochs', type=int, default=None, help='override the recipe\'s epochs')
    args = p.parse_args(argv)
    if args.data_dir is None and not args.dry_run:
        p.error('--data-dir is required: the folder made by `timm-posembed prepare fashion-mnist DST`')
    known = {i.name: i for i in infos}
    unknown = [m for m in args.models or [] if m not in known]
    if unknown:
        p.error(f'not models of this package: {unknown}; known: {sorted(known)}')
    kwargs = {'img_size': args.img_size} if args.img_size else {}
    names: List[str] = []
    for info in (known[m] for m in args.models) if args.models else infos:
        names += [n for n in (info.name, info.baseline) if n not in names]
    specs = [RunSpec(n, dict(kwargs), args.epochs, label=n) for n in names]
    extra = _extra(args) + (['--img-size', str(args.img_size)] if args.img_size else [])
    outcomes = run_specs(
        specs, Path(recipe_path), args.output, args.data_dir, timm_repo=args.timm_repo, nproc=args.nproc,
        seed=args.seed, resume=args.resume, dry_run=args.dry_run, extra_args=extra)
    if not args.dry_run:
        from timm_posembed.report import format_runs_report, load_runs
        runs = load_runs([o.run_dir for o in outcomes if (o.run_dir / 'summary.csv').is_file()])
        wall = {o.run_dir: o.wall_s for o in outcomes if o.status == 'trained'}
        print(format_runs_report(runs, baselines={i.name: i.baseline for i in infos}, wall_s=wall))
    return _finish(outcomes)
