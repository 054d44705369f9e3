""" Super-token clustering and the super-token convolutional embedding

Super-token clustering is the sampling step of
`Vision Transformer with Super Token Sampling` - https://arxiv.org/abs/2211.11167 (Huang et al., CVPR 2023):
a feature map is grouped into one super token per ``s×s`` cell by a few soft-k-means rounds in which each pixel
token only looks at the super tokens of its own cell and of the 8 neighbouring cells.

The super-token convolutional embedding paper (ImageNet100, ViT-S from scratch; MODEL_CARDS.md's super-token card
cites it) uses it, without STViT's upsampling, as a parameter-free 2× downsampling at the end of a light
convolutional stem: ``SuperTokenConvEmbed`` (its table 5), a drop-in ``embed_layer`` for timm's
``VisionTransformer``.
"""
import math
from typing import Callable, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function

from .._checks import check_int
from ._token_embed import TokenEmbedBase

__all__ = [
    'SuperTokenClustering', 'SuperTokenConvEmbed', 'ConvGeluBn', 'StokenBorder', 'STOKEN_CONV_CHANNELS',
    'STOKEN_CONV_STRIDES',
]

# How the neighbour slots outside the grid enter a border pixel's association softmax.
StokenBorder = Literal['zero_pad', 'exclude']
_BORDERS: Tuple[str, ...] = ('zero_pad', 'exclude')

# The paper's table 5: six Conv3x3 -> GELU -> BN modules.
STOKEN_CONV_CHANNELS: Tuple[int, ...] = (16, 32, 32, 64, 64, 64)
STOKEN_CONV_STRIDES: Tuple[int, ...] = (2, 1, 2, 1, 2, 1)


@register_notrace_function
@torch.jit.ignore
def _check_feature_map(x: torch.Tensor, stoken_size: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, C, H, W)`` with H and W multiples of ``stoken_size``."""
    if x.ndim != 4:
        raise ValueError(
            f'SuperTokenClustering expects a feature map of shape (B, C, H, W), got shape {tuple(x.shape)}')
    h, w = x.shape[-2:]
    if h % stoken_size or w % stoken_size or h == 0 or w == 0:
        raise ValueError(
            f'SuperTokenClustering(stoken_size={stoken_size}): the feature map is {h}x{w}, which is not a '
            f'non-empty multiple of {stoken_size} in each dimension; crop or pad it to '
            f'{max(1, math.ceil(h / stoken_size)) * stoken_size}x{max(1, math.ceil(w / stoken_size)) * stoken_size} '
            f'or choose a stoken_size that divides both')


@register_notrace_function
def _upcast_half(x: torch.Tensor) -> torch.Tensor:
    # A leaf for torch.fx, which cannot branch on a traced dtype.
    if x.dtype == torch.float16 or x.dtype == torch.bfloat16:
        return x.float()
    return x


def _cell_pixels(x: torch.Tensor, s: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, h, w, s², C)``: the pixel tokens of each s×s cell. Splitting H and W of the NHWC view
    is a view in either memory format, so the one copy is the final merge."""
    B, C, H, W = x.shape
    h = H // s
    w = W // s
    return x.permute(0, 2, 3, 1).reshape(B, h, s, w, s, C).permute(0, 1, 3, 2, 4, 5).reshape(B, h, w, s * s, C)


def _shift(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``(B, h, w, C)`` shifted by ``(dy, dx)`` cells: ``out[i, j] = t[i - dy, j - dx]``, zeros where that is outside.
    A crop and a pad, so the backward is a crop and a pad of the same size too (slicing one padded tensor nine
    times would make autograd allocate nine padded gradients)."""
    h, w = t.shape[1], t.shape[2]
    t = t[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    return F.pad(t, (0, 0, max(0, dx), max(0, -dx), max(0, dy), max(0, -dy)))


def _neighbours(grid: torch.Tensor) -> torch.Tensor:
    """``(B, h, w, C) -> (B, h, w, 9, C)``: each cell's 3x3 neighbourhood (row-major), zeros outside the grid.
    Nine shifted copies: what ``unfold`` computes, without im2col, and exportable by every ONNX exporter."""
    shifted = []
    for k in range(9):
        shifted.append(grid if k == 4 else _shift(grid, 1 - k // 3, 1 - k % 3))
    return torch.stack(shifted, dim=3)


def _sum_from_neighbours(messages: torch.Tensor) -> torch.Tensor:
    """``(B, h, w, 9, C) -> (B, h, w, C)``, the adjoint of ``_neighbours``: cell (i, j) sends its k-th message to
    its k-th neighbour and every cell sums what it receives (messages to cells outside the grid are dropped).
    Nine shifted adds instead of ``fold``, whose col2im the legacy ONNX exporter cannot export with a traced
    output size."""
    parts = messages.unbind(3)
    out = parts[4]
    for k in range(9):
        if k != 4:
            out = out + _shift(parts[k], k // 3 - 1, k % 3 - 1)
    return out


# Leaves for plain torch.fx.symbolic_trace too (register_notrace_function covers timm's own fx tracers).
torch.fx.wrap('_check_feature_map')
torch.fx.wrap('_upcast_half')


class SuperTokenClustering(nn.Module):
    """ Parameter-free super-token clustering of a feature map, ``(B, C, H, W) -> (B, C, H/s, W/s)``.

    ``S⁰`` is the ``s×s`` average pool of ``X``. Each of ``num_iters`` rounds gives every pixel token ``x_i`` a
    softmax over the 9 super tokens of its own cell and the neighbouring cells of ``x_i·S_jᵀ/√C``, then sets each
    super token to ``S_j = Σ_i A_ij x_i / (Σ_i A_ij + eps)`` over the pixels that have it among their candidates.
    ``num_iters=0`` is the average pool.

    ``border`` says what a pixel of a border cell does with its neighbour slots outside the grid:
      * ``'zero_pad'`` (default): they are zero vectors, as in STViT's code (its neighbour gathering is a
        zero-padded 3x3 unfold): each takes a softmax weight ``exp(0)/Z`` and gives nothing to any super token,
        so a border pixel's weights on real super tokens sum to less than 1 (the normaliser ``Σ_i A_ij`` sums
        only those). The super-token convolutional embedding paper builds on STViT's code.
      * ``'exclude'``: they are left out of the softmax (logit -inf), so every pixel's weights on real super
        tokens sum to 1. The border cells' super tokens differ from ``'zero_pad'``'s, and from t=2 on the
        difference spreads inward (MODEL_CARDS.md's super-token card has the measured size).

    With ``grad_through_assoc=False`` (default, as STViT) every association is computed from a detached copy of
    ``X``: the gradient reaches ``X`` only through the final weighted mean (normaliser detached too).

    A float16/bfloat16 input is clustered in float32 and the result cast back: the softmax and the ``+eps``
    normaliser are not safe in float16, and the map is small.
    """

    def __init__(
            self,
            stoken_size: int = 2,
            num_iters: int = 3,
            grad_through_assoc: bool = False,
            eps: float = 1e-12,
            border: StokenBorder = 'zero_pad',
    ) -> None:
        """
        Args:
            stoken_size: Side ``s`` of the initial cells; the output is ``s`` times smaller in each dimension.
            num_iters: Number of association/update rounds ``t`` (the paper's table 8: 1..4); 0 gives the average
                pool.
            grad_through_assoc: Back-propagate through the associations and every round (STViT does not).
            eps: Added to each super token's total association before dividing.
            border: ``'zero_pad'`` (STViT's code) or ``'exclude'``: the neighbour slots outside the grid as zero
                vectors in the softmax, or left out of it (see the class docstring).
        """
        super().__init__()
        check_int('SuperTokenClustering', 'stoken_size', stoken_size, minimum=1)
        check_int('SuperTokenClustering', 'num_iters', num_iters, minimum=0)
        if not eps >= 0:
            raise ValueError(f'SuperTokenClustering: eps must be >= 0 (it is added to a sum of weights), got {eps!r}')
        self.stoken_size = int(stoken_size)
        self.num_iters = int(num_iters)
        self.grad_through_assoc = bool(grad_through_assoc)
        self.eps = float(eps)
        if border not in _BORDERS:
            raise ValueError(f"SuperTokenClustering: border must be one of {_BORDERS} ('zero_pad': STViT's "
                             f"zero-padded neighbours; 'exclude': outside neighbours left out), got {border!r}")
        self.border = str(border)
        self.exclude_border = border == 'exclude'

    def _associations(self, pixels: torch.Tensor, stokens: torch.Tensor, invalid: torch.Tensor) -> torch.Tensor:
        """Softmax over the 9 candidate super tokens, ``(B, h, w, s², 9)``.

        pixels: ``(B, h, w, s², C)`` pixel tokens grouped by cell; stokens: ``(B, h, w, C)``; invalid:
        ``(1, h, w, 1, 9)``, True for the neighbour slots outside the grid.
        """
        C = stokens.shape[-1]
        candidates = _neighbours(stokens)  # (B, h, w, 9, C), zero vectors outside the grid
        # zero_pad: an outside slot's logit is x·0 = 0 already, and _sum_from_neighbours drops its weight.
        logits = torch.matmul(pixels, candidates.transpose(-1, -2)) * (C ** -0.5)
        if self.exclude_border:
            logits = logits.masked_fill(invalid, float('-inf'))
        return logits.softmax(dim=-1)

    def _weighted_mean(self, pixels: torch.Tensor, assoc: torch.Tensor, detach_norm: bool) -> torch.Tensor:
        """``Σ_i A_ij x_i / (Σ_i A_ij + eps)`` for every super token j, ``(B, h, w, C)``."""
        # Each cell sends its pixels' weighted sums, and the sums of the weights, to its 9 candidates.
        num = _sum_from_neighbours(torch.matmul(assoc.transpose(-1, -2), pixels))  # (B, h, w, C)
        den = _sum_from_neighbours(assoc.sum(dim=-2).unsqueeze(-1))  # (B, h, w, 1)
        if detach_norm:
            den = den.detach()
        return num / (den + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map(x, self.stoken_size)
        s = self.stoken_size
        in_dtype = x.dtype
        x = _upcast_half(x)
        if self.num_iters == 0:
            return (F.avg_pool2d(x, kernel_size=s, stride=s) if s > 1 else x).to(in_dtype)

        # Cell-major NHWC layout throughout: a pixel's candidates and its cell's pixels are contiguous.
        pixels = _cell_pixels(x, s)  # (B, h, w, s², C)
        assoc_pixels = pixels if self.grad_through_assoc else pixels.detach()
        stokens = assoc_pixels.mean(dim=3)  # S⁰, the s×s average pool
        h, w = stokens.shape[1], stokens.shape[2]
        invalid = _neighbours(x.new_ones((1, h, w, 1))).transpose(-1, -2) < 0.5  # (1, h, w, 1, 9)

        for _ in range(self.num_iters - 1):
            assoc = self._associations(assoc_pixels, stokens, invalid)
            stokens = self._weighted_mean(assoc_pixels, assoc, detach_norm=False)
        assoc = self._associations(assoc_pixels, stokens, invalid)
        out = self._weighted_mean(pixels, assoc, detach_norm=not self.grad_through_assoc)
        # (B, C, h, w) as a view: channels_last strides, which the embedding's NHWC projection reads without a copy.
        return out.permute(0, 3, 1, 2).to(in_dtype)

    def extra_repr(self) -> str:
        return (f'stoken_size={self.stoken_size}, num_iters={self.num_iters}, '
                f'grad_through_assoc={self.grad_through_assoc}, border={self.border}')


class ConvGeluBn(nn.Module):
    """ The super-token paper's convolution module (its eq. 1): Conv3x3 (with bias) -> GELU -> BatchNorm2d.

    The norm comes after the activation, so the conv bias is not redundant. Plain ``nn.BatchNorm2d``, so
    ``convert_sync_batchnorm`` (timm's ``train.py --sync-bn``) converts it.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, device=None, dtype=None) -> None:
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=True, **dd)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(out_chs, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.act(self.conv(x)))


class SuperTokenConvEmbed(TokenEmbedBase):
    """ Super-token convolutional embedding (the super-token paper's table 5), a drop-in ``embed_layer`` for timm's ViT.

    ``stem`` (the first ``num_conv_modules`` Conv3x3 -> GELU -> BN modules of the paper's table, channels
    16, 32, 32, 64, 64, 64 and strides 2, 1, 2, 1, 2, 1, optionally one more stride-2 module) -> ``cluster``
    (``SuperTokenClustering`` with ``stoken_size = patch_size / stem stride``, so the token grid stays
    ``img_size / patch_size``) -> ``proj`` (Linear to ``embed_dim``, applied per token).

    The paper's table-7 ablations at patch_size 16: ``num_conv_modules`` 0 (clustering of the image, 16x16 cells),
    1 or 2 (8x8 cells), 4 (4x4), 6 (2x2, the proposed model), and 6 with ``extra_stride2_conv=True`` (1x1 cells).
    """

    def __init__(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = 224,
            patch_size: Union[int, Tuple[int, int]] = 16,
            in_chans: int = 3,
            embed_dim: int = 768,
            num_conv_modules: int = 6,
            extra_stride2_conv: bool = False,
            num_iters: int = 3,
            grad_through_assoc: bool = False,
            border: StokenBorder = 'zero_pad',
            conv_channels: Sequence[int] = STOKEN_CONV_CHANNELS,
            conv_strides: Sequence[int] = STOKEN_CONV_STRIDES,
            norm_layer: Optional[Callable] = None,
            flatten: bool = True,
            output_fmt: Optional[str] = None,
            bias: bool = True,
            strict_img_size: bool = True,
            dynamic_img_pad: bool = False,
            device=None,
            dtype=None,
    ) -> None:
        """
        Args:
            img_size: Input image size (None: no fixed size).
            patch_size: Total reduction (stem stride x super-token size); 16 gives ViT-S/16's 14x14 grid at 224.
            in_chans: Image channels.
            embed_dim: Token width D.
            num_conv_modules: How many modules of ``conv_channels``/``conv_strides`` to use (seed table 7).
            extra_stride2_conv: Append one stride-2 module keeping the last width (seed table 7, last row).
            num_iters: Clustering rounds t (the paper's table 8; 3 in its model).
            grad_through_assoc: Back-propagate through the clustering's associations (STViT: no).
            border: The clustering's border handling, ``'zero_pad'`` (STViT's code) or ``'exclude'``; see
                ``SuperTokenClustering``.
            conv_channels: Output channels of the available conv modules (default: the paper's table 5).
            conv_strides: Their strides.
            norm_layer: Optional norm on the output tokens (timm's ``embed_norm_layer``).
            flatten: Return ``(B, L, D)`` (when ``output_fmt`` is None).
            output_fmt: ``'NLC'``, ``'NHWC'`` or ``'NCHW'``.
            bias: Bias of the output projection.
            strict_img_size: Require exactly ``img_size``; otherwise any multiple of ``patch_size``.
            dynamic_img_pad: Pad inputs up to a multiple of ``patch_size``.
        """
        super().__init__(
            img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, norm_layer=norm_layer,
            flatten=flatten, output_fmt=output_fmt, strict_img_size=strict_img_size,
            dynamic_img_pad=dynamic_img_pad, device=device, dtype=dtype,
        )
        dd = {'device': device, 'dtype': dtype}
        conv_channels, conv_strides = tuple(conv_channels), tuple(conv_strides)
        # in_chans and embed_dim are checked by TokenEmbedBase
        check_int('SuperTokenConvEmbed', 'num_conv_modules', num_conv_modules, minimum=0)
        for name, values in (('conv_channels', conv_channels), ('conv_strides', conv_strides)):
            for value in values:
                check_int('SuperTokenConvEmbed', name, value, minimum=1)
        if len(conv_channels) != len(conv_strides):
            raise ValueError(
                f'SuperTokenConvEmbed: conv_channels {conv_channels} and conv_strides {conv_strides} differ in length')
        if not 0 <= num_conv_modules <= len(conv_channels):
            raise ValueError(
                f'SuperTokenConvEmbed: num_conv_modules must be in 0..{len(conv_channels)} (the modules of '
                f'conv_channels={conv_channels}), got {num_conv_modules}')
        if extra_stride2_conv and num_conv_modules == 0:
            raise ValueError('SuperTokenConvEmbed: extra_stride2_conv adds a module after the conv modules; '
                             'it needs num_conv_modules >= 1')
        self.num_conv_modules = num_conv_modules
        self.extra_stride2_conv = extra_stride2_conv

        modules = []
        chs = in_chans
        for out_chs, stride in zip(conv_channels[:num_conv_modules], conv_strides[:num_conv_modules]):
            modules.append(ConvGeluBn(chs, out_chs, stride=stride, **dd))
            chs = out_chs
        if extra_stride2_conv:
            modules.append(ConvGeluBn(chs, chs, stride=2, **dd))
        self.stem = nn.Sequential(*modules)
        self.stem_stride = math.prod(m.conv.stride[0] for m in modules)
        self.stem_chs = chs
        self.cluster = SuperTokenClustering(
            stoken_size=self._stoken_size(self.patch_size[0]), num_iters=num_iters,
            grad_through_assoc=grad_through_assoc, border=border)
        self.proj = nn.Linear(chs, embed_dim, bias=bias, **dd)
        self.img_size, self.grid_size, self.num_patches = self._init_img_size(img_size)

    def _stoken_size(self, patch: int) -> int:
        if patch % self.stem_stride:
            raise ValueError(
                f'SuperTokenConvEmbed: patch_size {patch} is not a multiple of the conv stem\'s stride '
                f'{self.stem_stride} ({self.num_conv_modules} modules'
                f'{" + extra stride-2 conv" if self.extra_stride2_conv else ""}); the super-token size would be '
                f'{patch / self.stem_stride:g}. Use patch_size={max(1, patch // self.stem_stride) * self.stem_stride} '
                f'or fewer stride-2 modules')
        return patch // self.stem_stride

    def _set_patch_size(self, patch_size: Tuple[int, int]) -> None:
        # The stem is unchanged; only the super-token cells grow or shrink.
        if patch_size[0] != patch_size[1]:
            raise ValueError(f'SuperTokenConvEmbed: patch_size must be square, got {patch_size}')
        self.cluster.stoken_size = self._stoken_size(patch_size[0])
        self.patch_size = patch_size

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last through the stem: oneDNN / cuDNN run these thin 3x3 convolutions, GELU and BatchNorm
        # faster in NHWC, and the clustering and projection work in NHWC anyway (no copy back).
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        x = self.cluster(x)
        return self.proj(x.permute(0, 2, 3, 1))
