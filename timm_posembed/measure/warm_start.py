""" Does a warm start from timm's ViT blocks help a COPE ViT on small data? A measurement.

Fine-tunes ``vit_tiny_cope`` on a small labelled set twice per random seed: once warm-started with
``load_timm_blocks`` (timm's blocks, COPE tables at their initialisation) and once from scratch (same seed, same
initialisation of everything not taken), and reports test accuracy.

Where timm's ImageNet weights are at hand, ``--timm-source vit_tiny_patch16_224.augreg_in21k_ft_in1k`` (optionally
``--timm-file`` for a local copy) warm-starts from them, with timm's loader adapting the position table and input
conv to the run's image size and channels. Where they are not (no Hub access), the source is a timm ViT of the same
width and depth that this script pretrains first on one Fashion-MNIST split (classes 0-4), and the fine-tuning runs on
the other (classes 5-9): a stand-in for ImageNet pretraining, labelled as such in every result.

    python benchmarks/warm_start_study.py --data-dir /usr/share/datasets/fashion-mnist --seeds 0 1
"""
import argparse
import gzip
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..models import load_timm_blocks
from .environment import environment
from .seed_spread import spread_verdict

__all__ = ['StudyConfig', 'class_split', 'pretrain_timm_vit', 'fine_tune', 'run_study', 'format_markdown', 'main']

TIMM_ARCH = 'vit_tiny_patch16_224'  # timm's ViT-Ti: the width of vit_tiny_cope
TARGET = 'vit_tiny_cope'


@dataclass(frozen=True)
class StudyConfig:
    img_size: int = 56  # Fashion-MNIST's 28 px upsampled
    patch_size: int = 8  # a 7x7 patch grid
    depth: int = 4
    pretrain_classes: Tuple[int, ...] = (0, 1, 2, 3, 4)
    finetune_classes: Tuple[int, ...] = (5, 6, 7, 8, 9)
    pretrain_per_class: int = 1000
    finetune_per_class: int = 100  # small data: what a warm start is for
    test_per_class: int = 200
    pretrain_epochs: int = 3
    finetune_epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    timm_source: Optional[str] = None  # timm's pretrained name; None: pretrain TIMM_ARCH here on pretrain_classes
    timm_file: Optional[str] = None  # a local copy of timm_source's weights

    def model_kwargs(self) -> Dict[str, Any]:
        return dict(img_size=self.img_size, patch_size=self.patch_size, depth=self.depth, in_chans=1)


def read_fashion_mnist(data_dir: str, train: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """The idx files (``train-*`` / ``t10k-*``, gzipped or not) as float images (N, 1, 28, 28) in [0, 1] and labels."""
    prefix = 'train' if train else 't10k'
    arrays = []
    for kind, offset in (('images-idx3-ubyte', 16), ('labels-idx1-ubyte', 8)):
        path = next((p for p in (Path(data_dir) / f'{prefix}-{kind}.gz', Path(data_dir) / f'{prefix}-{kind}')
                     if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f'{data_dir}: no {prefix}-{kind}[.gz] (the Fashion-MNIST idx files)')
        data = gzip.decompress(path.read_bytes()) if path.suffix == '.gz' else path.read_bytes()
        arrays.append(np.frombuffer(data, dtype=np.uint8, offset=offset))
    images = torch.from_numpy(arrays[0].copy()).view(-1, 1, 28, 28).float() / 255.0
    return images, torch.from_numpy(arrays[1].copy()).long()


def class_split(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int],
                per_class: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` images of each of ``classes``, labelled 0..len(classes)-1 in that order."""
    picked = [torch.nonzero(labels == c).flatten()[:per_class] for c in classes]
    index = torch.cat(picked)
    relabel = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(picked)])
    return images[index], relabel


def _prepared(images: torch.Tensor, size: int) -> torch.Tensor:
    x = F.interpolate(images, size=(size, size), mode='bilinear', align_corners=False)
    return (x - 0.2860) / 0.3530  # Fashion-MNIST's train mean / std


def _train(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: StudyConfig, epochs: int,
           seed: int) -> torch.nn.Module:
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    steps = max(1, epochs * (len(images) // cfg.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(len(images) // cfg.batch_size):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(_prepared(images[idx], cfg.img_size)), labels[idx], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: StudyConfig) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), 500):
        correct += (model(_prepared(images[i:i + 500], cfg.img_size)).argmax(1) == labels[i:i + 500]).sum().item()
    return correct / max(1, len(images))


def pretrain_timm_vit(images: torch.Tensor, labels: torch.Tensor, cfg: StudyConfig, seed: int,
                      out: Path) -> Tuple[Path, float]:
    """Train timm's ViT (``TIMM_ARCH`` at the study's size) on the pretraining split and save it as timm's weights
    file would hold it; returns the file and the seconds it took."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = timm.create_model(TIMM_ARCH, num_classes=len(cfg.pretrain_classes), **cfg.model_kwargs())
    _train(model, images, labels, cfg, cfg.pretrain_epochs, seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return out, time.perf_counter() - start


def _source(cfg: StudyConfig, pretrained_file: Optional[Path]) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """(timm name, pretrained_cfg_overlay, source_kwargs) for ``load_timm_blocks``."""
    if cfg.timm_source:  # timm's real weights: timm's loader adapts them to the run's size and channels
        overlay = dict(file=cfg.timm_file) if cfg.timm_file else {}
        return cfg.timm_source, overlay, dict(img_size=cfg.img_size, in_chans=1)
    assert pretrained_file is not None
    # the file is one-channel at the study's size: the overlay says so, so timm leaves its input conv as it is
    overlay = dict(file=str(pretrained_file), input_size=(1, cfg.img_size, cfg.img_size))
    return TIMM_ARCH, overlay, dict(num_classes=len(cfg.pretrain_classes), **cfg.model_kwargs())


def fine_tune(warm: bool, images: torch.Tensor, labels: torch.Tensor, cfg: StudyConfig, seed: int,
              pretrained_file: Optional[Path] = None, epochs: Optional[int] = None) -> torch.nn.Module:
    """``TARGET`` built with ``seed`` (so the warm and the scratch run start from the same initialisation of
    everything not taken from timm), warm-started or not, then trained on the fine-tuning split."""
    torch.manual_seed(seed)
    # with timm's real weights the model is timm's full depth and patch 16 (--img-size a multiple of 16)
    kwargs = cfg.model_kwargs() if not cfg.timm_source else dict(img_size=cfg.img_size, in_chans=1)
    model = timm.create_model(TARGET, num_classes=len(cfg.finetune_classes), **kwargs)
    if warm:
        source, overlay, source_kwargs = _source(cfg, pretrained_file)
        # the classifier is for the fine-tuning classes, not the pretraining ones, even where the counts agree
        load_timm_blocks(model, source, pretrained_cfg_overlay=overlay, source_kwargs=source_kwargs, keep=('head',),
                         verbose=False)
    return _train(model, images, labels, cfg, cfg.finetune_epochs if epochs is None else epochs, seed)


def run_study(cfg: StudyConfig, data_dir: str, seeds: Sequence[int], log=print) -> Dict[str, Any]:
    train_x, train_y = read_fashion_mnist(data_dir, True)
    test_x, test_y = read_fashion_mnist(data_dir, False)
    ft_x, ft_y = class_split(train_x, train_y, cfg.finetune_classes, cfg.finetune_per_class)
    te_x, te_y = class_split(test_x, test_y, cfg.finetune_classes, cfg.test_per_class)
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        pretrained_file, pretrain_s = None, None
        if not cfg.timm_source:
            pre_x, pre_y = class_split(train_x, train_y, cfg.pretrain_classes, cfg.pretrain_per_class)
            pretrained_file, pretrain_s = pretrain_timm_vit(pre_x, pre_y, cfg, 0, Path(tmp) / 'timm_vit.safetensors')
            log(f'pretrained {TIMM_ARCH} on classes {list(cfg.pretrain_classes)} in {pretrain_s:.0f} s')
        for seed in seeds:
            for warm in (True, False):
                start = time.perf_counter()
                model = fine_tune(warm, ft_x, ft_y, cfg, seed, pretrained_file)
                row = dict(start='warm' if warm else 'scratch', seed=seed, top1=100 * accuracy(model, te_x, te_y, cfg),
                           seconds=time.perf_counter() - start)
                log(json.dumps(row))
                rows.append(row)
    source = (f"timm's {cfg.timm_source}" if cfg.timm_source else
              f"timm's {TIMM_ARCH} (depth {cfg.depth}, patch {cfg.patch_size}, {cfg.img_size} px) pretrained here "
              f"for {cfg.pretrain_epochs} epochs on Fashion-MNIST classes {list(cfg.pretrain_classes)} "
              f"({cfg.pretrain_per_class}/class), a stand-in for timm's ImageNet weights")
    return dict(source=source, pretrain_seconds=pretrain_s, config=asdict(cfg), rows=rows)


def format_markdown(result: Dict[str, Any]) -> str:
    cfg = result['config']
    lines = [f"Warm start source: {result['source']}. Fine-tuned: {TARGET} on Fashion-MNIST classes "
             f"{cfg['finetune_classes']} ({cfg['finetune_per_class']}/class, {cfg['finetune_epochs']} epochs), tested "
             f"on {cfg['test_per_class']}/class of the test split.", '',
             '| start | seeds | top-1 per seed | mean |', '|---|---|---|---|']
    for start in ('warm', 'scratch'):
        rows = [r for r in result['rows'] if r['start'] == start]
        if rows:
            values = [r['top1'] for r in rows]
            lines.append(f"| {start} | {', '.join(str(r['seed']) for r in rows)} | "
                         f"{', '.join(f'{v:.1f}' for v in values)} | {sum(values) / len(values):.1f} |")
    verdict = spread_verdict([r['top1'] for r in result['rows'] if r['start'] == 'warm'],
                             [r['top1'] for r in result['rows'] if r['start'] == 'scratch'])
    if verdict:
        lines += ['', f'Warm minus scratch: {verdict} the seed-to-seed spread (the sum of the two standard '
                      'deviations).']
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--data-dir', required=True, help='folder with the Fashion-MNIST idx files')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--timm-source', default=None, help="timm's pretrained ViT to warm-start from (default: pretrain "
                                                       "one here on classes 0-4)")
    p.add_argument('--timm-file', default=None, help="a local copy of --timm-source's weights")
    defaults = StudyConfig()
    for name in ('depth', 'img_size', 'pretrain_per_class', 'finetune_per_class', 'test_per_class',
                 'pretrain_epochs', 'finetune_epochs', 'batch_size'):
        p.add_argument('--' + name.replace('_', '-'), type=int, default=getattr(defaults, name))
    p.add_argument('--lr', type=float, default=defaults.lr)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--json', default=None, help='also write the result here')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = StudyConfig(**{k: v for k, v in vars(args).items() if k in StudyConfig.__dataclass_fields__})
    result = run_study(cfg, args.data_dir, args.seeds)
    result['environment'] = environment(torch.device('cpu'), {'argv': sys.argv[1:] if argv is None else argv})
    print(format_markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result
