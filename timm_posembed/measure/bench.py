""" Throughput and memory of every model of the package beside its timm baseline, in one run.

For each model: parameters and GMACs (``timm_posembed.measure.complexity``), inference img/s (forward, no grad),
training img/s (forward + cross-entropy + backward + SGD step), and on CUDA the peak memory of each. Options: CPU or
CUDA, fp32 or bf16/fp16 autocast, channels_last, ``torch.compile``. Results come back as records for JSON and as a
markdown table with each model's speed relative to its baseline.
"""
import fnmatch
import gc
import math
import os
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import timm
import torch
import torch.nn as nn

from .bench_config import PRECISIONS, BenchConfig
from .complexity import model_complexity
from ..models import list_model_info

__all__ = ['BenchResult', 'select_models', 'bench_model', 'run_bench', 'time_round_robin', 'synchronize',
           'autocast_context', 'format_markdown', 'available_memory', 'input_bytes', 'memory_needed']

_AUTOCAST_DTYPES = dict(zip(PRECISIONS, (None, torch.bfloat16, torch.float16)))


@dataclass
class BenchResult:
    model: str
    baseline: Optional[str]  # the timm model this one is compared with (None for a baseline itself)
    model_kwargs: Dict[str, Any]
    input_size: Optional[List[int]] = None
    params: Optional[int] = None
    gmacs: Optional[float] = None
    infer_img_s: Optional[float] = None
    train_img_s: Optional[float] = None
    infer_peak_mib: Optional[float] = None  # CUDA only
    train_peak_mib: Optional[float] = None
    error: Optional[str] = None


def select_models(patterns: Optional[Sequence[str]] = None, with_baselines: bool = True) -> List[Dict[str, Any]]:
    """[{'model', 'baseline'}] in benchmark order: each baseline first, then the package's models compared with it.

    ``patterns`` are names or wildcards matched against the package's models (default: all); a name that is not
    one of ours (any timm model) is benchmarked on its own.
    """
    infos = {i.name: i for i in list_model_info()}
    if patterns:
        chosen, foreign = [], []
        for pattern in patterns:
            hits = fnmatch.filter(infos, pattern)
            if hits:
                chosen += [h for h in hits if h not in chosen]
            elif pattern in timm.list_models(pattern):
                foreign.append(pattern)
            else:
                raise ValueError(f'{pattern!r} matches no model of timm_posembed (nor a timm model); '
                                 f'ours: {sorted(infos)}')
    else:
        chosen, foreign = list(infos), []
    entries: List[Dict[str, Any]] = []
    for baseline in dict.fromkeys(infos[n].baseline for n in chosen):
        if with_baselines:
            entries.append({'model': baseline, 'baseline': None})
        entries += [{'model': n, 'baseline': baseline} for n in chosen if infos[n].baseline == baseline]
    return entries + [{'model': n, 'baseline': None} for n in foreign]


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); a no-op on the CPU."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def autocast_context(device: torch.device, precision: str):
    """The autocast context of ``precision`` (``fp32``: none) on ``device``; one home for every benchmark."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {list(PRECISIONS)}, got {precision!r}')
    dtype = _AUTOCAST_DTYPES[precision]
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype else nullcontext()


def _reset_peak(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == 'cuda' else None


def time_round_robin(
        steps: Mapping[str, Callable[[], None]],
        device: torch.device,
        num_warmup: int = 1,
        num_iters: int = 1,
        num_rounds: int = 1,
) -> Dict[str, float]:
    """Seconds per call of each step, the steps taking turns: after ``num_warmup`` untimed calls of each (which
    also absorb compilation), ``num_rounds`` rounds each time ``num_iters`` calls of every step in turn; the
    median round is returned. On a shared machine or a CPU that changes clock, load then hits every step alike
    instead of whichever happens to run while it lasts."""
    if num_iters < 1 or num_rounds < 1 or num_warmup < 0:
        raise ValueError(f'time_round_robin: need num_iters >= 1, num_rounds >= 1 and num_warmup >= 0, got '
                         f'{num_iters}, {num_rounds}, {num_warmup}')
    for step in steps.values():
        for _ in range(num_warmup):
            step()
    synchronize(device)
    seconds: Dict[str, List[float]] = {key: [] for key in steps}
    for _ in range(num_rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            for _ in range(num_iters):
                step()
            synchronize(device)
            seconds[key].append((time.perf_counter() - start) / num_iters)
    return {key: statistics.median(values) for key, values in seconds.items()}


@dataclass
class _Case:
    """One model ready to be timed: its result record and its inference and training steps."""
    result: BenchResult
    infer: Optional[Callable[[], None]] = None
    train: Optional[Callable[[], None]] = None


def available_memory(device: torch.device) -> int:
    """Bytes a benchmark may allocate on ``device``: CUDA's free memory, or the CPU's available memory (Linux's
    MemAvailable + free swap; all physical memory where /proc/meminfo is missing)."""
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[0]
    try:
        fields = dict(line.split(':', 1) for line in Path('/proc/meminfo').read_text().splitlines() if ':' in line)
        return sum(int(fields[k].split()[0]) * 1024 for k in ('MemAvailable', 'SwapFree') if k in fields)
    except (OSError, ValueError):
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def input_bytes(cfg: BenchConfig, input_size: Sequence[int]) -> int:
    """Bytes of the benchmark's fp32 input batch (autocast casts inside the model, the batch stays fp32)."""
    return cfg.batch_size * math.prod(input_size) * 4


def memory_needed(cfg: BenchConfig, params: int, activations: int, input_size: Sequence[int]) -> int:
    """An estimate of the bytes one model's benchmark allocates: the input batch and fp32 weights, and when
    training their gradients and SGD momentum (3x the weights) plus the stored activations (``activations`` per
    image: the conv / matmul outputs counted by ``measure.complexity``, 2 bytes each under bf16/fp16 autocast).
    Norm and GELU outputs and the optimizer's temporaries are not counted, so it is below the real need: on the
    CPU (training, fp32, batch 32, 224 px; 2-core x86_64, torch 2.14.1, timm 1.0.31, 2026-12-03) it was 0.71-0.73
    of the peak resident-memory growth of the ViT-Tiny models, 0.70 of the super-token ViT-S's and 0.48-0.53 of
    the CoaT-Lite Tiny models'. A fused CUDA attention kernel stores no attention scores, which this counts: on a
    GPU it may be somewhat above the need, hence ``check_memory`` / ``--skip-memory-check``."""
    weights = params * 4 * (3 if cfg.train else 1)
    stored = cfg.batch_size * activations * (4 if cfg.precision == 'fp32' else 2) if cfg.train else 0
    return input_bytes(cfg, input_size) + weights + stored


def _gib(n: int) -> str:
    return f'{n / 2 ** 30:,.1f} GiB'


def _too_large(needed: int, available: int, device: torch.device, what: str, estimate: bool) -> str:
    return (f'{what} need {"about" if estimate else "at least"} {_gib(needed)}, more than the {_gib(available)} '
            f'available on {device}; lower -b/--batch-size or --img-size'
            + (' (or --skip-memory-check if the estimate is wrong for this model)' if estimate else ''))


def _prepare(name: str, cfg: BenchConfig, baseline: Optional[str], model_kwargs: Dict[str, Any]) -> _Case:
    """Build ``name`` and its steps; an error (unknown kwarg, out of memory) is recorded, not raised."""
    case = _Case(BenchResult(model=name, baseline=baseline, model_kwargs=dict(model_kwargs)))
    device = torch.device(cfg.device)
    create_kwargs = dict(model_kwargs, num_classes=cfg.num_classes)
    if cfg.img_size:
        create_kwargs['img_size'] = cfg.img_size
    try:
        input_size = (3, cfg.img_size, cfg.img_size) if cfg.img_size else None
        complexity = model_complexity(name, input_size=input_size, **create_kwargs)
        case.result.input_size = list(complexity.input_size)
        case.result.params, case.result.gmacs = complexity.params, complexity.gmacs
        # counted on the meta device above; refuse before the real model or the batch is allocated
        needed = memory_needed(cfg, complexity.params, complexity.activations, complexity.input_size)
        available = available_memory(device) if cfg.check_memory else needed
        if needed > available:
            what = (f'batch {cfg.batch_size} at {"x".join(map(str, complexity.input_size))} '
                    f'({"training" if cfg.train else "inference"})')
            raise MemoryError(_too_large(needed, available, device, what, estimate=True))
        model = timm.create_model(name, **create_kwargs).to(device)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        runner = torch.compile(model, mode=cfg.compile_mode) if cfg.compile_mode else model
        autocast = autocast_context(device, cfg.precision)
        images = torch.randn(cfg.batch_size, *complexity.input_size, device=device).to(memory_format=memory_format)
        targets = torch.randint(0, cfg.num_classes, (cfg.batch_size,), device=device)

        def infer_step():
            model.eval()  # the models of a group take turns, each in the mode of its own step
            with torch.no_grad(), autocast:
                runner(images)

        case.infer = infer_step
        if cfg.train:
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
            loss_fn = nn.CrossEntropyLoss()

            def train_step():
                model.train()
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    loss = loss_fn(runner(images), targets)
                loss.backward()
                optimizer.step()

            case.train = train_step
    except Exception as e:  # one failing model must not stop the comparison
        case.result.error = f'{type(e).__name__}: {e}'.splitlines()[0][:300]
    return case


def _measure(cases: Sequence[_Case], cfg: BenchConfig) -> None:
    """Time the cases' steps round-robin, phase by phase, into their results. The first warm-up step of each
    case is run on its own, so that its CUDA peak memory is its own and a failing model drops out alone."""
    device = torch.device(cfg.device)
    for phase in ('infer', 'train'):
        steps = {}
        for i, case in enumerate(cases):
            step = getattr(case, phase)
            if case.result.error or step is None:
                continue
            try:
                _reset_peak(device)
                step()
                synchronize(device)
                setattr(case.result, f'{phase}_peak_mib', _peak_mib(device))
                steps[i] = step
            except Exception as e:  # e.g. out of memory in training only
                case.result.error = f'{type(e).__name__}: {e}'.splitlines()[0][:300]
        if not steps:
            continue
        seconds = time_round_robin(steps, device, max(0, cfg.num_warmup - 1), cfg.num_iters, cfg.num_rounds)
        for i, sec in seconds.items():
            setattr(cases[i].result, f'{phase}_img_s', cfg.batch_size / sec)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def bench_model(name: str, cfg: BenchConfig, baseline: Optional[str] = None, **model_kwargs: Any) -> BenchResult:
    """Benchmark one model on its own; an error (e.g. out of memory) is recorded in the result instead of raised."""
    case = _prepare(name, cfg, baseline, model_kwargs)
    try:
        _measure([case], cfg)
    finally:
        result, case = case.result, None
        _release(torch.device(cfg.device))
    return result


def run_bench(
        cfg: BenchConfig,
        patterns: Optional[Sequence[str]] = None,
        with_baselines: bool = True,
        model_kwargs: Optional[Dict[str, Any]] = None,
        progress=None,
) -> List[BenchResult]:
    """Benchmark the selected models and their baselines; ``model_kwargs`` go to the package's models only
    (baselines are timm's models as published; ``cfg.img_size`` applies to all). Each baseline and the models
    compared with it live together and are timed round-robin (``time_round_robin``), so their ratios are fair
    on a shared machine."""
    if cfg.precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {list(PRECISIONS)}, got {cfg.precision!r}')
    try:
        device = torch.device(cfg.device)
    except RuntimeError:
        device = None
    if device is None or device.type not in ('cpu', 'cuda'):  # 'meta' would time nothing, others are untested
        raise ValueError(f'device must be cpu or cuda[:N], got {cfg.device!r}')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('device cuda asked for but torch sees no CUDA device; use --device cpu')
    if device.type == 'cuda' and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f'device {cfg.device}: torch sees {torch.cuda.device_count()} CUDA device(s), '
                         f'cuda:0..cuda:{torch.cuda.device_count() - 1}')
    ours = {i.name for i in list_model_info()}
    entries = select_models(patterns, with_baselines)
    _check_input_fits(cfg, entries)
    groups: List[List[Dict[str, Any]]] = []
    for entry in entries:
        group_key = entry['baseline'] or entry['model']
        if groups and (groups[-1][0]['baseline'] or groups[-1][0]['model']) == group_key:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    results = []
    for group in groups:
        cases = [_prepare(e['model'], cfg, e['baseline'], dict(model_kwargs or {}) if e['model'] in ours else {})
                 for e in group]
        _measure(cases, cfg)
        group_results = [c.result for c in cases]
        cases = None
        _release(torch.device(cfg.device))
        for result in group_results:
            if progress:
                progress(result)
            results.append(result)
    return results


def _check_input_fits(cfg: BenchConfig, entries: Sequence[Dict[str, Any]]) -> None:
    """Refuse, before any model is built, a batch whose input images alone exceed the device's memory (at
    ``cfg.img_size``, or the smallest default input size of the models chosen)."""
    if cfg.img_size:
        sizes = [(3, cfg.img_size, cfg.img_size)]
    else:
        cfgs = [timm.models.get_pretrained_cfg(e['model'], allow_unregistered=True) for e in entries]
        sizes = [tuple(c.input_size) for c in cfgs if c is not None and c.input_size]
    if not sizes:
        return
    size = min(sizes, key=math.prod)
    device = torch.device(cfg.device)
    needed, available = input_bytes(cfg, size), available_memory(device)
    if needed > available:
        what = f'-b {cfg.batch_size} input images of {"x".join(map(str, size))} (fp32) alone'
        raise ValueError(_too_large(needed, available, device, what, estimate=False))


def format_markdown(results: Sequence[BenchResult], cfg: BenchConfig) -> str:
    """Markdown table; ``× base`` is the model's img/s over its baseline's in the same run."""
    by_name = {r.model: r for r in results}
    mem = torch.device(cfg.device).type == 'cuda'
    header = ['Model', 'Baseline', 'Input', 'Params (M)', 'GMACs', 'Infer img/s', '× base', 'Train img/s', '× base']
    header += ['Infer peak MiB', 'Train peak MiB'] if mem else []
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]

    def ratio(value, base_value):
        return f'{value / base_value:.2f}' if value and base_value else '—'

    def num(value, fmt):
        return '—' if value is None else format(value, fmt)

    def rate(value):  # three significant figures down to CPU rates of a few img/s
        return num(value, ',.0f' if value is None or value >= 100 else '.3g')

    for r in results:
        base = by_name.get(r.baseline) if r.baseline else None
        name = f'`{r.model}`' + ''.join(f' {k}={v}' for k, v in r.model_kwargs.items())
        if r.error:
            cells = [name, r.baseline or '—', f'error: {r.error}'] + [''] * (len(header) - 3)
            lines.append('| ' + ' | '.join(cells) + ' |')
            continue
        cells = [
            name, f'`{r.baseline}`' if r.baseline else '(baseline)', 'x'.join(map(str, r.input_size[1:])),
            num(r.params / 1e6 if r.params else None, '.2f'), num(r.gmacs, '.2f'),
            rate(r.infer_img_s), ratio(r.infer_img_s, base.infer_img_s if base else None),
            rate(r.train_img_s), ratio(r.train_img_s, base.train_img_s if base else None),
        ]
        if mem:
            cells += [num(r.infer_peak_mib, ',.0f'), num(r.train_peak_mib, ',.0f')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
