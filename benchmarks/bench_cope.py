""" vit_*_cope beside timm's vit_*_patch16_224: training and inference img/s, timed round-robin.

On a shared or frequency-scaling CPU, timing one model after the other favours whichever runs later; here the
two models alternate step by step for several rounds and the median round is reported.

    python benchmarks/bench_cope.py --device cpu --batch-size 8 --rounds 7
    python benchmarks/bench_cope.py --device cuda --batch-size 256 --amp bf16 --rounds 7
"""
import argparse

import timm
import torch
import torch.nn.functional as F

import timm_posembed  # noqa: F401
from timm_posembed.bench import autocast_context, time_round_robin


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--width', default='tiny', choices=['tiny', 'small', 'base'])
    p.add_argument('--device', default='cpu')
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--steps', type=int, default=2, help='steps per model per round')
    p.add_argument('--amp', default=None, choices=['bf16', 'fp16'])
    args = p.parse_args()

    device = torch.device(args.device)
    names = [f'vit_{args.width}_patch16_224', f'vit_{args.width}_cope']
    models = {n: timm.create_model(n, num_classes=1000).to(device) for n in names}
    optimizers = {n: torch.optim.SGD(m.parameters(), lr=1e-3) for n, m in models.items()}
    x = torch.randn(args.batch_size, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    amp = autocast_context(device, args.amp or 'fp32')

    def train_step(name: str) -> None:
        models[name].train()
        with amp:
            loss = F.cross_entropy(models[name](x), y)
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    def infer_step(name: str) -> None:
        models[name].eval()
        with torch.no_grad(), amp:
            models[name](x)

    seconds = {}
    for kind, step in (('train', train_step), ('infer', infer_step)):
        per_call = time_round_robin({n: (lambda n=n: step(n)) for n in names}, device, 1, args.steps, args.rounds)
        seconds.update({(n, kind): s for n, s in per_call.items()})
    rate = {key: args.batch_size / s for key, s in seconds.items()}

    base = names[0]
    print(f'{torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"}, '
          f'torch {torch.__version__}, timm {timm.__version__}, batch {args.batch_size}, '
          f'{args.amp or "fp32"}, median of {args.rounds} rounds\n')
    print('| model | train img/s | × baseline | infer img/s | × baseline |\n|---|---:|---:|---:|---:|')
    for name in names:
        tr, inf = (rate[(name, k)] for k in ('train', 'infer'))
        tr0, inf0 = (rate[(base, k)] for k in ('train', 'infer'))
        print(f'| {name} | {tr:.2f} | {tr / tr0:.2f} | {inf:.2f} | {inf / inf0:.2f} |')


if __name__ == '__main__':
    main()
