""" Size and cost of a registered model, as timm's model cards state them: parameters, GMACs, activations, and the
shapes of its outputs. One counter for every tool (``list``, ``bench``, ``report``, the Hub cards, the studies).

Measured, never typed in: one forward pass of one image at the model's input size under torch's
``FlopCounterMode`` and an activation counter, with attention computed by the math kernel so its matrix multiplies
are counted as timm's cards count them. "Activations" follows timm's cards (fvcore's convention): the output
elements of every convolution and matrix multiply. For ``resnet50`` / ``vit_base_patch16_224`` / ``coat_lite_tiny``
at 224 this gives timm's published 4.1 / 17.6 / 1.6 GMACs and 11.1 / 23.9 / 11.6 M activations. Element-wise work
(COPE's rotation, the clustering's sort and scatter) is not counted, as in timm's cards; the clustering's own
matrix multiplies are (see ``AdaptiveQueryClustering.macs``).

``model_complexity`` builds the model on the ``meta`` device (no weights allocated: fast for listings);
``measure_model`` measures a real model (the one being published) on its device and adds the feature-map shapes.
Both count the same operations, so their GMACs agree.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import timm
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['ModelStats', 'count_model', 'model_complexity', 'measure_model', 'model_input_size']


def model_input_size(model: nn.Module) -> Tuple[int, ...]:
    """(C, H, W) the model was built for, which ``img_size=`` / ``in_chans=`` kwargs change and its
    ``pretrained_cfg`` does not."""
    try:
        from timm.data import resolve_input_data_config  # timm >= 1.0.31
    except ImportError:
        pass
    else:
        return tuple(resolve_input_data_config(model)['input_size'])
    # Older timm: read what the model's embedding was built with. Every timm patch embedding (and ours) keeps the
    # image size it was built for as `img_size`; the first convolution or linear layer sees the input channels.
    size = next((tuple(m.img_size) for m in model.modules()
                 if isinstance(getattr(m, 'img_size', None), (tuple, list)) and len(m.img_size) == 2), None)
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    cfg_size = tuple(model.pretrained_cfg['input_size'])
    channels = first.in_channels if isinstance(first, nn.Conv2d) else cfg_size[0]
    return (channels, *(size or cfg_size[1:]))

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
    feature_shapes: List[Tuple[int, ...]]  # features_only=True outputs, batch 1 (empty unless asked for)

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def activations_m(self) -> float:
        return self.activations / 1e6


def count_model(model: nn.Module, input_size: Tuple[int, int, int]) -> Tuple[float, int, Tuple[int, ...]]:
    """(GMACs, activations, unpooled output shape) of one forward of ``model`` on one image of ``input_size``, on the
    model's device (``meta`` included). The model is put in eval mode for the count and back afterwards."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    x = torch.zeros((1, *input_size), device=device)
    activations = _ActivationCounter()
    was_training = model.training
    model.eval()
    try:
        # forward_features + forward_head is what every timm model's forward does; split to see the unpooled shape
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as flops, activations:
            unpooled = model.forward_features(x)
            model.forward_head(unpooled)
    finally:
        model.train(was_training)
    # FlopCounterMode counts a multiply-add as 2 FLOPs
    return flops.get_total_flops() / 2e9, activations.count, tuple(unpooled.shape)


def _stats(model: nn.Module, input_size: Tuple[int, int, int], feature_shapes: List[Tuple[int, ...]]) -> ModelStats:
    gmacs, activations, unpooled = count_model(model, input_size)
    return ModelStats(
        params=sum(p.numel() for p in model.parameters()), gmacs=gmacs, activations=activations,
        input_size=input_size, num_classes=model.num_classes, num_features=model.num_features,
        unpooled_shape=unpooled, feature_shapes=feature_shapes)


def model_complexity(model_name: str, input_size: Optional[Tuple[int, int, int]] = None, **kwargs: Any) -> ModelStats:
    """The stats of ``timm.create_model(model_name, **kwargs)`` built on the meta device (no weights allocated), for
    one image of ``input_size`` (the model's pretrained-cfg input size by default); no feature shapes."""
    with torch.device('meta'):
        model = timm.create_model(model_name, **kwargs)
    return _stats(model, tuple(input_size or model.pretrained_cfg['input_size']), [])


def measure_model(model_name: str, model: Optional[nn.Module] = None, **model_kwargs: Any) -> ModelStats:
    """The stats of ``model`` (the model built as ``timm.create_model(model_name, **model_kwargs)``; built on the
    CPU when not given) at its input size, with the shapes of its ``features_only=True`` outputs."""
    kwargs: Dict[str, Any] = {k: v for k, v in model_kwargs.items() if k not in ('pretrained', 'features_only')}
    if model is None:
        model = timm.create_model(model_name, pretrained=False, **kwargs)
    input_size = model_input_size(model)
    # every model of this package supports features_only (timm's features tests run on each), so a failure here is
    # a bug worth surfacing. On the CPU, not the meta device: the clustering layers run many small ops whose meta
    # kernels are slower than the real ones.
    features = timm.create_model(model_name, pretrained=False, features_only=True, **kwargs).eval()
    with torch.no_grad():
        feature_shapes = [tuple(f.shape) for f in features(torch.zeros((1, *input_size)))]
    return _stats(model, input_size, feature_shapes)
