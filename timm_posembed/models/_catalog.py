""" What each registered model of this package is: its timm baseline and the paper it comes from.

Public metadata for the CLI (list, demo, bench), the Hub cards and the benchmarks, so none of them needs to look
inside a model. Each model module declares its entries next to its entrypoints.
"""
from dataclasses import dataclass
from typing import Dict, List

from ._papers import Paper

__all__ = ['ModelInfo', 'declare_models', 'model_info', 'list_model_info']


@dataclass(frozen=True)
class ModelInfo:
    name: str
    baseline: str  # the timm model the paper compares against (same width/depth, timm's own embedding/attention)
    paper: Paper  # the family's paper constant (models/_papers.py), which also feeds its pretrained cfgs


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
