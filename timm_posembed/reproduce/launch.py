""" Launching timm's train.py: every row of a paper table (``timm-posembed reproduce TABLE``) or every model of
the package beside its baseline (``benchmarks/fashion_mnist_sanity.py``). The drivers' command line is
``timm_posembed.reproduce.drivers``; this module only builds and runs train.py commands.

A run is ``train.py --config RECIPE --model M --model-kwargs ...``, under ``torchrun`` when several processes are
asked for (on one node or several). The recipe's ``batch_size`` is the global batch: it is split over all the
processes of all the nodes, so a row trains with the same optimisation whatever the GPU count. Each run writes to
``OUTPUT/<run name>/`` (``summary.csv``, ``args.yaml``, checkpoints); the name is derived from the configuration,
so a row shared by several tables (e.g. the proposed model of the super-token paper's tables 6, 7 and 8) is trained once
and a finished run is never repeated.

timm's train.py is run with ``PYTHONSAFEPATH=1`` so that the ``timm/`` folder next to it in the repository does not
shadow the installed timm this package is tested against (Python >= 3.11; older Pythons import the repository's).
"""
import csv
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .tables import PaperTable
from .timm_repo import resolve_timm_script
from .yaml_files import read_yaml_file, top_level_mapping

__all__ = [
    'RunSpec', 'RunOutcome', 'Launch', 'load_recipe', 'run_name', 'train_command', 'train_env', 'runs_for_table',
    'run_specs', 'Runner',
]


@dataclass(frozen=True)
class RunSpec:
    """One train.py run: a model configuration trained with a recipe."""
    model: str
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    epochs: Optional[int] = None  # None: the recipe's
    label: str = ''


@dataclass(frozen=True)
class Launch:
    """How train.py is started: one process, or ``torchrun`` with ``nproc`` processes on each of ``nnodes`` nodes.

    Several nodes need a rendezvous: ``rdzv_endpoint`` (``HOST:PORT`` of the first node), the same on every node,
    and each node's ``node_rank`` (with the static rendezvous) or a shared ``rdzv_id`` with ``rdzv_backend='c10d'``.
    The node count must be a number, not torchrun's elastic ``MIN:MAX``: the global batch is split over a fixed
    number of processes.
    """
    nproc: int = 1
    nnodes: int = 1
    node_rank: Optional[int] = None
    rdzv_endpoint: Optional[str] = None
    rdzv_backend: Optional[str] = None
    rdzv_id: Optional[str] = None

    def __post_init__(self):
        if self.nproc < 1 or self.nnodes < 1:
            raise ValueError(f'nproc and nnodes must be >= 1, got nproc={self.nproc}, nnodes={self.nnodes}')
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f'nnodes={self.nnodes} needs rdzv_endpoint=HOST:PORT (the first node\'s address, the '
                             f'same on every node)')
        if self.nnodes > 1 and self.node_rank is None and self.rdzv_backend in (None, 'static'):
            raise ValueError('several nodes need node_rank (0 .. nnodes-1) on each node, or rdzv_backend="c10d" '
                             'with a shared rdzv_id')
        if self.node_rank is not None and not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f'node_rank must be in 0..{self.nnodes - 1}, got {self.node_rank}')

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    def prefix(self) -> List[str]:
        """The interpreter (and torchrun) part of the argv."""
        if self.world_size == 1:
            return [sys.executable]
        argv = [sys.executable, '-m', 'torch.distributed.run', f'--nproc-per-node={self.nproc}']
        if self.nnodes == 1:
            return argv[:3] + ['--standalone'] + argv[3:]
        argv += [f'--nnodes={self.nnodes}', f'--rdzv-endpoint={self.rdzv_endpoint}']
        for flag, value in (('--node-rank', self.node_rank), ('--rdzv-backend', self.rdzv_backend),
                            ('--rdzv-id', self.rdzv_id)):
            if value is not None:
                argv.append(f'{flag}={value}')
        return argv


def load_recipe(path: Path) -> Dict[str, Any]:
    """A recipe (a train.py ``--config`` file), read by the package's bounded YAML reader; the keys the drivers use
    are checked, each error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no recipe {path}')
    what = 'train.py --config recipe'
    doc = read_yaml_file(path, what)
    recipe = top_level_mapping(doc, what) if doc.data is not None else {}
    for key, minimum in (('epochs', 1), ('batch_size', 1), ('seed', None), ('num_classes', 1)):
        if key not in recipe:
            raise ValueError(f'recipe {path} must set {key!r} (the drivers name and split runs by it)')
        value = recipe[key]
        if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
            wanted = 'an integer' + (f' >= {minimum}' if minimum is not None else '')
            raise ValueError(f'{doc.where(key)}: {key} must be {wanted}, got {value!r:.80}')
    kwargs = recipe.get('model_kwargs')
    if kwargs is not None and (not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs)):
        raise ValueError(f'{doc.where("model_kwargs")}: model_kwargs must be a mapping of keyword names to values, '
                         f'got {kwargs!r:.80}')
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
        launch: Optional[Launch] = None,
) -> List[str]:
    """The argv that trains ``spec`` with the recipe, under torchrun when ``launch`` (or ``nproc > 1``) asks for
    several processes."""
    recipe = load_recipe(recipe_path)
    launch = launch or Launch(nproc=nproc)
    if recipe['batch_size'] % launch.world_size:
        raise ValueError(
            f'the recipe\'s global batch {recipe["batch_size"]} does not split evenly over {launch.world_size} '
            f'processes')
    argv = launch.prefix() + [str(train_py), '--config', str(recipe_path), '--model', spec.model]
    model_kwargs = {**(recipe.get('model_kwargs') or {}), **spec.model_kwargs}
    if model_kwargs:  # the CLI value replaces the recipe's dict, so pass the merged one
        argv += ['--model-kwargs'] + [f'{k}={_format_kwarg(v)}' for k, v in model_kwargs.items()]
    if data_dir is not None:
        argv += ['--data-dir', str(data_dir)]
    if spec.epochs is not None:
        argv += ['--epochs', str(spec.epochs)]
    if launch.world_size > 1:
        argv += ['--batch-size', str(recipe['batch_size'] // launch.world_size)]
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


# Runs one train.py argv with an environment and returns its exit status; the default starts a process.
Runner = Callable[[List[str], Dict[str, str]], int]


def _subprocess_runner(argv: List[str], env: Dict[str, str]) -> int:
    return subprocess.run(argv, env=env).returncode


@dataclass
class RunOutcome:
    spec: RunSpec
    run_dir: Path
    status: str  # 'done' (complete before this call), 'trained', 'failed', 'unfinished' (not resumed), 'dry-run'
    wall_s: float = 0.0
    seed: Optional[int] = None


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
        launch: Optional[Launch] = None,
        runner: Optional[Runner] = None,
) -> List[RunOutcome]:
    """Train every spec in turn (skipping finished runs); keeps going after a failed run and reports it.
    ``runner`` replaces the process start (e.g. a test harness running train.py's ``main()`` in one process)."""
    runner = runner or _subprocess_runner
    train_py = resolve_timm_script('train.py', timm_repo)
    recipe = load_recipe(recipe_path)
    outcomes = []
    for spec in specs:
        name = run_name(recipe_path, spec, recipe, seed)
        run_dir = output / name
        tag = (spec.label or spec.model) + ('' if seed is None else f' seed {seed}')
        planned = spec.epochs or recipe['epochs']
        done = _completed_epochs(run_dir / 'summary.csv')
        if done >= planned:
            print(f'[{tag}] {run_dir}: complete ({done} epochs), not re-run', flush=True)
            outcomes.append(RunOutcome(spec, run_dir, 'done', seed=seed))
            continue
        resume_from = None
        if done:
            if not resume:
                print(f'[{tag}] {run_dir} holds an unfinished run ({done}/{planned} epochs): pass --resume to '
                      f'continue it from its last.pth.tar, or delete the folder to start over',
                      file=sys.stderr, flush=True)
                outcomes.append(RunOutcome(spec, run_dir, 'unfinished', seed=seed))
                continue
            resume_from = run_dir / 'last.pth.tar'
        argv = train_command(
            train_py, recipe_path, spec, output, name, data_dir=data_dir, nproc=nproc, seed=seed,
            resume=resume_from, extra_args=extra_args, launch=launch)
        print(f'[{tag}] ' + shlex.join(argv), flush=True)  # a shell command, copy-pasteable
        if dry_run:
            outcomes.append(RunOutcome(spec, run_dir, 'dry-run', seed=seed))
            continue
        start = time.perf_counter()
        rc = runner(argv, train_env())
        outcomes.append(RunOutcome(spec, run_dir, 'trained' if rc == 0 else 'failed', time.perf_counter() - start,
                                   seed=seed))
        if rc:
            print(f'[{tag}] train.py exited with {rc}', file=sys.stderr, flush=True)
    return outcomes
