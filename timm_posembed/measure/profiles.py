#!/usr/bin/env python3
""" Where a model's CPU time goes: ``torch.profiler`` over a few training (or inference) steps, top ops by self time.

Used to find what makes the package's models slower than their timm baselines (benchmarks/RESULTS.md,
"Speed: profiles"). Each model is profiled in this process, one after the other; the table lists the ops with the
largest self CPU time, summed over the profiled steps, and their share of the total.

    python benchmarks/bench_profile.py vit_small_supertoken_conv vit_small_patch16_224 --threads 2 -b 8
    python benchmarks/bench_profile.py coat_lite_clustering coat_lite_tiny --threads 2 -b 8 --infer
"""
import argparse
from typing import List, Optional

import timm
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from .. import models  # noqa: F401  (registers the models)


def profile_model(name: str, batch_size: int, steps: int, infer: bool, top: int) -> str:
    model = timm.create_model(name, num_classes=1000)
    x = torch.randn(batch_size, 3, 224, 224)
    y = torch.randint(0, 1000, (batch_size,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        if infer:
            model.eval()
            with torch.no_grad():
                model(x)
            return
        model.train()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    lines = [f'### {name} ({"inference" if infer else "training"} step, batch {batch_size}, {steps} steps): '
             f'{total / 1e3 / steps:.0f} ms self CPU per step', '',
             '| op | self CPU ms / step | share | calls / step |', '|---|---:|---:|---:|']
    for e in events[:top]:
        lines.append(f'| `{e.key}` | {e.self_cpu_time_total / 1e3 / steps:.1f} | '
                     f'{100 * e.self_cpu_time_total / total:.1f} % | {e.count // steps} |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('models', nargs='+')
    p.add_argument('-b', '--batch-size', type=int, default=8)
    p.add_argument('--steps', type=int, default=2)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--infer', action='store_true', help='profile inference (no grad) instead of training')
    p.add_argument('--top', type=int, default=15)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.models:
        print(profile_model(name, args.batch_size, args.steps, args.infer, args.top), end='\n\n', flush=True)


if __name__ == '__main__':
    main()
