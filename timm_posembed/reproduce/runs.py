""" Reading timm train.py output folders (``args.yaml`` + ``summary.csv``) into ``Run`` records, for
``timm_posembed.report``.

A summary.csv that train.py is still writing (or that a killed run left) may end in a partial line: that line is
skipped with a warning. An epoch whose top-1 is NaN (a diverged epoch) is never the best epoch. Values train.py cannot
have written (a fractional, negative or infinite epoch, a top-1 outside 0..100, an args.yaml ``epochs: abc``) are
refused with the file and line, never reported; both files are bounded in size before they are read.
"""
import csv
import io
import itertools
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .yaml_files import YamlFile, YamlFileError, read_yaml_file, top_level_mapping

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


# A summary.csv line is ~100 bytes: 16 MiB is >100k epochs. Read at most this much, whatever the file claims.
MAX_SUMMARY_BYTES = 16 << 20
# One level of a folder is looked at, and at most this many entries of it (a study of 7 tables x 5 seeds is ~200).
MAX_FOLDER_ENTRIES = 10_000
_MODEL_NAME = re.compile(r'^[\w.\-/:]{1,200}$')  # timm names, tags and hf-hub:org/name; no spaces, newlines, markup
_TOP_K = re.compile(r'(^|_)top\d+$')  # eval_top1, eval_top5, ...: percentages


def _check_args(doc: YamlFile) -> Dict[str, Any]:
    """The args.yaml values the report uses, checked: each error names the file and the key's line."""
    args = top_level_mapping(doc, 'train.py args.yaml')
    for key in ('model', 'epochs'):
        if key not in args:
            raise RunFormatError(f'{doc.path} lacks "{key}"; is it the args.yaml train.py writes?')

    def wrong(key: str, wanted: str) -> RunFormatError:
        return RunFormatError(f'{doc.where(key)}: {key} must be {wanted}, got {args[key]!r:.80}')

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(args['model'], str) or not _MODEL_NAME.match(args['model']):
        raise wrong('model', 'a timm model name (letters, digits, _ . - / :)')
    if not is_int(args['epochs']) or args['epochs'] < 0:
        raise wrong('epochs', 'an integer >= 0')
    for key, minimum in (('cooldown_epochs', 0), ('num_classes', 1), ('seed', None)):
        value = args.get(key)
        if value is not None and (not is_int(value) or (minimum is not None and value < minimum)):
            raise wrong(key, 'an integer' + (f' >= {minimum}' if minimum is not None else '') + ' (or absent)')
    kwargs = args.get('model_kwargs')
    if kwargs is not None and (not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs)):
        raise wrong('model_kwargs', 'a mapping of keyword names to values (or absent)')
    return args


def _check_values(values: Dict[str, float]) -> None:
    """Raise ``ValueError`` for a value train.py cannot have written: a fractional, negative or non-finite epoch, or
    a top-k accuracy outside 0..100 (NaN is a diverged epoch and stays: it is never a best)."""
    epoch = values['epoch']
    if not math.isfinite(epoch) or epoch < 0 or epoch != int(epoch):
        raise ValueError(f'epoch must be an integer >= 0 (train.py counts whole epochs), got {epoch:g}')
    for name, value in values.items():
        if _TOP_K.search(name) and not math.isnan(value) and not 0 <= value <= 100:
            raise ValueError(f'{name} is a percentage, 0..100 (or nan for a diverged epoch), got {value:g}')


def _read_summary(summary_path: Path) -> Tuple[List[str], List[Tuple[int, Dict[str, Optional[str]]]], bool]:
    """(header, [(line, row)], whether the file ends without a newline), bounded in size."""
    try:
        with summary_path.open('rb') as f:
            raw = f.read(MAX_SUMMARY_BYTES + 1)
    except OSError as e:
        raise RunFormatError(f'{summary_path}: cannot read it: {e.strerror or e}') from None
    if len(raw) > MAX_SUMMARY_BYTES:
        raise RunFormatError(f'{summary_path}: larger than {MAX_SUMMARY_BYTES:,} bytes, too large for a train.py '
                             f'summary.csv; is it the right file?')
    try:
        text = raw.decode('utf-8-sig')  # a byte-order mark (a spreadsheet's re-save) is not part of the header
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b'\n') + 1
        raise RunFormatError(f'{summary_path}:{line}: not UTF-8 text (byte {e.start}); train.py writes a UTF-8 '
                             f'CSV') from None
    reader = csv.DictReader(io.StringIO(text, newline=''))
    rows = []
    try:
        header = list(reader.fieldnames or [])
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as e:  # e.g. a field over csv's 128 KiB limit; line_num counts the lines read before it
        raise RunFormatError(f'{summary_path}:{reader.line_num + 1}: not a train.py summary line ({e})') from None
    return header, rows, not raw.endswith(b'\n')


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    args_path, summary_path = run_dir / ARGS_FILE, run_dir / SUMMARY_FILE
    for p in (args_path, summary_path):
        if p.exists() and not p.is_file():  # a folder, a FIFO, a device: reading it would block or never end
            raise RunFormatError(f'{p} is not a regular file; expected the {p.name} timm\'s train.py writes')
        if not p.is_file():
            raise RunFormatError(
                f'{run_dir} has no {p.name}; expected a timm train.py output folder holding {ARGS_FILE} and '
                f'{SUMMARY_FILE}')
    try:
        args = _check_args(read_yaml_file(args_path, 'train.py args.yaml'))
    except YamlFileError as e:
        raise RunFormatError(str(e)) from None
    header, rows, ends_open = _read_summary(summary_path)
    missing = [c for c in _REQUIRED_COLUMNS if c not in header]
    if missing:
        raise RunFormatError(
            f'{summary_path} lacks columns {missing} (has {header}); a run without a validation split has no '
            f'eval_top1')
    by_epoch: Dict[int, Dict[str, float]] = {}
    for i, (line_no, row) in enumerate(rows):
        # train.py appends one line per epoch: only the last line can be partial (being written, or cut by a
        # kill): no newline yet, or fewer fields than the header. It is skipped; a bad line elsewhere is an error.
        if i == len(rows) - 1 and (ends_open or None in row.values()):
            warnings.warn(f'{summary_path}:{line_no}: skipping a partial last line (the run is still writing or '
                          f'was stopped mid-line): {",".join(v for v in row.values() if v is not None):.200}',
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
            raise RunFormatError(f'{summary_path}:{line_no}: not a numeric summary row ({str(row):.200})') from e
        try:
            _check_values(values)
        except ValueError as e:
            raise RunFormatError(f'{summary_path}:{line_no}: {e}') from None
        by_epoch[int(values['epoch'])] = values  # a resumed run may repeat epochs: the last one counts
    if not by_epoch:
        raise RunFormatError(f'{summary_path} has no epochs yet')
    return Run(
        path=run_dir,
        model=args['model'],
        model_kwargs=dict(args.get('model_kwargs') or {}),
        epochs_planned=args['epochs'] + (args.get('cooldown_epochs') or 0),
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
        entries = list(itertools.islice(path.iterdir(), MAX_FOLDER_ENTRIES + 1))
        if len(entries) > MAX_FOLDER_ENTRIES:
            raise RunFormatError(f'{path} holds more than {MAX_FOLDER_ENTRIES:,} entries; pass the run folders '
                                 f'themselves or a folder of runs (train.py\'s OUTPUT), not a larger tree')
        children = sorted(p for p in entries if (p / SUMMARY_FILE).is_file())
        if not children:
            raise RunFormatError(
                f'{path} has no {SUMMARY_FILE} and no sub-folder with one; pass train.py output folders '
                f'(OUTPUT/<experiment>/) or their parent')
        runs.extend(load_run(p) for p in children)
    return runs
