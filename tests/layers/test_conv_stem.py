""" SuperTokenConvEmbed, ConvStemEmbed and the ViTs built on them: layer tables, ablations, timm integration. """
import argparse

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import convert_sync_batchnorm
from timm.utils import ParseKwargs

import timm_posembed  # noqa: F401  (registers the models)
from timm_posembed.layers import ConvStemEmbed, SuperTokenClustering, SuperTokenConvEmbed
from timm_posembed.models.vision_transformer_supertoken import checkpoint_filter_fn


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _conv_params(c_in, c_out, k, bias):
    return c_in * c_out * k * k + (c_out if bias else 0)


# The super-token paper's table 7 at 224 / patch 16: (num_conv_modules, extra_stride2_conv) -> super-token cell size.
ABLATIONS = [((0, False), 16), ((1, False), 8), ((2, False), 8), ((4, False), 4), ((6, False), 2), ((6, True), 1)]


@pytest.mark.parametrize('ablation,cell', ABLATIONS)
def test_every_stem_depth_gives_196_tokens_at_224(ablation, cell):
    num_conv_modules, extra = ablation
    embed = SuperTokenConvEmbed(
        img_size=224, patch_size=16, embed_dim=32, num_conv_modules=num_conv_modules, extra_stride2_conv=extra)
    assert embed.cluster.stoken_size == cell
    assert _n_params(embed.cluster) == 0
    out = embed(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 196, 32)
    assert embed.num_patches == 196 and embed.grid_size == (14, 14) and embed.feat_ratio() == 16


def test_supertoken_embed_matches_table_5():
    embed = SuperTokenConvEmbed(embed_dim=384)
    chans = [m.conv.out_channels for m in embed.stem]
    strides = [m.conv.stride[0] for m in embed.stem]
    assert chans == [16, 32, 32, 64, 64, 64] and strides == [2, 1, 2, 1, 2, 1]
    assert [type(m) for m in embed.stem[0].children()] == [nn.Conv2d, nn.GELU, nn.BatchNorm2d]
    assert (embed.cluster.stoken_size, embed.cluster.num_iters, embed.cluster.grad_through_assoc) == (2, 3, False)
    assert embed.cluster.border == 'zero_pad'  # STViT's code, which the super-token paper builds on
    # count from the layer table: biased 3x3 convs, BN weight+bias, Linear 64 -> 384
    ins = [3] + chans[:-1]
    expected = sum(_conv_params(i, o, 3, True) + 2 * o for i, o in zip(ins, chans)) + 64 * 384 + 384
    assert _n_params(embed) == expected
    # intermediate map sizes of table 5 at 224
    x = torch.randn(1, 3, 224, 224)
    sizes = []
    for m in embed.stem:
        x = m(x)
        sizes.append(x.shape[-1])
    assert sizes == [112, 112, 56, 56, 28, 28]
    assert embed.cluster(x).shape == (1, 64, 14, 14)


def test_conv_stem_matches_earlyconv_and_seed_table_4():
    stem = ConvStemEmbed(embed_dim=384)
    assert [type(m) for m in stem.stem[0].children()] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    chans = [48, 96, 192, 384]
    expected = sum(_conv_params(i, o, 3, False) + 2 * o for i, o in zip([3] + chans[:-1], chans))
    expected += _conv_params(384, 384, 1, True)
    assert _n_params(stem) == expected
    assert stem(torch.randn(1, 3, 224, 224)).shape == (1, 196, 384)
    seed = ConvStemEmbed(img_size=224, embed_dim=384, channels=(96, 192, 384, 384), final_kernel_size=3)
    chans = [96, 192, 384, 384]
    expected = sum(_conv_params(i, o, 3, False) + 2 * o for i, o in zip([3] + chans[:-1], chans))
    assert _n_params(seed) == expected + _conv_params(384, 384, 3, True)
    assert seed(torch.randn(1, 3, 224, 224)).shape == (1, 196, 384)


def test_embed_output_formats_and_dynamic_padding():
    embed = SuperTokenConvEmbed(img_size=None, patch_size=16, embed_dim=8, output_fmt='NHWC', strict_img_size=False)
    assert embed(torch.randn(2, 3, 64, 96)).shape == (2, 4, 6, 8)
    embed = ConvStemEmbed(img_size=None, embed_dim=8, flatten=False, strict_img_size=False)
    assert embed(torch.randn(2, 3, 64, 96)).shape == (2, 8, 4, 6)
    embed = SuperTokenConvEmbed(img_size=None, embed_dim=8, strict_img_size=False, dynamic_img_pad=True)
    assert embed(torch.randn(1, 3, 50, 40)).shape == (1, 4 * 3, 8)
    assert embed.dynamic_feat_size((50, 40)) == (4, 3)


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match=r'img_size \(8, 8\) must be a positive multiple of the patch size 16'):
        SuperTokenConvEmbed(img_size=8)
    with pytest.raises(ValueError, match=r'img_size \(200, 200\).*img_size=\(192, 192\)'):
        ConvStemEmbed(img_size=200)
    embed = SuperTokenConvEmbed(img_size=None, embed_dim=8, strict_img_size=False)
    with pytest.raises(ValueError, match=r'\(8, 8\) is too small for the reduction 16.*dynamic_img_pad=True'):
        embed(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r'\(40, 48\) is not a multiple of the reduction 16'):
        embed(torch.randn(1, 3, 40, 48))
    with pytest.raises(ValueError, match='expected 3 input channels, got 1'):
        embed(torch.randn(1, 1, 32, 32))
    strict = SuperTokenConvEmbed(img_size=64, embed_dim=8)
    with pytest.raises(ValueError, match=r'expected images of size \(64, 64\), got \(32, 32\)'):
        strict(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r'patch_size 8 is not a multiple of the conv stem\'s stride 16'):
        SuperTokenConvEmbed(patch_size=8, extra_stride2_conv=True)
    with pytest.raises(ValueError, match='num_conv_modules must be in 0..6'):
        SuperTokenConvEmbed(num_conv_modules=7)
    with pytest.raises(ValueError, match='reduce by 32, but patch_size is 16'):
        ConvStemEmbed(channels=(8, 16, 32, 64, 128))


def test_model_ablations_reachable_with_model_kwargs():
    # the same parsing as timm's train.py --model-kwargs
    parser = argparse.ArgumentParser()
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs)
    args = parser.parse_args(['--model-kwargs', 'stoken_num_conv_modules=4', 'stoken_num_iters=1',
                              'stoken_grad_through_assoc=True', 'stoken_border=exclude'])
    model = timm.create_model('vit_tiny_supertoken_conv', **args.model_kwargs)
    assert isinstance(model.patch_embed, SuperTokenConvEmbed)
    assert len(model.patch_embed.stem) == 4
    cluster = model.patch_embed.cluster
    settings = (cluster.stoken_size, cluster.num_iters, cluster.grad_through_assoc, cluster.border)
    assert settings == (4, 1, True, 'exclude')

    args = parser.parse_args(['--model-kwargs', 'stem_channels=96,192,384,384', 'stem_final_kernel_size=3'])
    model = timm.create_model('vit_small_conv_embed', **args.model_kwargs)
    assert [m.conv.out_channels for m in model.patch_embed.stem] == [96, 192, 384, 384]
    assert model.patch_embed.proj.kernel_size == (3, 3)
    with pytest.raises(TypeError):
        timm.create_model('vit_tiny_supertoken_conv', n_iter=2)  # the layer's name, not the model's


@pytest.mark.parametrize('name', ['vit_tiny_supertoken_conv', 'vit_small_conv_embed'])
def test_sync_batchnorm_conversion(name):
    model = timm.create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, 224, 224)
    expected = model(x)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn == len(model.patch_embed.stem)
    converted = convert_sync_batchnorm(model)  # what train.py --sync-bn calls
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules()) == n_bn
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    torch.testing.assert_close(converted.eval()(x), expected)


def test_features_only_trains_the_stem_batchnorm():
    model = timm.create_model('vit_tiny_supertoken_conv', features_only=True, out_indices=(1, 11))
    assert model.feature_info.reduction() == [16, 16]
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()
    feats = model(torch.randn(2, 3, 224, 224))
    assert [f.shape for f in feats] == [(2, 192, 14, 14)] * 2
    assert not torch.equal(bn.running_mean, before)
    sum(f.mean() for f in feats).backward()
    assert bn.weight.grad is not None


def test_dynamic_img_size_and_set_input_size():
    model = timm.create_model('vit_tiny_supertoken_conv', dynamic_img_size=True, num_classes=3).eval()
    assert model(torch.randn(1, 3, 160, 96)).shape == (1, 3)
    _, inter = model.forward_intermediates(torch.randn(1, 3, 160, 96), indices=1)
    assert inter[0].shape == (1, 192, 10, 6)
    with pytest.raises(ValueError, match='not a multiple of the reduction 16'):
        model(torch.randn(1, 3, 100, 96))

    model = timm.create_model('vit_tiny_supertoken_conv', num_classes=3).eval()
    with pytest.raises(ValueError, match=r'expected images of size \(224, 224\), got \(256, 256\)'):
        model(torch.randn(1, 3, 256, 256))
    model.set_input_size(img_size=(256, 256))
    assert model.pos_embed.shape[1] == 1 + 16 * 16
    assert model(torch.randn(1, 3, 256, 256)).shape == (1, 3)
    # the patch size (total reduction) of the super-token embed moves into the cell size, the stem is unchanged
    model.set_input_size(patch_size=32)
    assert model.patch_embed.cluster.stoken_size == 4 and model.patch_embed.grid_size == (8, 8)
    assert model(torch.randn(1, 3, 256, 256)).shape == (1, 3)


def test_checkpoint_filter_unwraps_and_refuses_other_architectures():
    model = timm.create_model('vit_tiny_supertoken_conv', num_classes=3)
    sd = {'module.' + k: v for k, v in model.state_dict().items()}
    filtered = checkpoint_filter_fn({'state_dict': sd}, model)
    model.load_state_dict(filtered)

    at_256 = timm.create_model('vit_tiny_supertoken_conv', num_classes=3, img_size=256)
    resized = checkpoint_filter_fn(model.state_dict(), at_256)
    assert resized['pos_embed'].shape == at_256.pos_embed.shape

    # the filter only transforms; the builder's strict check refuses other architectures, saying what they are
    with pytest.raises(ValueError, match=r'missing.*unexpected.*patch_embed\.stem\.4'):
        timm.create_model('vit_tiny_supertoken_conv', num_classes=3, stoken_num_conv_modules=4, pretrained=True,
                          pretrained_cfg_overlay=dict(state_dict=model.state_dict()))
    plain_vit = timm.create_model('vit_tiny_patch16_224', num_classes=3)
    with pytest.raises(ValueError, match=r'missing keys \[patch_embed\.stem(.|\n)*is a ViT with a patch embed'):
        timm.create_model('vit_tiny_supertoken_conv', num_classes=3, pretrained=True,
                          pretrained_cfg_overlay=dict(state_dict=plain_vit.state_dict()))


def test_pretrained_cfgs():
    for name, paper in [('vit_small_supertoken_conv', 'arXiv:2211.11167'),
                        ('vit_tiny_supertoken_conv', 'arXiv:2211.11167'),
                        ('vit_small_conv_embed', 'arXiv:2106.14881')]:
        cfg = timm.models.get_pretrained_cfg(name + '.in100').to_dict()
        assert cfg['hf_hub_id'] == timm_posembed.models.hub_id(name, 'in100')
        assert cfg['num_classes'] == 100 and cfg['first_conv'] == 'patch_embed.stem.0.conv'
        assert paper in cfg['paper_ids']
        assert timm_posembed.models.model_info(name).paper.ids[0] == paper
    # in_chans adaptation goes through first_conv
    model = timm.create_model('vit_tiny_supertoken_conv', in_chans=1, num_classes=2)
    assert model(torch.randn(1, 1, 224, 224)).shape == (1, 2)


def test_clustering_autocast_bfloat16():
    model = timm.create_model('vit_tiny_supertoken_conv', num_classes=4).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (1, 4) and torch.isfinite(out).all()
    assert isinstance(model.patch_embed.cluster, SuperTokenClustering)
