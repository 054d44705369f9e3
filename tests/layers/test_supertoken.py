""" SuperTokenClustering: against a pixel-by-pixel reference, its symmetries, gradients, tracing and errors. """
import math

import pytest
import torch
import torch.nn.functional as F

from timm_posembed.layers import SuperTokenClustering

EPS = 1e-12


def _reference_round(x: torch.Tensor, stokens: torch.Tensor, s: int):
    """One association round written pixel by pixel: returns (associations, new super tokens).

    associations[b][(py, px)] is a dict {(cy, cx): weight} over the in-grid cells around the pixel's own cell.
    """
    B, C, H, W = x.shape
    h, w = H // s, W // s
    assoc = []
    num = torch.zeros(B, C, h, w, dtype=x.dtype)
    den = torch.zeros(B, h, w, dtype=x.dtype)
    for b in range(B):
        per_pixel = {}
        for py in range(H):
            for px in range(W):
                cy, cx = py // s, px // s
                cells = [(cy + dy, cx + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                         if 0 <= cy + dy < h and 0 <= cx + dx < w]
                pixel = x[b, :, py, px]
                logits = torch.stack([pixel @ stokens[b, :, j, i] / math.sqrt(C) for j, i in cells])
                weights = torch.softmax(logits, dim=0)
                per_pixel[(py, px)] = dict(zip(cells, weights))
                for (j, i), a in zip(cells, weights):
                    num[b, :, j, i] += a * pixel
                    den[b, j, i] += a
        assoc.append(per_pixel)
    return assoc, num / (den.unsqueeze(1) + EPS)


def _reference(x: torch.Tensor, s: int, n_iter: int) -> torch.Tensor:
    B, C, H, W = x.shape
    stokens = torch.zeros(B, C, H // s, W // s, dtype=x.dtype)
    for j in range(H // s):
        for i in range(W // s):
            stokens[:, :, j, i] = x[:, :, j * s:(j + 1) * s, i * s:(i + 1) * s].mean(dim=(-2, -1))
    for _ in range(n_iter):
        _, stokens = _reference_round(x, stokens, s)
    return stokens


# (stoken size, H, W): 3x3, 2x4 and 1-row cell grids, so corner, edge and interior cells all occur.
GRIDS = [(2, 6, 6), (2, 4, 8), (3, 9, 6), (1, 3, 4), (2, 2, 6)]


@pytest.mark.parametrize('n_iter', [0, 1, 2, 3, 4])
@pytest.mark.parametrize('s,H,W', GRIDS)
def test_matches_pixel_loop_reference(n_iter, s, H, W):
    g = torch.Generator().manual_seed(1000 * n_iter + 10 * H + W)
    x = torch.randn(2, 5, H, W, generator=g, dtype=torch.float64) * 2.0
    expected = _reference(x, s, n_iter)
    for grad_through_assoc in (False, True):
        out = SuperTokenClustering(stoken_size=s, num_iters=n_iter, grad_through_assoc=grad_through_assoc)(x)
        assert out.dtype == torch.float64
        assert out.shape == (2, 5, H // s, W // s)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_border_cells_exclude_outside_neighbours():
    # Zero-padding the outside neighbours would put zero vectors among a border pixel's candidates (logit 0);
    # with one strongly negative-correlated in-grid candidate that zero candidate would take most of the weight.
    # Excluding them makes a 1x2 grid's pixels choose only between the two real cells.
    x = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 3.0, -3.0
    out = SuperTokenClustering(stoken_size=1, num_iters=1)(x)
    # pixel 0 (value 3): logits 9 (own), -9 (right); pixel 1 (value -3): logits -9 (left), 9 (own).
    a_own = 1.0 / (1.0 + math.exp(-18.0))
    expected_0 = (a_own * 3.0 + (1 - a_own) * -3.0) / (a_own + (1 - a_own))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([expected_0, -expected_0], dtype=torch.float64))


def test_zero_iterations_is_average_pool():
    x = torch.randn(2, 4, 8, 12)
    torch.testing.assert_close(SuperTokenClustering(stoken_size=4, num_iters=0)(x), F.avg_pool2d(x, 4))


def test_no_parameters_or_buffers():
    m = SuperTokenClustering(stoken_size=2, num_iters=3)
    assert sum(p.numel() for p in m.parameters()) == 0
    assert len(list(m.buffers())) == 0


@pytest.mark.parametrize('grad_through_assoc', [False, True])
def test_equivariances(grad_through_assoc):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 8, 10, generator=g, dtype=torch.float64)
    m = SuperTokenClustering(stoken_size=2, num_iters=3, grad_through_assoc=grad_through_assoc)
    out = m(x)
    # channels: dot products and means do not depend on channel order
    perm = torch.randperm(6, generator=g)
    torch.testing.assert_close(m(x[:, perm]), out[:, perm])
    # batch elements are clustered independently
    bperm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(m(x[bperm]), out[bperm])
    # the 3x3 neighbourhood is symmetric under flips and transposition of the grid
    torch.testing.assert_close(m(x.flip(-1)), out.flip(-1))
    torch.testing.assert_close(m(x.flip(-2)), out.flip(-2))
    torch.testing.assert_close(m(x.transpose(-1, -2)), out.transpose(-1, -2))


def test_constant_map_is_a_fixed_point_and_output_is_convex():
    x = torch.full((1, 3, 6, 6), 0.7, dtype=torch.float64)
    torch.testing.assert_close(SuperTokenClustering(2, num_iters=4)(x),
                               torch.full((1, 3, 3, 3), 0.7, dtype=torch.float64))
    # every super token is a weighted mean of pixels: inside the per-channel range of the map
    y = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    out = SuperTokenClustering(2, num_iters=3)(y)
    lo = y.amin(dim=(-2, -1), keepdim=True)
    hi = y.amax(dim=(-2, -1), keepdim=True)
    assert bool(((out >= lo - 1e-12) & (out <= hi + 1e-12)).all())


def test_gradient_without_assoc_is_final_weighted_mean():
    # grad_through_assoc=False: d(Σ_j g_j·S_j)/dx_i = Σ_j A_ij g_j / (Σ_i A_ij + eps) with A the last round's
    # associations held constant, i.e. the reference's last-round weights.
    s, n_iter = 2, 3
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 6, 4, generator=g, dtype=torch.float64)
    upstream = torch.randn(1, 3, 3, 2, generator=g, dtype=torch.float64)

    xg = x.clone().requires_grad_(True)
    (SuperTokenClustering(s, num_iters=n_iter)(xg) * upstream).sum().backward()

    stokens = _reference(x, s, n_iter - 1)
    assoc, _ = _reference_round(x, stokens, s)
    den = torch.zeros(3, 2, dtype=torch.float64)
    for weights in assoc[0].values():
        for (j, i), a in weights.items():
            den[j, i] += a
    expected = torch.zeros_like(x)
    for (py, px), weights in assoc[0].items():
        for (j, i), a in weights.items():
            expected[0, :, py, px] += a * upstream[0, :, j, i] / (den[j, i] + EPS)
    torch.testing.assert_close(xg.grad, expected, rtol=1e-10, atol=1e-12)


def test_gradient_through_assoc_is_exact_and_differs():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    full = SuperTokenClustering(2, num_iters=2, grad_through_assoc=True)
    assert torch.autograd.gradcheck(full, (x,))
    up = torch.randn(1, 3, 2, 3, generator=g, dtype=torch.float64)
    g_full, = torch.autograd.grad((full(x) * up).sum(), x)
    g_stvit, = torch.autograd.grad((SuperTokenClustering(2, num_iters=2)(x) * up).sum(), x)
    assert not torch.allclose(g_full, g_stvit)


def test_fx_and_torchscript_match_eager():
    m = SuperTokenClustering(stoken_size=2, num_iters=2).eval()
    x = torch.randn(2, 4, 6, 8)
    expected = m(x)
    traced = torch.fx.symbolic_trace(m)
    torch.testing.assert_close(traced(x), expected)
    torch.testing.assert_close(traced(torch.randn(1, 4, 4, 4)).shape, torch.Size([1, 4, 2, 2]))
    scripted = torch.jit.script(m)
    torch.testing.assert_close(scripted(x), expected)


def test_torch_compile_without_graph_breaks():
    # backend='eager' checks that dynamo captures the whole clustering (fullgraph) without needing a compiler here.
    m = SuperTokenClustering(stoken_size=2, num_iters=3)
    x = torch.randn(2, 4, 6, 8)
    compiled = torch.compile(m, backend='eager', fullgraph=True)
    torch.testing.assert_close(compiled(x), m(x))


def test_half_precision_input_clustered_in_float32():
    x = torch.randn(2, 8, 8, 8)
    m = SuperTokenClustering(2, num_iters=3)
    out = m(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), m(x.bfloat16().float()), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize('shape', [(1, 4, 6, 7), (1, 4, 5, 6), (1, 4, 1, 1)])
def test_indivisible_feature_map_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r'not a non-empty multiple of 2.*crop or pad'):
        SuperTokenClustering(stoken_size=2)(torch.randn(shape))


def test_bad_arguments_and_rank():
    with pytest.raises(ValueError, match='stoken_size'):
        SuperTokenClustering(stoken_size=0)
    with pytest.raises(ValueError, match='num_iters'):
        SuperTokenClustering(num_iters=-1)
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        SuperTokenClustering()(torch.randn(4, 6, 6))


def test_shifted_neighbours_are_unfold_and_fold():
    # the shifted-slice formulation is exactly unfold (candidates) and fold (its adjoint), border cells included
    from timm_posembed.layers.supertoken import _neighbours, _sum_from_neighbours
    for h, w in ((3, 4), (1, 5), (2, 1)):
        grid = torch.randn(2, 5, h, w)
        ref = F.unfold(grid, kernel_size=3, padding=1).reshape(2, 5, 9, h, w).permute(0, 3, 4, 2, 1)
        torch.testing.assert_close(_neighbours(grid.permute(0, 2, 3, 1)), ref, rtol=0, atol=0)
        messages = torch.randn(2, h, w, 9, 5)
        ref = F.fold(messages.permute(0, 4, 3, 1, 2).reshape(2, 45, h * w), (h, w), kernel_size=3, padding=1)
        torch.testing.assert_close(_sum_from_neighbours(messages), ref.permute(0, 2, 3, 1))


def test_misused_embedding_and_eps_name_the_argument():
    from timm_posembed.layers import SuperTokenConvEmbed
    with pytest.raises(ValueError, match='eps'):
        SuperTokenClustering(eps=-1e-6)
    with pytest.raises(ValueError, match='stoken_size'):
        SuperTokenClustering(stoken_size=1.5)
    with pytest.raises(ValueError, match='in_chans must be a positive integer, got 0'):
        SuperTokenConvEmbed(img_size=32, in_chans=0, embed_dim=8)
    with pytest.raises(ValueError, match='embed_dim must be a positive integer'):
        SuperTokenConvEmbed(img_size=32, embed_dim=0)
    with pytest.raises(ValueError, match='embed_dim'):
        SuperTokenConvEmbed(img_size=32, embed_dim=7.5)
    with pytest.raises(ValueError, match='num_conv_modules'):
        SuperTokenConvEmbed(img_size=32, embed_dim=8, num_conv_modules=2.0)
    with pytest.raises(ValueError, match='conv_channels'):
        SuperTokenConvEmbed(img_size=32, embed_dim=8, conv_channels=(16, 0, 32, 64, 64, 64))
