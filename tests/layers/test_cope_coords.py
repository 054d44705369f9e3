""" ComplexOrderPosEmbed.forward_coords: COPE for a packed batch of images of their own grids, from each patch's
(row, column), checked against the layer's own per-grid forward, image by image. """
import pytest
import torch

from timm_posembed.layers import ComplexOrderPosEmbed

REF = (4, 5)


def _grid_coords(h, w):
    return torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij'), -1).reshape(-1, 2)


def _layer(mode, positions, num_prefix_tokens=1):
    torch.manual_seed(0)
    layer = ComplexOrderPosEmbed(num_prefix_tokens + REF[0] * REF[1], 8, mode=mode, positions=positions,
                                 grid_size=REF, num_prefix_tokens=num_prefix_tokens).double()
    with torch.no_grad():  # rows of their own, as trained tables have
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize('mode', ['multiplicative', 'additive'])
@pytest.mark.parametrize('positions', ['grid', 'index'])
@pytest.mark.parametrize('resize', ['interpolate', 'extrapolate'])
def test_packed_images_get_what_the_per_grid_forward_gives_each(mode, positions, resize):
    layer = _layer(mode, positions, num_prefix_tokens=2)
    grids = [REF, (3, 7), (6, 2), (1, 1), (5, 5)]
    longest = max(h * w for h, w in grids)
    x = torch.randn(len(grids), 2 + longest, 8, dtype=torch.float64)
    coord = torch.zeros(len(grids), longest, 2, dtype=torch.long)
    valid = torch.zeros(len(grids), longest, dtype=torch.bool)
    for i, (h, w) in enumerate(grids):
        order = torch.randperm(h * w, generator=torch.Generator().manual_seed(i))  # any patch order
        coord[i, :h * w], valid[i, :h * w] = _grid_coords(h, w)[order], True
    out = layer.forward_coords(x, coord, valid, resize=resize)
    for i, (h, w) in enumerate(grids):
        order = torch.randperm(h * w, generator=torch.Generator().manual_seed(i))
        row_major = torch.cat([x[i:i + 1, :2], x[i:i + 1, 2:2 + h * w][:, order.argsort()]], dim=1)
        expected = layer(row_major) if (h, w) == REF else layer(row_major, grid_size=(h, w), resize=resize)
        got = torch.cat([out[i:i + 1, :2], out[i:i + 1, 2:2 + h * w][:, order.argsort()]], dim=1)
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
        torch.testing.assert_close(out[i, 2 + h * w:], x[i, 2 + h * w:], atol=0, rtol=0)  # padding untouched


def test_images_of_other_grids_differ_from_the_reference_tables():
    # guards the test above: a layer that ignored each image's grid would give (3, 7) the reference rows
    layer = _layer('multiplicative', 'grid')
    x = torch.ones(1, 1 + 21, 8, dtype=torch.float64)
    own = layer.forward_coords(x, _grid_coords(3, 7)[None])
    clipped = layer.forward_coords(torch.ones(1, 1 + 20, 8, dtype=torch.float64), _grid_coords(*REF)[None])
    assert (own[0, 1:6] - clipped[0, 1:6]).abs().max() > 1e-3


def test_padding_tokens_pass_through_and_their_coordinates_are_ignored():
    layer = _layer('multiplicative', 'grid')
    x = torch.randn(1, 1 + 20 + 3, 8, dtype=torch.float64)
    coord = torch.cat([_grid_coords(*REF), torch.full((3, 2), 50)])[None]
    valid = torch.arange(23)[None] < 20
    out = layer.forward_coords(x, coord, valid)
    torch.testing.assert_close(out[:, 21:], x[:, 21:], atol=0, rtol=0)
    torch.testing.assert_close(out[:, :21], layer(x[:, :21]), atol=0, rtol=0)  # the reference grid, exactly


def test_bad_arguments_name_what_is_expected():
    layer = _layer('multiplicative', 'grid')
    x = torch.randn(2, 1 + 6, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r'patch_coord must be \(B=2, N, 2\)'):
        layer.forward_coords(x, torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r'expected tokens of shape \(B, num_tokens=6'):
        layer.forward_coords(x, torch.zeros(2, 5, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r'patch_valid must be \(B, N\) = \(2, 6\)'):
        layer.forward_coords(x, torch.zeros(2, 6, 2, dtype=torch.long), torch.ones(2, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="resize must be 'interpolate' or 'extrapolate'"):
        layer.forward_coords(x, torch.zeros(2, 6, 2, dtype=torch.long), resize='nearest')
    no_grid = ComplexOrderPosEmbed(7, 8)
    with pytest.raises(ValueError, match='needs the layer\'s own grid_size'):
        no_grid.forward_coords(x.float(), torch.zeros(2, 6, 2, dtype=torch.long))
