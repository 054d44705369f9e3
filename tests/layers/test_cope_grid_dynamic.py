""" COPE grid positions (``cope_positions='grid'``) and dynamic input sizes (``dynamic_img_size=True``). """
import copy
import math

import pytest
import timm
import torch
from safetensors.torch import save_file

import timm_posembed  # noqa: F401  (registers the models)
from timm_posembed.layers import ComplexOrderPosEmbed, cope_token_positions


def _randomised(module: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _tiny(**kwargs) -> torch.nn.Module:
    kwargs = dict(dict(num_classes=5, img_size=32, patch_size=8, depth=1), **kwargs)
    return timm.create_model('vit_tiny_cope', **kwargs).eval()


def _grid_reference(x, table, phase, grid, npt, mode, fuse):
    """Straight from the definition, one scalar at a time in float64: prefix token i at position i on both axes,
    patch k of the row-major grid at row npt + k // W (channels < D/2) and column npt + k % W (the others);
    the additive mode's fixed frequencies are each half's own sinusoid frequencies."""
    B, T, D = x.shape
    half = D // 2
    out = torch.empty(B, T, D, dtype=torch.float64)
    for t in range(T):
        row, col = (t, t) if t < npt else (npt + (t - npt) // grid[1], npt + (t - npt) % grid[1])
        for d in range(D):
            p = row if d < half else col
            if mode == 'multiplicative':
                freq = table[0, t, d].item()
            else:
                j, width = (d, half) if d < half else (d - half, D - half)
                freq = 10000.0 ** (-2 * (j // 2) / width)
            phi = p * freq + phase[0, t, d].item()
            wave = math.cos(phi) + (math.sin(phi) if fuse == 'sum' else 0.0)
            if mode == 'multiplicative':
                out[:, t, d] = x[:, t, d].double() * wave
            else:
                out[:, t, d] = x[:, t, d].double() + table[0, t, d].item() * wave
    return out


@pytest.mark.parametrize('mode', ['multiplicative', 'additive'])
@pytest.mark.parametrize('fuse', ['sum', 'real'])
def test_grid_positions_match_the_definition(mode, fuse):
    grid, npt, dim = (3, 4), 2, 6
    layer = _randomised(ComplexOrderPosEmbed(
        npt + 12, dim, fuse=fuse, mode=mode, positions='grid', grid_size=grid, num_prefix_tokens=npt,
        dtype=torch.float64))
    x = torch.randn(2, npt + 12, dim, dtype=torch.float64)
    table = layer.freq if mode == 'multiplicative' else layer.amplitude
    expected = _grid_reference(x, table.detach(), layer.phase.detach(), grid, npt, mode, fuse)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_grid_init_gives_each_axis_the_sinusoid_frequencies_of_half_the_width():
    layer = ComplexOrderPosEmbed(1 + 4, 8, positions='grid', grid_size=(2, 2))
    half = torch.tensor([10000.0 ** (-2 * (j // 2) / 4) for j in range(4)])
    torch.testing.assert_close(layer.freq[0, 3], torch.cat([half, half]))
    pos = cope_token_positions(5, 8, 'grid', (2, 2), 1)
    assert pos[0, :, 0].tolist() == [0, 1, 1, 2, 2] and pos[0, :, 7].tolist() == [0, 1, 2, 1, 2]


def test_grid_positions_keep_the_parameter_count_and_are_a_kwarg():
    index = timm.create_model('vit_tiny_cope', num_classes=200)
    grid = timm.create_model('vit_tiny_cope', num_classes=200, cope_positions='grid')
    assert grid.cope.positions == 'grid' and index.cope.positions == 'index'
    assert sum(p.numel() for p in grid.parameters()) == 5_600_840
    assert [k for k, _ in grid.named_parameters()] == [k for k, _ in index.named_parameters()]
    assert not timm.list_models('*cope*grid*')
    with pytest.raises(ValueError, match="positions must be 'index' or 'grid', got 'axial'"):
        _tiny(cope_positions='axial')


@pytest.mark.parametrize('dynamic', [False, True])
def test_outputs_do_not_depend_on_batch_composition(dynamic):
    torch.manual_seed(0)
    model = _tiny(cope_positions='grid', dynamic_img_size=dynamic)
    size = 48 if dynamic else 32
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(4)])
        shuffled = model(x.flip(0)).flip(0)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(together, shuffled, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('method', ['interpolate', 'extrapolate'])
def test_grid_checkpoint_at_another_size_loads(tmp_path, method):
    model = _tiny(cope_positions='grid', cope_resize=method)
    _randomised(model.cope, scale=0.1)
    path = tmp_path / 'w.safetensors'
    save_file(model.state_dict(), str(path))
    dst = timm.create_model(
        'vit_tiny_cope', num_classes=5, img_size=48, patch_size=8, depth=1, cope_positions='grid',
        cope_resize=method, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    resized = copy.deepcopy(model)
    resized.set_input_size(img_size=(48, 48))
    torch.testing.assert_close(dst.cope.phase, resized.cope.phase)
    assert dst.cope.grid_size == (6, 6)


def _pair(method, positions, **kwargs):
    """A fixed-size model and a dynamic-size one with the same (randomised) weights."""
    torch.manual_seed(0)
    static = _tiny(cope_resize=method, cope_positions=positions, **kwargs)
    _randomised(static.cope, scale=0.1)
    dynamic = _tiny(cope_resize=method, cope_positions=positions, dynamic_img_size=True, **kwargs)
    dynamic.load_state_dict(static.state_dict())
    return static, dynamic


@pytest.mark.parametrize('positions', ['index', 'grid'])
@pytest.mark.parametrize('method', ['interpolate', 'extrapolate'])
@pytest.mark.parametrize('mode', ['multiplicative', 'additive'])
def test_dynamic_size_equals_set_input_size(method, positions, mode):
    static, dynamic = _pair(method, positions, cope_mode=mode)
    before = {k: v.clone() for k, v in dynamic.state_dict().items()}
    x32, x = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        # at the size it was made for, the learnt tables are used as they are (no mean for 'extrapolate')
        torch.testing.assert_close(dynamic(x32), static(x32))
        static.set_input_size(img_size=(48, 64))
        torch.testing.assert_close(dynamic(x), static(x), rtol=1e-4, atol=1e-4)
    after = dynamic.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no table rewritten
    assert dynamic.cope.num_tokens == 1 + 16


def test_dynamic_size_gradients_reach_the_tables():
    _, model = _pair('interpolate', 'grid')
    model.train()
    model(torch.randn(2, 3, 48, 40)).logsumexp(1).sum().backward()
    for name in ('cope.freq', 'cope.phase'):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.count_nonzero(grad[:, 1:]) > 0, name


@pytest.mark.parametrize('positions,dynamic', [('index', True), ('grid', True), ('grid', False)])
def test_fx_and_torchscript_match_eager(positions, dynamic):
    static, model = _pair('interpolate', positions)
    model = model if dynamic else static
    traced = torch.fx.symbolic_trace(model)
    scripted = torch.jit.script(model)
    for size in ((32, 32), (48, 64)) if dynamic else ((32, 32),):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = model(x)
            torch.testing.assert_close(traced(x), expected)
            torch.testing.assert_close(scripted(x), expected)


def test_dynamic_size_compiles_once_per_size():
    from torch._dynamo.testing import CompileCounter
    torch._dynamo.reset()
    _, model = _pair('interpolate', 'grid')
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    x48, x64 = torch.randn(1, 3, 48, 48), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x48), model(x48))
        frames = counter.frame_count
        compiled(x48)
        assert counter.frame_count == frames  # a repeated size reuses the graph
        torch.testing.assert_close(compiled(x64), model(x64))
        frames = counter.frame_count
        compiled(x64)
        compiled(x48)
        assert counter.frame_count == frames
    torch._dynamo.reset()
