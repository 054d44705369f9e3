""" Size and cost of a model as timm's model cards state them: params, GMACs, activations, output shapes.

Measured, never typed in: one forward pass of a batch of one image at the model's current input size under torch's
``FlopCounterMode`` (the counter ``timm_posembed.complexity`` uses for the benchmarks) and an activation counter,
with attention computed by the math kernel so its matrix multiplies are counted as timm's cards count them.
"Activations" follows timm's cards (fvcore's convention): the number of output elements of every convolution and
matrix multiply. For ``resnet50`` / ``vit_base_patch16_224`` / ``coat_lite_tiny`` at 224 this gives timm's published
4.1 / 17.6 / 1.6 GMACs and 11.1 / 23.9 / 11.6 M activations.

Real CPU tensors rather than the meta device: some of this package's layers (iterative clustering) run many small
ops whose meta kernels are slower than the real ones, and the numbers are the same.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch
from timm.data import resolve_input_data_config
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['ModelStats', 'measure_model']

_aten = torch.ops.aten
# The ops whose outputs count as activations (convolutions and matrix multiplies, as in fvcore / timm's cards).
_ACTIVATION_OPS = {
    _aten.convolution.default,
    _aten.mm.default,
    _aten.addmm.default,
    _aten.bmm.default,
    _aten.baddbmm.default,
}


class _ActivationCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _ACTIVATION_OPS:
            self.count += out.numel()
        return out


@dataclass(frozen=True)
class ModelStats:
    params: int
    gmacs: float
    activations: int
    input_size: Tuple[int, int, int]  # (C, H, W) the numbers were measured at
    num_classes: int
    num_features: int
    unpooled_shape: Tuple[int, ...]  # forward_features output, batch 1
    feature_shapes: List[Tuple[int, ...]]  # features_only=True outputs, batch 1

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def activations_m(self) -> float:
        return self.activations / 1e6


def measure_model(model_name: str, model: Optional[nn.Module] = None, **model_kwargs: Any) -> ModelStats:
    """Measure ``model`` (the model built as ``timm.create_model(model_name, **model_kwargs)``; built on the CPU
    when not given). The feature map shapes come from ``features_only=True`` built the same way."""
    kwargs: Dict[str, Any] = {k: v for k, v in model_kwargs.items() if k not in ('pretrained', 'features_only')}
    if model is None:
        model = timm.create_model(model_name, pretrained=False, **kwargs)
    was_training = model.training
    model.eval()
    input_size = tuple(resolve_input_data_config(model)['input_size'])
    device = next(model.parameters()).device
    x = torch.zeros((1, *input_size), device=device)
    activations = _ActivationCounter()
    try:
        # forward_features + forward_head is what every timm model's forward does; split to see the unpooled shape
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as flops, activations:
            unpooled = model.forward_features(x)
            model.forward_head(unpooled)
    finally:
        model.train(was_training)
    # every model of this package supports features_only (tests/test_timm_conformance.py runs timm's features tests on each), so a failure here is a bug worth surfacing
    features = timm.create_model(model_name, pretrained=False, features_only=True, **kwargs).eval()
    with torch.no_grad():
        feature_shapes = [tuple(f.shape) for f in features(x.to(next(features.parameters()).device))]
    return ModelStats(
        params=sum(p.numel() for p in model.parameters()),
        gmacs=flops.get_total_flops() / 2e9,  # FlopCounterMode counts a multiply-add as 2 FLOPs
        activations=activations.count,
        input_size=input_size,
        num_classes=model.num_classes,
        num_features=model.num_features,
        unpooled_shape=tuple(unpooled.shape),
        feature_shapes=feature_shapes,
    )
