""" What COPE's two tables mean, as pure functions: positions, fixed frequencies, resampling to another grid

Shared by ``ComplexOrderPosEmbed`` (``cope.py``), its model's ``checkpoint_filter_fn`` and dynamic-size inputs,
as timm's ``timm/layers/pos_embed.py`` serves its learned position embeddings. See ``cope.py`` for the paper.
"""
from typing import Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

__all__ = [
    'CopeFuse', 'CopeMode', 'CopePositions', 'CopeResize', 'cope_angle_for_coords', 'cope_angle_for_grid',
    'cope_fixed_frequencies',
    'cope_token_positions', 'resample_cope_tables', 'sinusoid_frequencies',
]

CopeFuse = Literal['sum', 'real']
CopeMode = Literal['multiplicative', 'additive']
CopePositions = Literal['index', 'grid']
CopeResize = Literal['interpolate', 'extrapolate']


def sinusoid_frequencies(dim: int, device=None, dtype=None) -> torch.Tensor:
    """Transformer sinusoid frequencies ``10000^(-2*floor(j/2)/dim)`` for ``j = 0..dim-1``."""
    return _sinusoid(dim, device, dtype or torch.get_default_dtype())


def _sinusoid(dim: int, device: Optional[torch.device], dtype: torch.dtype) -> torch.Tensor:
    j = torch.arange(dim, device=device, dtype=torch.float64)
    return torch.pow(10000.0, -2.0 * torch.div(j, 2, rounding_mode='floor') / dim).to(dtype)


def cope_fixed_frequencies(
        dim: int, positions: str, device: Optional[torch.device], dtype: torch.dtype) -> torch.Tensor:
    """Sinusoid frequencies, ``(1, 1, dim)``; with grid positions each axis's half of the channels has its own
    full range (a row and a column are each as far apart as a token index in a ``dim / 2`` wide sequence)."""
    if positions == 'grid':
        half = dim // 2
        freq = torch.cat([_sinusoid(half, device, dtype), _sinusoid(dim - half, device, dtype)])
    else:
        freq = _sinusoid(dim, device, dtype)
    return freq.view(1, 1, -1)


def cope_token_positions(
        num_tokens: int,
        dim: int,
        positions: str = 'index',
        grid_size: Optional[Tuple[int, int]] = None,
        num_prefix_tokens: int = 1,
        device: Optional[torch.device] = None,
        dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The position ``p`` of every token and channel: ``(1, T, 1)`` for ``'index'`` (``0..T-1``), ``(1, T, dim)``
    for ``'grid'``: prefix token ``i`` at ``i``, patch ``(r, c)`` of the row-major ``grid_size`` at row
    ``num_prefix_tokens + r`` in channels ``< dim // 2`` and column ``num_prefix_tokens + c`` in the others."""
    if positions != 'grid':
        return torch.arange(num_tokens, device=device, dtype=dtype).view(1, -1, 1)
    if grid_size is None:
        raise ValueError("cope_token_positions: positions='grid' needs grid_size=(H, W)")
    h, w = grid_size[0], grid_size[1]
    prefix = torch.arange(num_prefix_tokens, device=device, dtype=dtype)
    rows = torch.arange(h, device=device, dtype=dtype).view(h, 1).expand(h, w).reshape(-1) + num_prefix_tokens
    cols = torch.arange(w, device=device, dtype=dtype).view(1, w).expand(h, w).reshape(-1) + num_prefix_tokens
    total = num_prefix_tokens + h * w
    half = dim // 2
    row_pos = torch.cat([prefix, rows]).view(1, total, 1).expand(1, total, half)
    col_pos = torch.cat([prefix, cols]).view(1, total, 1).expand(1, total, dim - half)
    return torch.cat([row_pos, col_pos], dim=2)


def resample_cope_tables(
        table: torch.Tensor,
        phase: torch.Tensor,
        new_grid: Tuple[int, int],
        old_grid: Tuple[int, int],
        num_prefix_tokens: int = 1,
        method: CopeResize = 'interpolate',
        mode: CopeMode = 'multiplicative',
        positions: CopePositions = 'index',
) -> Tuple[torch.Tensor, torch.Tensor]:
    """COPE tables made for ``old_grid`` patches, resampled for ``new_grid``; pure, differentiable.

    ``table`` is the frequency table Ω (``mode='multiplicative'``) or the amplitude table R (``'additive'``);
    ``table`` and ``phase`` are ``(1, num_prefix_tokens + H*W, D)`` for the old grid ``(H, W)``, the patches in
    row-major order. Returns the ``(table, phase)`` pair for the new grid, computed in the inputs' dtype (float32
    at least; pass float64 tables for a resize that is exact on the same grid). ``positions`` is the layer's
    (``cope_token_positions``).

    ``'interpolate'``: the angle field φ of the patch tokens is resampled over the 2D grid (bicubic), and the
    frequency (or amplitude) table too; the new phase is chosen so that ``p_new·Ω_new + Θ_new`` equals the
    resampled angle at every new position, i.e. each image location keeps (an interpolation of) its angle.
    ``'extrapolate'``: COPE is a function of the position, so the learnt per-dimension frequency (the mean
    row of Ω) and phase are evaluated at the new positions, the way Wang et al. extend to longer sequences.
    Prefix-token rows are kept as they are.
    """
    if method not in ('interpolate', 'extrapolate'):
        raise ValueError(f"resample_cope_tables: method must be 'interpolate' or 'extrapolate', got {method!r}")
    if mode not in ('multiplicative', 'additive'):
        raise ValueError(f"resample_cope_tables: mode must be 'multiplicative' or 'additive', got {mode!r}")
    if positions not in ('index', 'grid'):
        raise ValueError(f"resample_cope_tables: positions must be 'index' or 'grid', got {positions!r}")
    if table.ndim != 3 or table.shape[0] != 1 or table.shape != phase.shape:
        raise ValueError(
            f'resample_cope_tables: table and phase must both be (1, T, D), got {tuple(table.shape)} and '
            f'{tuple(phase.shape)}')
    npt = num_prefix_tokens
    old_len = npt + old_grid[0] * old_grid[1]
    if old_len != table.shape[1]:
        raise ValueError(
            f'resample_cope_tables: the tables have {table.shape[1]} tokens but old_grid {tuple(old_grid)} with '
            f'{npt} prefix token(s) gives {old_len}')
    dim = table.shape[-1]
    dtype = torch.promote_types(table.dtype, torch.float32)
    table, phase = table.to(dtype), phase.to(dtype)
    new_len = npt + new_grid[0] * new_grid[1]
    if method == 'extrapolate':
        new_table = table[:, npt:].mean(dim=1, keepdim=True).expand(1, new_len - npt, dim)
        new_phase = phase[:, npt:].mean(dim=1, keepdim=True).expand(1, new_len - npt, dim)
    else:
        def _grid(t: torch.Tensor) -> torch.Tensor:
            t = t.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
            t = F.interpolate(t, size=(int(new_grid[0]), int(new_grid[1])), mode='bicubic', align_corners=False)
            return t.permute(0, 2, 3, 1).reshape(1, -1, dim)

        multiplicative = mode == 'multiplicative'
        fixed = cope_fixed_frequencies(dim, positions, table.device, dtype)
        pos_old = cope_token_positions(old_len, dim, positions, tuple(old_grid), npt, table.device, dtype)[:, npt:]
        pos_new = cope_token_positions(new_len, dim, positions, tuple(new_grid), npt, table.device, dtype)[:, npt:]
        new_table = _grid(table[:, npt:])
        new_phi = _grid(pos_old * (table[:, npt:] if multiplicative else fixed) + phase[:, npt:])
        new_phase = new_phi - pos_new * (new_table if multiplicative else fixed)
    return torch.cat([table[:, :npt], new_table], dim=1), torch.cat([phase[:, :npt], new_phase], dim=1)


@register_notrace_function
@torch.jit.ignore
def cope_angle_for_grid(
        table: torch.Tensor,
        phase: torch.Tensor,
        new_grid: Tuple[int, int],
        old_grid: Tuple[int, int],
        num_prefix_tokens: int,
        method: str,
        mode: str,
        positions: str,
        x: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(table, φ)`` for the tokens ``x`` of a ``new_grid`` input, from tables made for ``old_grid``: the tables
    as they are on the same grid, else resampled by ``resample_cope_tables`` (nothing is written back). The
    dynamic-size counterpart of ``ComplexOrderPosEmbed.resize`` followed by ``angle``; differentiable. In
    ``x``'s dtype, float32 at least (``x`` gives the dtype and device: TorchScript passes a dtype as an int)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    new_grid = (int(new_grid[0]), int(new_grid[1]))
    table, phase = table.to(device=x.device, dtype=dtype), phase.to(device=x.device, dtype=dtype)
    if new_grid != tuple(old_grid):
        # the same grid keeps the learnt tables as they are: 'extrapolate' would replace them by their mean
        table, phase = resample_cope_tables(
            table, phase, new_grid, old_grid, num_prefix_tokens, method, mode, positions)
    dim = table.shape[-1]
    pos = cope_token_positions(table.shape[1], dim, positions, new_grid, num_prefix_tokens, table.device, dtype)
    freq = table if mode == 'multiplicative' else cope_fixed_frequencies(dim, positions, table.device, dtype)
    return table, pos * freq + phase


def cope_angle_for_coords(
        table: torch.Tensor,
        phase: torch.Tensor,
        patch_coord: torch.Tensor,
        patch_valid: Optional[torch.Tensor],
        ref_grid: Tuple[int, int],
        num_prefix_tokens: int,
        method: str,
        mode: str,
        positions: str,
        x: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(table, φ)``, each ``(B, num_prefix_tokens + N, D)``, for a batch of patch sequences of their own grids.

    ``table`` and ``phase`` are the ``(1, num_prefix_tokens + H*W, D)`` tables made for ``ref_grid = (H, W)``;
    ``patch_coord`` is ``(B, N, 2)``, the (row, column) of each patch in its own image's grid (NaFlex's layout);
    ``patch_valid`` ``(B, N)`` marks the real patches (None: all are). An image's grid is one more than its largest
    valid coordinate on each axis. An image on ``ref_grid`` gets the tables as they are; any other image gets,
    token by token, what ``cope_angle_for_grid`` gives its whole grid: ``'interpolate'`` samples the frequency (or
    amplitude) table and the angle field at the token's place exactly as the bicubic, ``align_corners=False``
    resize of ``resample_cope_tables`` reads them (``grid_sample`` is that interpolation, evaluated per point),
    ``'extrapolate'`` evaluates the mean frequency and phase at the token's position. Prefix tokens keep their
    rows. Padding tokens get values that mean nothing (their caller leaves them out). ``x`` gives dtype (float32
    at least) and device."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    device = x.device
    table, phase = table.to(device=device, dtype=dtype), phase.to(device=device, dtype=dtype)
    npt = num_prefix_tokens
    ref_h, ref_w = int(ref_grid[0]), int(ref_grid[1])
    dim = table.shape[-1]
    coord = patch_coord.to(device=device, dtype=torch.long)
    if patch_valid is not None:
        coord = coord * patch_valid.to(device=device, dtype=torch.long).unsqueeze(-1)  # padding counts as (0, 0)
    batch, num_patches = coord.shape[0], coord.shape[1]
    size = coord.amax(dim=1) + 1  # (B, 2): each image's (rows, columns)
    row, col = coord[..., 0], coord[..., 1]
    row_f, col_f = row.to(dtype), col.to(dtype)
    if positions == 'grid':
        half = dim // 2
        pos = torch.cat([(row_f + npt).unsqueeze(-1).expand(batch, num_patches, half),
                         (col_f + npt).unsqueeze(-1).expand(batch, num_patches, dim - half)], dim=-1)
    else:  # the row-major index in the image's own grid, after the prefix tokens
        pos = (row_f * size[:, 1:2].to(dtype) + col_f + npt).unsqueeze(-1)
    multiplicative = mode == 'multiplicative'
    fixed = cope_fixed_frequencies(dim, positions, device, dtype)
    patch_table, patch_phase = table[0, npt:], phase[0, npt:]

    # the tables as they are, for the images on the reference grid (others read a clamped, unused row)
    index = row.clamp(max=ref_h - 1) * ref_w + col.clamp(max=ref_w - 1)
    exact_table = patch_table[index]
    exact_phi = pos * (exact_table if multiplicative else fixed) + patch_phase[index]
    if method == 'interpolate':
        ref_pos = cope_token_positions(npt + ref_h * ref_w, dim, positions, (ref_h, ref_w), npt, device, dtype)
        ref_phi = ref_pos[0, npt:] * (patch_table if multiplicative else fixed[0]) + patch_phase
        field = torch.cat([patch_table, ref_phi], dim=-1).reshape(1, ref_h, ref_w, 2 * dim).permute(0, 3, 1, 2)
        h, w = size[:, 0:1].to(dtype), size[:, 1:2].to(dtype)
        # normalised (x, y) of token (r, c) of an (h, w) grid: F.interpolate(size=(h, w)) reads source pixel
        # (r + 0.5) * H / h - 0.5, which grid_sample(align_corners=False) unnormalises this point to
        points = torch.stack([(2 * col_f + 1) / w - 1, (2 * row_f + 1) / h - 1], dim=-1)
        sampled = F.grid_sample(
            field, points.reshape(1, batch * num_patches, 1, 2), mode='bicubic', padding_mode='border',
            align_corners=False)  # (1, 2D, B*N, 1); 'border' repeats edge pixels, as F.interpolate's bicubic does
        sampled = sampled[0, :, :, 0].t().reshape(batch, num_patches, 2 * dim)
        other_table, other_phi = sampled[..., :dim], sampled[..., dim:]
    else:
        mean_table = patch_table.mean(dim=0)
        other_table = mean_table.expand(batch, num_patches, dim)
        other_phi = pos * (mean_table if multiplicative else fixed) + patch_phase.mean(dim=0)
    on_ref = ((size[:, 0] == ref_h) & (size[:, 1] == ref_w)).view(batch, 1, 1)
    patch_table_out = torch.where(on_ref, exact_table, other_table)
    patch_phi = torch.where(on_ref, exact_phi, other_phi)

    prefix_pos = torch.arange(npt, device=device, dtype=dtype).view(1, npt, 1)
    prefix_phi = prefix_pos * (table[:, :npt] if multiplicative else fixed) + phase[:, :npt]
    table_out = torch.cat([table[:, :npt].expand(batch, npt, dim), patch_table_out], dim=1)
    phi = torch.cat([prefix_phi.expand(batch, npt, dim), patch_phi], dim=1)
    return table_out, phi
