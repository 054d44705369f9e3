""" Input is validated once, in the embedding (as timm does), with messages that name the argument and the fix. """
import pytest
import timm
import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer

import timm_posembed  # noqa: F401  (registers the models)
from timm_posembed.layers import CheckedPatchEmbed, ComplexOrderPosEmbed, ConvStemEmbed, SuperTokenConvEmbed

_MODELS = ['vit_tiny_cope', 'vit_tiny_supertoken_conv', 'vit_small_conv_embed']


@pytest.mark.parametrize('name', _MODELS)
def test_models_run_timms_forward_with_attn_mask(name):
    model = timm.create_model(name, num_classes=4, img_size=32, depth=2).eval()
    assert type(model).forward is VisionTransformer.forward  # no model-level override: the embedding checks
    x = torch.randn(2, 3, 32, 32)
    n = model.patch_embed.num_patches + model.num_prefix_tokens
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[:, : n // 2] = True  # every token attends to the first half only
    with torch.no_grad():
        masked = model(x, attn_mask=mask)
        expected = model.forward_head(model.forward_features(x, attn_mask=mask))
        unmasked = model(x)
    torch.testing.assert_close(masked, expected)
    assert not torch.allclose(masked, unmasked)


@pytest.mark.parametrize('name', _MODELS)
def test_wrong_input_is_explained_by_the_embedding(name):
    model = timm.create_model(name, num_classes=4, img_size=32, depth=1)
    with pytest.raises(ValueError, match=r'expected 3 input channels, got 1.*in_chans=1'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r'expected images of size \(32, 32\), got \(48, 48\).*img_size=\(48, 48\)'):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r'expected an image batch of shape \(B, 3, H, W\), got a tensor of shape '
                                         r'\(3, 32, 32\)'):
        model(torch.randn(3, 32, 32))


def test_checked_patch_embed_is_timms_patch_embed_with_clearer_errors():
    ours = CheckedPatchEmbed(img_size=32, patch_size=8, in_chans=2, embed_dim=6)
    theirs = PatchEmbed(img_size=32, patch_size=8, in_chans=2, embed_dim=6)
    ours.load_state_dict(theirs.state_dict())  # same parameter names and shapes
    x = torch.randn(2, 2, 32, 32)
    torch.testing.assert_close(ours(x), theirs(x))
    assert (ours.grid_size, ours.num_patches, ours.feat_ratio()) == (theirs.grid_size, theirs.num_patches, 8)
    # a non-square patch, as timm's allows
    wide = CheckedPatchEmbed(img_size=(32, 48), patch_size=(8, 16), embed_dim=6, output_fmt='NHWC')
    assert wide(torch.randn(1, 3, 32, 48)).shape == (1, 4, 3, 6)
    # set_input_size(patch_size=) resamples the kernel as timm does
    theirs.set_input_size(patch_size=16)
    ours.set_input_size(patch_size=16)
    torch.testing.assert_close(ours.proj.weight, theirs.proj.weight)
    assert ours.grid_size == (2, 2)


def test_cope_model_patch_size_change_follows_the_grid():
    model = timm.create_model('vit_tiny_cope', num_classes=3, img_size=64, depth=1).eval()
    model.set_input_size(patch_size=8)
    assert model.patch_embed.grid_size == (8, 8) and model.cope.num_tokens == 1 + 64
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize('name,minimum', [('vit_tiny_cope', 16), ('vit_tiny_supertoken_conv', 16),
                                          ('vit_small_conv_embed', 16)])
def test_img_size_too_small_for_the_model_names_the_minimum(name, minimum):
    with pytest.raises(ValueError, match=rf'img_size \(8, 8\).*too small: the minimum is {minimum}'):
        timm.create_model(name, img_size=8)


@pytest.mark.parametrize('embed_cls', [CheckedPatchEmbed, ConvStemEmbed, SuperTokenConvEmbed])
def test_embedding_arguments_are_named(embed_cls):
    with pytest.raises(ValueError, match='in_chans must be a positive integer, got 0'):
        embed_cls(img_size=32, in_chans=0)
    with pytest.raises(ValueError, match='embed_dim must be a positive integer, got 0'):
        embed_cls(img_size=32, embed_dim=0)
    with pytest.raises(ValueError, match=r'img_size must be a positive integer or a pair \(H, W\).*got 32.5'):
        embed_cls(img_size=32.5)
    with pytest.raises(ValueError, match=r'patch_size must be a positive integer or a pair.*got 0'):
        embed_cls(img_size=32, patch_size=0)


def test_model_with_zero_channels_names_in_chans():
    with pytest.raises(ValueError, match='in_chans must be a positive integer, got 0'):
        timm.create_model('vit_tiny_cope', in_chans=0, img_size=32)


def test_cope_layer_refuses_integer_tokens():
    layer = ComplexOrderPosEmbed(5, 4)
    with pytest.raises(TypeError, match=r'expected floating-point tokens, got torch.int64.*x.float\(\)'):
        layer(torch.ones(2, 5, 4, dtype=torch.long))


def test_cope_layer_shape_mistakes_are_named():
    layer = ComplexOrderPosEmbed(5, 4)
    with pytest.raises(ValueError, match=r'expected tokens of shape \(B, num_tokens=5, dim=4\), got \(2, 3, 3, 4\)'
                                         r'.*flattened to \(B, H\*W, D\)'):
        layer(torch.randn(2, 3, 3, 4))
    with pytest.raises(ValueError, match=r'num_tokens=5, dim=4\), got \(5, 4\)'):
        layer(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r'num_tokens=5, dim=4\), got \(2, 6, 4\)'):
        layer(torch.randn(2, 6, 4))


@pytest.mark.parametrize('kwargs,name', [(dict(num_tokens=5.0, dim=4), 'num_tokens'),
                                         (dict(num_tokens=5, dim=0), 'dim'),
                                         (dict(num_tokens=True, dim=4), 'num_tokens')])
def test_cope_layer_sizes_are_named(kwargs, name):
    with pytest.raises(ValueError, match=rf'{name} must be a positive integer'):
        ComplexOrderPosEmbed(**kwargs)
