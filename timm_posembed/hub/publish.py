""" Publish a trained checkpoint of one of this package's models as a Hugging Face Hub repo, the way timm's look.

``publish_checkpoint`` reads a timm ``train.py`` checkpoint or a ``.safetensors`` file (``timm_posembed.checkpoints``),
builds the model it was trained as, checks the weights load strictly and are finite, and writes a folder with
``config.json`` (timm's ``save_for_hf`` format), ``model.safetensors`` and a ``README.md`` generated from
MODEL_CARDS.md (``timm_posembed.model_cards``). ``upload_hub_folder`` sends that folder with ``huggingface_hub``.

Every refusal (wrong architecture, unreadable or unsafe file, non-finite weights, an output folder that exists or
holds an input) happens before anything is written. The folder is assembled in a staging sibling and renamed into
place; an error, Ctrl-C or SIGTERM removes the staging folder, and the next run removes any that a run killed
outright left behind, so a failure never leaves a half-written folder.
"""
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import timm
import torch
from safetensors.torch import save_file as save_safetensors
from timm.models import is_model, split_model_name_tag
# timm's writer of a Hub config.json (what save_for_hf / push_to_hf_hub use); not re-exported by timm.models
from timm.models._hub import save_config_for_hf

from .._checks import few_names
from .._output_files import interrupts_raise, process_alive
from ..models import CheckpointMismatchError, check_checkpoint_fits
from ..version import __version__
from .cards import hub_readme
from .checkpoints import (
    PublishError,
    checkpoint_model_kwargs,
    dataset_from_train_args,
    nonfinite_tensors,
    read_checkpoint,
)
from .label_names import resolve_label_names
from .naming import check_default_tag_fits, check_repo_id, default_repo_id, resolve_model_name

__all__ = ['PublishResult', 'build_checked_model', 'publish_checkpoint', 'upload_hub_folder', 'unshared_state_dict',
           'HUB_FILES']

HUB_FILES = ('config.json', 'model.safetensors', 'README.md')


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
        source: Optional[Union[str, Path]] = None,
):
    """Build ``arch.tag`` with ``model_kwargs`` and load ``state_dict`` (read from ``source``) strictly; a
    ``PublishError`` saying what the checkpoint is (``check_checkpoint_fits``) when it does not fit."""
    try:
        model = _create(arch, tag, tag_registered, model_kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        raise PublishError(f'cannot build {arch} with {dict(model_kwargs)}: {e}') from e
    try:
        check_checkpoint_fits(model, state_dict, str(source or 'the checkpoint'), model_name=arch)
    except CheckpointMismatchError as e:
        raise PublishError(
            f'{e}\nFor publish: pass the --model it was trained as, and --model-kwargs KEY=VALUE for the '
            f'arguments train.py did not record (a .safetensors file records none).') from e
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


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


def _contains(folder: Path, path: Path) -> bool:
    return folder == path or folder in path.parents


def _check_out(out: Path, overwrite: bool, inputs: Sequence[Path], suggestion: str) -> None:
    """Refuse an ``--out`` that publish could not replace as a whole without harm: one holding an input (the
    checkpoint, label names, cards) or the current folder, then a file, or a non-empty folder without --overwrite."""
    real = out.resolve()
    cwd = Path.cwd().resolve()
    if _contains(real, cwd) or real == Path(real.anchor):
        raise PublishError(f'--out {out} is the current folder or one above it; publish replaces its output folder '
                           f'as a whole, so pass a new folder, e.g. --out {suggestion}')
    held = [p for p in inputs if _contains(real, p.resolve())]
    if held:
        raise PublishError(f'--out {out} contains the input {held[0]}; publish never deletes or replaces its inputs. '
                           f'Pass a folder outside it, e.g. --out {real.parent / suggestion}')
    if out.exists() and not out.is_dir():
        raise PublishError(f'--out {out} is a file; pass a folder (new, empty, or with --overwrite)')
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        present = ', '.join(sorted(p.name for p in out.iterdir())[:5])
        raise PublishError(f'--out {out} exists and is not empty ({present}); pass a new or empty folder, or '
                           f'--overwrite to replace its contents')


def _staging_prefix(out: Path) -> str:
    return f'.{out.name}.partial.{os.getpid()}.'


def _remove_stale_staging(out: Path) -> List[Path]:
    """Remove staging folders that earlier publish runs into ``out`` left behind (killed by a signal that cannot be
    caught, or a power cut): only folders named like ours next to ``out`` whose process is gone, holding nothing
    but files publish writes."""
    ours = re.compile(rf'\.{re.escape(out.name)}\.partial\.(?:(\d+)\.)?[a-z0-9_]{{8}}')
    removed = []
    for entry in (os.scandir(out.parent) if out.parent.is_dir() else ()):
        m = ours.fullmatch(entry.name)
        if not m or not entry.is_dir(follow_symlinks=False) or (m.group(1) and process_alive(int(m.group(1)))):
            continue
        with os.scandir(entry.path) as files:
            if all(f.name in HUB_FILES and f.is_file(follow_symlinks=False) for f in files):
                shutil.rmtree(entry.path)
                removed.append(Path(entry.path))
    return removed


def _move_into_place(staging: Path, out: Path) -> None:
    if out.is_dir():
        backup = Path(tempfile.mkdtemp(prefix=f'.{out.name}.old.', dir=out.parent))
        backup.rmdir()
        out.rename(backup)
        try:
            staging.rename(out)
        except BaseException:
            backup.rename(out)  # put the old folder back rather than leave nothing
            raise
        if backup.is_symlink():
            backup.unlink()  # --out was a link to a folder: the link is replaced, never what it pointed at
        else:
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
        allow_nonfinite: bool = False,
        log: Callable[[str], None] = lambda msg: None,
) -> PublishResult:
    """Write the Hub folder for ``checkpoint`` trained as ``model`` into ``out`` (see the module docstring)."""
    out = Path(out)
    tag_given = bool(tag)
    arch, tag, tag_registered = resolve_model_name(model, tag)
    repo_id = check_repo_id(repo_id or default_repo_id(arch, tag))
    inputs = [Path(p) for p in (checkpoint, label_names, cards_path) if p]
    _check_out(out, overwrite, inputs, suggestion=f'{arch}.{tag}')

    ckpt = read_checkpoint(checkpoint, use_ema=use_ema)
    nonfinite = nonfinite_tensors(ckpt.state_dict)
    if nonfinite and not allow_nonfinite:
        raise PublishError(
            f'{ckpt.path}: {len(nonfinite)} tensor(s) of the {ckpt.weights} weights hold NaN or Inf: '
            f'{few_names(nonfinite, 5)}. The published model would output NaN: publish the checkpoint of an epoch '
            f'before training diverged (or --ema), or pass --allow-nonfinite if the values are intended.')
    if ckpt.arch:
        trained_arch = split_model_name_tag(ckpt.arch)[0]
        if trained_arch != arch and is_model(trained_arch):
            raise PublishError(f'{ckpt.path} was trained as {ckpt.arch} (train.py recorded it), not {arch}; '
                               f'pass --model {trained_arch}')
    kwargs = checkpoint_model_kwargs(arch, tag, tag_registered, ckpt, model_kwargs)
    net = build_checked_model(arch, tag, tag_registered, ckpt.state_dict, kwargs, source=ckpt.path)
    if not (tag_given or split_model_name_tag(model)[1]):
        check_default_tag_fits(arch, tag, net.num_classes, ckpt.path)
    log(f'{ckpt.describe()} load strictly into {arch} {kwargs}')
    names, label_source = resolve_label_names(net.num_classes, label_names, ckpt.train_args)
    readme = hub_readme(arch, tag, tag_registered, repo_id, kwargs, dataset=dataset or dataset_from_train_args(ckpt),
                        weights_note=ckpt.describe(), cards_path=cards_path, model=net)

    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in _remove_stale_staging(out):
        log(f'removed {stale}, left by an earlier publish that was killed')
    with interrupts_raise():
        _write_folder(out, net, names, readme)
    return PublishResult(
        out=out, repo_id=repo_id, model_name=f'{arch}.{tag}', files=[out / f for f in HUB_FILES],
        weights=ckpt.describe(), label_source=label_source, tag_registered=tag_registered,
    )


def _write_config(net: torch.nn.Module, path: Path, model_config: Optional[Dict[str, Any]]) -> None:
    """timm's ``config.json``, without ``num_classes`` in ``model_args``: it is stated at the root, where timm reads
    it, and transformers' timm wrapper passes ``num_classes`` itself next to ``**model_args`` (a second copy makes
    ``AutoModelForImageClassification.from_pretrained`` fail with "got multiple values for keyword argument")."""
    save_config_for_hf(net, str(path), model_config=model_config)
    config = json.loads(path.read_text(encoding='utf-8'))
    config.get('model_args', {}).pop('num_classes', None)
    path.write_text(json.dumps(config, indent=2) + '\n', encoding='utf-8')


def _write_folder(out: Path, net: torch.nn.Module, names: Optional[List[str]], readme: str) -> None:
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(out), dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the published folder should look like any other
        model_config = {'label_names': names} if names else None
        _write_config(net, staging / 'config.json', model_config)
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
