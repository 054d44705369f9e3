""" Warm start from timm's pretrained ViTs: timm's blocks under this package's embeddings.

``load_timm_blocks(model, 'vit_small_patch16_224.augreg_in21k_ft_in1k')`` builds timm's model with timm's own
pretrained loading (``timm.create_model(source, pretrained=True)``: the Hugging Face Hub, its local cache, or a local
file through ``pretrained_cfg_overlay=dict(file=...)``), and copies every tensor whose name and shape fit into
``model``. The embedding the family puts in place of timm's (``ModelInfo.new_embedding``: COPE's tables, the
super-token or EarlyConv stem) keeps its initialisation; tensors whose shapes differ (a classifier for another class
count, say) are left as they are. The call returns, and prints, what was taken and what was left.

The same start is registered as pretrained tags of their own, ``<model>.timm_blocks_<timm tag>``
(``vit_tiny_cope.timm_blocks_augreg_in21k_ft_in1k``), whose cfg says "blocks from timm's X, embedding untrained":
``timm.create_model(that_name, pretrained=True)`` and ``train.py --model that_name --pretrained`` start there. Such a
tag names timm's weights, not trained weights of this package's model, so ``timm-posembed publish`` refuses it.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import timm
import torch
from timm.models import build_model_with_cfg, get_pretrained_cfg, resolve_pretrained_cfg, split_model_name_tag

from .._checks import few_names
from ._builder import (
    _UNAVAILABLE_ERRORS, CheckpointMismatchError, PretrainedWeightsUnavailableError,
    build_with_helpful_pretrained_errors,
)
from ._catalog import model_info

__all__ = [
    'TIMM_BLOCKS_TAG_PREFIX', 'TimmBlocksResult', 'load_timm_blocks', 'timm_blocks_cfg', 'timm_blocks_source',
    'timm_blocks_tag_refusal', 'build_with_timm_blocks',
]

TIMM_BLOCKS_TAG_PREFIX = 'timm_blocks_'
_TIMM_HUB_ORG = 'timm/'  # timm's own weights live at hf-hub:timm/<model>.<tag>


@dataclass(frozen=True)
class TimmBlocksResult:
    """What ``load_timm_blocks`` copied into the model (``taken``), what it left at the model's own values (``left``,
    each with the reason in ``why_left``) and which of timm's tensors had no place in the model (``unused``)."""
    source: str  # timm's model name, and where its weights came from
    taken: Tuple[str, ...]
    left: Tuple[str, ...]
    why_left: Mapping[str, str] = field(default_factory=dict)
    unused: Tuple[str, ...] = ()

    def summary(self) -> str:
        lines = [f'Warm start from {self.source}: took {len(self.taken)} tensors '
                 f'({_grouped(self.taken)}); left {len(self.left)} at the model\'s own initialisation:']
        lines += [f'  {k}: {self.why_left.get(k, "")}' for k in self.left]
        if self.unused:
            lines.append(f'  unused from timm\'s checkpoint: {few_names(list(self.unused), 8)}')
        return '\n'.join(lines)


def _grouped(keys: Tuple[str, ...]) -> str:
    # 'blocks.0-11 (144), cls_token, norm (2), ...': a summary a reader can scan, whatever the depth.
    groups: Dict[str, int] = {}
    blocks = sorted({int(k.split('.')[1]) for k in keys if k.startswith('blocks.') and k.split('.')[1].isdigit()})
    for k in keys:
        head = 'blocks' if k.startswith('blocks.') else k.rsplit('.', 1)[0] if '.' in k else k
        groups[head] = groups.get(head, 0) + 1
    parts = []
    for head, n in groups.items():
        name = f'blocks.{blocks[0]}-{blocks[-1]}' if head == 'blocks' and blocks else head
        parts.append(f'{name} ({n})' if n > 1 else name)
    return ', '.join(parts) or 'none'


def _where(source: str, overlay: Mapping[str, Any]) -> str:
    if overlay.get('file'):
        return f"timm's {source} (weights from the file {overlay['file']})"
    if overlay.get('hf_hub_id'):
        return f"timm's {source} (weights from hf-hub:{overlay['hf_hub_id']})"
    return f"timm's {source}"


def _check_local_file(overlay: Mapping[str, Any]) -> None:
    file = overlay.get('file')
    if file is None:
        return
    path = Path(str(file))
    if not path.is_file():
        what = 'a folder' if path.is_dir() else 'missing'
        raise PretrainedWeightsUnavailableError(
            f'pretrained_cfg_overlay file={str(file)!r}: {what}; give a timm checkpoint file (.safetensors, or a .pth '
            f'that torch.load(weights_only=True) reads)')


def _timm_state_dict(source: str, overlay: Dict[str, Any],
                     source_kwargs: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], Tuple[str, ...]]:
    """The tensors of timm's ``source`` that come from its checkpoint, loaded by timm (its own filter adapts the
    position table to ``img_size`` and the input conv to ``in_chans``), and the names of those timm did not load."""
    where = _where(source, overlay)
    _check_local_file(overlay)
    if 'num_classes' in source_kwargs:
        # the checkpoint's class count: timm then loads its classifier too, instead of dropping it for a fresh one
        overlay.setdefault('num_classes', source_kwargs['num_classes'])
    if overlay.get('file') and not str(overlay['file']).endswith('.npz'):
        # timm's augreg cfgs (timm < 1.0.31) set custom_load, which sends a local file to the .npz reader; a
        # .safetensors / .pth file is a state dict, for timm's load_state_dict.
        overlay.setdefault('custom_load', False)
    try:
        timm_model = timm.create_model(source, pretrained=True, pretrained_cfg_overlay=overlay or None, **source_kwargs)
    except _UNAVAILABLE_ERRORS as e:
        hint = ('; download them once where the Hub is reachable (they stay in the Hugging Face cache), or pass '
                "pretrained_cfg_overlay=dict(file='/path/to/model.safetensors')") if not overlay.get('file') else ''
        raise PretrainedWeightsUnavailableError(
            f'{where}: the weights could not be loaded ({type(e).__name__}: {_first_line(e)}){hint}') from e
    except RuntimeError as e:
        if 'Unknown model' in str(e):
            raise ValueError(f'{source!r} is not a timm model name: {_first_line(e)}') from e
        if 'state_dict' not in str(e):
            raise PretrainedWeightsUnavailableError(
                f'{where}: not a checkpoint timm could read ({type(e).__name__}: {_first_line(e)})') from e
        raise CheckpointMismatchError(
            f'{where}: the checkpoint does not fit timm\'s {split_model_name_tag(source)[0]} built with '
            f'{source_kwargs or "its default arguments"} ({_clipped(e)}); pass source_kwargs= with the arguments '
            f'it was trained with (depth=, embed_dim=, num_heads=, img_size=, patch_size=, num_classes=)') from e
    except Exception as e:  # a file that is no checkpoint: safetensors' and pickle's own errors, named here
        if not overlay.get('file'):
            raise
        raise PretrainedWeightsUnavailableError(
            f'{where}: not a checkpoint timm could read ({type(e).__name__}: {_first_line(e)}); give a .safetensors '
            f'file or a .pth that torch.load(weights_only=True) reads') from e
    state_dict = timm_model.state_dict()
    cfg = timm_model.pretrained_cfg
    # timm drops the classifier from the checkpoint when the model is built for another class count than the cfg's
    # (train.py's --pretrained-path asks for that with num_classes=-1): that head is timm's fresh initialisation, not
    # its weights, so it is not offered.
    not_loaded: Tuple[str, ...] = ()
    if timm_model.num_classes != cfg.get('num_classes'):
        classifier = cfg.get('classifier') or 'head'
        names = [classifier] if isinstance(classifier, str) else list(classifier)
        not_loaded = tuple(k for k in state_dict if any(k == n or k.startswith(n + '.') for n in names))
        state_dict = {k: v for k, v in state_dict.items() if k not in not_loaded}
    return state_dict, not_loaded


def _clipped(e: BaseException, limit: int = 400) -> str:
    # torch's load_state_dict lists every missing key; the first few say what is wrong
    text = ' '.join(str(e).split())
    return text if len(text) <= limit else text[:limit] + ' ...'


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else '(no message)'


def _new_embedding(model: torch.nn.Module) -> Tuple[str, ...]:
    arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture')
    try:
        return tuple(model_info(arch).new_embedding) if arch else ()
    except KeyError:  # a model of timm's own, or of another plugin: only names and shapes decide
        return ()


def load_timm_blocks(
        model: torch.nn.Module,
        source: str,
        *,
        pretrained_cfg_overlay: Optional[Mapping[str, Any]] = None,
        source_kwargs: Optional[Mapping[str, Any]] = None,
        keep: Sequence[str] = (),
        verbose: bool = True,
) -> TimmBlocksResult:
    """Copy the tensors of timm's pretrained ``source`` (``'vit_small_patch16_224.augreg_in21k_ft_in1k'``) that fit
    ``model`` into it, in place.

    Args:
        model: the model to warm-start (one of this package's ViTs, or any model with timm's ViT names).
        source: a timm model name with its pretrained tag, loaded with timm's own pretrained loading.
        pretrained_cfg_overlay: passed to timm for the source, e.g. ``dict(file='vit_small.safetensors')`` for a local
            copy of timm's weights (read as safetensors or with ``torch.load(weights_only=True)``).
        source_kwargs: arguments for ``timm.create_model(source, ...)``: what the checkpoint was trained with when it
            is not the name's default (``depth=``, ``img_size=``, ``num_classes=``), or ``img_size``/``in_chans``
            of ``model`` so that timm adapts its position table and input conv the way its own loader does.
        keep: names (or prefixes, ``'head'``) of ``model``'s tensors to leave as they are even where timm's fit: a
            classifier for other classes of the same count, say.
        verbose: print the summary.

    A tensor is taken when ``model`` has a tensor of the same name and shape and it is not part of the embedding
    the model's family puts in place of timm's (``ModelInfo.new_embedding``); every other tensor of ``model`` is
    left as it was, and the result says why. Raises ``CheckpointMismatchError`` when nothing fits.
    """
    overlay = dict(pretrained_cfg_overlay or {})
    timm_sd, not_loaded = _timm_state_dict(source, overlay, dict(source_kwargs or {}))
    where = _where(source, overlay)
    new_embedding = _new_embedding(model)
    own = model.state_dict()
    taken: Dict[str, torch.Tensor] = {}
    why_left: Dict[str, str] = {}
    for key, tensor in own.items():
        theirs = timm_sd.get(key)
        if any(key == p or key.startswith(p + '.') for p in new_embedding):
            why_left[key] = 'the new embedding: keeps its initialisation'
        elif any(key == p or key.startswith(p + '.') for p in keep):
            why_left[key] = 'kept by the caller (keep=)'
        elif key in not_loaded:
            why_left[key] = ('timm\'s classifier, which timm did not load: its model was built for another class '
                             'count than its cfg\'s (num_classes=-1 asks for that)')
        elif theirs is None:
            why_left[key] = 'not in timm\'s checkpoint'
        elif tuple(theirs.shape) != tuple(tensor.shape):
            why_left[key] = f'shape {tuple(theirs.shape)} in timm\'s checkpoint vs {tuple(tensor.shape)} here'
        else:
            taken[key] = theirs.to(dtype=tensor.dtype, device=tensor.device)
    if not any(k for k in taken if k in dict(model.named_parameters())):
        raise CheckpointMismatchError(
            f'{where}: no tensor fits {type(model).__name__} (names or shapes differ everywhere, e.g. '
            f'{few_names([f"{k}: {v}" for k, v in why_left.items()], 3)}); warm-start from a timm ViT of the same '
            f'width (embed_dim {getattr(model, "embed_dim", "?")})')
    missing, unexpected = model.load_state_dict(taken, strict=False)
    assert not unexpected and set(missing) <= set(why_left), (missing, unexpected)  # taken names are the model's own
    result = TimmBlocksResult(
        source=where, taken=tuple(taken), left=tuple(why_left), why_left=why_left,
        unused=tuple(k for k in timm_sd if k not in taken))
    if verbose:
        print(result.summary())
    return result


def timm_blocks_cfg(source: str, model_name: str, make_cfg: Callable[..., Dict[str, Any]]) -> Dict[str, Any]:
    """The pretrained cfg of ``model_name.timm_blocks_<tag of source>``: timm's weights of ``source`` at its
    ``hf_hub_id``, its input normalisation and class count (so its head fits), labelled as a warm start."""
    timm_cfg = get_pretrained_cfg(source)
    if timm_cfg is None or not (timm_cfg.hf_hub_id or '').startswith(_TIMM_HUB_ORG):
        raise ValueError(f'{source!r} is not a timm pretrained tag with weights on hf-hub:timm/')
    return make_cfg(
        hf_hub_id=timm_cfg.hf_hub_id,
        num_classes=timm_cfg.num_classes,
        input_size=timm_cfg.input_size,
        mean=timm_cfg.mean,
        std=timm_cfg.std,
        crop_pct=timm_cfg.crop_pct,
        interpolation=timm_cfg.interpolation,
        description=(f"Blocks from timm's {source}, embedding untrained: a warm start to fine-tune, not trained "
                     f"weights of {model_name}"),
    )


def timm_blocks_tag(source: str) -> str:
    """``timm_blocks_augreg_in21k_ft_in1k`` for ``vit_small_patch16_224.augreg_in21k_ft_in1k``."""
    return TIMM_BLOCKS_TAG_PREFIX + split_model_name_tag(source)[1]


def timm_blocks_source(cfg: Mapping[str, Any]) -> Optional[str]:
    """timm's model name whose blocks a resolved pretrained ``cfg`` starts from; None for trained weights."""
    tag, hub = cfg.get('tag') or '', cfg.get('hf_hub_id') or ''
    if tag.startswith(TIMM_BLOCKS_TAG_PREFIX) and hub.startswith(_TIMM_HUB_ORG):
        return hub[len(_TIMM_HUB_ORG):]
    return None


def timm_blocks_tag_refusal(model_name: str) -> Optional[str]:
    """Why ``model_name`` (``arch.tag``) must not name published weights: a warm-start tag names timm's weights with
    an untrained embedding. None for every other name."""
    arch, tag = split_model_name_tag(model_name)
    if not tag.startswith(TIMM_BLOCKS_TAG_PREFIX):
        return None
    return (f'{model_name}: tags {TIMM_BLOCKS_TAG_PREFIX}* are warm starts (timm\'s blocks, embedding untrained), not '
            f'trained weights; publish a model fine-tuned from one under the tag of the data it was trained on, e.g. '
            f'--model {arch} --tag fashion_mnist')


def build_with_timm_blocks(model_cls: Callable[..., Any], variant: str, pretrained: bool, **kwargs: Any) -> Any:
    """``build_with_helpful_pretrained_errors``, except for a ``timm_blocks_*`` tag with ``pretrained=True``: the
    model is built at its initialisation and ``load_timm_blocks`` puts timm's blocks under it. The user's
    ``pretrained_cfg_overlay`` (a local ``file=``) and ``img_size`` / ``in_chans`` go to timm's model, whose loader
    adapts the checkpoint to them."""
    if pretrained:
        registered = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'))
        source = timm_blocks_source(registered.to_dict())
        if source:
            model = build_model_with_cfg(model_cls, variant, False, **kwargs)
            # features_only wraps the model (timm's FeatureGetterNet holds it as .model, its unused layers pruned)
            trunk = model.model if kwargs.get('features_only') else model
            source_kwargs = {k: kwargs[k] for k in ('img_size', 'in_chans') if kwargs.get(k) is not None}
            load_timm_blocks(trunk, source, pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
                             source_kwargs=source_kwargs)
            return model
    return build_with_helpful_pretrained_errors(model_cls, variant, pretrained, **kwargs)
