""" What the convolutional embeddings of this package share with timm's ``PatchEmbed``

A ``TokenEmbedBase`` subclass turns an image into a token grid ``patch_size`` times smaller, by any means
(``forward_grid``), and is usable as timm's ``VisionTransformer(embed_layer=...)``: it takes ``PatchEmbed``'s
keyword arguments and exposes ``img_size``, ``patch_size``, ``grid_size``, ``num_patches``, ``feat_ratio()``,
``dynamic_feat_size()`` and ``set_input_size()`` with the same meaning.
"""
import math
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import check_image_input, check_int, check_size

__all__ = ['TokenEmbedBase']

_OUTPUT_FORMATS = ('NCHW', 'NHWC', 'NLC')

# a leaf for plain torch.fx.symbolic_trace too (register_notrace_function covers timm's own fx tracers)
torch.fx.wrap('check_image_input')


class TokenEmbedBase(nn.Module):
    """ Base of the image -> token-grid embeddings; subclasses implement ``forward_grid``.

    ``forward_grid(x)`` maps ``(B, in_chans, H, W)``, H and W multiples of ``patch_size``, to ``(B, H/p, W/p, D)``
    (channels last). ``forward`` checks the input, pads it when ``dynamic_img_pad``, and returns tokens in the
    requested format: ``(B, L, D)`` (``flatten=True``, default), ``NHWC`` or ``NCHW``.
    """

    # The convolutional stems reduce both sides alike; a subclass that can patchify H and W differently says so.
    square_patches: bool = True

    def __init__(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = 224,
            patch_size: Union[int, Tuple[int, int]] = 16,
            in_chans: int = 3,
            embed_dim: int = 768,
            norm_layer: Optional[Callable] = None,
            flatten: bool = True,
            output_fmt: Optional[str] = None,
            strict_img_size: bool = True,
            dynamic_img_pad: bool = False,
            device=None,
            dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        patch_size = check_size(name, 'patch_size', patch_size)
        if self.square_patches and patch_size[0] != patch_size[1]:
            raise ValueError(
                f'{name}: patch_size must be square (the stem reduces both sides alike), got {patch_size}')
        check_int(name, 'in_chans', in_chans, minimum=1)
        check_int(name, 'embed_dim', embed_dim, minimum=1)
        if output_fmt is not None and output_fmt not in _OUTPUT_FORMATS:
            raise ValueError(f'{type(self).__name__}: output_fmt must be one of {_OUTPUT_FORMATS}, got {output_fmt!r}')
        if output_fmt is None:
            output_fmt = 'NLC' if flatten else 'NCHW'
        self.embed_name = type(self).__name__  # for error messages (torchscript cannot call type())
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.output_fmt = output_fmt
        self.flatten = output_fmt == 'NLC'
        self.output_nhwc = output_fmt == 'NHWC'
        self.strict_img_size = strict_img_size
        self.dynamic_img_pad = dynamic_img_pad
        self.img_size, self.grid_size, self.num_patches = self._init_img_size(img_size)
        self.norm = norm_layer(embed_dim, device=device, dtype=dtype) if norm_layer else nn.Identity()

    def _init_img_size(self, img_size: Optional[Union[int, Tuple[int, int]]]):
        if img_size is None:
            return None, None, None
        name = type(self).__name__
        img_size = check_size(name, 'img_size', img_size)
        p = self.patch_size
        if not self.dynamic_img_pad and (img_size[0] % p[0] or img_size[1] % p[1]):
            fit = tuple(max(1, s // r) * r for s, r in zip(img_size, p))
            too_small = img_size[0] < p[0] or img_size[1] < p[1]
            raise ValueError(
                f'{name}: img_size {img_size} must be a positive multiple of the patch size '
                f'{p[0] if p[0] == p[1] else p} (the total reduction of the stem)'
                + (f'; it is too small: the minimum is {p[0] if p[0] == p[1] else p}' if too_small else '')
                + f'; use e.g. img_size={fit} or dynamic_img_pad=True')
        grid_size = self.dynamic_feat_size(img_size)
        return img_size, grid_size, grid_size[0] * grid_size[1]

    def set_input_size(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            patch_size: Optional[Union[int, Tuple[int, int]]] = None,
    ) -> None:
        """Change the image size (and, where the subclass allows it, the patch size = total reduction)."""
        if patch_size is not None:
            patch_size = check_size(type(self).__name__, 'patch_size', patch_size)
            if patch_size != self.patch_size:
                self._set_patch_size(patch_size)
        img_size = img_size if img_size is not None else self.img_size
        self.img_size, self.grid_size, self.num_patches = self._init_img_size(img_size)

    def _set_patch_size(self, patch_size: Tuple[int, int]) -> None:
        raise ValueError(
            f'{type(self).__name__}: the reduction is fixed at {self.patch_size[0]} by the stem\'s strides; '
            f'build a new stem instead of set_input_size(patch_size={patch_size})')

    def feat_ratio(self, as_scalar: bool = True) -> Union[Tuple[int, int], int]:
        return max(self.patch_size) if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        """Token grid for an image size (padding included when ``dynamic_img_pad``); torchscript compatible."""
        if self.dynamic_img_pad:
            return math.ceil(img_size[0] / self.patch_size[0]), math.ceil(img_size[1] / self.patch_size[1])
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(
            x, self.in_chans, self.img_size if self.strict_img_size else None, self.patch_size,
            self.dynamic_img_pad, self.embed_name, 'or with dynamic_img_size=True for varying sizes',
            self.proj.weight,  # every embedding ends in a projection ``proj`` (as timm's PatchEmbed)
        )
        if self.dynamic_img_pad:
            pad_h = (self.patch_size[0] - x.shape[-2] % self.patch_size[0]) % self.patch_size[0]
            pad_w = (self.patch_size[1] - x.shape[-1] % self.patch_size[1]) % self.patch_size[1]
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.forward_grid(x)  # (B, h, w, D)
        if self.flatten:
            x = x.flatten(1, 2)
        elif not self.output_nhwc:
            x = x.permute(0, 3, 1, 2)
        return self.norm(x)
