""" Position encodings side by side on one ViT: a study that can tell them apart.

Every row is the same timm ``VisionTransformer`` (same blocks, init, class token and head) and differs only in how
it encodes position:

* ``none``: no position encoding (``pos_embed='none'``);
* ``learned``: timm's learned absolute ``pos_embed``;
* ``cope_sum``: COPE as in Kim & Cho, `Image classification using vision transformers with complex positional
  embeddings` (``vit_tiny_cope`` defaults: multiplicative, Re + Im, p = token index);
* ``cope_grid``: COPE with ``cope_positions='grid'`` (row and column positions);
* ``cope_additive``: COPE with ``cope_mode='additive'``;
* ``rope``: 2D rotary embedding (Su et al., `RoFormer: Enhanced Transformer with Rotary Position Embedding`) on the
  same blocks: timm's ``Block`` with ``timm.layers.AttentionRope`` as its attention, fed by
  ``timm.layers.RotaryEmbeddingCat`` (axial, index positions); the rotary table has no parameters.

Paired design: for each random seed, every row starts from the *same* trunk weights (the no-PE model built under
that seed, copied into the row's model; only the encoding's own parameters are the row's), sees the same batches
in the same order and the same test images. ``build_row_model`` checks that the copied state covers everything but
the encoding's own parameters.

Each trained model is evaluated at the training size and, with no fine-tuning, at twice the side (images
upsampled, a grid of 2× the side: e.g. 7×7 → 14×14 patches), in two ways where the encoding allows it:

* *interpolated*: positions of the new grid mapped onto the trained range (learned PE: timm's bicubic resampling
  via ``dynamic_img_size=True``; COPE: ``cope_resize='interpolate'``; RoPE: ``ref_feat_shape`` = the training
  grid, so a 14×14 grid spans the 7×7 range);
* *extrapolated*: positions continued past the trained range (COPE: ``cope_resize='extrapolate'``; RoPE: integer
  patch indices 0..13, timm's Eva default). The learned table has no extrapolation; no PE has no positions.

Rows are compared by ``seed_spread.spread_verdict`` (mean ± std intervals overlap or not). The loop is
self-contained (AdamW through ``timm.optim.create_optimizer_v2``, warm-up then cosine schedule, label smoothing 0.1,
no augmentation) rather than timm's ``train.py``: the extrapolation evaluation needs the trained models in
memory, and a few thousand 28 px images train faster without a data loader.
"""
import argparse
import functools
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import timm
import timm.optim
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import AttentionRope, RotaryEmbeddingCat
from timm.models.vision_transformer import Block, VisionTransformer

from .. import models  # noqa: F401  (registers the COPE models with timm)
from .seed_spread import mean_std, spread_verdict

__all__ = [
    'PeRow', 'ROWS', 'StudyConfig', 'RopeBlock', 'VisionTransformerRope', 'build_row_model', 'evaluate',
    'run_study', 'summarize', 'markdown_table', 'main',
]


class RopeBlock(Block):
    """timm's ViT ``Block`` with ``AttentionRope`` as its attention: the same parameters (``attn.qkv``,
    ``attn.proj``, norms, MLP) under the same names; the forward takes the rotary table for the patch tokens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs['attn_layer'] = AttentionRope
        super().__init__(*args, **kwargs)

    def forward(
            self,
            x: torch.Tensor,
            rope: Optional[torch.Tensor] = None,
            attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), rope=rope, attn_mask=attn_mask)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


class VisionTransformerRope(VisionTransformer):
    """timm's ``VisionTransformer`` (``pos_embed='none'``) whose blocks are ``RopeBlock``: 2D axial rotary
    position embedding on the patch tokens' queries and keys (the class token is left unrotated, as
    ``AttentionRope`` does for its prefix tokens).

    rope_resize: on a grid other than the training one, ``'interpolate'`` maps the new grid onto the trained
        position range (``ref_feat_shape``), ``'extrapolate'`` continues the integer patch positions.
    rope_temperature: the rotary frequencies' base (timm's default 10000).
    """

    def __init__(
            self,
            *args: Any,
            rope_resize: str = 'extrapolate',
            rope_temperature: float = 10000.,
            **kwargs: Any,
    ) -> None:
        if rope_resize not in ('interpolate', 'extrapolate'):
            raise ValueError(f"rope_resize must be 'interpolate' or 'extrapolate', got {rope_resize!r}")
        if kwargs.pop('pos_embed', 'none') not in ('', 'none'):
            raise ValueError("VisionTransformerRope encodes position by rotation; pos_embed must be 'none'")
        kwargs['block_fn'] = RopeBlock
        super().__init__(*args, pos_embed='none', **kwargs)
        grid = list(self.patch_embed.grid_size)
        self.rope_resize = rope_resize
        # no parameters, no random draws: the trunk's weights and init are the plain ViT's
        self.rope = RotaryEmbeddingCat(
            dim=self.embed_dim // self.blocks[0].attn.num_heads,
            temperature=rope_temperature,
            in_pixels=False,
            # cached for the one grid, or (dynamic_img_size) built for each input's grid from the same bands
            feat_shape=None if self.dynamic_img_size else grid,
            ref_feat_shape=grid if rope_resize == 'interpolate' else None,
            device=kwargs.get('device', None),
        )

    def forward_features(
            self,
            x: torch.Tensor,
            attn_mask: Optional[torch.Tensor] = None,
            is_causal: bool = False,
    ) -> torch.Tensor:
        if is_causal:
            raise ValueError('VisionTransformerRope does not support is_causal')
        x = self.patch_embed(x)
        grid = list(x.shape[1:3]) if self.dynamic_img_size else list(self.patch_embed.grid_size)
        rope = self.rope.get_embed(shape=grid)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        for blk in self.blocks:
            x = blk(x, rope=rope, attn_mask=attn_mask)
        return self.norm(x)


@dataclass(frozen=True)
class PeRow:
    """One row: a model name (a timm registry name, or ``'rope'`` for ``VisionTransformerRope``), its kwargs,
    the state-dict prefixes of the encoding's own parameters, and the kwargs of each way to evaluate at a new
    grid (``{}`` when the way needs none; absent when the encoding has no such way)."""
    key: str
    label: str
    model: str
    kwargs: Mapping[str, Any]
    own_prefixes: Tuple[str, ...]
    resize_ways: Mapping[str, Mapping[str, Any]]


_VIT = 'vit_tiny_patch16_224'
_COPE_WAYS = {'interpolated': {'cope_resize': 'interpolate'}, 'extrapolated': {'cope_resize': 'extrapolate'}}
ROWS: Tuple[PeRow, ...] = (
    PeRow('none', 'no position encoding', _VIT, {'pos_embed': 'none'}, (), {'interpolated': {}}),
    PeRow('learned', "timm's learned PE", _VIT, {}, ('pos_embed',), {'interpolated': {}}),
    PeRow('cope_sum', "COPE (Kim & Cho's: sum, index positions)", 'vit_tiny_cope', {}, ('cope.',), _COPE_WAYS),
    PeRow('cope_grid', 'COPE, grid positions', 'vit_tiny_cope', {'cope_positions': 'grid'}, ('cope.',),
          _COPE_WAYS),
    PeRow('cope_additive', 'COPE, additive', 'vit_tiny_cope', {'cope_mode': 'additive'}, ('cope.',), _COPE_WAYS),
    PeRow('rope', '2D RoPE (AttentionRope + RotaryEmbeddingCat)', 'rope', {}, ('rope.',),
          {'interpolated': {'rope_resize': 'interpolate'}, 'extrapolated': {'rope_resize': 'extrapolate'}}),
)
_ROWS_BY_KEY = {row.key: row for row in ROWS}
BASELINE = 'learned'
WAYS = ('interpolated', 'extrapolated')


@dataclass
class StudyConfig:
    """The study's size. The defaults are the CPU run of benchmarks/RESULTS.md."""
    img_size: int = 28
    patch_size: int = 4
    embed_dim: int = 96
    depth: int = 4
    num_heads: int = 3
    eval_scale: int = 2
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    seeds: Sequence[int] = (0, 1, 2)
    rows: Sequence[str] = field(default_factory=lambda: [row.key for row in ROWS])

    def model_kwargs(self) -> Dict[str, Any]:
        return dict(img_size=self.img_size, patch_size=self.patch_size, embed_dim=self.embed_dim, depth=self.depth,
                    num_heads=self.num_heads, in_chans=1, num_classes=10, dynamic_img_size=True)


def _create(row: PeRow, cfg: StudyConfig, extra: Mapping[str, Any]) -> nn.Module:
    kwargs = dict(cfg.model_kwargs(), **row.kwargs, **extra)
    if row.model == 'rope':
        return VisionTransformerRope(**kwargs)
    return timm.create_model(row.model, **kwargs)


def build_row_model(row: PeRow, cfg: StudyConfig, seed: int, extra: Mapping[str, Any] = ()) -> nn.Module:
    """``row``'s model whose trunk is the no-PE model built under ``seed``; the encoding's own parameters are
    initialised by the row's own init under ``seed``. Raises if the shared state does not cover everything but
    the encoding's own parameters (the rows would then differ in more than the encoding)."""
    torch.manual_seed(seed)
    trunk = _create(_ROWS_BY_KEY['none'], cfg, {})
    torch.manual_seed(seed)
    model = _create(row, cfg, dict(extra))
    result = model.load_state_dict(trunk.state_dict(), strict=False)
    foreign = [k for k in result.missing_keys if not k.startswith(row.own_prefixes or ('\0',))]
    if result.unexpected_keys or foreign:
        raise RuntimeError(
            f'row {row.key!r} differs from the no-PE model in more than its position encoding: '
            f'unexpected {result.unexpected_keys}, missing {foreign}')
    return model


def _upsampled(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode='bilinear', align_corners=False)


def train_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: StudyConfig, seed: int) -> None:
    """Train in place: AdamW (timm's parameter groups: no weight decay on norms, biases and the encodings'
    ``no_weight_decay`` tables), linear warm-up over the first 10 % of the steps then cosine to 0, label
    smoothing 0.1; the batch order depends on ``seed`` only, so every row of a seed sees the same batches."""
    steps_per_epoch = len(images) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f'need at least batch_size={cfg.batch_size} training images, got {len(images)}')
    optimizer = timm.optim.create_optimizer_v2(model, 'adamw', lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, total // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(_upsampled(images[idx], cfg.img_size)), labels[idx], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, size: int,
             batch_size: int = 500) -> Tuple[float, int]:
    """(top-1 %, tokens per image that entered the blocks) at ``size`` px; images are upsampled bilinearly."""
    tokens = []
    hook = model.blocks[0].register_forward_pre_hook(lambda _m, args: tokens.append(args[0].shape[1]))
    model.eval()
    correct = 0
    try:
        for i in range(0, len(images), batch_size):
            logits = model(_upsampled(images[i:i + batch_size], size))
            correct += (logits.argmax(1) == labels[i:i + batch_size]).sum().item()
    finally:
        hook.remove()
    if len(set(tokens)) != 1:
        raise RuntimeError(f'token counts changed between batches: {sorted(set(tokens))}')
    return 100.0 * correct / len(images), tokens[0]


def run_study(
        cfg: StudyConfig,
        train_images: torch.Tensor,
        train_labels: torch.Tensor,
        test_images: torch.Tensor,
        test_labels: torch.Tensor,
        log: Callable[[str], None] = functools.partial(print, flush=True),
) -> List[Dict[str, Any]]:
    """Train every row under every seed; one record per (row, seed) with the top-1 at the training size and at
    ``eval_scale``× the side for each of the row's ways, the token counts, parameter count and wall times."""
    records = []
    big = cfg.img_size * cfg.eval_scale
    for seed in cfg.seeds:
        for key in cfg.rows:
            row = _ROWS_BY_KEY[key]
            start = time.perf_counter()
            model = build_row_model(row, cfg, seed)
            train_model(model, train_images, train_labels, cfg, seed)
            train_s = time.perf_counter() - start
            record = {'row': key, 'seed': seed, 'params': sum(p.numel() for p in model.parameters()),
                      'train_s': round(train_s, 1)}
            record['top1'], record['tokens'] = evaluate(model, test_images, test_labels, cfg.img_size)
            state = model.state_dict()
            for way, extra in row.resize_ways.items():
                # the trained weights in a model built with this way's kwargs (none of them is a parameter)
                evaluated = build_row_model(row, cfg, seed, extra)
                evaluated.load_state_dict(state, strict=True)
                record[f'top1_{way}'], record[f'tokens_{way}'] = evaluate(evaluated, test_images, test_labels, big)
            record['eval_s'] = round(time.perf_counter() - start - train_s, 1)
            records.append(record)
            log(json.dumps(record))
    return records


def _fmt(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return '—'
    return f'{mean:.2f} ± {std:.2f}' if std is not None else f'{mean:.2f}'


def summarize(records: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per row: the runs' values per column, mean ± std, and each column's difference from the learned-PE row
    with its spread verdict."""
    by_row: Dict[str, List[Mapping[str, Any]]] = {}
    for rec in records:
        by_row.setdefault(rec['row'], []).append(rec)
    columns = ['top1'] + [f'top1_{way}' for way in WAYS]
    base = by_row.get(BASELINE, [])
    out = []
    for row in ROWS:
        runs = by_row.get(row.key)
        if not runs:
            continue
        entry: Dict[str, Any] = {'row': row.key, 'label': row.label, 'n': len(runs),
                                 'params': runs[0]['params']}
        for col in columns:
            values = [r[col] for r in runs if col in r]
            base_values = [r[col] for r in base if col in r]
            entry[col] = values
            if values and base_values and row.key != BASELINE:
                delta = mean_std(values)[0] - mean_std(base_values)[0]
                entry[f'{col}_delta'] = delta
                entry[f'{col}_verdict'] = spread_verdict(values, base_values)
        out.append(entry)
    return out


def markdown_table(summary: Sequence[Mapping[str, Any]], cfg: StudyConfig) -> str:
    side, big = cfg.img_size // cfg.patch_size, cfg.img_size * cfg.eval_scale // cfg.patch_size
    head = (f'| Row | params | top-1 % at {cfg.img_size} px ({side}×{side}) | vs learned | '
            f'{cfg.img_size * cfg.eval_scale} px ({big}×{big}), interpolated | vs learned | '
            f'{cfg.img_size * cfg.eval_scale} px, extrapolated | n |')
    lines = [head, '|---|---:|---:|---|---:|---|---:|---:|']

    def delta(entry, col):
        if entry['row'] == BASELINE:
            return '(baseline)'
        if f'{col}_delta' not in entry:
            return '—'
        verdict = entry.get(f'{col}_verdict')
        return f"{entry[f'{col}_delta']:+.2f} ({verdict or 'no spread'})"

    for e in summary:
        lines.append(
            f"| {e['label']} | {e['params']:,} | {_fmt(e['top1'])} | {delta(e, 'top1')} | "
            f"{_fmt(e['top1_interpolated'])} | {delta(e, 'top1_interpolated')} | "
            f"{_fmt(e['top1_extrapolated'])} | {e['n']} |")
    return '\n'.join(lines)


def load_fashion_mnist(data_dir: str, train: bool, limit: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` images of a split (0: all), normalised, from torchvision's layout
    (``timm-posembed prepare fashion-mnist DST --layout torchvision``: ``DST/FashionMNIST/raw``)."""
    from torchvision.datasets import FashionMNIST
    try:
        ds = FashionMNIST(data_dir, train=train, download=False)
    except RuntimeError as e:
        raise SystemExit(f'--data-dir {data_dir}: no Fashion-MNIST in torchvision layout ({e}); make one with '
                         f'`timm-posembed prepare fashion-mnist DST --layout torchvision`') from None
    images, labels = ds.data, ds.targets
    if limit:
        images, labels = images[:limit], labels[:limit]
    images = images.to(torch.float32).unsqueeze(1) / 255.0
    return (images - 0.2860) / 0.3530, labels  # the Fashion-MNIST training set's mean and std


def main(argv: Optional[Sequence[str]] = None) -> None:
    d = StudyConfig()
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--data-dir', required=True, help='Fashion-MNIST in torchvision layout')
    p.add_argument('--train-limit', type=int, default=2000)
    p.add_argument('--test-limit', type=int, default=1000)
    p.add_argument('--rows', nargs='+', choices=[row.key for row in ROWS], default=list(d.rows))
    p.add_argument('--seeds', type=int, nargs='+', default=list(d.seeds))
    for name in ('img_size', 'patch_size', 'embed_dim', 'depth', 'num_heads', 'eval_scale', 'epochs',
                 'batch_size'):
        p.add_argument('--' + name.replace('_', '-'), type=int, default=getattr(d, name))
    p.add_argument('--lr', type=float, default=d.lr)
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--json', default=None, help='write the records and the summary here')
    args = p.parse_args(argv)
    if args.img_size % args.patch_size:
        p.error(f'--img-size {args.img_size} must be a multiple of --patch-size {args.patch_size}')
    torch.set_num_threads(args.threads)
    cfg = StudyConfig(img_size=args.img_size, patch_size=args.patch_size, embed_dim=args.embed_dim, depth=args.depth,
                      num_heads=args.num_heads, eval_scale=args.eval_scale, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seeds=args.seeds, rows=args.rows)
    train_x, train_y = load_fashion_mnist(args.data_dir, True, args.train_limit)
    test_x, test_y = load_fashion_mnist(args.data_dir, False, args.test_limit)
    start = time.perf_counter()
    records = run_study(cfg, train_x, train_y, test_x, test_y)
    summary = summarize(records)
    print(f'\n{len(train_x)} training images, {len(test_x)} test images, {time.perf_counter() - start:.0f} s\n')
    print(markdown_table(summary, cfg))
    if args.json:
        out = Path(args.json)
        payload = json.dumps({'config': asdict(cfg), 'records': records, 'summary': summary}, indent=2)
        with tempfile.NamedTemporaryFile('w', dir=out.parent, prefix=f'.{out.name}.', delete=False) as f:
            f.write(payload)
        os.replace(f.name, out)


if __name__ == '__main__':
    main()
