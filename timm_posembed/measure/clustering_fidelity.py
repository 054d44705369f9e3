""" How much the clustering layers' settings matter beside their authors' code's, measured.

Two measurements behind the defaults in MODEL_CARDS.md's Fidelity sections:

* ``hash``: clusters per stage of ``coat_lite_clustering`` on real images under our E2LSH settings and under ACT's
  code's (``cluster_query_scale='head_dim'``, ``cluster_offset_range='unit'``, 32 rounds; trained with
  ``cluster_redraw=True`` as ACT's code draws a new hash at every call), and the accuracy each costs. Fashion-MNIST
  (upsampled to ``--img-size``, one channel, 10 classes): one model trained without clustering, evaluated without
  it and with either hash applied at inference (what ``pretrained=True`` does with timm's CoaT-Lite weights), and
  one model trained with each hash in the loop. With ``--checkpoint FILE`` (timm's ``coat_lite_tiny`` ImageNet-1k
  weights, e.g. ``model.safetensors`` of ``timm/coat_lite_tiny.in1k``) or ``--pretrained`` (the same from the Hub)
  no training happens: the clusters per stage of those weights on Fashion-MNIST images (grey replicated to RGB,
  224 px, ImageNet normalisation) are counted for both hashes; their 1000-class head gives no Fashion-MNIST accuracy.
* ``border``: the relative difference between ``SuperTokenClustering``'s two border modes (STViT's zero-padded
  neighbours and ours excluded) on N(0, 1) features, overall and for the cells at least k rings from the border.

    python benchmarks/clustering_fidelity.py hash --data-dir /usr/share/datasets/fashion-mnist
    python benchmarks/clustering_fidelity.py hash --data-dir DIR --checkpoint coat_lite_tiny.safetensors
    python benchmarks/clustering_fidelity.py border
"""
import argparse
import gzip
import json
import math
import struct
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .. import models  # noqa: F401  (registers the models)
from .._output_files import write_atomically
from ..layers import SuperTokenClustering
from .environment import environment

__all__ = ['HASH_SETTINGS', 'load_fashion_mnist', 'stage_clusters', 'train', 'accuracy', 'hash_study',
           'border_difference', 'main']

MODEL = 'coat_lite_clustering'
# The model kwargs of each hash. 'act' = ACT's code's hash (its r = 8 is the package default already).
HASH_SETTINGS: Dict[str, Dict[str, Any]] = {
    'ours': dict(cluster_query_scale='none', cluster_offset_range='bucket', cluster_num_rounds=16),
    'act': dict(cluster_query_scale='head_dim', cluster_offset_range='unit', cluster_num_rounds=32),
}
_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
          'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
_MEAN, _STD = 0.2860, 0.3530  # Fashion-MNIST training set mean / std
_MAX_IDX_BYTES = 64 * 2 ** 20  # the largest Fashion-MNIST file is 47 MB uncompressed


def _read_idx(path: Path, magic: int, item_shape: Tuple[int, ...]) -> torch.Tensor:
    opener = gzip.open if path.suffix == '.gz' else open
    with opener(path, 'rb') as f:
        data = f.read(_MAX_IDX_BYTES + 1)
    ndim = 1 + len(item_shape)
    header = 4 + 4 * ndim
    if len(data) > _MAX_IDX_BYTES or len(data) < header or struct.unpack('>I', data[:4])[0] != magic:
        raise ValueError(f'{path}: not a Fashion-MNIST idx file (expected magic {magic:#x}, a {ndim}-d uint8 array of '
                         f'at most {_MAX_IDX_BYTES} bytes)')
    dims = struct.unpack(f'>{ndim}I', data[4:header])
    if tuple(dims[1:]) != item_shape or len(data) != header + dims[0] * math.prod(item_shape):
        raise ValueError(f'{path}: idx header says shape {dims}, expected (N, {", ".join(map(str, item_shape))}) '
                         f'and N·{"x".join(map(str, item_shape)) or "1"} bytes after the header')
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(dims)


def load_fashion_mnist(data_dir: str, split: str, limit: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, 28, 28) float32 normalised, labels (N,) int64)`` of the ``'train'`` or ``'test'`` split,
    from the idx files (``.gz`` or not) in ``data_dir``: Debian's ``dataset-fashion-mnist`` folder or
    ``FashionMNIST/raw``."""
    root = Path(data_dir)
    paths = []
    for name in _FILES[split]:
        found = [p for p in (root / f'{name}.gz', root / name, root / 'FashionMNIST' / 'raw' / f'{name}.gz',
                             root / 'FashionMNIST' / 'raw' / name) if p.is_file()]
        if not found:
            raise ValueError(f'--data-dir {data_dir}: no {name}[.gz] there (nor in FashionMNIST/raw/); give the '
                             f'folder of the Fashion-MNIST idx files, e.g. /usr/share/datasets/fashion-mnist')
        paths.append(found[0])
    images = _read_idx(paths[0], 0x803, (28, 28))
    labels = _read_idx(paths[1], 0x801, ())
    if len(images) != len(labels):
        raise ValueError(f'{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels')
    n = len(images) if limit is None else min(limit, len(images))
    x = (images[:n].float().unsqueeze(1) / 255.0 - _MEAN) / _STD
    return x, labels[:n].long()


def _to_model_input(x: torch.Tensor, img_size: int, rgb: bool) -> torch.Tensor:
    x = F.interpolate(x, size=(img_size, img_size), mode='bilinear', align_corners=False)
    if rgb:  # an ImageNet model: grey replicated to RGB, ImageNet normalisation
        x = (x * _STD + _MEAN).expand(-1, 3, -1, -1)
        mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
        x = (x - mean) / torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return x


@torch.no_grad()
def stage_clusters(model: torch.nn.Module, images: torch.Tensor, img_size: int, rgb: bool = False,
                   batch_size: int = 100) -> List[Tuple[float, int]]:
    """Per stage: (mean clusters per (image, block, head), class token included; tokens of the stage), from the
    model's ``cluster_counts()`` in eval mode. Stages without clustering give (nan, tokens)."""
    model.eval()
    totals: Dict[int, float] = {}
    count = 0
    for i in range(0, len(images), batch_size):
        model(_to_model_input(images[i:i + batch_size], img_size, rgb))
        for stage, c in model.cluster_counts().items():  # (blocks, B, heads)
            totals[stage] = totals.get(stage, 0.0) + float(c.float().mean(dim=(0, 2)).sum())
        count += len(images[i:i + batch_size])
    out = []
    for stage, info in enumerate(model.feature_info):
        tokens = 1 + (img_size // info['reduction']) ** 2
        out.append((totals[stage] / count if stage in totals else float('nan'), tokens))
    return out


def train(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, img_size: int, steps: int,
          batch_size: int, lr: float, seed: int) -> torch.nn.Module:
    """AdamW, one-cycle schedule, label smoothing 0.1, ``steps`` batches drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the redrawn hashes come from the global RNG
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(_to_model_input(images[idx], img_size, False)), labels[idx], label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, img_size: int,
             batch_size: int = 100) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((model(_to_model_input(images[i:i + batch_size], img_size, False)).argmax(1)
                        == labels[i:i + batch_size]).sum())
    return correct / len(images)


def _create(settings: Optional[str], img_size: int, **kwargs: Any) -> torch.nn.Module:
    cluster = dict(cluster_singleton=True) if settings is None else HASH_SETTINGS[settings]
    return timm.create_model(MODEL, img_size=img_size, **cluster, **kwargs)


def hash_study(data_dir: str, img_size: int = 64, train_size: int = 10000, test_size: int = 1000, steps: int = 150,
               batch_size: int = 32, lr: float = 1e-3, seed: int = 0, checkpoint: Optional[str] = None,
               pretrained: bool = False) -> List[Dict[str, Any]]:
    """The rows of the ``hash`` measurement (see the module docstring)."""
    test_x, test_y = load_fashion_mnist(data_dir, 'test', test_size)
    rows = []
    if checkpoint or pretrained:
        overlay = dict(file=str(checkpoint)) if checkpoint else None
        for name in HASH_SETTINGS:
            model = _create(name, img_size, pretrained=True, pretrained_cfg_overlay=overlay)
            rows.append(dict(trained='ImageNet-1k (' + (str(checkpoint) if checkpoint else 'Hub') + ')',
                             evaluated=name, top1=None, clusters=stage_clusters(model, test_x, img_size, rgb=True)))
        return rows
    train_x, train_y = load_fashion_mnist(data_dir, 'train', train_size)
    common = dict(num_classes=10, in_chans=1)
    for trained in (None, *HASH_SETTINGS):
        t0 = time.time()
        redraw = dict(cluster_redraw=True) if trained == 'act' else {}
        model = train(_create(trained, img_size, **common, **redraw), train_x, train_y, img_size, steps, batch_size,
                      lr, seed)
        train_s = time.time() - t0
        for evaluated in ((None, *HASH_SETTINGS) if trained is None else (trained,)):
            # the state dict holds no hashing state: the trained weights load into any setting strictly
            target = _create(evaluated, img_size, **common)
            target.load_state_dict(model.state_dict(), strict=True)
            rows.append(dict(trained=trained or 'none', evaluated=evaluated or 'none', train_s=round(train_s, 1),
                             top1=accuracy(target, test_x, test_y, img_size),
                             clusters=stage_clusters(target, test_x, img_size) if evaluated else None))
    return rows


def border_difference(num_iters: Sequence[int] = (1, 2, 3, 4), channels: int = 64, size: int = 28, batch: int = 8,
                      seed: int = 0, insets: Sequence[int] = (0, 1, 2, 3)) -> List[Dict[str, Any]]:
    """Per t: ``‖S_zero_pad − S_exclude‖ / ‖S_zero_pad‖`` over the super tokens at least k cells from the border,
    for each k in ``insets`` (k=0: all of them), on N(0, 1) features of ``channels`` x ``size`` x ``size``, 2x2
    cells."""
    x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))
    rows = []
    for t in num_iters:
        a = SuperTokenClustering(2, num_iters=t, border='zero_pad')(x)
        b = SuperTokenClustering(2, num_iters=t, border='exclude')(x)
        n = a.shape[-1]
        rel = {}
        for k in insets:
            if n - 2 * k > 0:
                inner = (slice(None), slice(None), slice(k, n - k), slice(k, n - k))
                rel[k] = float((a - b)[inner].norm() / a[inner].norm())
        rows.append(dict(num_iters=t, relative_difference=rel))
    return rows


def _format_hash(rows: List[Dict[str, Any]]) -> str:
    lines = ['| trained with | evaluated with | top-1 % | clusters / tokens per stage |', '|---|---|---:|---|']
    for r in rows:
        top1 = '—' if r['top1'] is None else f'{100 * r["top1"]:.2f}'
        cl = '—' if not r['clusters'] else ' · '.join(
            f'{c:.1f}/{t}' if c == c else f'-/{t}' for c, t in r['clusters'])
        lines.append(f'| {r["trained"]} | {r["evaluated"]} | {top1} | {cl} |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    sub = p.add_subparsers(dest='study', required=True)
    h = sub.add_parser('hash', help='clusters per stage and accuracy, our E2LSH settings vs ACT\'s code\'s')
    h.add_argument('--data-dir', required=True, help='folder of the Fashion-MNIST idx files')
    h.add_argument('--img-size', type=int, default=None, help='default 64 (trained here), 224 (ImageNet weights)')
    h.add_argument('--train-size', type=int, default=10000)
    h.add_argument('--test-size', type=int, default=1000)
    h.add_argument('--steps', type=int, default=150)
    h.add_argument('--batch-size', type=int, default=32)
    h.add_argument('--lr', type=float, default=1e-3)
    h.add_argument('--seed', type=int, default=0)
    h.add_argument('--checkpoint', default=None, help="timm's coat_lite_tiny ImageNet-1k weights (a local file)")
    h.add_argument('--pretrained', action='store_true', help="timm's coat_lite_tiny.in1k from the Hub")
    b = sub.add_parser('border', help="SuperTokenClustering: STViT's zero-padded border vs excluded")
    b.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', default=None, help='also write the rows and the environment to this file')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.study == 'hash':
        for name in ('train_size', 'test_size', 'steps', 'batch_size'):
            if getattr(args, name) < 1:
                p.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
        if args.checkpoint and not Path(args.checkpoint).is_file():
            p.error(f'--checkpoint {args.checkpoint}: no such file (give timm\'s coat_lite_tiny weights file)')
        img_size = args.img_size or (224 if args.checkpoint or args.pretrained else 64)
        try:
            rows = hash_study(args.data_dir, img_size, args.train_size, args.test_size, args.steps, args.batch_size,
                              args.lr, args.seed, args.checkpoint, args.pretrained)
        except ValueError as e:
            p.error(str(e))
        print(_format_hash(rows))
        settings = dict(vars(args), img_size=img_size)
    else:
        rows = border_difference(seed=args.seed)
        for r in rows:
            print(f't={r["num_iters"]}: ' + ', '.join(f'k>={k}: {100 * v:.2f} %'
                                                     for k, v in r['relative_difference'].items()))
        settings = vars(args)
    print(json.dumps(environment(torch.device('cpu'), settings), default=str))
    if args.json:
        text = json.dumps(dict(rows=rows, environment=environment(torch.device('cpu'), settings)), indent=1,
                          default=str)
        write_atomically(args.json, lambda tmp: tmp.write_text(text))
