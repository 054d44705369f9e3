""" ViT's patchify embedding with input errors that say how to fix them

The embedding of `An Image is Worth 16x16 Words` - https://arxiv.org/abs/2010.11929: one convolution with kernel
and stride ``patch_size``. Same arguments, attributes and parameter names (``proj.weight``, ``proj.bias``) as
timm's ``PatchEmbed``, so timm ViT checkpoints load unchanged; a wrong channel count, image size or a size that is
not a multiple of the patch is reported with what was given, what is expected and how to fix it (timm's own
checks name only the mismatching side).
"""
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import resample_patch_embed

from ._token_embed import TokenEmbedBase

__all__ = ['CheckedPatchEmbed']


class CheckedPatchEmbed(TokenEmbedBase):
    """ 2D image to patch tokens by a ``patch_size``-strided convolution; a drop-in for timm's ``PatchEmbed``
    (``VisionTransformer(embed_layer=CheckedPatchEmbed)``). ``set_input_size(patch_size=...)`` resamples the
    kernel as timm does (FlexiViT's pseudo-inverse resize, ``timm.layers.resample_patch_embed``).
    """

    square_patches = False

    def __init__(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = 224,
            patch_size: Union[int, Tuple[int, int]] = 16,
            in_chans: int = 3,
            embed_dim: int = 768,
            norm_layer: Optional[Callable] = None,
            flatten: bool = True,
            output_fmt: Optional[str] = None,
            bias: bool = True,
            strict_img_size: bool = True,
            dynamic_img_pad: bool = False,
            device=None,
            dtype=None,
    ) -> None:
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, norm_layer=norm_layer,
            flatten=flatten, output_fmt=output_fmt, strict_img_size=strict_img_size,
            dynamic_img_pad=dynamic_img_pad, device=device, dtype=dtype,
        )
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias,
            device=device, dtype=dtype)

    def _set_patch_size(self, patch_size: Tuple[int, int]) -> None:
        old = self.proj
        new = nn.Conv2d(
            old.in_channels, old.out_channels, kernel_size=patch_size, stride=patch_size, bias=old.bias is not None,
            device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(resample_patch_embed(old.weight, list(patch_size)))
            if old.bias is not None:
                new.bias.copy_(old.bias)
        new.weight.requires_grad_(old.weight.requires_grad)
        if new.bias is not None:
            new.bias.requires_grad_(old.bias.requires_grad)
        new.train(old.training)
        self.proj = new
        self.patch_size = patch_size

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)
