""" Building this package's models with a clear error when pretrained weights cannot be fetched.

timm reports a missing or unreachable weight source with whatever the transport raised (a 404 from the Hub, a
``LocalEntryNotFoundError`` when offline, a bare ``FileNotFoundError()`` for a missing local file). For this
package's models, whose weights are only on the Hub once someone has trained and published them, that is rarely
enough to act on; ``build_with_helpful_pretrained_errors`` re-raises such failures as one
``PretrainedWeightsUnavailableError`` that names the repo and tag and says how to train, load or publish the
weights. It is a drop-in for ``timm.models.build_model_with_cfg`` and changes nothing else.
"""
import importlib
from typing import Any, Callable, Dict, Tuple, Type

from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
)
from timm.models import build_model_with_cfg, resolve_pretrained_cfg

__all__ = ['PretrainedWeightsUnavailableError', 'build_with_helpful_pretrained_errors', 'explain_unavailable_weights']


class PretrainedWeightsUnavailableError(RuntimeError):
    """The pretrained weights a model's cfg points at could not be fetched or found (the cause is chained)."""


def _unavailable_error_types() -> Tuple[Type[BaseException], ...]:
    # Errors that mean "the weights are not where the cfg says" (not published, offline, no such file), as opposed
    # to errors about the weights themselves (a checkpoint that does not fit), which keep their own message.
    types = [HfHubHTTPError, EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError]
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
                 f'been published there yet, or the Hub is unreachable (no network, or HF_HUB_OFFLINE=1 with '
                 f'nothing in the local cache)')
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


def build_with_helpful_pretrained_errors(
        model_cls: Callable[..., Any],
        variant: str,
        pretrained: bool,
        **kwargs: Any,
) -> Any:
    """``timm.models.build_model_with_cfg`` (same arguments), raising ``PretrainedWeightsUnavailableError``
    (with the original error chained) when ``pretrained=True`` and the weights cannot be fetched or found."""
    if not pretrained:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except _UNAVAILABLE_ERRORS as e:
        cfg = resolve_pretrained_cfg(
            variant,
            pretrained_cfg=kwargs.get('pretrained_cfg'),
            pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'),
        ).to_dict()
        raise PretrainedWeightsUnavailableError(explain_unavailable_weights(cfg, e)) from e
