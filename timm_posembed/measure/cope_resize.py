""" How should COPE's tables follow a new input size? A measurement.

Trains ``vit_tiny_cope`` and timm's ``vit_tiny_patch16_224`` (learned position embedding, the reference) on
Fashion-MNIST at one size, saves the weights, then loads them through the public path
(``create_model(..., img_size=NEW, pretrained=True, pretrained_cfg_overlay=dict(file=...))``) at larger sizes
and reports test accuracy for each way of resizing:

* COPE ``cope_resize='interpolate'``: the angle field and frequency table resampled over the 2D patch grid;
* COPE ``cope_resize='extrapolate'``: the learnt frequencies and phases evaluated at the new position indices;
* timm's learned ``pos_embed``: bicubic resampling (timm's own ``checkpoint_filter_fn``).

Data: the Fashion-MNIST idx files (``timm-posembed prepare fashion-mnist DST`` or Debian's
``dataset-fashion-mnist``), read with torchvision's ``FashionMNIST`` (``--data-dir`` holds ``FashionMNIST/raw``).

    python benchmarks/cope_resize_study.py --data-dir DST --device cuda --epochs 10 --train-size 64 \
        --eval-sizes 64 96 128

``--dynamic`` instead compares, for each row, ``set_input_size(NEW)`` on the loaded model with the same model
built with ``dynamic_img_size=True`` and fed NEW-px images (the tables made for the training size, resampled on
the fly by the same rule; timm's ViT resamples its ``pos_embed`` on the fly the same way).

    python benchmarks/cope_resize_study.py --data-dir DST --device cpu --dynamic --epochs 3 --limit 3000 \
        --test-limit 1000 --depth 6 --train-size 64 --eval-sizes 64 96 128 160
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.datasets import FashionMNIST

from .. import models  # noqa: F401  (registers the models)


def load_split(data_dir: str, train: bool, device: torch.device):
    ds = FashionMNIST(data_dir, train=train, download=False)
    images = ds.data.to(device=device, dtype=torch.float32).unsqueeze(1) / 255.0
    images = (images - 0.2860) / 0.3530  # Fashion-MNIST train mean / std
    return images, ds.targets.to(device)


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images, size=(size, size), mode='bilinear', align_corners=False)


def train(model_name, images, labels, size, epochs, batch_size, lr, device, seed, **model_kwargs):
    torch.manual_seed(seed)
    model = timm.create_model(model_name, num_classes=10, in_chans=1, img_size=size, **model_kwargs).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * (len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator(device='cpu').manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator).to(device)
        for i in range(len(images) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = resized(images[idx], size)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == 'cuda'):
                loss = F.cross_entropy(model(x), labels[idx], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model


@torch.no_grad()
def accuracy(model, images, labels, size, device, batch_size=1000):
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        x = resized(images[i:i + batch_size], size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == 'cuda'):
            correct += (model(x).argmax(1) == labels[i:i + batch_size]).sum().item()
    return correct / len(images)


def load_at(name, path, train_size, size, way, kwargs):
    """The trained weights, for ``size``-px inputs: loaded at that size (the checkpoint filter resizes the
    tables), ``set_input_size`` after loading at the training size, or ``dynamic_img_size=True``."""
    common = dict(num_classes=10, in_chans=1, pretrained=True,
                  pretrained_cfg_overlay=dict(file=str(path), num_classes=10), **kwargs)
    if way == 'load':
        return timm.create_model(name, img_size=size, **common)
    if way == 'set_input_size':
        model = timm.create_model(name, img_size=train_size, **common)
        model.set_input_size(img_size=(size, size))
        return model
    return timm.create_model(name, img_size=train_size, dynamic_img_size=True, **common)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--data-dir', required=True)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--train-size', type=int, default=64)
    p.add_argument('--eval-sizes', type=int, nargs='+', default=[64, 96, 128])
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--limit', type=int, default=0, help='use only this many training images (0 = all)')
    p.add_argument('--test-limit', type=int, default=0, help='evaluate on only this many test images (0 = all)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None, help='also write the results here')
    p.add_argument('--dynamic', action='store_true',
                   help='compare set_input_size with dynamic_img_size=True for every row')
    p.add_argument('--depth', type=int, default=12, help='transformer blocks of both models (ViT-Tiny: 12)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = torch default)')
    args = p.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    ways = ['set_input_size', 'dynamic_img_size'] if args.dynamic else ['load']
    model_kwargs = {} if args.depth == 12 else {'depth': args.depth}
    train_x, train_y = load_split(args.data_dir, True, device)
    if args.limit:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]
    test_x, test_y = load_split(args.data_dir, False, device)
    if args.test_limit:
        test_x, test_y = test_x[:args.test_limit], test_y[:args.test_limit]

    variants = [('vit_tiny_patch16_224', {}, 'timm learned pos_embed (bicubic resample)'),
                ('vit_tiny_cope', {'cope_resize': 'interpolate'}, "COPE, cope_resize='interpolate'"),
                ('vit_tiny_cope', {'cope_resize': 'extrapolate'}, "COPE, cope_resize='extrapolate'")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        trained = {}
        for name in dict.fromkeys(v[0] for v in variants):
            start = time.perf_counter()
            model = train(name, train_x, train_y, args.train_size, args.epochs, args.batch_size, args.lr, device,
                          args.seed, **model_kwargs)
            path = Path(tmp) / f'{name}.safetensors'
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
            trained[name] = path
            print(f'trained {name} in {time.perf_counter() - start:.0f}s', flush=True)
        for name, kwargs, label in variants:
            for way in ways:
                row = {'variant': label if way == 'load' else f'{label}, {way}'}
                for size in args.eval_sizes:
                    model = load_at(name, trained[name], args.train_size, size, way, dict(kwargs, **model_kwargs))
                    row[size] = accuracy(model.to(device), test_x, test_y, size, device)
                results.append(row)
                print(row, flush=True)

    print(f'\nFashion-MNIST test top-1 ({len(test_x)} test images), trained at {args.train_size}px for {args.epochs} '
          f'epochs ({len(train_x)} images, depth {args.depth}, seed {args.seed}), evaluated at other sizes '
          f'without fine-tuning:\n')
    print('| resize | ' + ' | '.join(f'{s}px' for s in args.eval_sizes) + ' |')
    print('|---|' + '---|' * len(args.eval_sizes))
    for row in results:
        print(f"| {row['variant']} | " + ' | '.join(f'{100 * row[s]:.2f}' for s in args.eval_sizes) + ' |')
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == '__main__':
    main()
