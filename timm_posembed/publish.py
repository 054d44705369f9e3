""" Publish a trained checkpoint of one of this package's models as a Hugging Face Hub repo, the way timm's look.

``publish_checkpoint`` reads a timm ``train.py`` checkpoint (``model_best.pth.tar`` / ``last.pth.tar``, unpickled
with ``weights_only=True``) or a ``.safetensors`` file, builds the model it was trained as, checks the weights load
strictly, and writes a folder with ``config.json`` (timm's ``save_for_hf`` format), ``model.safetensors`` and a
``README.md`` generated from MODEL_CARDS.md. ``upload_hub_folder`` sends that folder with ``huggingface_hub``.

Every refusal (wrong architecture, unreadable or unsafe file, existing output folder, missing card) happens before
anything is written, and the folder is assembled in a temporary sibling and renamed into place, so a failure never
leaves a half-written folder behind.
"""
import argparse
import ast
import json
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
from safetensors.torch import save_file as save_safetensors
from timm.models import (
    clean_state_dict,
    get_arch_pretrained_cfgs,
    get_pretrained_cfg,
    is_model,
    resolve_model_input_args,
    split_model_name_tag,
)
# timm's writer of a Hub config.json (what save_for_hf / push_to_hf_hub use); not re-exported by timm.models
from timm.models._hub import save_config_for_hf

from .model_cards import HubCardFacts, dataset_from_tag, find_card, load_model_cards, render_hub_readme
from .model_stats import measure_model
from .models import HF_HUB_ORG, hub_id, model_info
from .version import __version__

__all__ = [
    'PublishError', 'TrainCheckpoint', 'PublishResult', 'read_checkpoint', 'resolve_model_name', 'build_checked_model',
    'resolve_label_names', 'checkpoint_model_kwargs', 'parse_model_kwargs', 'default_repo_id', 'hub_readme',
    'publish_checkpoint', 'upload_hub_folder', 'unshared_state_dict', 'HUB_FILES',
]

HUB_FILES = ('config.json', 'model.safetensors', 'README.md')
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


def _few(items: Sequence[Any], n: int = 10) -> str:
    shown = ', '.join(str(i) for i in items[:n])
    return f'[{shown}{", ..." if len(items) > n else ""}] ({len(items)})'


def read_checkpoint(path: Union[str, Path], use_ema: bool = False) -> TrainCheckpoint:
    """Read a train.py checkpoint (never unpickling anything but tensors, containers and argparse.Namespace) or a
    ``.safetensors`` file. ``use_ema`` selects ``state_dict_ema``, which must then exist."""
    path = Path(path)
    if not path.is_file():
        raise PublishError(f'no checkpoint file at {path}; pass a train.py checkpoint (model_best.pth.tar, '
                           f'last.pth.tar) or a .safetensors file')
    if path.suffix == '.safetensors':
        if use_ema:
            raise PublishError(f'{path} is a safetensors file, which holds one set of weights; --ema applies to '
                               f'train.py checkpoints (with state_dict_ema). Drop --ema, or pass the checkpoint.')
        import safetensors.torch
        from safetensors import SafetensorError
        try:
            state_dict = safetensors.torch.load_file(str(path), device='cpu')
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise PublishError(f'{path} is not a readable safetensors file (truncated or corrupt?): {e}') from e
        return TrainCheckpoint(_checked_tensors(state_dict, path), path, 'safetensors')

    try:
        with torch.serialization.safe_globals(_SAFE_CHECKPOINT_GLOBALS):
            checkpoint = torch.load(str(path), map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = ''
        try:
            unsafe = ', '.join(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # the listing is only for the message; the refusal stands without it
            pass
        raise PublishError(
            f'refusing to load {path}: it needs Python objects beyond tensors and plain containers'
            f'{" (" + unsafe + ")" if unsafe else ""}, and unpickling those could run arbitrary code. A train.py '
            f'checkpoint needs none of them. If you trust the file, re-save just its weights with '
            f'safetensors.torch.save_file and publish that.') from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise PublishError(f'{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {e}') from e

    if not isinstance(checkpoint, dict):
        raise PublishError(f'{path} holds a {type(checkpoint).__name__}, not a checkpoint dict or a state dict')
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
    arch = checkpoint.get('arch') if isinstance(checkpoint.get('arch'), str) else train_args.get('model')
    return TrainCheckpoint(
        _checked_tensors(clean_state_dict(state_dict), path), path, weights, train_args=train_args,
        arch=arch if isinstance(arch, str) else None,
        epoch=checkpoint.get('epoch') if isinstance(checkpoint.get('epoch'), int) else None,
        metric=checkpoint.get('metric') if isinstance(checkpoint.get('metric'), (int, float)) else None,
    )


def _checked_tensors(state_dict: Mapping[str, Any], path: Path) -> Dict[str, torch.Tensor]:
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise PublishError(f'{path}: the weights contain non-tensor entries {_few(not_tensors)}; expected a state dict')
    if not state_dict:
        raise PublishError(f'{path}: the state dict is empty')
    return dict(state_dict)


def resolve_model_name(model: str, tag: Optional[str] = None) -> Tuple[str, str, bool]:
    """(architecture, tag, whether the tag is registered) for ``--model NAME[.TAG] [--tag TAG]``."""
    arch, name_tag = split_model_name_tag(model)
    try:
        model_info(arch)
    except KeyError as e:
        raise PublishError(f'--model {model}: {e.args[0]}') from e
    if name_tag and tag and name_tag != tag:
        raise PublishError(f'--model {model} names tag {name_tag!r} but --tag is {tag!r}; give the tag once')
    tag = tag or name_tag
    registered = {split_model_name_tag(n)[1] for n in get_arch_pretrained_cfgs(arch)}
    if not tag:
        default = get_pretrained_cfg(arch)
        if default is None or not default.tag:
            raise PublishError(f'{arch} has no registered pretrained tag; pass --tag TAG')
        tag = default.tag
    if not re.fullmatch(r'[a-z0-9_]+', tag):
        raise PublishError(f'--tag {tag!r}: a pretrained tag is lower-case letters, digits and "_" (like in100)')
    return arch, tag, tag in registered


def default_repo_id(arch: str, tag: str) -> str:
    """Our org's repo for ``arch.tag``: the registered ``hf_hub_id`` when it is under our org, else ``hub_id``.
    (Some cfgs point at another org's repo, e.g. timm's weights a model is initialised from; we never publish there
    by default.)"""
    cfgs = get_arch_pretrained_cfgs(arch)
    registered = cfgs.get(f'{arch}.{tag}')
    if registered is not None and (registered.hf_hub_id or '').startswith(HF_HUB_ORG + '/'):
        return registered.hf_hub_id
    return hub_id(arch, tag)


def _check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f'--repo-id {repo_id!r} is not a valid Hub repo id ({e}); expected ORG/NAME.TAG') from e
    if repo_id.count('/') != 1:
        raise PublishError(f'--repo-id {repo_id!r}: expected ORG/NAME.TAG, e.g. {hub_id("vit_tiny_cope", "tag")}')
    return repo_id


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_model_kwargs(items: Sequence[str]) -> Dict[str, Any]:
    """``['img_size=64', 'num_classes=100']`` -> ``{'img_size': 64, 'num_classes': 100}`` (train.py's
    ``--model-kwargs`` syntax; values are Python literals, else strings)."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key.isidentifier():
            raise PublishError(f'--model-kwargs {item!r}: expected KEY=VALUE, e.g. img_size=64')
        out[key] = _parse_value(value)
    return out


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
    kwargs: Dict[str, Any] = dict(args.get('model_kwargs') or {})
    if args.get('num_classes') is not None:
        kwargs['num_classes'] = args['num_classes']
    if args.get('gp'):
        kwargs['global_pool'] = args['gp']
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
        resolved = resolve_model_input_args(f'{arch}.{tag}' if tag_registered else arch, args=input_request, **kwargs)
    except (ValueError, RuntimeError) as e:
        raise PublishError(f'the model arguments {kwargs} and train.py input size {input_request} conflict: {e}') from e
    resolved.pop('model_name')
    resolved.pop('pretrained_cfg')
    return resolved


def _create(arch: str, tag: str, tag_registered: bool, model_kwargs: Mapping[str, Any]):
    if tag_registered:
        return timm.create_model(f'{arch}.{tag}', **model_kwargs)
    # an unregistered tag: the architecture's default cfg, labelled with the new tag
    return timm.create_model(arch, pretrained_cfg_overlay=dict(tag=tag), **model_kwargs)


def build_checked_model(
        arch: str,
        tag: str,
        tag_registered: bool,
        state_dict: Mapping[str, torch.Tensor],
        model_kwargs: Mapping[str, Any],
):
    """Build ``arch.tag`` with ``model_kwargs`` and load ``state_dict`` strictly; a ``PublishError`` listing the
    missing, unexpected and mis-shaped keys when the checkpoint is not of this architecture."""
    try:
        model = _create(arch, tag, tag_registered, model_kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        raise PublishError(f'cannot build {arch} with {dict(model_kwargs)}: {e}') from e
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
                  if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or mis_shaped:
        raise PublishError(
            f'the checkpoint does not match {arch} built with {dict(model_kwargs)}: '
            f'missing keys {_few(missing)}; unexpected keys {_few(unexpected)}; '
            f'shape mismatches (checkpoint vs model) {_few(mis_shaped)}. It was probably trained as another '
            f'architecture or with other model arguments: pass the --model it was trained as, and '
            f'--model-kwargs (e.g. img_size=, num_classes=) if train.py did not record them.')
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def resolve_label_names(
        num_classes: int,
        label_file: Optional[Union[str, Path]] = None,
        train_args: Optional[Mapping[str, Any]] = None,
) -> Tuple[Optional[List[str]], str]:
    """Class names in classifier order and where they came from.

    ``label_file`` (one name per line, or a JSON list) is used when given and must have ``num_classes`` names.
    Otherwise, when the train.py run recorded them and they are on this machine, the names come the way timm's
    dataset found them: the ``--class-map`` file, or the class folders of an image-folder dataset (in timm's order).
    Returns ``(None, reason)`` when they are not known."""
    if label_file:
        path = Path(label_file)
        if not path.is_file():
            raise PublishError(f'--label-names {path}: no such file; expected one class name per line or a JSON list')
        text = path.read_text(encoding='utf-8')
        if path.suffix == '.json':
            try:
                names = json.loads(text)
            except json.JSONDecodeError as e:
                raise PublishError(f'--label-names {path}: not valid JSON ({e}); expected a list of names') from e
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise PublishError(f'--label-names {path}: expected a JSON list of class names')
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
        if len(names) != num_classes:
            raise PublishError(f'--label-names {path} has {len(names)} names but the model has {num_classes} classes')
        return names, f'--label-names {path}'

    args = train_args or {}
    data_dir = args.get('data_dir') or args.get('data')
    class_map = args.get('class_map')
    if class_map:
        from timm.data.readers.class_map import load_class_map
        try:
            mapping = load_class_map(class_map, root=data_dir or '')
        except (OSError, ValueError, AssertionError, pickle.UnpicklingError):
            return None, f'the train.py class map {class_map} is not readable here'
        names = [n for n, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
        if len(names) == num_classes and sorted(mapping.values()) == list(range(num_classes)):
            return [str(n) for n in names], f'class map {class_map}'
        return None, f'the class map {class_map} does not cover the {num_classes} classes'
    if data_dir and (args.get('dataset') or '').lower() in ('', 'folder', 'imagefolder', 'image_folder'):
        split = args.get('train_split') or 'train'
        root = Path(data_dir) / split
        root = root if root.is_dir() else Path(data_dir)
        if not root.is_dir():
            return None, f'the training folder {root} is not on this machine'
        from timm.data.readers.reader_image_folder import find_images_and_targets
        _, class_to_idx = find_images_and_targets(str(root))
        if len(class_to_idx) != num_classes:
            return None, f'{root} has {len(class_to_idx)} class folders, the model {num_classes} classes'
        return [n for n, _ in sorted(class_to_idx.items(), key=lambda kv: kv[1])], f'class folders of {root}'
    return None, 'not recorded (pass --label-names FILE)'


def dataset_from_train_args(checkpoint: TrainCheckpoint) -> Optional[str]:
    """The Hub dataset a train.py run read (its ``--dataset hfds/NAME`` / ``hfids/NAME``), else None."""
    dataset = checkpoint.train_args.get('dataset') or ''
    for prefix in ('hfds/', 'hfids/'):
        if isinstance(dataset, str) and dataset.startswith(prefix) and len(dataset) > len(prefix):
            return dataset[len(prefix):]
    return None


def _registry_name_loads(arch: str, tag: str, tag_registered: bool, repo_id: str,
                         model_kwargs: Mapping[str, Any]) -> bool:
    """Whether ``create_model('arch.tag', pretrained=True)`` loads exactly this repo's weights into this
    architecture: the registry points at the repo and the published arguments are the cfg's defaults."""
    if not tag_registered:
        return False
    cfg = get_pretrained_cfg(f'{arch}.{tag}')
    if cfg.hf_hub_id != repo_id:
        return False
    defaults = {'num_classes': cfg.num_classes, 'in_chans': cfg.input_size[0], 'img_size': tuple(cfg.input_size[1:])}
    for key, value in model_kwargs.items():
        if key not in defaults:
            return False
        value = (value, value) if key == 'img_size' and isinstance(value, int) else value
        if (tuple(value) if isinstance(value, (list, tuple)) else value) != defaults[key]:
            return False
    return True


def hub_readme(
        arch: str,
        tag: str,
        tag_registered: bool,
        repo_id: str,
        model_kwargs: Mapping[str, Any],
        dataset: Optional[str] = None,
        weights_note: str = '',
        cards_path: Optional[Union[str, Path]] = None,
        model: Optional[torch.nn.Module] = None,
) -> str:
    """The README.md for ``arch.tag`` published at ``repo_id`` (a ``ModelCardError`` if MODEL_CARDS.md has no card).
    ``model`` is the built model to measure (built from ``model_kwargs`` when not given)."""
    card = find_card(load_model_cards(cards_path), f'{arch}.{tag}')
    dataset = dataset or dataset_from_tag(tag)
    if not dataset:
        raise PublishError(f'cannot tell the dataset of tag {tag!r} (timm-style tags name it, like in1k or in100); '
                           f'pass --dataset NAME (a Hub dataset id such as imagenet-1k)')
    name = f'{arch}.{tag}' if tag_registered else arch
    overlay = None if tag_registered else dict(tag=tag)
    cfg = get_pretrained_cfg(name)
    if not cfg.license:
        raise PublishError(f'the pretrained cfg of {name} declares no license; add license= to its default_cfgs')
    kwargs = dict(model_kwargs)
    if overlay:
        kwargs['pretrained_cfg_overlay'] = overlay
    stats = measure_model(name, model=model, **kwargs)
    create_name = (f'{arch}.{tag}' if _registry_name_loads(arch, tag, tag_registered, repo_id, model_kwargs)
                   else f'hf-hub:{repo_id}')
    facts = HubCardFacts(
        model_name=f'{arch}.{tag}',
        repo_id=repo_id,
        create_name=create_name,
        license=cfg.license,
        datasets=[dataset],
        stats=stats,
        paper_ids=list(cfg.paper_ids or []),
        weights_note=weights_note,
    )
    return render_hub_readme(card, facts)


@dataclass
class PublishResult:
    out: Path
    repo_id: str
    model_name: str  # arch.tag
    files: List[Path]
    weights: str
    label_source: str
    tag_registered: bool
    uploaded_url: Optional[str] = None


def unshared_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """``model.state_dict()`` with every entry in its own contiguous storage.

    Modules reused under several names (CoaT's shared conv position encodings) give state dict entries that share
    memory, which safetensors refuses to save. timm's loaders expect every name in the file (a strict load of the
    full state dict), so each alias is stored as its own copy rather than dropped."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PublishError(f'--out {out} is a file; pass a folder (new, empty, or with --overwrite)')
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        present = ', '.join(sorted(p.name for p in out.iterdir())[:5])
        raise PublishError(f'--out {out} exists and is not empty ({present}); pass a new or empty folder, or '
                           f'--overwrite to replace its contents')


def _move_into_place(staging: Path, out: Path) -> None:
    if out.is_dir():
        backup = Path(tempfile.mkdtemp(prefix=f'.{out.name}.old.', dir=out.parent))
        backup.rmdir()
        out.rename(backup)
        try:
            staging.rename(out)
        except OSError:
            backup.rename(out)  # put the old folder back rather than leave nothing
            raise
        shutil.rmtree(backup)
    else:
        staging.rename(out)


def publish_checkpoint(
        checkpoint: Union[str, Path],
        model: str,
        out: Union[str, Path],
        tag: Optional[str] = None,
        repo_id: Optional[str] = None,
        use_ema: bool = False,
        overwrite: bool = False,
        label_names: Optional[Union[str, Path]] = None,
        dataset: Optional[str] = None,
        model_kwargs: Optional[Mapping[str, Any]] = None,
        cards_path: Optional[Union[str, Path]] = None,
        log: Callable[[str], None] = lambda msg: None,
) -> PublishResult:
    """Write the Hub folder for ``checkpoint`` trained as ``model`` into ``out`` (see the module docstring)."""
    out = Path(out)
    arch, tag, tag_registered = resolve_model_name(model, tag)
    repo_id = _check_repo_id(repo_id or default_repo_id(arch, tag))
    _check_out(out, overwrite)

    ckpt = read_checkpoint(checkpoint, use_ema=use_ema)
    if ckpt.arch:
        trained_arch = split_model_name_tag(ckpt.arch)[0]
        if trained_arch != arch and is_model(trained_arch):
            raise PublishError(f'{ckpt.path} was trained as {ckpt.arch} (train.py recorded it), not {arch}; '
                               f'pass --model {trained_arch}')
    kwargs = checkpoint_model_kwargs(arch, tag, tag_registered, ckpt, model_kwargs)
    net = build_checked_model(arch, tag, tag_registered, ckpt.state_dict, kwargs)
    log(f'{ckpt.describe()} load strictly into {arch} {kwargs}')
    names, label_source = resolve_label_names(net.num_classes, label_names, ckpt.train_args)
    readme = hub_readme(arch, tag, tag_registered, repo_id, kwargs, dataset=dataset or dataset_from_train_args(ckpt),
                        weights_note=ckpt.describe(), cards_path=cards_path, model=net)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{out.name}.partial.', dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the published folder should look like any other
        model_config = {'label_names': names} if names else None
        save_config_for_hf(net, str(staging / 'config.json'), model_config=model_config)
        save_safetensors(unshared_state_dict(net), str(staging / 'model.safetensors'), metadata={'format': 'pt'})
        (staging / 'README.md').write_text(readme, encoding='utf-8')
        for f in staging.iterdir():
            f.chmod(0o666 & ~umask)
        written = sorted(p.name for p in staging.iterdir())
        if written != sorted(HUB_FILES):  # e.g. a timm change that adds a pickle next to the safetensors
            raise PublishError(f'expected to write exactly {sorted(HUB_FILES)}, wrote {written}')
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PublishResult(
        out=out, repo_id=repo_id, model_name=f'{arch}.{tag}', files=[out / f for f in HUB_FILES],
        weights=ckpt.describe(), label_source=label_source, tag_registered=tag_registered,
    )


def upload_hub_folder(
        folder: Union[str, Path],
        repo_id: str,
        private: bool = False,
        commit_message: Optional[str] = None,
) -> str:
    """Create ``repo_id`` if needed and upload the published ``folder`` (only its HUB_FILES) with huggingface_hub,
    authenticated by the usual token (HF_TOKEN or ``hf auth login``). Returns the commit URL."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if sorted(HUB_FILES) != present:
        raise PublishError(f'{folder} should hold exactly {sorted(HUB_FILES)} (as publish writes it), has {present}')
    if not huggingface_hub.get_token():
        raise PublishError(
            f'no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access to '
            f'{repo_id.split("/")[0]}. The folder is ready at {folder}; rerun publish, or upload it with '
            f'`hf upload {repo_id} {folder}`.')
    api = huggingface_hub.HfApi(library_name='timm_posembed', library_version=__version__)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=getattr(repo, 'repo_id', repo_id),
            folder_path=str(folder),
            allow_patterns=list(HUB_FILES),
            commit_message=commit_message or f'Add {folder.name} weights (timm_posembed {__version__})',
        )
    except (HfHubHTTPError, OSError) as e:
        raise PublishError(f'uploading {folder} to {repo_id} failed: {e}. The folder is unchanged; retry when the '
                           f'Hub is reachable and the token can write to {repo_id.split("/")[0]}.') from e
    return str(getattr(commit, 'commit_url', None) or getattr(commit, 'oid', '') or repo_id)
