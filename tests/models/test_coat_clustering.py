""" Tests of the clustering CoaT-Lite models . Small images (64 px) unless the test is about 224. """
import argparse

import pytest
import torch
import timm
from safetensors.torch import save_file
from timm.models.coat import FactorAttnConvRelPosEnc
from timm.utils import ParseKwargs

import timm_posembed.models.coat_clustering as coat_clustering
from timm_posembed.layers import ClusteredFactorAttnConvRelPosEnc
from timm_posembed.models import model_info

IMG = 64


def _pair(singleton: bool = False, **kwargs):
    """timm's coat_lite_tiny and ours with the same (random) weights, at 64 px, eval."""
    torch.manual_seed(0)
    ours = timm.create_model('coat_lite_clustering_tiny', img_size=IMG, cluster_singleton=singleton, **kwargs)
    ref = timm.create_model('coat_lite_tiny', img_size=IMG)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), ref.eval()


def _image(seed: int = 0, batch: int = 1, size: int = IMG) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_degenerate_clustering_equals_timm_coat_lite():
    ours, ref = _pair(singleton=True)
    x = _image(batch=2)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    # the real clustering does change the function (so the equality above is not vacuous)
    clustered, _ = _pair(singleton=False)
    assert not torch.allclose(clustered(x), ref(x), rtol=1e-3, atol=1e-3)


def test_timm_coat_lite_tiny_weights_load_strictly(tmp_path):
    # No Hub access here: timm's coat_lite_tiny (random init) saved to safetensors stands in for the published
    # timm/coat_lite_tiny.in1k weights, which the pretrained cfg names; loading goes through the same path.
    # (CoaT's state dict names its shared CPE / CRPE tensors twice; safetensors needs separate copies.)
    torch.manual_seed(1)
    timm_model = timm.create_model('coat_lite_tiny').eval()
    path = tmp_path / 'coat_lite_tiny.safetensors'
    save_file({k: v.clone() for k, v in timm_model.state_dict().items()}, str(path))

    ours = timm.create_model(
        'coat_lite_clustering_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert ours.pretrained_cfg['hf_hub_id'] == 'timm/coat_lite_tiny.in1k'
    reloaded = ours.state_dict()
    assert set(reloaded) == set(timm_model.state_dict())
    assert all(torch.equal(reloaded[k], v) for k, v in timm_model.state_dict().items())
    ours.load_state_dict(timm_model.state_dict(), strict=True)

    # timm's coat_lite_mini weights do not fit the tiny model: the error names the mismatch
    mini = timm.create_model('coat_lite_mini')
    mini_path = tmp_path / 'coat_lite_mini.safetensors'
    save_file({k: v.clone() for k, v in mini.state_dict().items()}, str(mini_path))
    with pytest.raises(ValueError, match=r'coat_lite_mini.safetensors: the checkpoint does not match (.|\n)*'
                                         r'create the variant it was trained as: .*embed_dims=\[64, 128, 320, 512\]'):
        timm.create_model('coat_lite_clustering_tiny', pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(mini_path)))
    # a CoaT (parallel blocks) checkpoint is refused by name
    with pytest.raises(ValueError, match='parallel blocks'):
        timm.create_model('coat_lite_clustering_tiny', pretrained=True,
                          pretrained_cfg_overlay=dict(state_dict={'parallel_blocks.0.norm12.weight': torch.ones(1)}))


@torch.no_grad()
def test_eval_is_deterministic_and_copies_give_identical_rows():
    for attn in ('factorized', 'softmax'):
        model, _ = _pair(cluster_attn=attn)
        x = _image(2)
        assert torch.equal(model(x), model(x.clone()))
        copies = x.expand(3, -1, -1, -1).contiguous()
        out = model(copies)
        assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


@torch.no_grad()
def test_cluster_count_adapts_and_is_reported():
    model, _ = _pair()
    model(_image(3))
    noise = model.cluster_counts()
    model(torch.full((1, 3, IMG, IMG), 0.5))
    flat = model.cluster_counts()
    assert sorted(noise) == [0, 1, 2, 3]
    tokens = [1 + (IMG // 4 // 2 ** s) ** 2 for s in range(4)]
    for stage in range(4):
        assert noise[stage].shape == (2, 1, 8)  # (blocks, batch, heads)
        assert (noise[stage] >= 1).all() and (noise[stage] <= tokens[stage]).all()
    # a constant image has far fewer distinct queries than noise in the high-resolution stages
    assert flat[0].float().mean() < noise[0].float().mean()
    assert flat[1].float().mean() < noise[1].float().mean()


@pytest.mark.parametrize('attn', ['factorized', 'softmax'])
def test_gradients_reach_every_parameter(attn):
    model, _ = _pair(cluster_attn=attn)
    model.train()
    model(_image(4, batch=2)).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if 'qkv' in n)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_is_finite(dtype):
    for attn in ('factorized', 'softmax'):
        model, _ = _pair(cluster_attn=attn)
        with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
            out = model(_image(5))
        assert out.dtype == dtype and torch.isfinite(out).all()


def test_grad_checkpointing_is_real_and_exact(monkeypatch):
    model, _ = _pair()
    model.train()
    x = _image(6, batch=2)
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    calls = []
    real_checkpoint = coat_clustering.checkpoint
    monkeypatch.setattr(coat_clustering, 'checkpoint', lambda fn, *a: calls.append(fn) or real_checkpoint(fn, *a))
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert len(calls) == sum(len(getattr(model, f'serial_blocks{i}')) for i in range(1, 5))
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)
    calls.clear()
    model.forward_intermediates(x)
    assert len(calls) == 8


@torch.no_grad()
def test_features_only_four_stages_match_forward_intermediates():
    model, _ = _pair()
    feats = timm.create_model('coat_lite_clustering_tiny', img_size=IMG, features_only=True).eval()
    # FeatureGetterNet wraps the model pruned of its head and final norm
    loaded = feats.model.load_state_dict(model.state_dict(), strict=False)
    assert not loaded.missing_keys and all(k.startswith(('head.', 'norm4.')) for k in loaded.unexpected_keys)
    x = _image(7)
    outs = feats(x)
    assert feats.feature_info.channels() == [64, 128, 256, 320]
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    assert [tuple(o.shape) for o in outs] == [(1, c, IMG // r, IMG // r)
                                              for c, r in zip([64, 128, 256, 320], [4, 8, 16, 32])]
    final, taps = model.forward_intermediates(x)
    for o, t in zip(outs, taps):
        torch.testing.assert_close(o, t)
    torch.testing.assert_close(final, model.forward_features(x))
    early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(early[0], taps[1])


def test_stage_selection_and_model_kwargs_from_the_command_line():
    parser = argparse.ArgumentParser()
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    args = parser.parse_args([
        '--model-kwargs', 'cluster_stages=(0,1)', 'cluster_num_rounds=4', 'cluster_bucket_width=2.5',
        'cluster_attn=softmax', 'cluster_capacity=0.25'])
    model = timm.create_model('coat_lite_clustering_tiny', img_size=IMG, **args.model_kwargs).eval()
    attns = model.clustered_attentions()
    assert [len(attns[s]) for s in range(4)] == [2, 2, 0, 0]
    first = attns[0][0]
    assert (first.attn, first.clustering.num_rounds, first.clustering.bucket_width, first.clustering.capacity) == (
        'softmax', 4, 2.5, 0.25)
    for stage in (3, 4):
        for blk in getattr(model, f'serial_blocks{stage}'):
            assert type(blk.factoratt_crpe) is FactorAttnConvRelPosEnc  # timm's attention, unchanged
    # each block hashes with its own projections
    assert not torch.equal(attns[0][0].clustering.hash_proj, attns[0][1].clustering.hash_proj)
    with torch.no_grad():
        model(_image(8))
    counts = model.cluster_counts()
    assert sorted(counts) == [0, 1]
    assert (counts[0] <= 1 + 64).all()  # capacity: 1 + ceil(0.25 * 256) prototypes at stage 0
    with pytest.raises(ValueError, match='cluster_stages'):
        timm.create_model('coat_lite_clustering_tiny', cluster_stages=(4,))


def test_acts_hash_settings_reach_every_block_from_the_command_line():
    parser = argparse.ArgumentParser()
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    args = parser.parse_args(['--model-kwargs', 'cluster_query_scale=head_dim', 'cluster_offset_range=unit',
                              'cluster_redraw=True', 'cluster_num_rounds=32'])
    model = timm.create_model('coat_lite_clustering_tiny', img_size=IMG, **args.model_kwargs)
    clusterings = [a.clustering for attns in model.clustered_attentions().values() for a in attns]
    assert len(clusterings) == 8
    for c in clusterings:
        assert (c.query_scale, c.offset_range, c.redraw, c.num_rounds) == ('head_dim', 'unit', True, 32)
        assert c.hash_scale == c.head_dim ** -0.5 and (c.hash_offset < 1.0).all()
    # training redraws the hash (a new partition for the same image), evaluation does not
    x = _image(9)
    model.train()
    with torch.no_grad():
        model(x)
        first = model.cluster_counts()
        model(x)
        second = model.cluster_counts()
        assert any(not torch.equal(first[s], second[s]) for s in first)
        model.eval()
        model(x)
        first = model.cluster_counts()
        model(x)
        assert all(torch.equal(first[s], c) for s, c in model.cluster_counts().items())


def test_bad_input_and_arguments_are_explained():
    model, _ = _pair()
    with pytest.raises(ValueError, match='input channels'):
        model(torch.randn(1, 1, IMG, IMG))
    with pytest.raises(ValueError, match='img_size'):
        model(torch.randn(1, 3, 2 * IMG, 2 * IMG))
    with pytest.raises(ValueError, match='parallel_depth'):
        timm.create_model('coat_lite_clustering_tiny', parallel_depth=2)
    with pytest.raises(ValueError, match="'factorized' or 'softmax'"):
        timm.create_model('coat_lite_clustering_tiny', cluster_attn='linear')


def test_variants_match_timm_coat_lite_shapes_and_catalog():
    with torch.device('meta'):
        for size in ('tiny', 'mini', 'small', 'medium'):
            ours = timm.create_model(f'coat_lite_clustering_{size}', device='meta')
            ref = timm.create_model(f'coat_lite_{size}', device='meta')
            shapes = {k: v.shape for k, v in ref.state_dict().items()}
            assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
            assert model_info(f'coat_lite_clustering_{size}').baseline == f'coat_lite_{size}'
            assert ours.pretrained_cfg['hf_hub_id'] == f'timm/coat_lite_{size}.in1k'
        default = timm.create_model('coat_lite_clustering', device='meta')
    assert default.embed_dims == [64, 128, 256, 320]
    assert isinstance(default.serial_blocks1[0].factoratt_crpe, ClusteredFactorAttnConvRelPosEnc)


@pytest.mark.parametrize('img_size', [8, (64, 16)])
def test_img_size_too_small_is_named(img_size):
    with pytest.raises(ValueError, match=r'img_size .* too small .* at least 32'):
        timm.create_model('coat_lite_clustering', img_size=img_size)
