""" The cost of the super-token conv embedding beside ViT-S's patch embedding and EarlyConv.

In one run, for vit_small_patch16_224, vit_small_conv_embed and vit_small_supertoken_conv (t=3, and t=1 for the
super-token paper's table-8 comparison): training and inference img/s, peak memory, parameters and GMACs, plus the
clustering alone (forward+backward of SuperTokenClustering on the stem's 64-channel map) at t=1 and t=3.

Goals it reports against: supertoken training img/s >= 0.85x vit_small_patch16_224's; t=3 costs <= 4% over t=1 (the
paper's 766 -> 737 img/s).

How:
  * throughput: all models live in one process and are timed round-robin (``--rounds`` rounds, each timing
    ``--iters`` steps per model and phase after one untimed warm-up round); the median round is reported, so a
    machine shared with other work slows every model alike. A training step is forward, cross-entropy, backward
    and an AdamW step.
  * peak memory: each model in a fresh process, eager (not compiled), one inference then one training step: on CUDA
    ``torch.cuda.max_memory_allocated`` per phase; on CPU the growth of the process's peak RSS over its size
    before the first step (training includes AdamW's state, created on the first step).
  * GMACs: matmuls and convolutions counted by ``torch.utils.flop_counter`` for one image on the meta device
    (the clustering's matmuls included).

    python benchmarks/bench_supertoken.py --device cpu --batch-size 2 --threads 1
    python benchmarks/bench_supertoken.py --device cuda --batch-size 128 --amp bf16 --channels-last --compile
"""
import argparse
import datetime
import json
import multiprocessing as mp
import os
import resource
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .bench import autocast_context, synchronize, time_round_robin
from .complexity import model_complexity
from .environment import environment

# (label, timm model name, model kwargs)
MODELS: List[Tuple[str, str, Dict[str, Any]]] = [
    ('vit_small_patch16_224', 'vit_small_patch16_224', {}),
    ('vit_small_conv_embed', 'vit_small_conv_embed', {}),
    ('vit_small_supertoken_conv t=3', 'vit_small_supertoken_conv', {'stoken_num_iters': 3}),
    ('vit_small_supertoken_conv t=1', 'vit_small_supertoken_conv', {'stoken_num_iters': 1}),
]
NUM_CLASSES = 100  # ImageNet100, as in the paper


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _autocast(args: argparse.Namespace, device: torch.device):
    return autocast_context(device, 'bf16' if args.amp == 'bf16' else 'fp32')


def _setup(args: argparse.Namespace) -> torch.device:
    from .. import models  # noqa: F401  (registers the models)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device(args.device)


def _steps(args: argparse.Namespace, model_name: str, kwargs: Dict[str, Any], device: torch.device):
    """(model, inference step, training step) for one model, on ``device`` with the requested settings."""
    import timm

    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = timm.create_model(model_name, num_classes=NUM_CLASSES, img_size=args.img_size, **kwargs)
    model = model.to(device, memory_format=memory_format)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device).to(memory_format=memory_format)
    target = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=device)
    fn = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    def infer_step():
        model.eval()
        with torch.inference_mode(), _autocast(args, device):
            fn(x)

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with _autocast(args, device):
            loss = F.cross_entropy(fn(x), target)
        loss.backward()
        optimizer.step()

    return model, infer_step, train_step


def _memory_worker(queue, args: argparse.Namespace, model_name: str, kwargs: Dict[str, Any]) -> None:
    try:
        device = _setup(args)
        # Eager: compiling every model again in every worker would take minutes; compiled runs use less memory.
        eager = argparse.Namespace(**{**vars(args), 'compile': False})
        _, infer_step, train_step = _steps(eager, model_name, kwargs, device)
        result = {}
        base = _rss_bytes()
        # Inference first: the CPU peak RSS only grows, and a training step needs more than an inference step.
        for phase, step in (('infer', infer_step), ('train', train_step)):
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            step()
            synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else _peak_rss_bytes() - base
            result[f'{phase}_peak_mib'] = peak / 2 ** 20
        queue.put(result)
    except Exception as e:  # reported by the parent, with the model it belongs to
        queue.put({'error': f'{type(e).__name__}: {e}'})


def _peak_memory(args: argparse.Namespace, model_name: str, kwargs: Dict[str, Any]) -> Dict[str, float]:
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_worker, args=(queue, args, model_name, kwargs))
    proc.start()
    result = queue.get()
    proc.join()
    if 'error' in result:
        raise RuntimeError(f'{model_name} {kwargs}: {result["error"]}')
    return result


def _complexity(model_name: str, kwargs: Dict[str, Any], img_size: int) -> Tuple[int, float]:
    stats = model_complexity(model_name, input_size=(3, img_size, img_size), num_classes=NUM_CLASSES,
                             img_size=img_size, **kwargs)
    return stats.params, stats.gmacs


def _clustering_steps(args: argparse.Namespace, device: torch.device) -> Dict[str, Callable[[], None]]:
    """Forward+backward of the clustering alone on the stem's output map (64 x img/8 x img/8), t=1 and t=3."""
    from ..layers import SuperTokenClustering

    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    side = args.img_size // 8
    fmap = torch.randn(args.batch_size, 64, side, side, device=device).to(memory_format=memory_format)
    fmap.requires_grad_(True)
    steps = {}
    for n_iter in (1, 3):
        cluster = SuperTokenClustering(stoken_size=2, num_iters=n_iter)
        fn = torch.compile(cluster) if args.compile else cluster

        def step(fn=fn):
            with _autocast(args, device):
                out = fn(fmap)
            out.float().sum().backward()
        steps[f'cluster t={n_iter}'] = step
    return steps


def _machine(args: argparse.Namespace) -> str:
    env = environment(torch.device(args.device))
    return f'{env["device"]}; torch {env["torch"]}, timm {env["timm"]}'


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (or 'cuda:N')")
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--rounds', type=int, default=2, help='timed round-robin rounds (median reported)')
    parser.add_argument('--iters', type=int, default=1, help='timed steps per model, phase and round')
    parser.add_argument('--amp', choices=('none', 'bf16'), default='none')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--compile', action='store_true', help='torch.compile the models (and the clustering alone)')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    parser.add_argument('--json', default='', help='also write the results to this file')
    args = parser.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available here')
    device = _setup(args)

    rows = {}
    for label, name, kwargs in MODELS:
        params, gmacs = _complexity(name, kwargs, args.img_size)
        rows[label] = {'model': label, 'params': params, 'gmacs': gmacs, **_peak_memory(args, name, kwargs)}
        print(f'memory measured: {label}', file=sys.stderr, flush=True)

    # Throughput, round-robin in this process.
    timed: Dict[str, Callable[[], None]] = {}
    for label, name, kwargs in MODELS:
        _, infer_step, train_step = _steps(args, name, kwargs, device)
        timed[f'{label}|infer'] = infer_step
        timed[f'{label}|train'] = train_step
    timed.update(_clustering_steps(args, device))
    # one warm-up round (compilation happens there), then the median of the round-robin rounds
    median = time_round_robin(timed, device, 1, args.iters, args.rounds)
    for label, row in rows.items():
        row['train_img_s'] = args.batch_size / median[f'{label}|train']
        row['infer_img_s'] = args.batch_size / median[f'{label}|infer']
    cluster_ms = {n: median[f'cluster t={n}'] * 1e3 for n in (1, 3)}

    base, t3, t1 = (rows[k] for k in ('vit_small_patch16_224', 'vit_small_supertoken_conv t=3',
                                     'vit_small_supertoken_conv t=1'))
    ratio_vs_patch = t3['train_img_s'] / base['train_img_s']
    t3_over_t1 = t1['train_img_s'] / t3['train_img_s'] - 1  # extra time per image of t=3 over t=1
    cluster_share = (cluster_ms[3] - cluster_ms[1]) / (1e3 * args.batch_size / t1['train_img_s'])

    settings = (f'batch {args.batch_size}, {args.img_size}px, amp {args.amp}, channels_last {args.channels_last}, '
                f'compile {args.compile}, {args.rounds} rounds x {args.iters} iters (median round)')
    mem_note = 'max_memory_allocated' if device.type == 'cuda' else 'peak RSS growth'
    sys.stderr.flush()
    print(f'\nmachine: {_machine(args)}\nsettings: {settings}\ndate: {datetime.date.today().isoformat()}\n')
    print(f'| model | params | GMACs | train img/s | infer img/s | train peak MiB ({mem_note}) | infer peak MiB |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    for r in rows.values():
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['gmacs']:.2f} | {r['train_img_s']:.2f} | "
              f"{r['infer_img_s']:.2f} | {r['train_peak_mib']:.0f} | {r['infer_peak_mib']:.0f} |")
    print(f'\nsupertoken (t=3) / patch16 training throughput: {ratio_vs_patch:.3f} (goal >= 0.85)')
    print(f't=3 over t=1, whole training step: {100 * t3_over_t1:+.1f}% time per image (goal <= 4%; '
          f'the paper\'s 766 -> 737 '
          f'= {100 * (766 / 737 - 1):+.1f}%)')
    print(f'clustering alone, fwd+bwd per batch: t=1 {cluster_ms[1]:.2f} ms, t=3 {cluster_ms[3]:.2f} ms; the '
          f'difference is {100 * cluster_share:+.2f}% of a t=1 training step')

    summary = {'machine': _machine(args), 'settings': vars(args), 'date': datetime.date.today().isoformat(),
               'rows': list(rows.values()), 'clustering_ms': cluster_ms,
               'supertoken_over_patch_train': ratio_vs_patch, 't3_over_t1_train': t3_over_t1,
               'clustering_t3_minus_t1_share_of_step': cluster_share}
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=2)
    return summary


if __name__ == '__main__':
    main()
