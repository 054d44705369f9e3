""" The checks every part of the package shares: constructor integers and sizes, image batches, and the short name
lists their errors show.

One home, so the layers, the models and the tools refuse the same values with the same words: an integer argument
is an ``int`` (``True`` and ``2.0`` are mistakes, not a 1 and a 2), and a wrong image batch is reported with what was
given, what is expected and how to fix it, before it fails deep inside a convolution or a position table.
"""
import numbers
from typing import Any, Optional, Sequence, Tuple

import torch
from timm.layers import register_notrace_function, to_2tuple

__all__ = ['check_int', 'check_size', 'check_image_input', 'few_names']


def check_int(owner: str, name: str, value: Any, minimum: Optional[int] = None,
              maximum: Optional[int] = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``, or a ``ValueError`` naming ``owner``'s argument ``name``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    if minimum is not None and maximum is not None:
        wanted = f'an integer in {minimum}..{maximum}'
    elif minimum is not None:
        wanted = 'a positive integer' if minimum == 1 else f'an integer >= {minimum}'
    else:
        wanted = 'an integer' if maximum is None else f'an integer <= {maximum}'
    raise ValueError(f'{owner}: {name} must be {wanted}, got {value!r}')


def check_size(owner: str, name: str, value: Any) -> Tuple[int, int]:
    """``value`` (an int or a pair of ints) as a pair of positive ints, or a ``ValueError`` naming ``name``."""
    pair = to_2tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in pair):
        raise ValueError(f'{owner}: {name} must be a positive integer or a pair (H, W) of them, got {value!r}')
    return int(pair[0]), int(pair[1])


@register_notrace_function
@torch.jit.ignore
def check_image_input(
        x: torch.Tensor,
        in_chans: int,
        img_size: Optional[Tuple[int, int]] = None,
        reduction: Optional[Tuple[int, int]] = None,
        pad: bool = False,
        owner: str = '',
        hint: str = '',
        weight: Optional[torch.Tensor] = None,
) -> None:
    """Raise ``ValueError`` unless ``x`` is a ``(B, in_chans, H, W)`` batch with ``(H, W) == img_size``
    (when given), or else H and W multiples of ``reduction`` (unless the model pads, ``pad``), of a floating-point
    dtype: that of ``weight`` (the model's first parameter; a tensor, not a dtype, which TorchScript would pass as an
    int) when given, any while autocast is on (it casts).

    A leaf for timm's fx tracers; a module that calls it also needs ``torch.fx.wrap('check_image_input')`` for plain
    ``torch.fx.symbolic_trace`` (which wraps a name in the calling module's globals)."""
    what = f'{owner}: ' if owner else ''
    dtype = None if weight is None else weight.dtype
    if not x.is_floating_point() or (
            dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type)):
        wanted = 'a floating-point' if dtype is None else f'a {dtype}'
        raise ValueError(
            f'{what}expected {wanted} image batch like the model\'s parameters, got {x.dtype}; convert it, e.g. '
            + ('x.float() / 255 then normalize' if not x.is_floating_point() else f'x.to({dtype})')
            + (f', or convert the model with model.to({x.dtype})' if x.is_floating_point() else '')
            + ' (or run under torch.autocast)' * (x.is_floating_point() and dtype is not None))
    if x.ndim != 4:
        raise ValueError(f'{what}expected an image batch of shape (B, {in_chans}, H, W), got a tensor of shape '
                         f'{tuple(x.shape)}')
    if x.shape[1] != in_chans:
        raise ValueError(
            f'{what}expected {in_chans} input channels, got {x.shape[1]} (input shape {tuple(x.shape)}); '
            f'convert the images or create the model with in_chans={x.shape[1]}')
    size = (int(x.shape[-2]), int(x.shape[-1]))
    if img_size is not None:
        if size != tuple(img_size):
            raise ValueError(
                f'{what}expected images of size {tuple(img_size)}, got {size}; resize the images or create the '
                f'model with img_size={size}' + (f' ({hint})' if hint else ''))
    elif reduction is not None and not pad and (size[0] % reduction[0] or size[1] % reduction[1] or min(size) == 0):
        fit = tuple(max(1, s // r) * r for s, r in zip(size, reduction))
        small = size[0] < reduction[0] or size[1] < reduction[1]
        problem = 'is too small for' if small else 'is not a multiple of'
        red = reduction[0] if reduction[0] == reduction[1] else tuple(reduction)
        raise ValueError(
            f'{what}image size {size} {problem} the reduction {red}; crop or resize to e.g. {fit}, '
            f'or create the model with dynamic_img_pad=True to pad')


def few_names(items: Sequence[Any], n: int = 10) -> str:
    """The first ``n`` of ``items`` and their count, for an error message: ``[a, b, ...] (12)``."""
    shown = ', '.join(str(i) for i in items[:n])
    return f'[{shown}{", ..." if len(items) > n else ""}] ({len(items)})'
