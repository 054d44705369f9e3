""" Convolutional stem embedding (EarlyConv)

After `Early Convolutions Help Transformers See Better` - https://arxiv.org/abs/2106.14881 (Xiao et al.,
NeurIPS 2021): ViT's 16x16 patchify convolution replaced by a stack of stride-2 Conv3x3 -> BN -> ReLU stages and a
final 1x1 convolution, the "convolution embedding" baseline of the super-token convolutional embedding paper (its
card in MODEL_CARDS.md).
"""
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ._token_embed import TokenEmbedBase

__all__ = ['ConvStemEmbed', 'ConvBnReLU', 'EARLYCONV_CHANNELS', 'STOKEN_PAPER_CONV_STEM_CHANNELS']

# Xiao et al.'s stem for a 384-wide ViT (ViT_C-4GF), 1,021,488 parameters with embed_dim=384.
EARLYCONV_CHANNELS: Tuple[int, ...] = (48, 96, 192, 384)
# The super-token paper's table 4 (its "convolution embedding"): four stride-2 convs and a stride-1 Conv3x3 at the end.
STOKEN_PAPER_CONV_STEM_CHANNELS: Tuple[int, ...] = (96, 192, 384, 384)


class ConvBnReLU(nn.Module):
    """ Conv3x3 (no bias, BN follows) -> BatchNorm2d -> ReLU; plain ``nn.BatchNorm2d`` so ``--sync-bn`` converts it. """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2, device=None, dtype=None) -> None:
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False, **dd)
        self.bn = nn.BatchNorm2d(out_chs, **dd)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ConvStemEmbed(TokenEmbedBase):
    """ EarlyConv stem as a timm ``embed_layer``: ``len(channels)`` stride-2 ``ConvBnReLU`` stages, then a
    ``final_kernel_size`` convolution with bias to ``embed_dim``.

    The reduction ``2 ** len(channels)`` must equal ``patch_size`` (4 stages for /16).
    ``channels=STOKEN_PAPER_CONV_STEM_CHANNELS, final_kernel_size=3`` is the stem as the super-token paper's table 4
    lists it.
    """

    def __init__(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = 224,
            patch_size: Union[int, Tuple[int, int]] = 16,
            in_chans: int = 3,
            embed_dim: int = 768,
            channels: Sequence[int] = EARLYCONV_CHANNELS,
            final_kernel_size: int = 1,
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
            patch_size: Total reduction; must be ``2 ** len(channels)``.
            in_chans: Image channels.
            embed_dim: Token width D.
            channels: Output channels of the stride-2 stages (default: Xiao et al.'s 48, 96, 192, 384).
            final_kernel_size: Kernel of the last (stride-1, biased) convolution: 1 (EarlyConv) or 3 (the super-token
                paper's table 4).
            norm_layer: Optional norm on the output tokens (timm's ``embed_norm_layer``).
            flatten: Return ``(B, L, D)`` (when ``output_fmt`` is None).
            output_fmt: ``'NLC'``, ``'NHWC'`` or ``'NCHW'``.
            bias: Bias of the final convolution.
            strict_img_size: Require exactly ``img_size``; otherwise any multiple of ``patch_size``.
            dynamic_img_pad: Pad inputs up to a multiple of ``patch_size``.
        """
        channels = tuple(channels)
        super().__init__(
            img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, norm_layer=norm_layer,
            flatten=flatten, output_fmt=output_fmt, strict_img_size=strict_img_size,
            dynamic_img_pad=dynamic_img_pad, device=device, dtype=dtype,
        )
        if not channels:
            raise ValueError('ConvStemEmbed: channels must list at least one stage')
        if 2 ** len(channels) != self.patch_size[0]:
            raise ValueError(
                f'ConvStemEmbed: {len(channels)} stride-2 stages (channels={channels}) reduce by {2 ** len(channels)}, '
                f'but patch_size is {self.patch_size[0]}; pass patch_size={2 ** len(channels)}'
                + (f' or {self.patch_size[0].bit_length() - 1} channel entries'
                   if self.patch_size[0] & (self.patch_size[0] - 1) == 0 else ''))
        if final_kernel_size < 1 or final_kernel_size % 2 == 0:
            raise ValueError(f'ConvStemEmbed: final_kernel_size must be odd and >= 1, got {final_kernel_size}')
        dd = {'device': device, 'dtype': dtype}
        stages = []
        chs = in_chans
        for out_chs in channels:
            stages.append(ConvBnReLU(chs, out_chs, stride=2, **dd))
            chs = out_chs
        self.stem = nn.Sequential(*stages)
        self.proj = nn.Conv2d(
            chs, embed_dim, kernel_size=final_kernel_size, padding=final_kernel_size // 2, bias=bias, **dd)
        self.img_size, self.grid_size, self.num_patches = self._init_img_size(img_size)

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x)).permute(0, 2, 3, 1)
