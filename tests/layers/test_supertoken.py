""" SuperTokenClustering: against a pixel-by-pixel reference and an implementation of STViT's code's semantics,
its symmetries, gradients, tracing and errors. """
import math

import pytest
import torch
import torch.nn.functional as F

from timm_posembed.layers import SuperTokenClustering

EPS = 1e-12


def _reference_round(x: torch.Tensor, stokens: torch.Tensor, s: int, border: str = 'exclude'):
    """One association round written pixel by pixel: returns (associations, new super tokens).

    associations[b][(py, px)] is a dict {(cy, cx): weight} over the in-grid cells around the pixel's own cell.
    border='zero_pad': each of the pixel's neighbour cells outside the grid is one more softmax candidate with
    logit 0 (a zero vector), whose weight goes to no super token.
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
                if border == 'zero_pad':
                    logits = torch.cat([logits, torch.zeros(9 - len(cells), dtype=x.dtype)])
                weights = torch.softmax(logits, dim=0)[:len(cells)]
                per_pixel[(py, px)] = dict(zip(cells, weights))
                for (j, i), a in zip(cells, weights):
                    num[b, :, j, i] += a * pixel
                    den[b, j, i] += a
        assoc.append(per_pixel)
    return assoc, num / (den.unsqueeze(1) + EPS)


def _reference(x: torch.Tensor, s: int, n_iter: int, border: str = 'exclude') -> torch.Tensor:
    B, C, H, W = x.shape
    stokens = torch.zeros(B, C, H // s, W // s, dtype=x.dtype)
    for j in range(H // s):
        for i in range(W // s):
            stokens[:, :, j, i] = x[:, :, j * s:(j + 1) * s, i * s:(i + 1) * s].mean(dim=(-2, -1))
    for _ in range(n_iter):
        _, stokens = _reference_round(x, stokens, s, border)
    return stokens


# (stoken size, H, W): 3x3, 2x4 and 1-row cell grids, so corner, edge and interior cells all occur.
GRIDS = [(2, 6, 6), (2, 4, 8), (3, 9, 6), (1, 3, 4), (2, 2, 6)]


@pytest.mark.parametrize('border', ['zero_pad', 'exclude'])
@pytest.mark.parametrize('n_iter', [0, 1, 2, 3, 4])
@pytest.mark.parametrize('s,H,W', GRIDS)
def test_matches_pixel_loop_reference(n_iter, s, H, W, border):
    g = torch.Generator().manual_seed(1000 * n_iter + 10 * H + W)
    x = torch.randn(2, 5, H, W, generator=g, dtype=torch.float64) * 2.0
    expected = _reference(x, s, n_iter, border)
    for grad_through_assoc in (False, True):
        out = SuperTokenClustering(
            stoken_size=s, num_iters=n_iter, grad_through_assoc=grad_through_assoc, border=border)(x)
        assert out.dtype == torch.float64
        assert out.shape == (2, 5, H // s, W // s)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def _one_by_two_map() -> torch.Tensor:
    x = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 3.0, -3.0
    return x


def test_border_exclude_leaves_outside_neighbours_out():
    # A 1x2 grid: with border='exclude' each pixel chooses only between the two real cells.
    out = SuperTokenClustering(stoken_size=1, num_iters=1, border='exclude')(_one_by_two_map())
    # pixel 0 (value 3): logits 9 (own), -9 (right); pixel 1 (value -3): logits -9 (left), 9 (own).
    a_own = 1.0 / (1.0 + math.exp(-18.0))
    expected_0 = (a_own * 3.0 + (1 - a_own) * -3.0) / (a_own + (1 - a_own))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([expected_0, -expected_0], dtype=torch.float64))


def test_border_zero_pad_is_the_default_and_counts_outside_neighbours_in_the_softmax():
    # A 1x2 grid of 1x1 cells, values 1 and -0.5 (one channel): logits x_i·x_j. STViT's way, each pixel also has 7
    # outside slots, zero vectors with logit 0, in its softmax; their weight goes nowhere and the normaliser sums
    # only the real weights. The two pixels' softmax totals differ, so the outside slots change the result.
    x = torch.tensor([[[[1.0, -0.5]]]], dtype=torch.float64)
    values = [1.0, -0.5]

    def expected(num_outside):
        z = [sum(math.exp(v * u) for u in values) + num_outside for v in values]
        a = [[math.exp(v * u) / z[i] for u in values] for i, v in enumerate(values)]  # a[pixel][cell]
        return [sum(a[i][j] * values[i] for i in range(2)) / sum(a[i][j] for i in range(2)) for j in range(2)]

    out = SuperTokenClustering(stoken_size=1, num_iters=1)(x)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor(expected(7), dtype=torch.float64))
    excluded = SuperTokenClustering(stoken_size=1, num_iters=1, border='exclude')(x)
    torch.testing.assert_close(excluded[0, 0, 0], torch.tensor(expected(0), dtype=torch.float64))
    assert abs(expected(7)[0] - expected(0)[0]) > 1e-2
    assert SuperTokenClustering().border == 'zero_pad'


def _stvit_reference(x: torch.Tensor, s: int, n_iter: int) -> torch.Tensor:
    """STViT's super-token sampling step as its code computes it, written here from that description with torch's
    own ``unfold`` / ``fold`` (zero-padded 3x3 neighbourhoods and their adjoint):

    ``S`` starts as the s x s average pool. Without gradient, ``n_iter`` times: gather each cell's 9 neighbouring
    super tokens (zeros outside the grid), softmax over the 9 of ``pixel · S / sqrt(C)``, the normaliser = fold of
    each cell's summed weights; except after the last association, ``S`` = fold of the weighted pixel sums / (the
    normaliser + 1e-12). Then, with gradient through the pixels only: ``S`` = fold of the weighted pixel sums with
    the last associations / (the detached normaliser + 1e-12).
    """
    B, C, H, W = x.shape
    hh, ww = H // s, W // s
    pixels = x.reshape(B, C, hh, s, ww, s).permute(0, 2, 4, 3, 5, 1).reshape(B, hh * ww, s * s, C)

    def gather9(grid):  # (B, C, hh, ww) -> (B, hh*ww, C, 9)
        return F.unfold(grid, 3, padding=1).reshape(B, C, 9, hh * ww).permute(0, 3, 1, 2)

    def scatter9(messages):  # (B, hh*ww, D, 9) -> (B, D, hh, ww), the adjoint of gather9
        D = messages.shape[2]
        return F.fold(messages.permute(0, 2, 3, 1).reshape(B, D * 9, hh * ww), (hh, ww), 3, padding=1)

    stokens = F.avg_pool2d(x, s)
    with torch.no_grad():
        for idx in range(n_iter):
            assoc = (pixels @ gather9(stokens) * C ** -0.5).softmax(-1)  # (B, hh*ww, s*s, 9)
            norm = scatter9(assoc.sum(2).unsqueeze(2))  # (B, 1, hh, ww)
            if idx < n_iter - 1:
                stokens = scatter9(pixels.transpose(-1, -2) @ assoc) / (norm + 1e-12)
    return scatter9(pixels.transpose(-1, -2) @ assoc) / (norm.detach() + 1e-12)


@pytest.mark.parametrize('n_iter', [1, 2, 3, 4])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_zero_pad_matches_stvit_semantics_forward_and_gradient(n_iter, dtype):
    # Border and interior cells of a 4x5 grid, 2x2 cells; N(0, 1) features as a conv stem's BN output gives.
    g = torch.Generator().manual_seed(7 * n_iter)
    x = torch.randn(2, 16, 8, 10, generator=g, dtype=dtype)
    upstream = torch.randn(2, 16, 4, 5, generator=g, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    outs, grads = [], []
    for fn in (SuperTokenClustering(stoken_size=2, num_iters=n_iter, border='zero_pad'),
               lambda t: _stvit_reference(t, 2, n_iter)):
        xg = x.clone().requires_grad_(True)
        out = fn(xg)
        grads.append(torch.autograd.grad((out * upstream).sum(), xg)[0])
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], **tol)
    torch.testing.assert_close(grads[0], grads[1], **tol)
    # and 'exclude' is measurably another function (the reference is not trivially satisfied)
    other = SuperTokenClustering(stoken_size=2, num_iters=n_iter, border='exclude')(x)
    assert (other - outs[1]).norm() > 1e-2 * outs[1].norm()


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


@pytest.mark.parametrize('border', ['zero_pad', 'exclude'])
def test_gradient_without_assoc_is_final_weighted_mean(border):
    # grad_through_assoc=False: d(Σ_j g_j·S_j)/dx_i = Σ_j A_ij g_j / (Σ_i A_ij + eps) with A the last round's
    # associations held constant, i.e. the reference's last-round weights.
    s, n_iter = 2, 3
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 6, 4, generator=g, dtype=torch.float64)
    upstream = torch.randn(1, 3, 3, 2, generator=g, dtype=torch.float64)

    xg = x.clone().requires_grad_(True)
    (SuperTokenClustering(s, num_iters=n_iter, border=border)(xg) * upstream).sum().backward()

    stokens = _reference(x, s, n_iter - 1, border)
    assoc, _ = _reference_round(x, stokens, s, border)
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
    with pytest.raises(ValueError, match=r"border must be one of \('zero_pad', 'exclude'\).*got 'mask'"):
        SuperTokenClustering(border='mask')


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
