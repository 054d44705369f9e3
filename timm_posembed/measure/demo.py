""" The ``timm-posembed demo`` job: every model beside its timm baseline, then a short visible training run.

Training data is generated, so the demo needs no download: each image is noise with one bright square, and the
label is the quadrant the square is in. Only *where* the square is decides the class, so a ViT without any
position information cannot beat chance (25%), which the demo shows with timm's ViT built with
``pos_embed='none'``; ViTs with a learned embedding or COPE, and the convolutional models, learn it.

Each row is trained with several seeds, and each model is compared with its timm baseline (from the model
catalog) by the report's rule: a difference is outside the seed-to-seed spread when the two rows' mean ± std
intervals do not overlap (``timm_posembed.measure.seed_spread``).
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F

from .seed_spread import mean_std

__all__ = ['QuadrantDataset', 'DemoRun', 'DemoRow', 'train_and_evaluate', 'training_rows', 'DEMO_MODELS',
           'NO_POSITION']

# The package's models the demo trains: the smallest of each family. Their baselines come from the model catalog.
DEMO_MODELS: Tuple[str, ...] = ('vit_tiny_cope', 'vit_tiny_supertoken_conv', 'coat_lite_clustering')
# The control row: COPE's baseline ViT with its position embedding removed.
NO_POSITION: Dict[str, str] = {'pos_embed': 'none'}


class QuadrantDataset:
    """Noise images with one bright square; the label is the quadrant (0..3) holding the square."""

    num_classes = 4

    def __init__(self, img_size: int = 32, square: int = 8, noise: float = 0.5, seed: int = 0) -> None:
        if img_size < 2 * square:
            raise ValueError(f'img_size ({img_size}) must be at least twice the square size ({square})')
        self.img_size, self.square, self.noise = img_size, square, noise
        self.generator = torch.Generator().manual_seed(seed)

    def batch(self, batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        g, s, half = self.generator, self.square, self.img_size // 2
        labels = torch.randint(0, 4, (batch_size,), generator=g)
        images = torch.randn(batch_size, 3, self.img_size, self.img_size, generator=g) * self.noise
        for i, label in enumerate(labels.tolist()):
            top = (label // 2) * half + int(torch.randint(0, half - s + 1, (1,), generator=g))
            left = (label % 2) * half + int(torch.randint(0, half - s + 1, (1,), generator=g))
            images[i, :, top:top + s, left:left + s] += 2.0
        return images, labels


@dataclass
class DemoRun:
    label: str
    params: int
    train_seconds: float
    final_loss: float
    accuracy: float
    seed: int = 0


@dataclass
class DemoRow:
    """One trained configuration: its runs (one per seed) and the row it is compared with."""
    model: str
    model_kwargs: Dict
    compared_with: Optional[Tuple[str, Tuple]] = None  # key of the baseline row, None for a baseline
    runs: List[DemoRun] = field(default_factory=list)

    @property
    def key(self) -> Tuple[str, Tuple]:
        return self.model, tuple(sorted(self.model_kwargs.items()))

    @property
    def label(self) -> str:
        kwargs = ','.join(f'{k}={v}' for k, v in self.model_kwargs.items())
        return self.model + (f'({kwargs})' if kwargs else '')

    def accuracies(self) -> List[float]:
        return [r.accuracy for r in self.runs]

    def mean_std(self) -> Tuple[float, Optional[float]]:
        return mean_std(self.accuracies())


def training_rows(models: Sequence[str] = DEMO_MODELS) -> List[DemoRow]:
    """Each model, then its timm baseline (the catalog's ``ModelInfo.baseline``; once, if models share it), then
    for COPE's baseline the same ViT without a position embedding, compared with the baseline."""
    from ..models import model_info
    rows: Dict[Tuple[str, Tuple], DemoRow] = {}
    for name in models:
        baseline = DemoRow(model_info(name).baseline, {})
        ours = DemoRow(name, {}, compared_with=baseline.key)
        rows.setdefault(ours.key, ours)
        rows.setdefault(baseline.key, baseline)
        if 'cope' in name:
            control = DemoRow(baseline.model, dict(NO_POSITION), compared_with=baseline.key)
            rows.setdefault(control.key, control)
    return list(rows.values())


def train_and_evaluate(
        model_name: str,
        model_kwargs: Optional[Dict] = None,
        img_size: int = 32,
        steps: int = 60,
        batch_size: int = 32,
        lr: float = 1e-3,
        eval_batches: int = 4,
        seed: int = 0,
        progress: Optional[Callable[[int, float], None]] = None,
) -> DemoRun:
    """Train ``model_name`` from scratch on ``QuadrantDataset`` with AdamW, return held-out accuracy."""
    torch.manual_seed(seed)
    model_kwargs = dict(model_kwargs or {})
    model = timm.create_model(model_name, num_classes=QuadrantDataset.num_classes, img_size=img_size, **model_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    train_data = QuadrantDataset(img_size, seed=seed)
    start = time.perf_counter()
    loss = torch.tensor(float('nan'))
    model.train()
    for step in range(steps):
        images, labels = train_data.batch(batch_size)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, loss.item())
    seconds = time.perf_counter() - start

    model.eval()
    test_data = QuadrantDataset(img_size, seed=seed + 1000)
    correct = total = 0
    with torch.no_grad():
        for _ in range(eval_batches):
            images, labels = test_data.batch(batch_size)
            correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.numel()
    kwargs_text = ','.join(f'{k}={v}' for k, v in model_kwargs.items())
    return DemoRun(
        label=model_name + (f'({kwargs_text})' if kwargs_text else ''),
        params=sum(p.numel() for p in model.parameters()),
        train_seconds=seconds,
        final_loss=loss.item(),
        accuracy=correct / total,
        seed=seed,
    )
