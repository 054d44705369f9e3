""" What each registered model of this package is: its timm baseline, the paper it comes from, and how to tell a
checkpoint of its family.

Public metadata for the CLI (list, demo, bench), the Hub cards and the benchmarks, so none of them needs to look
inside a model. Each model module declares its entries next to its entrypoints.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from ._papers import Paper

__all__ = ['ModelInfo', 'CheckpointDescriber', 'declare_models', 'model_info', 'list_model_info',
           'checkpoint_describers']

# Reads a state dict's keys and shapes and returns, when they are a checkpoint of its family, ``{'family': words,
# **create_model arguments it can read off}``; None otherwise. Never raises on foreign input.
CheckpointDescriber = Callable[[Mapping[str, torch.Tensor]], Optional[Dict[str, Any]]]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    baseline: str  # the timm model the paper compares against (same width/depth, timm's own embedding/attention)
    paper: Paper  # the family's paper constant (models/_papers.py), which also feeds its pretrained cfgs
    # How to tell a checkpoint of this model's family (the builder's "this checkpoint is a ..." errors), and of its
    # baseline's layout where that differs (a timm ViT checkpoint loaded into a COPE ViT, say). Families are asked
    # before baselines, so a family's describer only claims its own layers.
    describe_checkpoint: Optional[CheckpointDescriber] = None
    describe_baseline_checkpoint: Optional[CheckpointDescriber] = None
    # State-dict prefixes of the embedding this family puts in place of its baseline's: a warm start from timm's
    # weights (``load_timm_blocks``) leaves them at their initialisation even where a name and shape coincide.
    new_embedding: Tuple[str, ...] = ()


_CATALOG: Dict[str, ModelInfo] = {}


def declare_models(*infos: ModelInfo) -> None:
    for info in infos:
        _CATALOG[info.name] = info


def model_info(name: str) -> ModelInfo:
    arch = name.split('.')[0]
    if arch not in _CATALOG:
        raise KeyError(f'{name!r} is not a timm_posembed model; known: {sorted(_CATALOG)}')
    return _CATALOG[arch]


def list_model_info() -> List[ModelInfo]:
    return [_CATALOG[k] for k in sorted(_CATALOG)]


def checkpoint_describers() -> List[CheckpointDescriber]:
    """Every family's describer, then every baseline's, each once, in the order the model modules declared them."""
    families = [i.describe_checkpoint for i in _CATALOG.values() if i.describe_checkpoint is not None]
    baselines = [i.describe_baseline_checkpoint for i in _CATALOG.values() if i.describe_baseline_checkpoint]
    return list(dict.fromkeys(families + baselines))
