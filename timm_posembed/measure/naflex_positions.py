""" Which position embedding carries a NaFlex ViT to image sizes and aspect ratios it was not trained on?

Trains, on the same Fashion-MNIST images at a mix of sizes and aspect ratios, NaFlex ViTs that differ only in the
position embedding: ``naflexvit_tiny_patch16_cope`` (COPE, grid positions) and timm's ``NaFlexVit`` with its learned
and factorized position embeddings and with axial RoPE, all of the same width, depth, heads and patch size, with
class-token pooling, no registers and no layer scale (timm builds its RoPE models from its EVA blocks, which differ
from ViT blocks in nothing that holds parameters here). Each batch packs images of several sizes,
padded and masked as timm's NaFlex loader packs them (``patches``, ``patch_coord``, ``patch_valid``). Test accuracy
is reported at each training size and at sizes and aspect ratios that were not trained on.

Data: torchvision's ``FashionMNIST`` (``--data-dir`` holds ``FashionMNIST/raw``, e.g. the gunzipped files of Debian's
``dataset-fashion-mnist``), upsampled bilinearly from 28x28 to each size.

    python benchmarks/naflex_positions_study.py --data-dir DST --threads 1 --limit 6000 --test-limit 2000
"""
import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F
from timm.models.naflexvit import NaFlexVit, NaFlexVitCfg, batch_patchify

from .. import models  # noqa: F401  (registers the models)
from .cope_resize import load_split

Size = Tuple[int, int]

TRAIN_SIZES: Tuple[Size, ...] = ((32, 32), (32, 48), (48, 32), (48, 48))
EVAL_SIZES: Tuple[Size, ...] = TRAIN_SIZES + ((24, 24), (64, 64), (32, 64), (64, 32), (40, 72))

# (label, model, kwargs): the NaFlex models differ only in the position embedding. timm's baselines are its NaFlexVit
# class built from a NaFlexVitCfg: timm.create_model drops None-valued kwargs, so init_values=None could not turn
# off the layer scale of timm's registered naflexvit_* configurations.
TIMM_NAFLEX = 'NaFlexVit'
VARIANTS: Tuple[Tuple[str, str, Dict[str, object]], ...] = (
    ("COPE (grid positions, cope_resize='interpolate')", 'naflexvit_tiny_patch16_cope', {}),
    ("COPE (grid positions, cope_resize='extrapolate')", 'naflexvit_tiny_patch16_cope',
     {'cope_resize': 'extrapolate'}),
    ('timm learned pos_embed', TIMM_NAFLEX, {'pos_embed': 'learned'}),
    ('timm factorized pos_embed', TIMM_NAFLEX, {'pos_embed': 'factorized'}),
    ('timm axial RoPE', TIMM_NAFLEX, {'pos_embed': 'none', 'rope_type': 'axial'}),
)
# the COPE models' architecture (a ViT's), less the position embedding
TIMM_AS_COPE_VIT = dict(class_token=True, reg_tokens=0, global_pool='token', fc_norm=False, init_values=None)


def create_variant(model_name: str, kwargs: Dict[str, object], embed_dim: int, depth: int, num_heads: int,
                   patch_size: int, grid: Size) -> torch.nn.Module:
    arch = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=patch_size,
                pos_embed_grid_size=grid)
    if model_name == TIMM_NAFLEX:
        return NaFlexVit(NaFlexVitCfg(**arch, **TIMM_AS_COPE_VIT, **kwargs), num_classes=10, in_chans=1)
    return timm.create_model(model_name, num_classes=10, in_chans=1, **arch, **kwargs)


def naflex_batch(images: torch.Tensor, sizes: Sequence[Size], patch_size: int) -> Dict[str, torch.Tensor]:
    """``images`` ``(B, C, h, w)`` resized, image ``i`` to ``sizes[i]`` (bilinear), cut into patches and packed as
    timm's NaFlex loader packs them: ``patches`` ``(B, N, P*P*C)`` (row, column, channel inside a patch),
    ``patch_coord`` ``(B, N, 2)`` (row, column), ``patch_valid`` ``(B, N)``, padding after each image's patches."""
    per_image = []
    for image, size in zip(images, sizes):
        x = F.interpolate(image[None], size=tuple(size), mode='bilinear', align_corners=False)
        patches, (gh, gw) = batch_patchify(x, (patch_size, patch_size))
        coord = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing='ij'), -1).reshape(-1, 2)
        per_image.append((patches[0], coord))
    longest = max(p.shape[0] for p, _ in per_image)
    batch, dim = len(per_image), per_image[0][0].shape[1]
    patches = images.new_zeros(batch, longest, dim)
    coord = torch.zeros(batch, longest, 2, dtype=torch.long)
    valid = torch.zeros(batch, longest, dtype=torch.bool)
    for i, (p, c) in enumerate(per_image):
        patches[i, :len(p)], coord[i, :len(p)], valid[i, :len(p)] = p, c, True
    return {'patches': patches, 'patch_coord': coord.to(images.device), 'patch_valid': valid.to(images.device)}


def train(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, sizes: Sequence[Size], epochs: int,
          batch_size: int, lr: float, patch_size: int, seed: int) -> torch.nn.Module:
    """AdamW + one-cycle; every image of every batch at a size drawn from ``sizes`` (a seeded draw)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = max(1, epochs * (len(images) // batch_size))
    # a warm-up of 10% (2 steps at least: OneCycleLR divides by the warm-up's length less one)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps + 2, pct_start=min(0.5, max(0.1, 3 / (steps + 2))))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(len(images) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            drawn = torch.randint(len(sizes), (len(idx),), generator=generator)
            batch = naflex_batch(images[idx], [sizes[j] for j in drawn], patch_size)
            loss = F.cross_entropy(model(batch), labels[idx], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, size: Size, patch_size: int,
             batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        batch = naflex_batch(chunk, [size] * len(chunk), patch_size)
        correct += (model(batch).argmax(1) == labels[i:i + batch_size]).sum().item()
    return correct / len(images)


def _size_name(size: Size) -> str:
    return f'{size[0]}x{size[1]}'


def run_study(data_dir: str, limit: int, test_limit: int, epochs: int, batch_size: int, lr: float, embed_dim: int,
              depth: int, num_heads: int, patch_size: int, seed: int, variants=VARIANTS,
              train_sizes: Sequence[Size] = TRAIN_SIZES, eval_sizes: Sequence[Size] = EVAL_SIZES) -> List[dict]:
    device = torch.device('cpu')
    train_x, train_y = load_split(data_dir, True, device)
    test_x, test_y = load_split(data_dir, False, device)
    train_x, train_y = train_x[:limit or None], train_y[:limit or None]
    test_x, test_y = test_x[:test_limit or None], test_y[:test_limit or None]
    grid = (max(s[0] for s in train_sizes) // patch_size, max(s[1] for s in train_sizes) // patch_size)
    rows = []
    for label, name, kwargs in variants:
        torch.manual_seed(seed)
        model = create_variant(name, dict(kwargs), embed_dim, depth, num_heads, patch_size, grid)
        start = time.perf_counter()
        train(model, train_x, train_y, train_sizes, epochs, batch_size, lr, patch_size, seed)
        row = {'variant': label, 'model': name, 'kwargs': dict(kwargs),
               'params': sum(p.numel() for p in model.parameters()), 'train_s': round(time.perf_counter() - start)}
        for size in eval_sizes:
            row[_size_name(size)] = accuracy(model, test_x, test_y, size, patch_size)
        rows.append(row)
        print(row, flush=True)
    return rows


def format_table(rows: List[dict], train_sizes: Sequence[Size] = TRAIN_SIZES,
                 eval_sizes: Sequence[Size] = EVAL_SIZES) -> str:
    names = [_size_name(s) for s in eval_sizes]
    trained = {_size_name(s) for s in train_sizes}
    header = ['position embedding', 'params'] + [f'{n}{"" if n in trained else " *"}' for n in names]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        cells = [row['variant'], f"{row['params']:,}"] + [f'{100 * row[n]:.2f}' for n in names]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--data-dir', required=True)
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--limit', type=int, default=0, help='use only this many training images (0 = all)')
    p.add_argument('--test-limit', type=int, default=0, help='evaluate on only this many test images (0 = all)')
    p.add_argument('--embed-dim', type=int, default=96)
    p.add_argument('--depth', type=int, default=4)
    p.add_argument('--num-heads', type=int, default=3)
    p.add_argument('--patch-size', type=int, default=8)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = torch default)')
    p.add_argument('--only', type=int, nargs='*', default=None, help='run only these variants (0-based)')
    p.add_argument('--json', default=None, help='also write the results here')
    args = p.parse_args(argv)
    if args.only is not None and any(not 0 <= i < len(VARIANTS) for i in args.only):
        p.error(f'--only takes variant numbers 0..{len(VARIANTS) - 1}: '
                + ', '.join(f'{i} = {label}' for i, (label, _, _) in enumerate(VARIANTS)))
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = VARIANTS if args.only is None else tuple(VARIANTS[i] for i in args.only)
    rows = run_study(args.data_dir, args.limit, args.test_limit, args.epochs, args.batch_size, args.lr,
                     args.embed_dim, args.depth, args.num_heads, args.patch_size, args.seed, variants)
    print(f'\nFashion-MNIST test top-1 (%), {args.test_limit or "all"} test images; trained {args.epochs} epochs on '
          f'{args.limit or "all"} images at {", ".join(map(_size_name, TRAIN_SIZES))} px (mixed in each batch); '
          f'* = a size not trained on\n')
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
