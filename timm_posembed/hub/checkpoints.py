""" Reading a checkpoint to publish: a timm ``train.py`` checkpoint or a ``.safetensors`` file.

``read_checkpoint`` unwraps what train.py saved (``state_dict`` / ``state_dict_ema``, its recorded ``args``, epoch
and metric), unpickling nothing but tensors, plain containers and ``argparse.Namespace`` (``weights_only=True``).
``checkpoint_model_kwargs`` recovers the ``create_model`` arguments the run used, the way timm's scripts turn
train.py's arguments into model arguments.
"""
import argparse
import inspect
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Union

import timm
import torch
from timm.models import clean_state_dict, get_pretrained_cfg

from .._checks import few_names

__all__ = [
    'PublishError', 'TrainCheckpoint', 'read_checkpoint', 'checkpoint_model_kwargs',
    'dataset_from_train_args', 'nonfinite_tensors', 'architecture_kwargs',
]

# train.py pickles its argparse.Namespace with the weights; it only carries plain values, so it is safe to allow.
_SAFE_CHECKPOINT_GLOBALS = [argparse.Namespace]


class PublishError(ValueError):
    """The inputs to ``publish`` are wrong; the message says what was found and what would be right."""


@dataclass
class TrainCheckpoint:
    state_dict: Dict[str, torch.Tensor]
    path: Path
    weights: str  # which weights: 'state_dict', 'state_dict_ema', or 'safetensors' / 'state dict' for bare files
    train_args: Dict[str, Any] = field(default_factory=dict)  # vars(args) of the train.py run, when recorded
    arch: Optional[str] = None  # the model train.py built (its args.model)
    epoch: Optional[int] = None
    metric: Optional[float] = None

    def describe(self) -> str:
        what = {'state_dict_ema': 'EMA weights', 'state_dict': 'weights (not EMA)'}.get(self.weights, 'weights')
        extra = ', '.join(x for x in (
            f'epoch {self.epoch}' if self.epoch is not None else '',
            f'eval metric {self.metric:.4g}' if isinstance(self.metric, (int, float)) else '',
        ) if x)
        return f'{what} of {self.path.name}' + (f' ({extra})' if extra else '')


def _sniff_format(path: Path) -> str:
    """'safetensors', 'torch' (a zip or legacy pickle written by torch.save), 'empty' or 'unknown' (damaged, or
    another format: its reader by suffix says so), from the first bytes: the name's suffix is only a convention,
    and a renamed file must be read for what it is."""
    with open(path, 'rb') as f:
        head = f.read(9)
    size = path.stat().st_size
    if not head:
        return 'empty'
    # safetensors: an 8-byte little-endian header length, then that many bytes of JSON starting with '{'
    if len(head) == 9 and head[8:9] == b'{' and 8 < int.from_bytes(head[:8], 'little') + 8 <= size:
        return 'safetensors'
    if head.startswith(b'PK\x03\x04') or head[:1] == b'\x80':  # torch.save's zip, or a legacy pickle
        return 'torch'
    return 'unknown'


# torch.save stores its zip members uncompressed, so their sizes add up to about the file's size; an archive that
# claims more was compressed by something else and could expand without bound when torch reads it.
_ZIP_SLACK_BYTES = 2 ** 20
_MAX_ZIP_MEMBERS = 100_000


def _check_zip_bounds(path: Path) -> None:
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a readable zip: torch.load says so below
    expanded = sum(m.file_size for m in members)
    if len(members) > _MAX_ZIP_MEMBERS or expanded > 2 * size + _ZIP_SLACK_BYTES:
        raise PublishError(f'{path} is a zip archive of {size} bytes whose {len(members)} members expand to '
                           f'{expanded} bytes; torch.save writes them uncompressed, so this is not a checkpoint it '
                           f'wrote (refusing to expand it). Re-save the weights with torch.save or as safetensors.')


def _read_safetensors(path: Path, use_ema: bool) -> 'TrainCheckpoint':
    if use_ema:
        raise PublishError(f'{path} is a safetensors file, which holds one set of weights; --ema applies to '
                           f'train.py checkpoints (with state_dict_ema). Drop --ema, or pass the checkpoint.')
    import safetensors.torch
    from safetensors import SafetensorError
    try:
        state_dict = safetensors.torch.load_file(str(path), device='cpu')
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise PublishError(f'{path} is not a readable safetensors file (truncated or corrupt?): {e}. Expected the '
                           f'model.safetensors written by safetensors.torch.save_file; re-save or re-download it.'
                           ) from e
    return TrainCheckpoint(_checked_tensors(state_dict, path), path, 'safetensors')


def read_checkpoint(path: Union[str, Path], use_ema: bool = False) -> TrainCheckpoint:
    """Read a train.py checkpoint (never unpickling anything but tensors, containers and argparse.Namespace) or a
    safetensors file, told apart by content, not by name. ``use_ema`` selects ``state_dict_ema``, which must
    then exist."""
    path = Path(path)
    if not path.is_file():
        raise PublishError(f'no checkpoint file at {path}; pass a train.py checkpoint (model_best.pth.tar, '
                           f'last.pth.tar) or a .safetensors file')
    kind = _sniff_format(path)
    if kind == 'empty':
        raise PublishError(f'{path} is empty (0 bytes), probably an interrupted copy or save; expected a train.py '
                           f'checkpoint (model_best.pth.tar) or a .safetensors file')
    if kind == 'safetensors' or (kind == 'unknown' and path.suffix == '.safetensors'):
        return _read_safetensors(path, use_ema)
    if kind == 'unknown':
        with open(path, 'rb') as f:
            head = f.read(8)
        raise PublishError(f'{path} is not a PyTorch checkpoint nor a safetensors file (it starts with {head!r}; '
                           f'torch.save writes a zip archive starting with b"PK", safetensors an 8-byte header '
                           f'length then "{{"); pass a train.py checkpoint or a .safetensors file')
    _check_zip_bounds(path)

    try:
        # a file object, not the name: torch.load would hand a file named *.safetensors to safetensors whatever it holds
        with torch.serialization.safe_globals(_SAFE_CHECKPOINT_GLOBALS), open(path, 'rb') as f:
            checkpoint = torch.load(f, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = ''
        try:
            unsafe = ', '.join(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # the listing is only for the message; the refusal stands without it
            pass
        if unsafe or 'global' in str(e).lower():
            raise PublishError(
                f'refusing to load {path}: it needs Python objects beyond tensors and plain containers'
                f'{" (" + unsafe + ")" if unsafe else ""}, and unpickling those could run arbitrary code. A '
                f'train.py checkpoint needs none of them. If you trust the file, re-save just its weights with '
                f'safetensors.torch.save_file and publish that.') from e
        raise _unreadable(path, e) from e
    except Exception as e:  # damaged content makes the unpickler raise IndexError, KeyError, struct.error, ...
        raise _unreadable(path, e) from e

    if not isinstance(checkpoint, dict):
        raise PublishError(f'{path} holds a {type(checkpoint).__name__}, not a checkpoint: expected a train.py '
                           f'checkpoint (a dict with state_dict) or a state dict (parameter name -> tensor)')
    train_args: Dict[str, Any] = {}
    if isinstance(checkpoint.get('args'), argparse.Namespace):
        train_args = vars(checkpoint['args'])
    elif isinstance(checkpoint.get('args'), dict):
        train_args = dict(checkpoint['args'])
    if 'state_dict' in checkpoint or 'state_dict_ema' in checkpoint:
        key = 'state_dict_ema' if use_ema else 'state_dict'
        if checkpoint.get(key) is None:
            have = [k for k in ('state_dict', 'state_dict_ema') if checkpoint.get(k) is not None]
            hint = ('train with --model-ema to get EMA weights, or drop --ema' if use_ema
                    else 'pass --ema to publish the EMA weights')
            raise PublishError(f'{path} has no {key!r} (it has {have}); {hint}')
        state_dict = checkpoint[key]
        weights = key
    elif use_ema:
        raise PublishError(f'{path} is a bare state dict without EMA weights; drop --ema')
    else:
        state_dict, weights = checkpoint, 'state dict'
    if not isinstance(state_dict, dict):
        raise PublishError(f'{path}: {weights!r} is a {type(state_dict).__name__}, not a state dict')
    not_names = [k for k in state_dict if not isinstance(k, str)]
    if not_names:
        raise PublishError(f'{path}: {weights!r} has keys that are not parameter names: '
                           f'{few_names([repr(k) for k in not_names])}; expected a state dict (name -> tensor)')
    arch = checkpoint.get('arch') if isinstance(checkpoint.get('arch'), str) else train_args.get('model')
    return TrainCheckpoint(
        _checked_tensors(clean_state_dict(state_dict), path), path, weights, train_args=train_args,
        arch=arch if isinstance(arch, str) else None,
        epoch=checkpoint.get('epoch') if isinstance(checkpoint.get('epoch'), int) else None,
        metric=checkpoint.get('metric') if isinstance(checkpoint.get('metric'), (int, float)) else None,
    )


def _unreadable(path: Path, e: BaseException) -> PublishError:
    # torch's own text can run to a paragraph: its first sentence says what failed
    reason = str(e).strip().splitlines()[0].split('. ')[0] if str(e).strip() else type(e).__name__
    return PublishError(f'{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {reason}. '
                        f'Expected a complete train.py checkpoint; copy it again or use another epoch\'s.')


# A parameter name is a dotted path of module attribute names: printable, no spaces, and short (timm's longest are
# under 100 characters). Anything else would land verbatim in error messages (a newline splits the one-line error).
_PARAMETER_NAME = re.compile(r'[^\s\x00-\x1f\x7f-\x9f\u2028\u2029]{1,512}')


def _shown(key: str) -> str:
    return repr(key if len(key) <= 60 else key[:60] + '...')


def _checked_tensors(state_dict: Mapping[str, Any], path: Path) -> Dict[str, torch.Tensor]:
    not_names = [k for k in state_dict if not _PARAMETER_NAME.fullmatch(k)]
    if not_names:
        raise PublishError(f'{path}: the weights have keys that are not parameter names (control characters, '
                           f'spaces, or over 512 characters): {few_names([_shown(k) for k in not_names], 3)}; '
                           f'expected a state dict')
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise PublishError(
            f'{path}: the weights contain non-tensor entries {few_names(not_tensors)}; expected a state dict')
    if not state_dict:
        raise PublishError(f'{path}: the state dict is empty')
    return dict(state_dict)


def nonfinite_tensors(state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """``'name (k of n values)'`` for every tensor holding NaN or Inf (a run that diverged, or a broken save)."""
    bad = []
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() or tensor.is_complex():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad.append(f'{name} ({count} of {tensor.numel()} values)')
    return bad


def architecture_kwargs(arch: str) -> FrozenSet[str]:
    """The arguments that define ``arch``'s architecture: the named parameters of its model class's constructor,
    following ``**kwargs`` up to the timm class it passes them to, less ``device`` / ``dtype``. The only kwargs
    publish passes to ``create_model``; the rest of what create_model accepts (``pretrained``, ``checkpoint_path``,
    ``pretrained_cfg(_overlay)``, ``cache_dir``, ``features_only``, ...) loads files, reaches the network or builds
    something else, and a checkpoint's record is untrusted. The class is read off a model built on the meta device
    (no weights allocated)."""
    with torch.device('meta'):
        model_cls = type(timm.create_model(arch))
    names = set()
    for cls in model_cls.__mro__:
        if cls in (torch.nn.Module, object):
            break
        params = inspect.signature(cls.__init__).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return frozenset(names - {'self', 'device', 'dtype'})


def _check_architecture_kwargs(arch: str, kwargs: Mapping[str, Any], source: str) -> None:
    allowed = architecture_kwargs(arch)
    refused = sorted(k for k in kwargs if k not in allowed)
    if refused:
        raise PublishError(f'{source} {", ".join(refused)}: not architecture arguments of {arch} (publish builds the '
                           f'model from the weights and passes create_model only the arguments of its constructor: '
                           f'{", ".join(sorted(allowed))}); drop them')


def checkpoint_model_kwargs(
        arch: str,
        tag: str,
        tag_registered: bool,
        checkpoint: TrainCheckpoint,
        overrides: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The ``create_model`` arguments that rebuild the model the checkpoint was trained as: train.py's recorded
    --model-kwargs, num classes and global pool, then ``overrides``; train.py's input size / channels turned into
    model arguments the way timm's scripts do (``resolve_model_input_args``); and the class count read from the
    classifier weights when train.py left it to the pretrained cfg."""
    args = checkpoint.train_args
    recorded = args.get('model_kwargs') or {}
    if not isinstance(recorded, Mapping) or not all(isinstance(k, str) for k in recorded):
        raise PublishError(f'{checkpoint.path}: train.py recorded model_kwargs {recorded!r}, expected KEY=VALUE '
                           f'pairs; pass the model arguments with --model-kwargs instead')
    num_classes = args.get('num_classes')
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 0):
        raise PublishError(f'{checkpoint.path}: train.py recorded num_classes={num_classes!r}, expected a class '
                           f'count; pass --model-kwargs num_classes=N')
    _check_architecture_kwargs(arch, recorded, f'{checkpoint.path}: train.py recorded model_kwargs')
    _check_architecture_kwargs(arch, overrides or {}, '--model-kwargs')
    gp = args.get('gp')
    if gp is not None and not isinstance(gp, str):
        raise PublishError(f'{checkpoint.path}: train.py recorded gp={gp!r}, expected a global pool name (like avg '
                           f'or token); pass --model-kwargs global_pool=NAME')
    kwargs: Dict[str, Any] = dict(recorded)
    if args.get('num_classes') is not None:
        kwargs['num_classes'] = args['num_classes']
    if gp:
        kwargs['global_pool'] = gp
    kwargs.update(overrides or {})
    if 'num_classes' not in kwargs:
        cfg = get_pretrained_cfg(f'{arch}.{tag}' if tag_registered else arch)
        classifier = cfg.classifier if cfg else None
        for name in ([classifier] if isinstance(classifier, str) else list(classifier or ())):
            weight = checkpoint.state_dict.get(f'{name}.weight')
            if weight is not None and weight.ndim >= 1:
                kwargs['num_classes'] = int(weight.shape[0])
                break
    input_request = {k: args.get(k) for k in ('input_size', 'img_size', 'in_chans')}
    try:
        return _input_model_kwargs(f'{arch}.{tag}' if tag_registered else arch, input_request, kwargs)
    except (ValueError, RuntimeError) as e:
        raise PublishError(f'the model arguments {kwargs} and train.py input size {input_request} conflict: {e}') from e


def _input_model_kwargs(name: str, input_request: Dict[str, Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``kwargs`` with train.py's input size and channels turned into model arguments, as timm's scripts do."""
    try:
        from timm.models import resolve_model_input_args  # timm >= 1.0.31, whose train.py uses it
    except ImportError:
        # Older timm has no resolver: only the channels (in_chans, or input_size's first entry) become a model
        # argument; a fixed-size model trained at another size is rebuilt from --model-kwargs img_size=N.
        resolved = {k: v for k, v in kwargs.items() if v is not None}
        input_size = input_request.get('input_size')
        channels = input_request.get('in_chans') or (input_size[0] if isinstance(input_size, (list, tuple)) and
                                                      input_size else None)
        if channels is not None:
            resolved['in_chans'] = channels
        return resolved
    resolved = resolve_model_input_args(name, args=input_request, **kwargs)
    resolved.pop('model_name')
    resolved.pop('pretrained_cfg')
    return resolved


def dataset_from_train_args(checkpoint: TrainCheckpoint) -> Optional[str]:
    """The Hub dataset a train.py run read (its ``--dataset hfds/NAME`` / ``hfids/NAME``), else None; a
    ``PublishError`` when the recorded name is not a Hub dataset id (it would land in the card)."""
    from .card_format import ModelCardError
    from .cards import check_dataset_id
    dataset = checkpoint.train_args.get('dataset') or ''
    for prefix in ('hfds/', 'hfids/'):
        if isinstance(dataset, str) and dataset.startswith(prefix) and len(dataset) > len(prefix):
            try:
                return check_dataset_id(dataset[len(prefix):], f'{checkpoint.path}: train.py recorded dataset')
            except ModelCardError as e:
                raise PublishError(f'{e}; pass --dataset NAME for the card') from e
    return None
