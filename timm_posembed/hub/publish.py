""" Publish a trained checkpoint of one of this package's models as a Hugging Face Hub repo, the way timm's look.

``publish_checkpoint`` reads a timm ``train.py`` checkpoint or a ``.safetensors`` file (``timm_posembed.checkpoints``),
builds the model it was trained as, checks the weights load strictly and are finite, and writes a folder with
``config.json`` (timm's ``save_for_hf`` format), ``model.safetensors`` and a ``README.md`` generated from
MODEL_CARDS.md (``timm_posembed.model_cards``). ``upload_hub_folder`` sends that folder with ``huggingface_hub``.

Every refusal (wrong architecture, unreadable or unsafe file, non-finite weights, an output folder that holds an
input or anything publish did not write) happens before anything is written. The folder is assembled in a staging
sibling and renamed into place in one step that never replaces content publish did not write (see
``_move_into_place``); an error, Ctrl-C or SIGTERM removes the staging folder (and the parent folders this run
made), and the next run removes any that a run killed outright left behind, so a failure never leaves a
half-written folder.
"""
import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

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
from .cards import check_dataset_id, hub_readme
from .checkpoints import (
    PublishError,
    checkpoint_model_kwargs,
    dataset_from_train_args,
    nonfinite_tensors,
    read_checkpoint,
)
from .label_names import resolve_label_names
from .naming import check_default_tag_fits, check_repo_id, default_repo_id, resolve_model_name, tag_from_repo_id

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
    ``PublishError`` saying what the checkpoint is (``check_checkpoint_fits``) when it does not fit, or naming the
    tensors whose kind of dtype (complex, integer, bool vs floating point) differs from the model's. Keys and shapes
    are compared on a model built on the meta device first, so recorded arguments that would make a huge model (an
    img_size of 40000) fail before anything is allocated."""
    what = str(source or 'the checkpoint')
    with torch.device('meta'):
        probe = _built(arch, tag, tag_registered, model_kwargs)
    try:
        check_checkpoint_fits(probe, state_dict, what, model_name=arch)
    except CheckpointMismatchError as e:
        raise PublishError(
            f'{e}\nFor publish: pass the --model it was trained as, and --model-kwargs KEY=VALUE for the '
            f'arguments train.py did not record (a .safetensors file records none).') from e
    expected = probe.state_dict()
    other_kind = [f'{k} ({v.dtype}, the model {expected[k].dtype})' for k, v in state_dict.items()
                  if _dtype_kind(v.dtype) != _dtype_kind(expected[k].dtype)]
    if other_kind:
        raise PublishError(f'{what}: {len(other_kind)} tensor(s) hold another kind of number than the model\'s '
                           f'(loading would cast them, dropping imaginary parts or fractions): '
                           f'{few_names(other_kind, 5)}; expected the weights as trained')
    model = _built(arch, tag, tag_registered, model_kwargs)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype.is_complex:
        return 'complex'
    if dtype.is_floating_point:
        return 'floating point'
    return 'bool' if dtype == torch.bool else 'integer'


def _built(arch: str, tag: str, tag_registered: bool, model_kwargs: Mapping[str, Any]):
    try:
        return _create(arch, tag, tag_registered, model_kwargs)
    except (TypeError, ValueError, RuntimeError, AssertionError, KeyError, NotImplementedError) as e:
        # timm asserts on some arguments (global_pool), often without a message
        reason = str(e) or f'{type(e).__name__} in timm'
        raise PublishError(f'cannot build {arch} with {dict(model_kwargs)}: {reason}') from e


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


# What an existing --out may hold for publish to write into it: nothing ('absent' / 'empty'), or a folder publish
# wrote before ('previous': regular files named like HUB_FILES, no link, no sub-folder, nothing else; a subset is
# accepted, e.g. after the user deleted the README). Only 'previous' is ever replaced, and only with --overwrite.
ABSENT, EMPTY, PREVIOUS = 'absent', 'empty', 'previous'
_REPLACEABLE = (f'publish --overwrite only replaces a folder publish wrote (nothing but '
                f'{", ".join(HUB_FILES)})')


def _out_state(out: Path) -> str:
    """ABSENT, EMPTY or PREVIOUS for ``out``; a ``PublishError`` naming the entry that makes it none of them. Stops
    at the first foreign entry, so the listing is bounded by len(HUB_FILES) + 1 entries."""
    if out.is_symlink():
        raise PublishError(f'--out {out} is a symbolic link; pass the folder itself (publish never writes through '
                           f'or replaces a link)')
    if not out.exists():
        return ABSENT
    if not out.is_dir():
        raise PublishError(f'--out {out} is a file; pass a folder (new, empty, or a previous publish output with '
                           f'--overwrite)')
    seen = 0
    with os.scandir(out) as entries:
        for entry in entries:
            if entry.name not in HUB_FILES or not entry.is_file(follow_symlinks=False):
                what = 'link' if entry.is_symlink() else 'folder' if entry.is_dir() else 'file'
                raise PublishError(f'--out {out} holds the {what} {entry.name!r}, which publish did not write; '
                                   f'{_REPLACEABLE}. Pass a new or empty folder.')
            seen += 1
    return PREVIOUS if seen else EMPTY


def _check_out(out: Path, overwrite: bool, inputs: Sequence[Path], suggestion: str) -> str:
    """Refuse an ``--out`` that publish could not write without harm (see ``_out_state``): one holding an input
    (the checkpoint, label names, cards) or the current folder, a link or file, a folder with anything publish did
    not write, a previous output without --overwrite, or one below a file or in a folder it cannot write to.
    Returns ``_out_state(out)``."""
    real = out.resolve()
    cwd = Path.cwd().resolve()
    if _contains(real, cwd) or real == Path(real.anchor):
        raise PublishError(f'--out {out} is the current folder or one above it; publish replaces its output folder '
                           f'as a whole, so pass a new folder, e.g. --out {suggestion}')
    held = [p for p in inputs if _contains(real, p.resolve())]
    if held:
        raise PublishError(f'--out {out} contains the input {held[0]}; publish never deletes or replaces its inputs. '
                           f'Pass a folder outside it, e.g. --out {real.parent / suggestion}')
    existing = Path(os.path.abspath(out)).parent
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise PublishError(f'--out {out}: {existing} is a file, not a folder; pass --out in a folder')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PublishError(f'--out {out}: cannot write in {existing} (read-only file system or no permission); '
                           f'pass --out in a writable folder')
    state = _out_state(out)
    if state == PREVIOUS and not overwrite:
        present = ', '.join(sorted(p.name for p in out.iterdir()))
        raise PublishError(f'--out {out} exists and holds a previous publish output ({present}); pass a new or '
                           f'empty folder, or --overwrite to replace it')
    return state


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


_RENAME_NOREPLACE = 1  # linux/fs.h
_AT_FDCWD = -100


def _renameat2() -> Optional[Callable[..., int]]:
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.renameat2  # glibc >= 2.28
    except (OSError, AttributeError, ImportError):
        return None


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` in one step that fails with ``FileExistsError`` when ``dst`` exists (even as an
    empty folder): Linux's ``renameat2(RENAME_NOREPLACE)``. Where the C library or the file system lacks it, a plain
    ``rename``, which is atomic too and at worst replaces an empty folder, never one with content."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        import ctypes
        if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: the file system does not support the flag
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst) and not (os.path.isdir(dst) and not os.path.islink(dst)):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


_TAKEN = (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR)


def _taken(out: Path, e: OSError) -> PublishError:
    return PublishError(f'--out {out} was created or filled by something else (another publish?) while this one ran '
                        f'({e.strerror}); it is left as that made it and nothing of this run was kept. Check {out}, '
                        f'or publish again to another folder.')


def _move_into_place(staging: Path, out: Path, state: str) -> None:
    """Put ``staging`` at ``out`` atomically, replacing at most what ``_check_out`` accepted, as it is at the moment
    of replacement: nothing (a rename that fails if ``out`` appeared meanwhile), an empty folder (a rename that
    fails once it is not empty), or with --overwrite a previous publish output, moved aside first and checked again
    there before the new folder takes its place (else it is put back and the run fails, naming what it holds)."""
    try:
        if state == ABSENT:
            rename_no_replace(staging, out)
        elif state == EMPTY:
            os.rename(staging, out)  # onto a folder only while it is empty (else ENOTEMPTY), in one step
        else:
            _replace_previous(staging, out)
    except OSError as e:
        if e.errno in _TAKEN:
            raise _taken(out, e) from None
        raise


def _replace_previous(staging: Path, out: Path) -> None:
    aside = Path(tempfile.mkdtemp(prefix=f'.{out.name}.previous.{os.getpid()}.', dir=out.parent))
    try:
        os.rename(out, aside)  # onto our own empty folder: one step, and only a folder can take its place
    except FileNotFoundError:  # removed meanwhile: nothing to replace any more
        aside.rmdir()
        rename_no_replace(staging, out)
        return
    except OSError:
        aside.rmdir()
        raise
    try:
        _out_state(aside)
    except PublishError as e:
        try:
            rename_no_replace(aside, out)
            kept = f'{out} is left as it was'
        except OSError:
            kept = f'what was at {out} is kept at {aside}'
        raise PublishError(f'{str(e).replace(str(aside), str(out))} (found when replacing it; {kept})') from None
    try:
        rename_no_replace(staging, out)
    except OSError as e:
        if e.errno in _TAKEN:
            raise PublishError(f'--out {out} was recreated by something else (another publish?) while this one '
                               f'replaced it; nothing of this run was kept, and the previous output is kept at '
                               f'{aside}') from None
        rename_no_replace(aside, out)
        raise
    for name in HUB_FILES:  # checked above to be all it holds
        with contextlib.suppress(FileNotFoundError):
            (aside / name).unlink()
    with contextlib.suppress(OSError):
        aside.rmdir()


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
    tag = tag or tag_from_repo_id(model, repo_id)
    tag_given = bool(tag)
    arch, tag, tag_registered = resolve_model_name(model, tag)
    repo_id = check_repo_id(repo_id or default_repo_id(arch, tag))
    dataset = check_dataset_id(dataset) if dataset else None
    inputs = [Path(p) for p in (checkpoint, label_names, cards_path) if p]
    out_state = _check_out(out, overwrite, inputs, suggestion=f'{arch}.{tag}')

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

    with interrupts_raise(), _parent_folders(out):
        for stale in _remove_stale_staging(out):
            log(f'removed {stale}, left by an earlier publish that was killed')
        _write_folder(out, net, names, readme, out_state)
    return PublishResult(
        out=out, repo_id=repo_id, model_name=f'{arch}.{tag}', files=[out / f for f in HUB_FILES],
        weights=ckpt.describe(), label_source=label_source, tag_registered=tag_registered,
    )


@contextlib.contextmanager
def _parent_folders(out: Path) -> Iterator[None]:
    """Create the missing folders above ``out`` (like ``mkdir -p``) for the body, and remove them again, deepest
    first and only while empty, when the body fails: a failed publish leaves no trace."""
    missing = []
    parent = Path(os.path.abspath(out)).parent
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = parent.parent
    made: List[Path] = []
    try:
        for folder in reversed(missing):  # outermost first
            try:
                folder.mkdir()
            except FileExistsError:  # made by someone else meanwhile: theirs, not ours to remove
                continue
            except OSError as e:
                raise PublishError(f'--out {out}: cannot create the folder {folder} ({e.strerror}); pass --out in '
                                   f'a writable folder') from e
            made.insert(0, folder)
        yield
    except BaseException:
        for folder in made:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _write_config(net: torch.nn.Module, path: Path, model_config: Optional[Dict[str, Any]]) -> None:
    """timm's ``config.json``, without ``num_classes`` in ``model_args``: it is stated at the root, where timm reads
    it, and transformers' timm wrapper passes ``num_classes`` itself next to ``**model_args`` (a second copy makes
    ``AutoModelForImageClassification.from_pretrained`` fail with "got multiple values for keyword argument")."""
    save_config_for_hf(net, str(path), model_config=model_config)
    config = json.loads(path.read_text(encoding='utf-8'))
    config.get('model_args', {}).pop('num_classes', None)
    path.write_text(json.dumps(config, indent=2) + '\n', encoding='utf-8')


def _write_folder(out: Path, net: torch.nn.Module, names: Optional[List[str]], readme: str, state: str) -> None:
    try:
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(out), dir=out.parent))
    except OSError as e:
        raise PublishError(f'--out {out}: cannot create a folder in {out.parent} ({e.strerror}); pass --out in a '
                           f'writable folder') from e
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
        _move_into_place(staging, out, state)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        where = f' {e.filename}' if e.filename else ''
        raise PublishError(f'--out {out}: writing{where} failed ({e.strerror or e}); nothing was written to {out} '
                           f'and the partial files were removed: free space or pass --out on another disk') from e
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
