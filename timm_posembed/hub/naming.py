""" Names a published checkpoint gets: its ``arch.tag`` (the tag given, or the architecture's default one when the
checkpoint fits it) and the Hub repo id, shared by ``publish`` and ``card``. """
import re
from pathlib import Path
from typing import Optional, Tuple

from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg, split_model_name_tag

from .checkpoints import PublishError
from .cards import dataset_from_tag
from ..models import HF_HUB_ORG, hub_id, model_info, timm_blocks_tag_refusal

__all__ = ['resolve_model_name', 'check_default_tag_fits', 'default_repo_id', 'check_repo_id', 'tag_from_repo_id']


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
    if timm_blocks_tag_refusal(f'{arch}.{tag}'):  # a warm start's tag names timm's weights, not trained ones
        raise PublishError(timm_blocks_tag_refusal(f'{arch}.{tag}'))
    if not re.fullmatch(r'[a-z0-9_]+', tag):
        raise PublishError(f'--tag {tag!r}: a pretrained tag is lower-case letters, digits and "_" (like in100)')
    return arch, tag, tag in registered


def tag_from_repo_id(model: str, repo_id: Optional[str]) -> Optional[str]:
    """The tag that ``--repo-id ORG/ARCH.TAG`` names for ``--model ARCH`` (None when the model names a tag itself,
    or the repo's name is not ARCH.TAG): the repo name says what the weights are, so it need not be repeated."""
    arch, name_tag = split_model_name_tag(model)
    if name_tag or not repo_id or repo_id.count('/') != 1:
        return None
    repo_arch, _, repo_tag = repo_id.split('/')[1].partition('.')
    if repo_arch != arch or not repo_tag:
        return None
    if not re.fullmatch(r'[a-z0-9_]+', repo_tag):
        raise PublishError(f'--repo-id {repo_id}: its tag {repo_tag!r} is not a pretrained tag (lower-case letters, '
                           f'digits and "_", like in100); name the repo ORG/{arch}.TAG, or pass --tag TAG')
    return repo_tag


def check_default_tag_fits(arch: str, tag: str, num_classes: int, source: Path) -> None:
    """Refuse to name a checkpoint after the default tag's dataset when its class count says it is another one
    (the repo name and the card would then state the wrong dataset)."""
    cfg = get_pretrained_cfg(f'{arch}.{tag}')
    if cfg is None or cfg.num_classes == num_classes:
        return
    fitting = sorted(split_model_name_tag(name)[1] for name, c in get_arch_pretrained_cfgs(arch).items()
                     if c.num_classes == num_classes)
    hint = (f'--tag {fitting[0]}' if fitting else
            'a tag naming its dataset, e.g. --tag flowers102 (and --dataset HUB_DATASET_ID for the card)')
    raise PublishError(f'{source} has {num_classes} classes, but {arch}\'s default tag {tag!r} is for '
                       f'{dataset_from_tag(tag) or "a dataset"} with {cfg.num_classes}; pass the tag of the data it '
                       f'was trained on: {hint}')


def default_repo_id(arch: str, tag: str) -> str:
    """Our org's repo for ``arch.tag``: the registered ``hf_hub_id`` when it is under our org, else ``hub_id``.
    (Some cfgs point at another org's repo, e.g. timm's weights a model is initialised from; we never publish there
    by default.)"""
    cfgs = get_arch_pretrained_cfgs(arch)
    registered = cfgs.get(f'{arch}.{tag}')
    if registered is not None and (registered.hf_hub_id or '').startswith(HF_HUB_ORG + '/'):
        return registered.hf_hub_id
    return hub_id(arch, tag)


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f'--repo-id {repo_id!r} is not a valid Hub repo id ({e}); expected ORG/NAME.TAG') from e
    if repo_id.count('/') != 1:
        raise PublishError(f'--repo-id {repo_id!r}: expected ORG/NAME.TAG, e.g. {hub_id("vit_tiny_cope", "tag")}')
    return repo_id
