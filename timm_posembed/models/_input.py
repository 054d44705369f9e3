""" Input checks shared by this package's models.

A wrong channel count or image size otherwise surfaces as a shape error from deep inside a convolution or a
position table; these checks name what was given and what the model expects instead.
"""
from typing import Optional, Tuple

import torch
from timm.layers import register_notrace_function

__all__ = ['check_image_input']


@register_notrace_function
@torch.jit.ignore
def check_image_input(
        x: torch.Tensor,
        in_chans: int,
        img_size: Optional[Tuple[int, int]] = None,
        hint: str = '',
) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, in_chans, H, W)`` (and ``(H, W) == img_size`` when given)."""
    if x.ndim != 4:
        raise ValueError(
            f'expected an image batch of shape (B, {in_chans}, H, W), got a tensor of shape {tuple(x.shape)}')
    if x.shape[1] != in_chans:
        raise ValueError(
            f'expected {in_chans} input channels, got {x.shape[1]} (input shape {tuple(x.shape)}); '
            f'convert the images or create the model with in_chans={x.shape[1]}')
    if img_size is not None and tuple(x.shape[-2:]) != tuple(img_size):
        raise ValueError(
            f'expected images of size {tuple(img_size)}, got {tuple(x.shape[-2:])}; '
            f'resize the images or create the model with img_size={tuple(x.shape[-2:])}' + (f' ({hint})' if hint else ''))
