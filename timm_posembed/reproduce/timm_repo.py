""" Where timm's training scripts are.

timm's ``train.py`` / ``validate.py`` / ``benchmark.py`` ship only in timm's git repository, not in its pip package,
so every tool here that launches them takes the repository's location from this one setting: the ``--timm-repo``
option where a tool has one, else the ``TIMM_REPO`` environment variable.
"""
import os
from pathlib import Path
from typing import Optional, Union

__all__ = ['TIMM_REPO_ENV', 'timm_repo_setting', 'resolve_timm_script']

TIMM_REPO_ENV = 'TIMM_REPO'


def timm_repo_setting(explicit: Optional[Union[str, Path]] = None) -> Optional[Path]:
    """The configured timm repository (``explicit`` first, then ``$TIMM_REPO``), or None when neither is set."""
    value = explicit if explicit else os.environ.get(TIMM_REPO_ENV, '')
    return Path(value).expanduser() if value else None


def resolve_timm_script(name: str, explicit: Optional[Union[str, Path]] = None) -> Path:
    """Path of ``name`` (e.g. ``'train.py'``) in the configured timm repository; a clear error when it is missing."""
    repo = timm_repo_setting(explicit)
    if repo is None:
        raise FileNotFoundError(
            f'timm\'s {name} is needed and its location is not set: pass --timm-repo DIR or set {TIMM_REPO_ENV}=DIR, '
            f'where DIR is a checkout of https://github.com/huggingface/pytorch-image-models '
            f'(the pip package does not contain {name}).')
    script = repo / name
    if not script.is_file():
        raise FileNotFoundError(
            f'no {name} in the timm repository {repo} (from --timm-repo or {TIMM_REPO_ENV}); expected a checkout of '
            f'https://github.com/huggingface/pytorch-image-models with {name} at its top level.')
    return script
