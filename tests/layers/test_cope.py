""" ComplexOrderPosEmbed and the vit_*_cope models beyond timm's conformance tests. """
import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.optim import param_groups_weight_decay

from timm_posembed.layers import ComplexOrderPosEmbed, resample_cope_tables, sinusoid_frequencies


def _randomised(layer: ComplexOrderPosEmbed, seed: int = 0) -> ComplexOrderPosEmbed:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


def _complex_reference(x, freq, phase, fuse):
    """Independent float64 computation through complex128: z = x·e^{iφ}, φ = p·Ω + Θ."""
    T = x.shape[1]
    pos = torch.arange(T, dtype=torch.float64).view(1, T, 1)
    phi = pos * freq.double() + phase.double()
    z = x.double().to(torch.complex128) * torch.exp(1j * phi.to(torch.complex128))
    return z.real + z.imag if fuse == 'sum' else z.real


@pytest.mark.parametrize('fuse', ['sum', 'real'])
def test_multiplicative_matches_complex128_reference(fuse):
    layer = _randomised(ComplexOrderPosEmbed(17, 12, fuse=fuse, dtype=torch.float64))
    x = torch.randn(3, 17, 12, dtype=torch.float64)
    expected = _complex_reference(x, layer.freq, layer.phase, fuse)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    # float32 input: same value to float32 precision (angles up to ~16·|Ω| rad here)
    layer32 = copy.deepcopy(layer).float()
    torch.testing.assert_close(layer32(x.float()).double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('fuse', ['sum', 'real'])
def test_additive_matches_complex128_reference(fuse):
    layer = _randomised(ComplexOrderPosEmbed(9, 8, fuse=fuse, mode='additive', dtype=torch.float64))
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    freq = sinusoid_frequencies(8, dtype=torch.float64).view(1, 1, -1).expand(1, 9, 8)
    expected = x + _complex_reference(layer.amplitude, freq, layer.phase, fuse)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_init_is_transformer_sinusoid_frequencies_and_zero_phase():
    layer = ComplexOrderPosEmbed(5, 6)
    j = torch.arange(6)
    expected = 10000.0 ** (-2 * (j // 2) / 6)
    torch.testing.assert_close(layer.freq[0], expected.float().expand(5, 6))
    assert torch.count_nonzero(layer.phase) == 0
    _randomised(layer)
    layer.init_weights()
    torch.testing.assert_close(layer.freq[0], expected.float().expand(5, 6))
    assert torch.count_nonzero(layer.phase) == 0


def test_every_variant_has_the_same_parameter_count():
    counts = {
        (fuse, mode): sum(p.numel() for p in ComplexOrderPosEmbed(197, 192, fuse=fuse, mode=mode).parameters())
        for fuse in ('sum', 'real') for mode in ('multiplicative', 'additive')
    }
    assert set(counts.values()) == {2 * 197 * 192}


def test_bad_constructor_arguments_are_named():
    with pytest.raises(ValueError, match="fuse must be 'sum' or 'real'"):
        ComplexOrderPosEmbed(4, 4, fuse='imag')
    with pytest.raises(ValueError, match="mode must be"):
        ComplexOrderPosEmbed(4, 4, mode='rotary')


def test_angle_is_float32_under_low_precision():
    layer = ComplexOrderPosEmbed(197, 16).to(torch.bfloat16)
    x = torch.randn(2, 197, 16, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    # reference computed from the (bf16-rounded) tables in float64: the only error left is the final bf16 rounding
    expected = _complex_reference(x.double(), layer.freq.double(), layer.phase.double(), 'sum')
    torch.testing.assert_close(out.double(), expected, rtol=1e-2, atol=2e-2)
    # a bf16 angle would be off by up to a radian at position 196 and fail the same check
    pos = torch.arange(197, dtype=torch.bfloat16).view(1, -1, 1)
    phi_bf16 = pos * layer.freq + layer.phase
    naive = (x * (torch.cos(phi_bf16) + torch.sin(phi_bf16))).double()
    assert (naive - expected).abs().max() > 0.1


def test_model_parameter_count_matches_paper():
    assert sum(p.numel() for p in timm.create_model('vit_tiny_cope', num_classes=200).parameters()) == 5_600_840
    baseline = timm.create_model('vit_tiny_patch16_224', num_classes=200)
    assert sum(p.numel() for p in baseline.parameters()) == 5_563_016


def test_model_default_cfg_and_tags():
    model = timm.create_model('vit_tiny_cope')
    assert model.num_classes == 200  # the default tag is the Tiny-ImageNet one
    from timm_posembed.models import HF_HUB_ORG
    for name in timm.list_models('*_cope', pretrained=True):
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg.tag.startswith('timm_blocks_'):  # a warm start: timm's own weights, at timm's repo
            assert cfg.hf_hub_id == 'timm/vit_' + name.split('_')[1] + '_patch16_224.' + cfg.tag[len('timm_blocks_'):]
            continue
        assert cfg.hf_hub_id.startswith(HF_HUB_ORG + '/') and cfg.hf_hub_id.endswith('.' + cfg.tag)


def test_cls_token_unchanged_at_init():
    model = timm.create_model('vit_tiny_cope', num_classes=10).eval()
    tokens = torch.randn(2, 196, 192)
    out = model._pos_embed(tokens)
    torch.testing.assert_close(out[:, 0], model.cls_token[:, 0].expand(2, -1))
    assert not torch.allclose(out[:, 5], tokens[:, 4])  # patch tokens are rotated


def test_low_precision_outputs_are_finite_and_close_to_fp32():
    torch.manual_seed(0)
    model = timm.create_model('vit_tiny_cope', num_classes=10, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            autocast_out = model(x)
        bf16_out = copy.deepcopy(model).to(torch.bfloat16)(x.bfloat16())
    for out in (autocast_out, bf16_out):
        assert torch.isfinite(out).all()
        assert F.cosine_similarity(out.float(), ref, dim=1).min() > 0.99


def test_gradients_reach_frequency_and_phase():
    model = timm.create_model('vit_tiny_cope', num_classes=10, img_size=32)
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).sum().backward()
    for name in ('cope.freq', 'cope.phase'):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.count_nonzero(grad) > 0, name


def test_cope_tables_are_excluded_from_weight_decay():
    model = timm.create_model('vit_tiny_cope', num_classes=10, img_size=32)
    assert {'cope.freq', 'cope.phase'} <= model.no_weight_decay()
    groups = param_groups_weight_decay(model, weight_decay=0.05, no_weight_decay_list=model.no_weight_decay())
    no_decay = next(g for g in groups if g['weight_decay'] == 0.0)['params']
    assert any(p is model.cope.freq for p in no_decay) and any(p is model.cope.phase for p in no_decay)


def test_cope_ablation_options_reach_the_layer():
    model = timm.create_model('vit_tiny_cope', cope_mode='additive', cope_fuse='real', num_classes=200)
    assert model.cope.mode == 'additive' and model.cope.fuse == 'real'
    assert sum(p.numel() for p in model.parameters()) == 5_600_840


def test_wrong_image_size_is_a_clear_error():
    model = timm.create_model('vit_tiny_cope', num_classes=10)
    with pytest.raises(ValueError, match=r'expected images of size \(224, 224\), got \(192, 192\).*img_size'):
        model(torch.randn(1, 3, 192, 192))


def test_wrong_channel_count_is_a_clear_error():
    model = timm.create_model('vit_tiny_cope', num_classes=10, img_size=32)
    with pytest.raises(ValueError, match='expected 3 input channels, got 1.*in_chans=1'):
        model(torch.randn(1, 1, 32, 32))


def test_unknown_kwarg_is_type_error():
    with pytest.raises(TypeError, match='cope_typo'):
        timm.create_model('vit_tiny_cope', cope_typo=1)


def test_learned_pos_embed_is_rejected():
    with pytest.raises(ValueError, match="pos_embed must be 'none'"):
        timm.create_model('vit_tiny_cope', pos_embed='learn')


def _strict_load_failure(excinfo) -> str:
    """The whole message of a strict-load failure, the causes' included (a wrapper may explain it)."""
    parts, e = [], excinfo.value
    while e is not None:
        parts.append(str(e))
        e = e.__cause__ or e.__context__
    return '\n'.join(parts)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / 'vit_tiny_patch16_224.safetensors'
    save_file(timm.create_model('vit_tiny_patch16_224', num_classes=200).state_dict(), str(path))
    with pytest.raises((RuntimeError, ValueError)) as excinfo:
        timm.create_model('vit_tiny_cope', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    message = _strict_load_failure(excinfo)
    assert 'pos_embed' in message and 'cope.freq' in message


def test_checkpoint_of_another_width_is_refused(tmp_path):
    path = tmp_path / 'vit_small_cope.safetensors'
    save_file(timm.create_model('vit_small_cope', num_classes=200, img_size=32).state_dict(), str(path))
    with pytest.raises((RuntimeError, ValueError)) as excinfo:
        timm.create_model('vit_tiny_cope', pretrained=True, img_size=32, pretrained_cfg_overlay=dict(file=str(path)))
    message = _strict_load_failure(excinfo)
    assert 'blocks.0.norm1.weight' in message and '384' in message and '192' in message


def test_checkpoint_filter_only_transforms():
    from timm_posembed.models.vision_transformer_cope import checkpoint_filter_fn
    model = timm.create_model('vit_tiny_cope', num_classes=10, img_size=32)
    learned = timm.create_model('vit_tiny_patch16_224', num_classes=10, img_size=32).state_dict()
    out = checkpoint_filter_fn({'state_dict': {'module.' + k: v for k, v in learned.items()}}, model)
    assert out.keys() == learned.keys()  # unwrapped and cleaned, nothing refused: strict loading validates
    assert all(out[k] is learned[k] for k in learned)


@pytest.mark.parametrize('method', ['interpolate', 'extrapolate'])
def test_checkpoint_at_another_size_loads_with_resized_tables(tmp_path, method):
    torch.manual_seed(0)
    src = timm.create_model('vit_tiny_cope', num_classes=10, img_size=64)
    _randomised(src.cope)
    path = tmp_path / 'w.safetensors'
    save_file(src.state_dict(), str(path))
    dst = timm.create_model(
        'vit_tiny_cope', num_classes=10, img_size=96, cope_resize=method, pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)))
    assert dst.cope.num_tokens == 1 + 6 * 6
    torch.testing.assert_close(dst.cope.phase[:, 0], src.cope.phase[:, 0])  # the cls row is kept
    torch.testing.assert_close(dst.blocks[3].mlp.fc1.weight, src.blocks[3].mlp.fc1.weight)
    assert torch.isfinite(dst(torch.randn(1, 3, 96, 96))).all()


def test_interpolate_resize_to_the_same_grid_is_identity():
    layer = _randomised(ComplexOrderPosEmbed(1 + 4 * 4, 8, dtype=torch.float64))
    table, phase = layer.resized_tables((4, 4), (4, 4), 1, method='interpolate')
    torch.testing.assert_close(table, layer.freq)
    torch.testing.assert_close(phase, layer.phase)


def test_interpolate_resize_keeps_the_angle_field():
    # Interpolating a smooth field over the grid and reading it back at the same image locations (corners of
    # an align-free bicubic upsample are not grid points, so compare the field's mean and range instead).
    layer = ComplexOrderPosEmbed(1 + 4 * 4, 8, dtype=torch.float64)
    new = ComplexOrderPosEmbed(1 + 8 * 8, 8, dtype=torch.float64)
    with torch.no_grad():
        new.freq.copy_(layer.resized_tables((8, 8), (4, 4), 1)[0])
        new.phase.copy_(layer.resized_tables((8, 8), (4, 4), 1)[1])
    old_phi, new_phi = layer.angle(dtype=torch.float64)[:, 1:], new.angle(dtype=torch.float64)[:, 1:]
    assert math.isclose(new_phi.mean().item(), old_phi.mean().item(), rel_tol=0.05)
    assert new_phi.max() <= old_phi.max() * 1.05


def test_set_input_size_resizes_tables():
    model = timm.create_model('vit_tiny_cope', num_classes=10, img_size=64)
    model.set_input_size(img_size=(96, 96))
    assert model.cope.num_tokens == 37 and model.cope.freq.shape == (1, 37, 192)
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 10)


@pytest.mark.parametrize('mode', ['multiplicative', 'additive'])
@pytest.mark.parametrize('method', ['interpolate', 'extrapolate'])
def test_resample_cope_tables_is_pure_and_matches_the_layer(mode, method):
    layer = _randomised(ComplexOrderPosEmbed(1 + 4 * 4, 8, mode=mode, dtype=torch.float64))
    table = (layer.freq if mode == 'multiplicative' else layer.amplitude).detach().clone().requires_grad_()
    phase = layer.phase.detach().clone().requires_grad_()
    before = table.detach().clone(), phase.detach().clone()
    new_table, new_phase = resample_cope_tables(table, phase, (6, 5), (4, 4), 1, method=method, mode=mode)
    assert new_table.shape == new_phase.shape == (1, 1 + 6 * 5, 8)
    torch.testing.assert_close((table.detach(), phase.detach()), before)  # inputs untouched
    (new_table.sum() + new_phase.square().sum()).backward()
    assert torch.count_nonzero(table.grad) > 0 and torch.count_nonzero(phase.grad) > 0
    torch.testing.assert_close(layer.resized_tables((6, 5), (4, 4), 1, method=method), (new_table, new_phase))
    with torch.no_grad():
        layer.resize((6, 5), (4, 4), 1, method=method)
    assert layer.num_tokens == 31
    if method == 'interpolate':  # the resampled angle field is the bicubic image of the old one
        old_phi = ComplexOrderPosEmbed(17, 8, mode=mode, dtype=torch.float64)
        old_phi.load_state_dict({'freq' if mode == 'multiplicative' else 'amplitude': before[0], 'phase': before[1]})
        field = old_phi.angle(dtype=torch.float64)[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
        expected = F.interpolate(field, size=(6, 5), mode='bicubic', align_corners=False)
        expected = expected.permute(0, 2, 3, 1).reshape(1, 30, 8)
        torch.testing.assert_close(layer.angle(dtype=torch.float64)[:, 1:], expected)


def test_resample_cope_tables_names_bad_arguments():
    t = torch.zeros(1, 17, 8)
    with pytest.raises(ValueError, match="method must be 'interpolate' or 'extrapolate'"):
        resample_cope_tables(t, t, (2, 2), (4, 4), method='nearest')
    with pytest.raises(ValueError, match=r'17 tokens but old_grid \(3, 3\) with 1 prefix token\(s\) gives 10'):
        resample_cope_tables(t, t, (2, 2), (3, 3))
