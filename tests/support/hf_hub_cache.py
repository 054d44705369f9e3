""" A Hugging Face Hub cache laid out by hand, for tests of loading "from the Hub" with no network.

The transport is simulated: nothing is downloaded. The files are placed where huggingface_hub's cache keeps a
downloaded repo at revision ``main`` (``models--ORG--NAME/{refs/main, snapshots/COMMIT/FILE -> ../../blobs/SHA}``),
and the test points huggingface_hub at that cache in offline mode, so ``hf_hub_download`` resolves the files from it
exactly as it does on a machine that downloaded them once.
"""
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Dict, Mapping

import torch
from safetensors.torch import save_file


def seed_hf_cache(cache: Path, repo_id: str, files: Mapping[str, bytes]) -> Path:
    """Lay ``files`` (name -> bytes) out as huggingface_hub's cache holds ``repo_id`` at revision main; returns the
    snapshot folder."""
    repo_dir = cache / ('models--' + repo_id.replace('/', '--'))
    digest = hashlib.sha1(repo_id.encode())
    for name in sorted(files):
        digest.update(name.encode() + files[name])
    commit = digest.hexdigest()
    (repo_dir / 'refs').mkdir(parents=True, exist_ok=True)
    (repo_dir / 'refs' / 'main').write_text(commit)
    snapshot = repo_dir / 'snapshots' / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / 'blobs').mkdir(exist_ok=True)
    for name in sorted(files):
        blob = repo_dir / 'blobs' / hashlib.sha256(files[name]).hexdigest()
        if not blob.exists():
            blob.write_bytes(files[name])
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def timm_hub_files(model: torch.nn.Module, tmp: Path) -> Dict[str, bytes]:
    """What timm's Hub repos hold for ``model``: ``model.safetensors`` and a ``config.json`` naming the
    architecture, its class count and its pretrained cfg."""
    weights = tmp / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights), metadata={'format': 'pt'})
    cfg: Dict[str, Any] = dict(model.pretrained_cfg)
    cfg = {k: v for k, v in cfg.items() if k not in ('url', 'file', 'hf_hub_id', 'source', 'state_dict')}
    config = {'architecture': cfg.get('architecture'), 'num_classes': model.num_classes,
              'num_features': model.num_features, 'pretrained_cfg': cfg}
    data = weights.read_bytes()
    weights.unlink()
    return {'model.safetensors': data, 'config.json': json.dumps(config, default=list).encode()}


def use_offline_hf_cache(monkeypatch, cache: Path) -> None:
    """Point huggingface_hub at ``cache`` in offline mode (HF_HUB_CACHE, HF_HUB_OFFLINE=1 as the environment would,
    patched where huggingface_hub reads them after import) and refuse every network connection."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(hub_constants, 'HF_HUB_OFFLINE', True)

    def refuse(*args, **kwargs):
        raise OSError('network access attempted by a test whose Hub transport is simulated')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket.socket, 'connect_ex', refuse)


__all__ = ['seed_hf_cache', 'timm_hub_files', 'use_offline_hf_cache']
