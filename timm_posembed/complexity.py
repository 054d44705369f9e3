""" Parameter and multiply-accumulate counts of a registered model, without allocating its weights.

Models are built on the ``meta`` device and run once under ``torch.utils.flop_counter.FlopCounterMode``, which
counts matmuls and convolutions (the operations timm's own GMAC figures count). Element-wise work such as
COPE's rotation or LSH hashing is not counted: where that matters (clustering CoaT) the model card adds it
by hand.
"""
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['Complexity', 'model_complexity']


@dataclass(frozen=True)
class Complexity:
    params: int
    gmacs: float
    input_size: Tuple[int, int, int]


def model_complexity(model_name: str, input_size: Optional[Tuple[int, int, int]] = None, **kwargs: Any) -> Complexity:
    """Params and GMACs of ``timm.create_model(model_name, **kwargs)`` for one image of ``input_size``
    (the model's pretrained-cfg input size by default)."""
    with torch.device('meta'):
        model = timm.create_model(model_name, **kwargs).eval()
    input_size = tuple(input_size or model.pretrained_cfg['input_size'])
    params = sum(p.numel() for p in model.parameters())
    with torch.device('meta'), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.empty(1, *input_size))
    return Complexity(params=params, gmacs=counter.get_total_flops() / 2e9, input_size=input_size)
