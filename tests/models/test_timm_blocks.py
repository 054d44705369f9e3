""" Warm start from timm's pretrained ViTs (``load_timm_blocks`` and the ``timm_blocks_*`` tags).

The Hub is simulated: timm-format repos (``model.safetensors`` + ``config.json``) are written into a temporary Hugging
Face cache in its on-disk layout and huggingface_hub runs offline with network connections refused, so the weights
reach the model through timm's own loader exactly as from a cache filled by a real download. Checked: every tensor
that fits equals timm's, the new embedding equals its initialisation, and the result lists exactly what was left. """
import pickle

import pytest
import timm
import torch
from hf_hub_cache import seed_hf_cache, timm_hub_files, use_offline_hf_cache
from safetensors.torch import save_file

import timm_posembed
from timm_posembed.hub.publish import PublishError
from timm_posembed.hub.naming import resolve_model_name
from timm_posembed.models import CheckpointMismatchError, PretrainedWeightsUnavailableError, load_timm_blocks

TIMM_SOURCE = 'vit_tiny_patch16_224.augreg_in21k_ft_in1k'
WARM_TAG = 'timm_blocks_augreg_in21k_ft_in1k'
SMALL = dict(depth=2, img_size=32, patch_size=8)  # a tiny ViT-Ti layout for the direct calls: 4x4 patch grid


def _timm_vit(seed: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model('vit_tiny_patch16_224', **kwargs)


def _save(model: torch.nn.Module, path) -> str:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def _init_of(name: str, seed: int, **kwargs) -> dict:
    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs).state_dict()


def _assert_warm_start(model, timm_model, init, left):
    ours, theirs = model.state_dict(), timm_model.state_dict()
    for key, tensor in ours.items():
        reference = init[key] if key in left else theirs[key]
        expected = 'its initialisation' if key in left else "timm's tensor"
        assert torch.equal(tensor, reference), f'{key}: not {expected}'


def test_tag_loads_timms_blocks_from_a_seeded_hub_cache(tmp_path, monkeypatch, capsys):
    # the user's route: timm.create_model('vit_tiny_cope.timm_blocks_...', pretrained=True), weights from the
    # (simulated) Hub cache of timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k, at its full size
    timm_model = _timm_vit(1)
    seed_hf_cache(tmp_path / 'hub', f'timm/{TIMM_SOURCE}', timm_hub_files(timm_model, tmp_path))
    use_offline_hf_cache(monkeypatch, tmp_path / 'hub')
    init = _init_of('vit_tiny_cope', 7, num_classes=10)
    torch.manual_seed(7)
    model = timm.create_model(f'vit_tiny_cope.{WARM_TAG}', pretrained=True, num_classes=10)
    left = {'cope.freq', 'cope.phase', 'head.weight', 'head.bias'}
    _assert_warm_start(model, timm_model, init, left)
    assert model.pretrained_cfg['description'].startswith(f"Blocks from timm's {TIMM_SOURCE}, embedding untrained")
    assert model.pretrained_cfg['mean'] == timm.models.get_pretrained_cfg(TIMM_SOURCE).mean  # timm's input norm.
    printed = capsys.readouterr().out
    taken = len(timm_model.state_dict()) - 3  # all but pos_embed and the 1000-class head
    assert f"Warm start from timm's {TIMM_SOURCE}: took {taken} tensors" in printed
    assert {line.split(':')[0].strip() for line in printed.splitlines()[1:-1]} == left
    assert 'unused from timm\'s checkpoint: [pos_embed, head.weight, head.bias] (3)' in printed


def test_tag_with_the_checkpoints_class_count_takes_its_head_too(tmp_path, monkeypatch):
    timm_model = _timm_vit(2)
    seed_hf_cache(tmp_path / 'hub', f'timm/{TIMM_SOURCE}', timm_hub_files(timm_model, tmp_path))
    use_offline_hf_cache(monkeypatch, tmp_path / 'hub')
    init = _init_of('vit_tiny_supertoken_conv', 3, num_classes=1000)
    torch.manual_seed(3)
    model = timm.create_model(f'vit_tiny_supertoken_conv.{WARM_TAG}', pretrained=True)
    assert model.num_classes == 1000  # the tag's cfg carries timm's class count
    left = {k for k in init if k.startswith('patch_embed.')}  # the super-token stem, all of it
    _assert_warm_start(model, timm_model, init, left)  # pos_embed, head, blocks: timm's


def test_tag_offline_with_nothing_cached_says_how_to_get_the_weights(tmp_path, monkeypatch):
    use_offline_hf_cache(monkeypatch, tmp_path / 'empty')
    with pytest.raises(PretrainedWeightsUnavailableError, match=rf"timm's {TIMM_SOURCE}: the weights could not be "
                                                                r"loaded .*pretrained_cfg_overlay=dict\(file="):
        timm.create_model(f'vit_tiny_cope.{WARM_TAG}', pretrained=True, num_classes=10)


def test_tag_with_a_local_file_adapts_img_size_and_in_chans_through_timm(tmp_path, capsys):
    # train.py --pretrained-path FILE: a local copy of timm's weights; img_size / in_chans go to timm's loader
    timm_model = _timm_vit(4)
    file = _save(timm_model, tmp_path / 'vit_tiny.safetensors')
    # custom_load=False: timm < 1.0.31's augreg cfgs send a local file to their .npz reader (load_timm_blocks says so)
    adapted = timm.create_model(TIMM_SOURCE, pretrained=True, img_size=64, in_chans=1,
                                pretrained_cfg_overlay=dict(file=file, custom_load=False))
    init = _init_of('vit_tiny_cope', 5, num_classes=3, img_size=64, in_chans=1)
    torch.manual_seed(5)
    model = timm.create_model(f'vit_tiny_cope.{WARM_TAG}', pretrained=True, num_classes=3, img_size=64, in_chans=1,
                              pretrained_cfg_overlay=dict(file=file, num_classes=-1))
    # num_classes=-1 (train.py's) makes timm drop the checkpoint's head, so the head is left, not taken
    _assert_warm_start(model, adapted, init, {'cope.freq', 'cope.phase', 'head.weight', 'head.bias'})
    printed = capsys.readouterr().out
    assert "head.weight: timm's classifier, which timm did not load" in printed
    # features_only wraps the model; the blocks under the wrapper are timm's all the same
    features = timm.create_model(f'vit_tiny_cope.{WARM_TAG}', pretrained=True, features_only=True, img_size=64,
                                 in_chans=1, pretrained_cfg_overlay=dict(file=file))
    assert torch.equal(features.state_dict()['model.blocks.0.attn.qkv.weight'], adapted.blocks[0].attn.qkv.weight)
    assert model.patch_embed.proj.weight.shape[1] == 1


@pytest.mark.parametrize('suffix', ['safetensors', 'pth'])
def test_load_timm_blocks_from_a_local_file_reports_exactly_what_was_left(tmp_path, suffix):
    timm_model = _timm_vit(6, num_classes=7, **SMALL)
    file = tmp_path / f'vit.{suffix}'
    if suffix == 'pth':
        torch.save({'state_dict': timm_model.state_dict(), 'epoch': 3}, file)  # a train.py-like checkpoint
    else:
        _save(timm_model, file)
    init = _init_of('vit_tiny_cope', 8, num_classes=5, **SMALL)
    torch.manual_seed(8)
    model = timm.create_model('vit_tiny_cope', num_classes=5, **SMALL)
    result = timm_posembed.load_timm_blocks(
        model, TIMM_SOURCE, pretrained_cfg_overlay=dict(file=str(file)),
        source_kwargs=dict(num_classes=7, **SMALL), verbose=False)
    left = {'cope.freq', 'cope.phase', 'head.weight', 'head.bias'}
    assert set(result.left) == left and len(result.left) == len(left)
    assert result.why_left['head.weight'] == "shape (7, 192) in timm's checkpoint vs (5, 192) here"
    assert result.why_left['cope.freq'] == 'the new embedding: keeps its initialisation'
    assert set(result.taken) == set(model.state_dict()) - left
    assert set(result.unused) == {'pos_embed', 'head.weight', 'head.bias'}
    _assert_warm_start(model, timm_model, init, left)


def test_a_deeper_source_fills_the_blocks_there_are_and_reports_the_rest_unused(tmp_path):
    timm_model = _timm_vit(9, num_classes=5, **dict(SMALL, depth=3))
    file = _save(timm_model, tmp_path / 'deeper.safetensors')
    model = timm.create_model('vit_tiny_cope', num_classes=5, **SMALL)
    result = load_timm_blocks(model, TIMM_SOURCE, pretrained_cfg_overlay=dict(file=file),
                              source_kwargs=dict(num_classes=5, **dict(SMALL, depth=3)), verbose=False)
    assert set(result.left) == {'cope.freq', 'cope.phase'}
    assert {k.split('.')[1] for k in result.unused if k.startswith('blocks.')} == {'2'}
    assert torch.equal(model.head.weight, timm_model.head.weight)


def test_a_source_of_another_width_is_refused(tmp_path):
    file = _save(_timm_vit(10, **SMALL), tmp_path / 'tiny.safetensors')
    model = timm.create_model('vit_small_cope', num_classes=5, **SMALL)  # width 384, timm's file is 192
    with pytest.raises(CheckpointMismatchError, match=r'tiny\.safetensors\): no tensor fits .*embed_dim 384'):
        load_timm_blocks(model, TIMM_SOURCE, pretrained_cfg_overlay=dict(file=file), source_kwargs=SMALL)


def test_a_file_that_does_not_fit_the_source_arguments_names_the_file(tmp_path):
    file = _save(_timm_vit(11, **SMALL), tmp_path / 'small.safetensors')
    model = timm.create_model('vit_tiny_cope', num_classes=5, **SMALL)
    with pytest.raises(CheckpointMismatchError, match=r'small\.safetensors\): the checkpoint does not fit timm\'s '
                                                      r'vit_tiny_patch16_224 .*Missing key.*pass source_kwargs='):
        load_timm_blocks(model, TIMM_SOURCE, pretrained_cfg_overlay=dict(file=file), source_kwargs=dict(depth=3))


class _Payload:
    def __reduce__(self):
        return (print, ('unpickled: the loader ran code from the file',))


@pytest.mark.parametrize('case', ['missing', 'folder', 'garbage', 'pickle'])
def test_hostile_or_missing_files_get_one_error_naming_the_file(tmp_path, case, capsys):
    path = tmp_path / f'bad.{"pth" if case == "pickle" else "safetensors"}'
    if case == 'folder':
        path.mkdir()
    elif case == 'garbage':
        path.write_bytes(b'\xff' * 64)
    elif case == 'pickle':
        with open(path, 'wb') as f:
            pickle.dump({'state_dict': _Payload()}, f)
    model = timm.create_model('vit_tiny_cope', num_classes=5, **SMALL)
    with pytest.raises(PretrainedWeightsUnavailableError, match=str(path).replace('.', r'\.')) as info:
        load_timm_blocks(model, TIMM_SOURCE, pretrained_cfg_overlay=dict(file=str(path)), source_kwargs=SMALL)
    assert 'unpickled' not in capsys.readouterr().out  # weights_only: the file's code never ran
    assert len(str(info.value).splitlines()) == 1


def test_publish_refuses_a_warm_start_tag():
    for args in [(f'vit_tiny_cope.{WARM_TAG}', None), ('vit_small_supertoken_conv', WARM_TAG)]:
        with pytest.raises(PublishError, match=r'warm starts \(timm\'s blocks, embedding untrained\), not trained'):
            resolve_model_name(*args)
    assert resolve_model_name('vit_tiny_cope')[1] == 'tiny_imagenet'  # the default tag is still the trained one


def test_an_unknown_source_name_is_named():
    model = timm.create_model('vit_tiny_cope', num_classes=5, **SMALL)
    with pytest.raises(ValueError, match=r"'vit_nonexistent_patch16\.x' is not a timm model name"):
        load_timm_blocks(model, 'vit_nonexistent_patch16.x')
