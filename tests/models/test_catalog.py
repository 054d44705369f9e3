""" The model catalog (``timm_posembed.models.list_model_info``) and timm's registry describe the same models, each
family's paper has one home, and the parameter counts the cards and docs quote hold. """
import pytest
import timm
import torch

from timm_conformance import our_model_names
from timm_posembed.models import list_model_info, model_info


def test_catalog_and_timm_registry_list_the_same_models():
    catalog = {info.name for info in list_model_info()}
    assert catalog == our_model_names()


def test_every_baseline_is_a_timm_model():
    for info in list_model_info():
        assert timm.is_model(info.baseline), info
        assert not info.baseline.startswith(tuple(our_model_names())), info


@pytest.mark.parametrize('name', sorted(our_model_names()))
def test_pretrained_cfgs_carry_the_catalog_paper(name):
    paper = model_info(name).paper
    for tag_name in timm.list_pretrained(name + '.*'):
        cfg = timm.models.get_pretrained_cfg(tag_name)
        assert cfg.paper_name == paper.name and list(cfg.paper_ids) == list(paper.ids), tag_name


def _num_params(name: str, **kwargs) -> int:
    # meta tensors: the count without allocating or initialising weights
    model = timm.create_model(name, device=torch.device('meta'), **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('name, num_classes, expected', [
    ('vit_tiny_cope', 200, 5_600_840),  # Kim & Cho's table 1
    ('vit_small_supertoken_conv', 100, 21_541_060),  # MODEL_CARDS.md (the docstring said 21,540,836)
    ('naflexvit_tiny_patch16_cope', 200, 5_600_840),  # MODEL_CARDS.md: vit_tiny_cope's count, its checkpoints load
    ('naflexvit_small_patch16_cope', 1000, 22_126_312),  # MODEL_CARDS.md
])
def test_parameter_counts(name, num_classes, expected):
    assert _num_params(name, num_classes=num_classes) == expected


@pytest.mark.parametrize('size', ['tiny', 'mini', 'small', 'medium'])
def test_clustering_coat_has_exactly_coat_lite_parameters(size):
    # Clustering adds no parameters, so timm's CoaT-Lite weights load unchanged.
    assert _num_params(f'coat_lite_clustering_{size}') == _num_params(f'coat_lite_{size}')


@pytest.mark.parametrize('size', ['tiny', 'small'])
def test_naflex_cope_has_exactly_the_cope_vit_parameters(size):
    # the same tensors, NaFlex's linear patch embedding holding the conv's weights: vit_*_cope checkpoints load
    naflex = _num_params(f'naflexvit_{size}_patch16_cope', num_classes=10)
    assert naflex == _num_params(f'vit_{size}_cope', num_classes=10)
