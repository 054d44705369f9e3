""" Vision Transformer with a super-token convolutional embedding, and the EarlyConv baseline

timm's ``VisionTransformer`` with its patchify convolution replaced by
  * ``SuperTokenConvEmbed`` (the super-token convolutional embedding paper; see its card in MODEL_CARDS.md): six light
    Conv3x3 -> GELU -> BN modules down to 1/8, parameter-free super-token clustering (STViT's sampling step, with
    STViT's zero-padded border by default; ``stoken_border='exclude'`` leaves the outside neighbours out) down to
    1/16, Linear to the width;
  * ``ConvStemEmbed`` (EarlyConv): four stride-2 Conv3x3 -> BN -> ReLU stages and a 1x1 conv.

Papers:
  * the super-token convolutional embedding paper (Korean, ImageNet100, ViT-S from scratch; our copy names no title
    or authors): super-token conv embedding 83.52 top-1 vs. patch embedding 78.44 and EarlyConv 81.14 (its table 6).
  * `Vision Transformer with Super Token Sampling` - https://arxiv.org/abs/2211.11167 (Huang et al., CVPR 2023)
  * `Early Convolutions Help Transformers See Better` - https://arxiv.org/abs/2106.14881 (Xiao et al., 2021)
  * `An Image is Worth 16x16 Words` - https://arxiv.org/abs/2010.11929

The ablations of that paper's tables 7 and 8 are constructor arguments, so ``train.py --model-kwargs`` reaches them,
e.g. ``--model-kwargs stoken_num_conv_modules=4`` or ``--model-kwargs stoken_num_iters=1``.
"""
from functools import partial
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import resample_abs_pos_embed
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from ..layers import EARLYCONV_CHANNELS, ConvStemEmbed, StokenBorder, SuperTokenConvEmbed
from ._builder import unwrap_checkpoint
from ._catalog import ModelInfo, declare_models
from ._papers import EARLY_CONV_PAPER, SUPER_TOKEN_CONV_PAPER, Paper
from ._hub import hub_id
from ._vit_checkpoints import describe_timm_vit_checkpoint, vit_trunk_facts
from .timm_blocks import build_with_timm_blocks, timm_blocks_cfg, timm_blocks_tag

__all__ = ['VisionTransformerSuperToken', 'VisionTransformerConvStem']


class _ConvEmbedVisionTransformer(VisionTransformer):
    """ViT whose embedding is built from this module's arguments (the embedding checks the input image)."""

    def _check_no_embed_layer(self, kwargs: Dict[str, Any]) -> None:
        if 'embed_layer' in kwargs:
            raise TypeError(
                f'{type(self).__name__} builds its own embed_layer; use timm\'s VisionTransformer to pass another')


class VisionTransformerSuperToken(_ConvEmbedVisionTransformer):
    """ ViT with ``SuperTokenConvEmbed`` as its embedding.

    Takes every ``VisionTransformer`` argument except ``embed_layer``, plus the super-token paper's ablations, all
    prefixed ``stoken_`` (reachable through ``create_model(..., **kwargs)`` and train.py's ``--model-kwargs``):
        stoken_num_conv_modules: Conv modules of the paper's table 5 kept before the clustering (its table 7: 0, 1,
            2, 4, 6; default 6).
        stoken_extra_stride2_conv: One more stride-2 conv module (table 7, last row: clustering with 1x1 cells).
        stoken_num_iters: Super-token clustering rounds t (table 8: 1..4; default 3).
        stoken_grad_through_assoc: Back-propagate through the clustering's associations (default False, as STViT).
        stoken_border: The clustering's neighbour slots outside the grid: ``'zero_pad'`` (default, STViT's code:
            zero vectors in the softmax) or ``'exclude'`` (left out of it).
    ``patch_size`` is the total reduction (16: a 14x14 grid at 224); the super-token cell size follows from it.
    """

    def __init__(
            self,
            *args: Any,
            stoken_num_conv_modules: int = 6,
            stoken_extra_stride2_conv: bool = False,
            stoken_num_iters: int = 3,
            stoken_grad_through_assoc: bool = False,
            stoken_border: StokenBorder = 'zero_pad',
            **kwargs: Any,
    ) -> None:
        self._check_no_embed_layer(kwargs)
        embed_layer = partial(
            SuperTokenConvEmbed,
            num_conv_modules=stoken_num_conv_modules,
            extra_stride2_conv=stoken_extra_stride2_conv,
            num_iters=stoken_num_iters,
            grad_through_assoc=stoken_grad_through_assoc,
            border=stoken_border,
        )
        super().__init__(*args, embed_layer=embed_layer, **kwargs)


class VisionTransformerConvStem(_ConvEmbedVisionTransformer):
    """ ViT with the EarlyConv ``ConvStemEmbed`` as its embedding.

    Takes every ``VisionTransformer`` argument except ``embed_layer``, plus:
        stem_channels: Widths of the stride-2 Conv3x3 -> BN -> ReLU stages (default 48, 96, 192, 384; the super-token
            paper's table 4 lists 96, 192, 384, 384).
        stem_final_kernel_size: Kernel of the last convolution, 1 (EarlyConv) or 3 (seed table 4).
    """

    def __init__(
            self,
            *args: Any,
            stem_channels: Sequence[int] = EARLYCONV_CHANNELS,
            stem_final_kernel_size: int = 1,
            **kwargs: Any,
    ) -> None:
        self._check_no_embed_layer(kwargs)
        embed_layer = partial(ConvStemEmbed, channels=tuple(stem_channels), final_kernel_size=stem_final_kernel_size)
        super().__init__(*args, embed_layer=embed_layer, **kwargs)


def checkpoint_filter_fn(
        state_dict: Dict[str, torch.Tensor],
        model: _ConvEmbedVisionTransformer,
) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``: unwrap train.py checkpoints and resample a ``pos_embed`` made for another
    grid. Only transforms: whether the result fits ``model`` is checked by the builder (``check_checkpoint_fits``),
    which names what the checkpoint is when it does not."""
    state_dict = unwrap_checkpoint(state_dict)
    pos_embed = state_dict.get('pos_embed')
    if pos_embed is not None and model.pos_embed is not None and pos_embed.shape != model.pos_embed.shape:
        num_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        state_dict['pos_embed'] = resample_abs_pos_embed(
            pos_embed, new_size=model.patch_embed.grid_size, num_prefix_tokens=num_prefix, verbose=True)
    return state_dict


def describe_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Optional[Dict[str, Any]]:
    """A checkpoint of a ViT with a convolutional embedding (super-token or EarlyConv): timm's ViT blocks behind a
    ``patch_embed.stem``."""
    if not any(k.startswith('patch_embed.stem.') for k in state_dict) or not any(
            k.startswith('blocks.') for k in state_dict):
        return None
    learned = 'a learned pos_embed' if 'pos_embed' in state_dict else 'no position table'
    return {'family': f'ViT with a convolutional stem and {learned}', **vit_trunk_facts(state_dict, 'pos_embed')}


def _create_vision_transformer(
        model_cls: type,
        variant: str,
        pretrained: bool = False,
        **kwargs: Any,
) -> _ConvEmbedVisionTransformer:
    out_indices = kwargs.pop('out_indices', 3)
    return build_with_timm_blocks(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': None,
        'crop_pct': 0.875,
        'interpolation': 'bicubic',
        # The learned pos_embed covers the 14x14 grid: other sizes need img_size=, set_input_size() or
        # dynamic_img_size=True, as for timm's own ViTs.
        'fixed_input_size': True,
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.stem.0.conv',
        'classifier': 'head',
        'license': 'apache-2.0',
        **kwargs,
    }


def _in100_cfg(model_name: str, paper: Paper) -> Dict[str, Any]:
    # ImageNet100 (the CMC 100-class subset of ImageNet-1k), trained from scratch with the DeiT recipe.
    return _cfg(hf_hub_id=hub_id(model_name, 'in100'), num_classes=100, **paper.cfg())


def _timm_blocks_cfgs(model_name: str, source: str, paper: Paper) -> Dict[str, Dict[str, Any]]:
    # A warm start, not trained weights: timm's blocks (and position table) under the stem at its initialisation.
    make_cfg = partial(_cfg, **paper.cfg())
    return {f'{model_name}.{timm_blocks_tag(source)}': timm_blocks_cfg(source, model_name, make_cfg)}


# The first tag of each model is its default: the trained weights, then the warm starts.
default_cfgs = generate_default_cfgs({
    'vit_small_supertoken_conv.in100': _in100_cfg('vit_small_supertoken_conv', SUPER_TOKEN_CONV_PAPER),
    'vit_tiny_supertoken_conv.in100': _in100_cfg('vit_tiny_supertoken_conv', SUPER_TOKEN_CONV_PAPER),
    'vit_small_conv_embed.in100': _in100_cfg('vit_small_conv_embed', EARLY_CONV_PAPER),
    **_timm_blocks_cfgs('vit_small_supertoken_conv', 'vit_small_patch16_224.augreg_in21k_ft_in1k',
                        SUPER_TOKEN_CONV_PAPER),
    **_timm_blocks_cfgs('vit_tiny_supertoken_conv', 'vit_tiny_patch16_224.augreg_in21k_ft_in1k',
                        SUPER_TOKEN_CONV_PAPER),
    **_timm_blocks_cfgs('vit_small_conv_embed', 'vit_small_patch16_224.augreg_in21k_ft_in1k', EARLY_CONV_PAPER),
})

_DESCRIBERS = dict(describe_checkpoint=describe_checkpoint, describe_baseline_checkpoint=describe_timm_vit_checkpoint,
                   new_embedding=('patch_embed',))
declare_models(
    ModelInfo('vit_small_supertoken_conv', baseline='vit_small_patch16_224', paper=SUPER_TOKEN_CONV_PAPER,
              **_DESCRIBERS),
    ModelInfo('vit_tiny_supertoken_conv', baseline='vit_tiny_patch16_224', paper=SUPER_TOKEN_CONV_PAPER,
              **_DESCRIBERS),
    ModelInfo('vit_small_conv_embed', baseline='vit_small_patch16_224', paper=EARLY_CONV_PAPER, **_DESCRIBERS),
)


@register_model
def vit_small_supertoken_conv(pretrained: bool = False, **kwargs: Any) -> VisionTransformerSuperToken:
    """ViT-S/16 with the super-token convolutional embedding (the super-token paper's model)."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_vision_transformer(
        VisionTransformerSuperToken, 'vit_small_supertoken_conv', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_tiny_supertoken_conv(pretrained: bool = False, **kwargs: Any) -> VisionTransformerSuperToken:
    """ViT-Ti/16 with the super-token convolutional embedding."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create_vision_transformer(
        VisionTransformerSuperToken, 'vit_tiny_supertoken_conv', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_small_conv_embed(pretrained: bool = False, **kwargs: Any) -> VisionTransformerConvStem:
    """ViT-S/16 with the EarlyConv convolutional stem (48, 96, 192, 384 + 1x1 conv), the super-token paper's conv
    baseline."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_vision_transformer(
        VisionTransformerConvStem, 'vit_small_conv_embed', pretrained=pretrained, **dict(model_args, **kwargs))
