""" Complex Order Position Embedding (COPE)

Position as a complex function of the token index, after
`Encoding word order in complex embeddings` - https://arxiv.org/abs/1912.12333 (Wang et al., ICLR 2020),
applied to ViT as in Kim & Cho, `Image classification using vision transformers with complex positional
embeddings` (Chonnam National University; ViT-Tiny/16 on Tiny-ImageNet, cited in MODEL_CARDS.md's COPE card).

Each token embedding ``x`` is the amplitude of ``x · exp(iφ)`` with ``φ = p·Ω + Θ``. The real-valued network
consumes ``Re + Im = x·cos φ + x·sin φ``. The position ``p`` is the token index (``positions='index'``, cls at 0,
the patches in row-major order after the prefix tokens) or, for a patch grid (``positions='grid'``), the patch's
row in the first half of the channels and its column in the other half (prefix token ``i`` at ``i`` on both axes,
patch ``(r, c)`` at ``(P + r, P + c)`` after ``P`` prefix tokens), with the same two tables.

Usable on its own with any token sequence of fixed length, e.g. in place of a timm ViT's ``pos_embed``.
``forward_coords`` takes a packed batch of images of their own grids, from each patch's (row, column), as timm's
NaFlex ViT passes them.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import register_notrace_function

from .._checks import check_int
from .cope_tables import (
    CopeFuse, CopeMode, CopePositions, CopeResize, cope_angle_for_coords, cope_angle_for_grid, cope_fixed_frequencies,
    cope_token_positions, resample_cope_tables,
)

__all__ = ['ComplexOrderPosEmbed']


@register_notrace_function
@torch.jit.ignore
def _check_cope_input(x: torch.Tensor, num_tokens: int, dim: int) -> None:
    """Raise naming what is wrong with the tokens ``x`` and what ``ComplexOrderPosEmbed`` expects."""
    if x.ndim != 3 or x.shape[1] != num_tokens or x.shape[2] != dim:
        hint = ''
        if x.ndim == 4 and x.shape[-1] == dim:
            hint = '; a (B, H, W, D) grid must be flattened to (B, H*W, D) and prefix tokens prepended first'
        raise ValueError(
            f'ComplexOrderPosEmbed: expected tokens of shape (B, num_tokens={num_tokens}, dim={dim}), got '
            f'{tuple(x.shape)}{hint}')
    if not x.is_floating_point():
        # an integer tensor would round the wave to {-1, 0, 1}, silently
        raise TypeError(
            f'ComplexOrderPosEmbed: expected floating-point tokens, got {x.dtype}; convert them with x.float()')


# Leaves for plain torch.fx.symbolic_trace too (register_notrace_function covers timm's own fx tracers), wrapped
# here, where the layer looks them up; the grid of a dynamic-size input is a traced value.
torch.fx.wrap('_check_cope_input')
torch.fx.wrap('cope_angle_for_grid')

class ComplexOrderPosEmbed(nn.Module):
    """ Complex Order Position Embedding for a fixed-length token sequence.

    Modes (every mode, fuse and positions has the same two ``(1, num_tokens, dim)`` learnable tables):
      * ``'multiplicative'`` (default; Wang et al.'s formula ``φ = p·Ω + Θ``): learnable frequency ``freq`` (Ω)
        and phase ``phase`` (Θ), one row per token position; the tokens are the amplitude. (Wang et al.'s code
        keeps one frequency row per word, looked up by the word's vocabulary index, and has no phase term; an
        image has no vocabulary, and Θ, initialised to 0, is the formula's.) ``fuse='sum'``: ``x·cos φ + x·sin φ``;
        ``fuse='real'``: ``x·cos φ``.
      * ``'additive'`` (ablation): fixed sinusoid frequencies, learnable amplitude ``amplitude`` (R) and phase
        ``phase`` (Θ); ``x + R·(cos φ + sin φ)`` (``fuse='sum'``) or ``x + R·cos φ`` (``fuse='real'``).

    The angle reaches hundreds of radians, so φ, cos and sin are always computed in float32 (also under
    autocast or in a bf16/fp16 model); the bounded ``(T, D)`` wave is then applied in the input's dtype.
    """

    def __init__(
            self,
            num_tokens: int,
            dim: int,
            fuse: CopeFuse = 'sum',
            mode: CopeMode = 'multiplicative',
            positions: CopePositions = 'index',
            grid_size: Optional[Tuple[int, int]] = None,
            num_prefix_tokens: int = 1,
            device=None,
            dtype=None,
    ) -> None:
        """
        Args:
            num_tokens: Sequence length T (prefix tokens included).
            dim: Embedding dimension D.
            fuse: How the complex value becomes real: ``'sum'`` (Re + Im) or ``'real'`` (Re).
            mode: ``'multiplicative'`` (tokens are the amplitude) or ``'additive'`` (added like a PE).
            positions: ``'index'`` (p = token index ``0..T-1``) or ``'grid'`` (half of the channels the patch's
                row, the other half its column; needs ``grid_size``), see ``cope_token_positions``.
            grid_size: The patch grid ``(H, W)`` behind the tokens (row-major, after the prefix tokens), so that
                ``num_tokens == num_prefix_tokens + H * W``; needed for ``'grid'`` and for dynamic grids.
            num_prefix_tokens: Class/register tokens before the patches (with ``grid_size``).
            device: Parameter device.
            dtype: Parameter dtype.
        """
        super().__init__()
        if fuse not in ('sum', 'real'):
            raise ValueError(f"ComplexOrderPosEmbed: fuse must be 'sum' or 'real', got {fuse!r}")
        if mode not in ('multiplicative', 'additive'):
            raise ValueError(f"ComplexOrderPosEmbed: mode must be 'multiplicative' or 'additive', got {mode!r}")
        if positions not in ('index', 'grid'):
            raise ValueError(f"ComplexOrderPosEmbed: positions must be 'index' or 'grid', got {positions!r}")
        check_int('ComplexOrderPosEmbed', 'num_tokens', num_tokens, minimum=1)
        check_int('ComplexOrderPosEmbed', 'dim', dim, minimum=1)
        if grid_size is not None:
            grid_size = (int(grid_size[0]), int(grid_size[1]))
            if num_prefix_tokens + grid_size[0] * grid_size[1] != num_tokens:
                raise ValueError(
                    f'ComplexOrderPosEmbed: num_tokens={num_tokens} but grid_size={grid_size} with '
                    f'num_prefix_tokens={num_prefix_tokens} gives {num_prefix_tokens + grid_size[0] * grid_size[1]}')
        elif positions == 'grid':
            raise ValueError("ComplexOrderPosEmbed: positions='grid' needs grid_size=(H, W) of the patch grid")
        if positions == 'grid' and dim < 2:
            raise ValueError(
                f"ComplexOrderPosEmbed: positions='grid' needs dim >= 2 (a row and a column half), got {dim}")
        dd = {'device': device, 'dtype': dtype}
        self.num_tokens = num_tokens
        self.dim = dim
        self.fuse = fuse
        self.mode = mode
        self.positions = positions
        self.grid_size = grid_size
        self.num_prefix_tokens = num_prefix_tokens
        self.additive = mode == 'additive'
        self.use_sin = fuse == 'sum'
        if self.additive:
            self.amplitude = nn.Parameter(torch.empty(1, num_tokens, dim, **dd))
            self.freq = None
        else:
            self.freq = nn.Parameter(torch.empty(1, num_tokens, dim, **dd))
            self.amplitude = None
        self.phase = nn.Parameter(torch.empty(1, num_tokens, dim, **dd))
        self.init_weights()

    def init_weights(self) -> None:
        """Ω (or, additive, the fixed frequencies) = Transformer sinusoid frequencies, Θ = 0, R = 1.
        With grid positions each half of the channels gets the frequencies of a ``dim / 2`` wide sequence."""
        if self.phase.is_meta:
            return
        with torch.no_grad():
            self.phase.zero_()
            if self.freq is not None:
                fixed = cope_fixed_frequencies(self.dim, self.positions, self.freq.device, self.freq.dtype)
                self.freq.copy_(fixed.expand_as(self.freq))
            if self.amplitude is not None:
                self.amplitude.fill_(1.0)

    def _table(self) -> torch.Tensor:
        """Ω (multiplicative) or R (additive)."""
        if self.freq is not None:
            return self.freq
        assert self.amplitude is not None
        return self.amplitude

    def angle(self, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The angle φ, shape ``(1, T, D)``, in ``dtype`` (float32 unless float64 is asked for)."""
        device = device if device is not None else self.phase.device
        pos = cope_token_positions(
            self.num_tokens, self.dim, self.positions, self.grid_size, self.num_prefix_tokens, device, dtype)
        if self.freq is not None:
            freq = self.freq.to(device=device, dtype=dtype)
        else:
            freq = cope_fixed_frequencies(self.dim, self.positions, device, dtype)
        return pos * freq + self.phase.to(device=device, dtype=dtype)

    def forward(
            self,
            x: torch.Tensor,
            grid_size: Optional[Tuple[int, int]] = None,
            resize: str = 'interpolate',
    ) -> torch.Tensor:
        """``x``: ``(B, T, D)`` tokens. ``grid_size``: the patch grid of ``x`` when it differs from the layer's
        (a dynamic-size input); the tables are then resampled for it on the fly by ``resize`` (see
        ``resample_cope_tables``), and the stored tables stay as they are."""
        # The angle needs float32 at least: in bf16 an angle of ~200 rad is off by up to a radian. The (T, D)
        # wave it gives lies in [-√2, √2] and is rounded to the activations' dtype only then, so the (B, T, D)
        # product runs at the activations' precision, as a learned position embedding's addition would.
        angle_dtype = torch.promote_types(x.dtype, torch.float32)  # no branch on dtype: fx must trace this
        if grid_size is None:
            _check_cope_input(x, self.num_tokens, self.dim)
            table = self._table().to(angle_dtype)
            phi = self.angle(x.device, angle_dtype)
        else:
            old_grid = self.grid_size
            if old_grid is None:
                raise ValueError('ComplexOrderPosEmbed: a grid_size in forward needs the layer\'s own grid_size')
            _check_cope_input(x, self.num_prefix_tokens + grid_size[0] * grid_size[1], self.dim)
            table, phi = cope_angle_for_grid(
                self._table(), self.phase, grid_size, old_grid, self.num_prefix_tokens, resize, self.mode,
                self.positions, x)
        wave = torch.cos(phi) + torch.sin(phi) if self.use_sin else torch.cos(phi)
        if self.additive:
            return x + (table * wave).to(x.dtype)
        return x * wave.to(x.dtype)

    def forward_coords(
            self,
            x: torch.Tensor,
            patch_coord: torch.Tensor,
            patch_valid: Optional[torch.Tensor] = None,
            resize: str = 'interpolate',
    ) -> torch.Tensor:
        """COPE for a batch of images of their own grids, from each patch's coordinates (NaFlex's packed layout).

        ``x``: ``(B, num_prefix_tokens + N, D)`` tokens, the prefix tokens first; ``patch_coord``: ``(B, N, 2)`` the
        (row, column) of each patch in its image's patch grid, in any order; ``patch_valid``: ``(B, N)``, False for
        padding, whose tokens are returned as they came. An image's grid is one more than its largest valid
        coordinate on each axis: an image on the layer's ``grid_size`` gets exactly what ``forward(x)`` gives it,
        any other exactly what ``forward(x, grid_size=its grid, resize=resize)`` gives it alone
        (``cope_angle_for_coords``). Needs the layer's ``grid_size``; nothing is written back."""
        if self.grid_size is None:
            raise ValueError('ComplexOrderPosEmbed.forward_coords needs the layer\'s own grid_size (the grid its '
                             'tables are made for)')
        if resize not in ('interpolate', 'extrapolate'):
            raise ValueError(f"ComplexOrderPosEmbed: resize must be 'interpolate' or 'extrapolate', got {resize!r}")
        if patch_coord.ndim != 3 or patch_coord.shape[-1] != 2 or patch_coord.shape[0] != x.shape[0]:
            raise ValueError(
                f'ComplexOrderPosEmbed.forward_coords: patch_coord must be (B={x.shape[0]}, N, 2) (row, column), got '
                f'{tuple(patch_coord.shape)}')
        _check_cope_input(x, self.num_prefix_tokens + patch_coord.shape[1], self.dim)
        if patch_valid is not None and tuple(patch_valid.shape) != tuple(patch_coord.shape[:2]):
            raise ValueError(
                f'ComplexOrderPosEmbed.forward_coords: patch_valid must be (B, N) = {tuple(patch_coord.shape[:2])}, '
                f'got {tuple(patch_valid.shape)}')
        table, phi = cope_angle_for_coords(
            self._table(), self.phase, patch_coord, patch_valid, self.grid_size, self.num_prefix_tokens, resize,
            self.mode, self.positions, x)
        wave = torch.cos(phi) + torch.sin(phi) if self.use_sin else torch.cos(phi)
        out = x + (table * wave).to(x.dtype) if self.additive else x * wave.to(x.dtype)
        if patch_valid is None:
            return out
        prefix = torch.ones(x.shape[0], self.num_prefix_tokens, dtype=torch.bool, device=x.device)
        keep = torch.cat([prefix, patch_valid.to(device=x.device, dtype=torch.bool)], dim=1)
        return torch.where(keep.unsqueeze(-1), out, x)

    @torch.no_grad()
    def resized_tables(
            self,
            new_grid: Tuple[int, int],
            old_grid: Tuple[int, int],
            num_prefix_tokens: int = 1,
            method: CopeResize = 'interpolate',
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tables for a new patch grid, ``(freq or amplitude, phase)``; see ``resample_cope_tables``."""
        if old_grid[0] * old_grid[1] + num_prefix_tokens != self.num_tokens:
            raise ValueError(
                f'ComplexOrderPosEmbed has {self.num_tokens} tokens but old_grid {tuple(old_grid)} with '
                f'{num_prefix_tokens} prefix tokens gives {old_grid[0] * old_grid[1] + num_prefix_tokens}')
        if self.grid_size is not None and (tuple(old_grid), num_prefix_tokens) != (
                self.grid_size, self.num_prefix_tokens):
            raise ValueError(
                f'ComplexOrderPosEmbed: old_grid {tuple(old_grid)} with {num_prefix_tokens} prefix tokens is not '
                f'the layer\'s grid {self.grid_size} with {self.num_prefix_tokens}')
        # float64 so that resizing to the same grid is exact and a bf16 model loses nothing more than its storage
        new_table, new_phase = resample_cope_tables(
            self._table().double(), self.phase.double(), new_grid, old_grid, num_prefix_tokens, method=method,
            mode=self.mode, positions=self.positions)
        dtype = self.phase.dtype
        return new_table.to(dtype).contiguous(), new_phase.to(dtype).contiguous()

    @torch.no_grad()
    def resize(
            self,
            new_grid: Tuple[int, int],
            old_grid: Tuple[int, int],
            num_prefix_tokens: int = 1,
            method: CopeResize = 'interpolate',
    ) -> None:
        """Resize the tables in place for a new patch grid (see ``resized_tables``)."""
        table, phase = self.resized_tables(new_grid, old_grid, num_prefix_tokens, method)
        self.num_tokens = table.shape[1]
        if self.grid_size is not None:
            self.grid_size = (int(new_grid[0]), int(new_grid[1]))
        if self.freq is not None:
            self.freq = nn.Parameter(table, requires_grad=self.freq.requires_grad)
        else:
            self.amplitude = nn.Parameter(table, requires_grad=self.amplitude.requires_grad)
        self.phase = nn.Parameter(phase, requires_grad=self.phase.requires_grad)

    def extra_repr(self) -> str:
        grid = f', grid_size={self.grid_size}, num_prefix_tokens={self.num_prefix_tokens}' if self.grid_size else ''
        return (f'num_tokens={self.num_tokens}, dim={self.dim}, fuse={self.fuse}, mode={self.mode}, '
                f'positions={self.positions}{grid}')
