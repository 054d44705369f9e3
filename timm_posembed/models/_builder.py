""" Building this package's models with clear errors when pretrained weights cannot be fetched or do not fit.

timm reports a missing or unreachable weight source with whatever the transport raised (a 404 from the Hub, a
``LocalEntryNotFoundError`` when offline, a bare ``FileNotFoundError()`` for a missing local file). For this
package's models, whose weights are only on the Hub once someone has trained and published them, that is rarely
enough to act on; ``build_with_helpful_pretrained_errors`` re-raises such failures as one
``PretrainedWeightsUnavailableError`` that names the repo and tag and says how to train, load or publish the
weights. It is a drop-in for ``timm.models.build_model_with_cfg``.

Weights that are found but do not fit (another family, width, depth, class count or mode) are caught before timm's
load: each model's ``checkpoint_filter_fn`` only transforms a checkpoint (resample position tables, drop unused
layers), then ``check_checkpoint_fits`` compares it with the model as a strict ``load_state_dict`` would and raises
one ``CheckpointMismatchError`` that says what the checkpoint is and which arguments create the variant it was
trained as. ``timm-posembed publish`` uses the same check. It runs before timm's load because timm loads with
``strict=False`` whenever it drops the classifier (another ``num_classes``), which would otherwise let a trunk of
another architecture load silently, leaving its missing layers at random init.
"""
import importlib
import os
import pickle
import socket
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch

from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
)
from safetensors import SafetensorError
from timm.models import build_model_with_cfg, clean_state_dict, resolve_pretrained_cfg

from .._checks import few_names
from ._catalog import checkpoint_describers

__all__ = [
    'PretrainedWeightsUnavailableError', 'CheckpointMismatchError', 'build_with_helpful_pretrained_errors',
    'explain_unavailable_weights', 'unwrap_checkpoint', 'check_checkpoint_fits', 'describe_checkpoint',
]


class PretrainedWeightsUnavailableError(RuntimeError):
    """The pretrained weights a model's cfg points at could not be fetched or found (the cause is chained)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fit the model they are loaded into; the message says what the checkpoint is."""


def _unavailable_error_types() -> Tuple[Type[BaseException], ...]:
    # Errors that mean "the weights are not where the cfg says" (not published, offline, no such file), as opposed
    # to errors about the weights themselves (a checkpoint that does not fit), which keep their own message.
    types = [HfHubHTTPError, EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError,
             # a weights file that is found but cannot be read (truncated, or not a checkpoint): the raw errors do
             # not name the file
             SafetensorError, pickle.UnpicklingError, EOFError]
    # huggingface_hub talks to the Hub through httpx2 (2.x), httpx (1.x) or requests (0.x); the first two's
    # transport errors are not OSErrors.
    for module_name, error_name in (('httpx2', 'TransportError'), ('httpx', 'TransportError'),
                                    ('requests', 'RequestException')):
        try:
            types.append(getattr(importlib.import_module(module_name), error_name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


_UNAVAILABLE_ERRORS = _unavailable_error_types()


def explain_unavailable_weights(cfg: Dict[str, Any], cause: BaseException) -> str:
    """The message for weights described by the resolved pretrained ``cfg`` that failed to load with ``cause``."""
    arch = cfg.get('architecture') or 'this model'
    tag = cfg.get('tag') or ''
    name = f'{arch}.{tag}' if tag else arch
    hf_hub_id = cfg.get('hf_hub_id')
    file = cfg.get('file')
    source = cfg.get('source') or ''
    reason = f'{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else "(no message)"}'
    if file and source != 'hf-hub':
        where = f'the local file/folder {file!r}, which could not be read ({reason})'
    elif hf_hub_id:
        where = (f'the Hugging Face Hub repo {hf_hub_id!r} (tag {tag!r}) ({reason}). Either the weights have not '
                 f'been published there yet, or the Hub is unreachable (no network: huggingface_hub retries for '
                 f'about 20 s first, and HF_HUB_OFFLINE=1 makes it fail at once using only the local cache; or '
                 f'HF_HUB_OFFLINE=1 with nothing in the local cache)')
    else:
        where = f'{cfg.get("url") or "its configured source"} ({reason})'
    tag_opt = f' --tag {tag}' if tag else ''
    return (
        f'No pretrained weights for {name} could be loaded from {where}. To get them:\n'
        f'  * train them: the benchmarks/ folder of the timm_posembed repository has the timm train.py command '
        f'for {arch} (see benchmarks/README.md);\n'
        f'  * load a local file (a train.py checkpoint such as model_best.pth.tar, or a .safetensors file): '
        f"timm.create_model('{name}', pretrained=True, "
        f"pretrained_cfg_overlay=dict(file='/path/to/model_best.pth.tar'));\n"
        f'  * publish them for everyone: timm-posembed publish /path/to/model_best.pth.tar --model {arch}'
        f'{tag_opt} --out DIR (add --dry-run to only write the folder, --repo-id ORG/{name} for another org);\n'
        f'  * or create the model with pretrained=False for random initialisation.'
    )


def unwrap_checkpoint(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    """The state dict inside a timm ``train.py`` checkpoint (its ``state_dict``; ``model`` for other trainers), with
    the DDP / ``torch.compile`` prefixes removed by timm's ``clean_state_dict``. A bare state dict passes through."""
    for key in ('state_dict', 'model'):
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    return clean_state_dict(dict(checkpoint))


def describe_checkpoint(state_dict: Mapping[str, torch.Tensor],
                        classifier: Sequence[str] = ('head',)) -> Dict[str, Any]:
    """What a state dict is, read from its keys and shapes alone: ``family`` (words), ``num_classes`` (from the
    classifier), and whatever ``create_model`` arguments the family's describer can read off (see
    ``ModelInfo.describe_checkpoint``): each family of the catalog is asked first, then the baselines' layouts."""
    facts: Dict[str, Any] = {}
    for name in classifier:
        weight = state_dict.get(f'{name}.weight')
        if isinstance(weight, torch.Tensor) and weight.ndim >= 1:
            facts['num_classes'] = int(weight.shape[0])
            break
    for describe in checkpoint_describers():
        found = describe(state_dict)
        if found:
            return {**facts, **found}
    facts['family'] = 'not a model of this package (none of its families or their timm baselines has these layers)'
    return facts


def _img_size_for(model: torch.nn.Module, position_tokens: int) -> Optional[int]:
    """The square ``img_size`` whose patch grid has ``position_tokens`` tokens (prefix tokens included), for a timm
    ViT whose ``patch_embed`` states its image and grid size; None when it cannot be told."""
    patch_embed = getattr(model, 'patch_embed', None)
    img_size, grid = getattr(patch_embed, 'img_size', None), getattr(patch_embed, 'grid_size', None)
    prefix = getattr(model, 'num_prefix_tokens', 0) if not getattr(model, 'no_embed_class', False) else 0
    if not img_size or not grid or img_size[0] % grid[0]:
        return None
    side = int(round((position_tokens - prefix) ** 0.5))
    return side * (img_size[0] // grid[0]) if side > 0 and side * side == position_tokens - prefix else None


def check_checkpoint_fits(
        model: torch.nn.Module,
        state_dict: Mapping[str, torch.Tensor],
        source: str,
        ignore: Sequence[str] = (),
        model_name: Optional[str] = None,
) -> None:
    """Raise ``CheckpointMismatchError`` unless ``state_dict`` loads strictly into ``model``: the same keys and
    shapes (keys equal to, or under, a name in ``ignore`` are not compared, e.g. a classifier timm replaces).
    The message names ``source`` (the file or repo), the differences, what the checkpoint is, and the
    ``create_model`` arguments of the variant it was trained as."""
    expected = model.state_dict()

    def compared(key: str) -> bool:
        return not any(key == name or key.startswith(name + '.') for name in ignore)

    missing = [k for k in expected if k not in state_dict and compared(k)]
    unexpected = [k for k in state_dict if k not in expected and compared(k)]
    mis_shaped = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
                  if k in state_dict and compared(k) and tuple(state_dict[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or mis_shaped):
        return
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    classifier = cfg.get('classifier') or 'head'
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    name = model_name or cfg.get('architecture') or type(model).__name__
    ours, theirs = describe_checkpoint(expected, classifier), describe_checkpoint(state_dict, classifier)
    if ours['family'] != theirs['family']:
        advice = (f'it cannot be loaded into {name} ({ours["family"]}); load it into the architecture it was trained '
                  f'as')
    else:
        args = [f'{k}={theirs[k]!r}' for k in theirs
                if k not in ('family', 'position_tokens') and theirs[k] != ours.get(k)
                and not (k == 'num_classes' and any(n in ignore for n in classifier))]
        if theirs.get('position_tokens') and theirs['position_tokens'] != ours.get('position_tokens'):
            size = _img_size_for(model, theirs['position_tokens'])
            args.append(f'img_size={size}' if size else f'an img_size with {theirs["position_tokens"]} position tokens')
        if 'embed_dim' in theirs and theirs['embed_dim'] != ours.get('embed_dim'):
            args.append('num_heads=<as trained: not stored in the weights>')
        advice = (f'create the variant it was trained as: timm.create_model({name!r}, {", ".join(args)})' if args else
                  'create the variant it was trained as (the arguments that differ cannot be read off the weights)')
    facts = ', '.join(f'{k} {v}' for k, v in theirs.items() if k != 'family')
    raise CheckpointMismatchError(
        f'{source}: the checkpoint does not match {name}: missing keys {few_names(missing, 6)}; unexpected keys '
        f'{few_names(unexpected, 6)}; shape mismatches (checkpoint vs model) {few_names(mis_shaped, 6)}.\n'
        f'This checkpoint is a {theirs["family"]}{f" ({facts})" if facts else ""}; {advice}.')


def _weights_source(cfg: Dict[str, Any]) -> str:
    if cfg.get('state_dict') is not None:
        return 'the state_dict given in pretrained_cfg'
    if cfg.get('file') and cfg.get('source') != 'hf-hub':
        return str(cfg['file'])
    if cfg.get('hf_hub_id'):
        return f'hf-hub:{cfg["hf_hub_id"]}'
    return str(cfg.get('url') or 'the pretrained weights')


def _fitting_filter(filter_fn: Optional[Callable[..., Any]], kwargs: Mapping[str, Any]):
    """``filter_fn`` followed by ``check_checkpoint_fits``, ignoring what timm itself adapts after the filter: the
    classifier when it is replaced (another ``num_classes``, or ``features_only``) and the input conv when
    ``in_chans`` differs from the weights'."""

    def filter_and_check(state_dict: Dict[str, Any], model: torch.nn.Module) -> Dict[str, Any]:
        state_dict = unwrap_checkpoint(state_dict)
        if filter_fn is not None:
            state_dict = filter_fn(state_dict, model)
        cfg = model.pretrained_cfg  # set by build_model_with_cfg before it loads the weights
        ignore: List[str] = []
        classifier = cfg.get('classifier')
        classifier = [classifier] if isinstance(classifier, str) else list(classifier or ())
        if kwargs.get('features_only') or getattr(model, 'num_classes', None) != cfg.get('num_classes'):
            ignore += classifier
        first_conv = cfg.get('first_conv')
        weights_chans = (cfg.get('input_size') or (3,))[0]
        if kwargs.get('in_chans', weights_chans) != weights_chans and first_conv:
            ignore += [first_conv] if isinstance(first_conv, str) else list(first_conv)
        check_checkpoint_fits(model, state_dict, _weights_source(cfg), ignore=ignore,
                              model_name=cfg.get('architecture'))
        return state_dict

    return filter_and_check


def build_with_helpful_pretrained_errors(
        model_cls: Callable[..., Any],
        variant: str,
        pretrained: bool,
        **kwargs: Any,
) -> Any:
    """``timm.models.build_model_with_cfg`` (same arguments), raising ``PretrainedWeightsUnavailableError``
    (with the original error chained) when ``pretrained=True`` and the weights cannot be fetched or found, and
    ``CheckpointMismatchError`` when they are found but do not fit the model (see ``check_checkpoint_fits``)."""
    if not pretrained:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    kwargs['pretrained_filter_fn'] = _fitting_filter(kwargs.get('pretrained_filter_fn'), kwargs)

    def resolved_cfg() -> Dict[str, Any]:
        return resolve_pretrained_cfg(
            variant,
            pretrained_cfg=kwargs.get('pretrained_cfg'),
            pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
        ).to_dict()

    unreachable = _hub_unreachable(resolved_cfg())
    if unreachable:
        raise PretrainedWeightsUnavailableError(
            explain_unavailable_weights(resolved_cfg(), ConnectionError(unreachable)))
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except _UNAVAILABLE_ERRORS as e:
        raise PretrainedWeightsUnavailableError(explain_unavailable_weights(resolved_cfg(), e)) from e


# How long to wait for a TCP connection to the Hub before calling it unreachable: a reachable Hub answers in well
# under a second; without network huggingface_hub would otherwise retry for ~20 s before failing.
_HUB_PROBE_TIMEOUT_S = 2.0
_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')  # what timm's Hub loader looks for, in order


def _hub_unreachable(cfg: Mapping[str, Any]) -> Optional[str]:
    """Why the Hub cannot be reached, found within ``_HUB_PROBE_TIMEOUT_S``; None when the weights do not come
    from the Hub, are in the local cache, offline mode is set (it fails at once by itself), a proxy is configured
    (a direct connection says nothing then), or the Hub answers."""
    hf_hub_id = cfg.get('hf_hub_id')
    if not hf_hub_id or cfg.get('state_dict') is not None or (cfg.get('file') and cfg.get('source') != 'hf-hub'):
        return None
    from huggingface_hub import constants, try_to_load_from_cache
    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY',
                                                                    'all_proxy')):
        return None
    repo_id, _, revision = str(hf_hub_id).partition('@')
    for filename in _WEIGHT_FILES:
        try:
            if isinstance(try_to_load_from_cache(repo_id, filename, revision=revision or None), str):
                return None
        except ValueError:  # not a valid repo id: huggingface_hub says so itself
            return None
    endpoint = urllib.parse.urlparse(constants.ENDPOINT)
    host, port = endpoint.hostname or 'huggingface.co', endpoint.port or (80 if endpoint.scheme == 'http' else 443)
    try:
        socket.create_connection((host, port), timeout=_HUB_PROBE_TIMEOUT_S).close()
    except OSError as e:
        return (f'{host}:{port} cannot be reached ({e.strerror or e or type(e).__name__}), checked before the '
                f'download instead of retrying for ~20 s')
    return None
