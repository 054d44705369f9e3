""" Reading timm train.py output folders (``args.yaml`` + ``summary.csv``) into ``Run`` records, for
``timm_posembed.report``.

A summary.csv that train.py is still writing (or that a killed run left) may end in a partial line: that line is
skipped with a warning. An epoch whose top-1 is NaN (a diverged epoch) is never the best epoch.
"""
import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml

__all__ = ['RunFormatError', 'Run', 'load_run', 'load_runs', 'SUMMARY_FILE', 'ARGS_FILE']

SUMMARY_FILE, ARGS_FILE = 'summary.csv', 'args.yaml'
_REQUIRED_COLUMNS = ('epoch', 'train_loss', 'eval_top1')


class RunFormatError(ValueError):
    """A run folder is not a timm train.py output folder; the message says what is wrong."""


@dataclass
class Run:
    path: Path
    model: str
    model_kwargs: Dict[str, Any]
    epochs_planned: int
    num_classes: Optional[int]
    seed: Optional[int]
    history: List[Dict[str, float]]  # one dict per epoch, in epoch order

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    @property
    def complete(self) -> bool:
        return self.epochs_done >= self.epochs_planned

    @property
    def best_top1(self) -> float:
        """Best epoch's top-1, the number timm's train.py reports and keeps as model_best. NaN epochs never count
        (``max`` with a NaN depends on where the NaN is); NaN only when every epoch is."""
        finite = [h['eval_top1'] for h in self.history if not math.isnan(h['eval_top1'])]
        return max(finite) if finite else math.nan

    @property
    def last_top1(self) -> float:
        return self.history[-1]['eval_top1']

    def column(self, name: str) -> List[Tuple[int, float]]:
        return [(int(h['epoch']), h[name]) for h in self.history if name in h and not math.isnan(h[name])]


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    args_path, summary_path = run_dir / ARGS_FILE, run_dir / SUMMARY_FILE
    for p in (args_path, summary_path):
        if not p.is_file():
            raise RunFormatError(
                f'{run_dir} has no {p.name}; expected a timm train.py output folder holding {ARGS_FILE} and '
                f'{SUMMARY_FILE}')
    try:
        args = yaml.safe_load(args_path.read_text())
    except yaml.YAMLError as e:
        raise RunFormatError(f'{args_path} is not valid YAML: {e}') from e
    if not isinstance(args, dict) or 'model' not in args or 'epochs' not in args:
        raise RunFormatError(f'{args_path} lacks "model" / "epochs"; is it the args.yaml train.py writes?')
    with summary_path.open(newline='') as f:
        reader = csv.DictReader(f)
        missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RunFormatError(
                f'{summary_path} lacks columns {missing} (has {reader.fieldnames}); a run without a validation '
                f'split has no eval_top1')
        header = list(reader.fieldnames or [])
        rows = list(enumerate(reader, 2))
    ends_open = not summary_path.read_bytes().endswith(b'\n')
    by_epoch: Dict[int, Dict[str, float]] = {}
    for i, (line_no, row) in enumerate(rows):
        # train.py appends one line per epoch: only the last line can be partial (being written, or cut by a
        # kill): no newline yet, or fewer fields than the header. It is skipped; a bad line elsewhere is an error.
        if i == len(rows) - 1 and (ends_open or None in row.values()):
            warnings.warn(f'{summary_path}:{line_no}: skipping a partial last line (the run is still writing or '
                          f'was stopped mid-line): {",".join(v for v in row.values() if v is not None)}',
                          stacklevel=2)
            continue
        try:
            if None in row or None in row.values():
                raise ValueError(f'{len(header)} fields expected')
            values = {k: float(v) for k, v in row.items() if v != ''}
            missing = [c for c in _REQUIRED_COLUMNS if c not in values]
            if missing:
                raise ValueError(f'no value for {missing}')
        except (KeyError, ValueError) as e:
            raise RunFormatError(f'{summary_path}:{line_no}: not a numeric summary row ({row})') from e
        by_epoch[int(values['epoch'])] = values  # a resumed run may repeat epochs: the last one counts
    if not by_epoch:
        raise RunFormatError(f'{summary_path} has no epochs yet')
    return Run(
        path=run_dir,
        model=str(args['model']),
        model_kwargs=dict(args.get('model_kwargs') or {}),
        epochs_planned=int(args['epochs']) + int(args.get('cooldown_epochs') or 0),
        num_classes=args.get('num_classes'),
        seed=args.get('seed'),
        history=[by_epoch[e] for e in sorted(by_epoch)],
    )


def load_runs(paths: Iterable[Path]) -> List[Run]:
    """Runs in ``paths``: each is a run folder, or a folder whose sub-folders are run folders."""
    runs = []
    for path in map(Path, paths):
        if (path / SUMMARY_FILE).is_file():
            runs.append(load_run(path))
            continue
        if not path.is_dir():
            raise RunFormatError(f'{path} is not a folder')
        children = sorted(p for p in path.iterdir() if (p / SUMMARY_FILE).is_file())
        if not children:
            raise RunFormatError(
                f'{path} has no {SUMMARY_FILE} and no sub-folder with one; pass train.py output folders '
                f'(OUTPUT/<experiment>/) or their parent')
        runs.extend(load_run(p) for p in children)
    return runs
