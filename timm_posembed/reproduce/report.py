""" Turn timm train.py runs (``summary.csv`` + ``args.yaml`` per output folder) into the papers' tables, with our
numbers beside the paper's, and into training-curve plots like the super-token paper's figure 3.

A run belongs to a table row when its model and ``--model-kwargs`` are the row's, its class count is the table's
dataset's, and its epochs are the row's (rows without epochs take the recipe's, i.e. any run not claimed by a row
of the same configuration that sets epochs). Several runs of one row (other seeds) are averaged: mean ± sample
standard deviation over the runs, and n. Runs trained with another recipe than the table's (a smaller study, e.g.
on Fashion-MNIST at 32 px) are placed by that recipe's class count and the ``model_kwargs`` it adds to every row.

Each row's difference to the table's baseline row is marked inside or outside the seed-to-seed spread by the rule
of ``timm_posembed.measure.seed_spread``.

The runs themselves are read by ``timm_posembed.train_runs`` (partial last lines skipped, NaN epochs never best).
"""
import csv
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._output_files import write_atomically
from ..measure.seed_spread import mean_std, spread_verdict
from .tables import PaperRow, PaperTable
from .runs import Run

__all__ = ['RowResult', 'TableReport', 'match_table', 'format_table_report', 'format_runs_report', 'plot_curves',
           'REPORT_FORMATS']

REPORT_FORMATS = ('markdown', 'json', 'csv')


@dataclass
class RowResult:
    row: PaperRow
    runs: List[Run] = field(default_factory=list)
    params: Optional[int] = None  # our parameter count of the row's configuration
    params_error: str = ''  # why the row's model could not be built to count them

    def top1_values(self) -> List[float]:
        return [r.best_top1 for r in self.runs]

    def top1(self) -> Tuple[Optional[float], Optional[float]]:
        """(mean, std) over the runs of the best-epoch top-1; std is None for a single run."""
        return mean_std(self.top1_values())


@dataclass
class TableReport:
    table: PaperTable
    rows: List[RowResult]
    unmatched: List[Run]
    num_classes: int = 0  # of the runs placed here: the table's, or the study recipe's
    recipe_kwargs: Dict[str, Any] = field(default_factory=dict)  # what the study recipe added to every row

    @property
    def baseline(self) -> Optional[RowResult]:
        return next((r for r in self.rows if r.row.id == self.table.baseline), None)


def _row_for(table: PaperTable, run: Run, num_classes: int, recipe_kwargs: Dict[str, Any]) -> Optional[PaperRow]:
    if run.num_classes is not None and int(run.num_classes) != num_classes:
        return None
    candidates = [r for r in table.rows if r.matches(run.model, _without(run.model_kwargs, recipe_kwargs, r))]
    explicit = [r for r in candidates if r.epochs is not None and r.epochs == run.epochs_planned]
    if explicit:
        return explicit[0]
    claimed = {r.epochs for r in candidates if r.epochs is not None}
    default = [r for r in candidates if r.epochs is None and run.epochs_planned not in claimed]
    return default[0] if default else None


def _without(run_kwargs: Dict[str, Any], recipe_kwargs: Dict[str, Any], row: PaperRow) -> Dict[str, Any]:
    """The run's kwargs less those the recipe gave every row (the drivers merge them, the row's winning)."""
    return {k: v for k, v in run_kwargs.items()
            if k in row.model_kwargs or k not in recipe_kwargs or recipe_kwargs[k] != v}


def match_table(
        table: PaperTable,
        runs: Sequence[Run],
        count_params: bool = True,
        num_classes: Optional[int] = None,
        recipe_kwargs: Optional[Dict[str, Any]] = None,
) -> TableReport:
    """Place ``runs`` in the table's rows. ``num_classes`` and ``recipe_kwargs``: for runs of another recipe than
    the table's (its ``num_classes`` and ``model_kwargs``); parameters are then counted at that configuration."""
    num_classes = table.num_classes if num_classes is None else int(num_classes)
    recipe_kwargs = dict(recipe_kwargs or {})
    results = {r.id: RowResult(r) for r in table.rows}
    unmatched = []
    for run in runs:
        row = _row_for(table, run, num_classes, recipe_kwargs)
        if row is None:
            unmatched.append(run)
        else:
            results[row.id].runs.append(run)
    if count_params:
        from ..measure.complexity import model_complexity
        for result in results.values():
            kwargs = {**recipe_kwargs, **result.row.model_kwargs}
            size = kwargs.get('img_size')
            input_size = (3, size, size) if isinstance(size, int) else None
            try:
                result.params = model_complexity(
                    result.row.model, input_size=input_size, num_classes=num_classes, **kwargs).params
            except (TypeError, ValueError, RuntimeError) as e:  # e.g. a kwarg this timm / package lacks
                result.params_error = f'{type(e).__name__}: {e}'
    return TableReport(table, list(results.values()), unmatched, num_classes, recipe_kwargs)


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return '—' if value is None else f'{value:.{digits}f}'


def _paper_params(paper: Dict[str, float]) -> str:
    if 'params' in paper:
        return f'{int(paper["params"]):,}'
    if 'params_m' in paper:
        return f'{paper["params_m"]:g}M'
    return '—'


def _other_dataset(report: TableReport) -> bool:
    return report.num_classes != report.table.num_classes or bool(report.recipe_kwargs)


def _table_records(report: TableReport) -> List[Dict[str, Any]]:
    records = []
    baseline = report.baseline
    comparable = not _other_dataset(report)  # our numbers on another dataset / size are not the paper's setting
    for result in report.rows:
        mean, std = result.top1()
        paper_top1 = result.row.paper_numbers.get('top1')
        runs = result.runs
        base_mean = baseline.top1()[0] if baseline is not None else None
        records.append({
            'row': result.row.id,
            'label': result.row.label,
            'model': result.row.model,
            'model_kwargs': result.row.model_kwargs,
            'paper_top1': paper_top1,
            'ours_top1': mean,
            'ours_top1_std': std,
            'delta_top1': None if mean is None or paper_top1 is None or not comparable else mean - paper_top1,
            'ours_last_top1': statistics.fmean(r.last_top1 for r in runs) if runs else None,
            'epochs_done': min((r.epochs_done for r in runs), default=None),
            'epochs_planned': max((r.epochs_planned for r in runs), default=None),
            'num_runs': len(runs),
            'seeds': [r.seed for r in runs],
            'vs_baseline': None if mean is None or base_mean is None or result is baseline else mean - base_mean,
            'vs_baseline_spread': None if baseline is None or result is baseline else spread_verdict(
                result.top1_values(), baseline.top1_values()),
            'paper_params': result.row.paper_numbers.get('params'),
            'paper_params_m': result.row.paper_numbers.get('params_m'),
            'ours_params': result.params,
            'params_error': result.params_error or None,
            'paper_train_img_s': result.row.paper_numbers.get('train_img_s'),
            'run_dirs': [str(r.path) for r in runs],
        })
    return records


def _vs_baseline_cell(rec: Dict[str, Any], baseline_id: Optional[str]) -> str:
    if rec['row'] == baseline_id:
        return '(baseline)'
    if rec['vs_baseline'] is None:
        return '—'
    verdict = {'inside': 'inside the spread', 'outside': 'outside the spread', None: 'no spread (n < 2)'}
    return f'{rec["vs_baseline"]:+.2f} ({verdict[rec["vs_baseline_spread"]]})'


def format_table_report(report: TableReport, fmt: str = 'markdown') -> str:
    """The paper's table with our numbers beside it, as markdown (default), json or csv."""
    records = _table_records(report)
    if fmt == 'json':
        return json.dumps({'table': report.table.id, 'title': report.table.title, 'baseline': report.table.baseline,
                           'num_classes': report.num_classes, 'recipe_kwargs': report.recipe_kwargs,
                           'rows': records, 'unmatched_runs': [str(r.path) for r in report.unmatched]}, indent=2)
    if fmt == 'csv':
        return _to_csv([{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in rec.items()}
                        for rec in records])
    if fmt != 'markdown':
        raise ValueError(f'format must be one of {REPORT_FORMATS}, got {fmt!r}')

    table = report.table
    has_throughput = any(rec['paper_train_img_s'] is not None for rec in records)
    header = ['Row', 'Model', f'Paper top-1 (%), {table.dataset}', 'Ours top-1 (%), mean ± std', 'Δ vs paper',
              'Ours last epoch (%)', 'Epochs', 'Runs (n)', 'Paper params', 'Ours params']
    header += (['Paper train img/s'] if has_throughput else []) + ['Ours: Δ vs baseline row']
    lines = [f'### {table.title}', '']
    if _other_dataset(report):
        lines += [f'**Our runs are not the paper\'s setting**: {report.num_classes} classes'
                  + (f', every row with {_kwargs_text(report.recipe_kwargs)}' if report.recipe_kwargs else '')
                  + f'. The paper\'s columns are the paper\'s numbers on {table.dataset} ({table.num_classes} '
                    f'classes); compare our rows with each other, not with them.', '']
    lines += [_md_row(header), _md_row(['---'] * len(header))]
    for rec, result in zip(records, report.rows):
        ours = _fmt(rec['ours_top1'])
        if rec['ours_top1_std'] is not None:
            ours += f' ± {rec["ours_top1_std"]:.2f}'
        epochs = '—'
        if rec['num_runs']:
            epochs = f'{rec["epochs_done"]}/{rec["epochs_planned"]}'
            if rec['epochs_done'] < rec['epochs_planned']:
                epochs += ' (unfinished)'
        delta = '—' if rec['delta_top1'] is None else f'{rec["delta_top1"]:+.2f}'
        cells = [
            rec['label'], _model_cell(rec['model'], rec['model_kwargs']), _fmt(rec['paper_top1']), ours, delta,
            _fmt(rec['ours_last_top1']), epochs, str(rec['num_runs']), _paper_params(result.row.paper_numbers),
            '—' if rec['ours_params'] is None else f'{rec["ours_params"]:,}',
        ]
        if has_throughput:
            cells.append('—' if rec['paper_train_img_s'] is None else f'{rec["paper_train_img_s"]:g}')
        cells.append(_vs_baseline_cell(rec, table.baseline))
        lines.append(_md_row(cells))
    lines.append('')
    lines += [f'- {note}' for note in table.notes]
    lines.append('- Ours top-1: best epoch of train.py\'s validation, mean ± sample std over the runs (seeds) of the '
                 'row; Δ vs paper = ours − paper (only in the paper\'s setting).')
    if table.baseline:
        lines.append(f'- Δ vs baseline row = ours − ours of `{table.baseline}`; outside the spread when |Δ| > std + '
                     f'baseline std (the mean ± std intervals do not overlap), inside otherwise; needs n ≥ 2 in both.')
    for rec in records:
        if rec['params_error']:
            lines.append(f'- {rec["row"]}: parameters not counted ({rec["params_error"]})')
        for d in rec['run_dirs']:
            lines.append(f'- run `{d}` → {rec["row"]}')
    for run in report.unmatched:
        lines.append(f'- not in this table: `{run.path}` ({run.model} {run.model_kwargs}, '
                     f'{run.num_classes} classes, {run.epochs_planned} epochs)')
    return '\n'.join(lines)


def _kwargs_text(kwargs: Dict[str, Any]) -> str:
    return ', '.join(f'{k}={v}' for k, v in kwargs.items())


def format_runs_report(
        runs: Sequence[Run],
        baselines: Optional[Dict[str, str]] = None,
        wall_s: Optional[Dict[Path, float]] = None,
        fmt: str = 'markdown',
) -> str:
    """Runs that belong to no paper table (e.g. the Fashion-MNIST sanity run), one line each.

    ``baselines`` maps each model of this package to its timm baseline; ``wall_s`` a run folder to its wall time.
    """
    baselines, wall_s = baselines or {}, wall_s or {}
    records = [{
        'model': r.model,
        'model_kwargs': r.model_kwargs,
        'baseline': baselines.get(r.model),
        'best_top1': r.best_top1,
        'last_top1': r.last_top1,
        'last_train_loss': r.history[-1]['train_loss'],
        'epochs_done': r.epochs_done,
        'epochs_planned': r.epochs_planned,
        'seed': r.seed,
        'wall_s': wall_s.get(r.path),
        'run_dir': str(r.path),
    } for r in runs]
    if fmt == 'json':
        return json.dumps(records, indent=2)
    if fmt == 'csv':
        return _to_csv([{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in rec.items()} for rec in records])
    if fmt != 'markdown':
        raise ValueError(f'format must be one of {REPORT_FORMATS}, got {fmt!r}')
    header = ['Model', 'Its timm baseline', 'Best top-1 (%)', 'Last top-1 (%)', 'Last train loss', 'Epochs', 'Seed']
    show_wall = any(rec['wall_s'] is not None for rec in records)
    header += ['Wall (s)'] if show_wall else []
    lines = [_md_row(header), _md_row(['---'] * len(header))]
    for rec in records:
        cells = [_model_cell(rec['model'], rec['model_kwargs']), rec['baseline'] or '(baseline)',
                 _fmt(rec['best_top1']), _fmt(rec['last_top1']), _fmt(rec['last_train_loss'], 3),
                 f'{rec["epochs_done"]}/{rec["epochs_planned"]}', str(rec['seed'])]
        if show_wall:
            cells.append('—' if rec['wall_s'] is None else f'{rec["wall_s"]:.0f}')
        lines.append(_md_row(cells))
    return '\n'.join(lines)


def _model_cell(model: str, kwargs: Dict[str, Any]) -> str:
    return f'`{model}`' + (' ' + ', '.join(f'{k}={v}' for k, v in kwargs.items()) if kwargs else '')


def _md_row(cells: Sequence[str]) -> str:
    # a cell is one line: a newline or other control character (from a run's args.yaml) would end the table row
    return '| ' + ' | '.join(_CONTROL.sub(' ', str(c)).replace('|', '\\|') for c in cells) + ' |'


_CONTROL = re.compile(r'[\x00-\x1f\x7f\u2028\u2029]')


def _to_csv(records: List[Dict[str, Any]]) -> str:
    import io
    out = io.StringIO()
    if records:
        writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator='\n')
        writer.writeheader()
        writer.writerows(records)
    return out.getvalue()


def plot_curves(series: Sequence[Tuple[str, Run]], path: Path, title: str = '') -> Path:
    """Write a PNG with (a) validation top-1 and (b) training loss against the epoch, one line per run
    (the layout of the super-token paper's figure 3). Needs matplotlib (``pip install 'timm-posembed[bench]'``)."""
    try:
        import matplotlib
        matplotlib.use('Agg')  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError('plotting needs matplotlib: pip install "timm-posembed[bench]"') from e
    if not series:
        raise ValueError('no runs to plot')
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, run in series:
        for ax, column in ((ax_acc, 'eval_top1'), (ax_loss, 'train_loss')):
            points = run.column(column)
            ax.plot([e + 1 for e, _ in points], [v for _, v in points], label=label)  # epochs are 0-based in timm
    ax_acc.set(title='(a) validation top-1', xlabel='epoch', ylabel='top-1 (%)')
    ax_loss.set(title='(b) training loss', xlabel='epoch', ylabel='loss')
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize='small')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)  # its folder must exist: no folders are created beside the file asked for
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix.lstrip('.') or 'png'))
    finally:
        plt.close(fig)
    return path
