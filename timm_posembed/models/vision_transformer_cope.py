""" Vision Transformer with Complex Order Position Embedding (COPE)

ViT whose learnable absolute position embedding is replaced by a complex-order embedding: each token (class
token at position 0) is the amplitude of ``x·exp(i(p·Ω + Θ))`` and the network sees ``Re + Im``.

Papers:
  * `Encoding word order in complex embeddings` - https://arxiv.org/abs/1912.12333 (Wang et al., ICLR 2020)
  * Kim & Cho, `Image classification using vision transformers with complex positional embeddings` (Chonnam
    National University): ViT-Tiny/16 with COPE on Tiny-ImageNet, 34.0 vs 32.2 top-1.
  * `An Image is Worth 16x16 Words` - https://arxiv.org/abs/2010.11929

Built on timm's ``VisionTransformer`` with ``pos_embed='none'``; everything else (blocks, heads, feature API)
is timm's.
"""
import math
from typing import Any, Dict, Mapping, Optional, Set, Tuple

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from ..layers import (
    CheckedPatchEmbed, ComplexOrderPosEmbed, CopeFuse, CopeMode, CopePositions, CopeResize, resample_cope_tables,
)
from ._builder import unwrap_checkpoint
from ._catalog import ModelInfo, declare_models
from ._papers import COPE_VIT_PAPER
from ._hub import hub_id
from ._vit_checkpoints import describe_timm_vit_checkpoint, vit_trunk_facts
from .timm_blocks import build_with_timm_blocks, timm_blocks_cfg, timm_blocks_tag

__all__ = ['VisionTransformerCOPE']


class VisionTransformerCOPE(VisionTransformer):
    """ ViT with a Complex Order Position Embedding in place of the learnable ``pos_embed``.

    Takes every ``VisionTransformer`` argument except ``pos_embed`` (always ``'none'``), plus:
        cope_fuse: ``'sum'`` (Re + Im, default) or ``'real'``.
        cope_mode: ``'multiplicative'`` (default) or ``'additive'`` (ablation).
        cope_positions: ``'index'`` (default, Kim & Cho's: p = token index, cls at 0) or ``'grid'`` (half of the
            channels the patch's row, the other half its column, cls at a position of its own); same tables.
        cope_resize: how the tables follow a new grid when ``set_input_size`` is called, a checkpoint made at
            another size is loaded, or (``dynamic_img_size=True``) an input of another size arrives:
            ``'interpolate'`` (default) or ``'extrapolate'``; see ``resample_cope_tables`` and MODEL_CARDS.md for
            the measured comparison.
    With ``dynamic_img_size=True`` the angle field for the incoming patch grid is computed on the fly from the
    tables made for ``img_size`` (nothing is rewritten), as ``set_input_size`` to that size would make it.
    """

    def __init__(
            self,
            *args: Any,
            cope_fuse: CopeFuse = 'sum',
            cope_mode: CopeMode = 'multiplicative',
            cope_positions: CopePositions = 'index',
            cope_resize: CopeResize = 'interpolate',
            **kwargs: Any,
    ) -> None:
        pos_embed = kwargs.pop('pos_embed', 'none')
        if pos_embed not in ('', 'none'):
            raise ValueError(
                f"VisionTransformerCOPE replaces the position embedding with COPE; pos_embed must be 'none', "
                f"got {pos_embed!r} (use timm's vit_* models for a learned position embedding)")
        if cope_resize not in ('interpolate', 'extrapolate'):
            raise ValueError(f"cope_resize must be 'interpolate' or 'extrapolate', got {cope_resize!r}")
        dd = {'device': kwargs.get('device', None), 'dtype': kwargs.get('dtype', None)}
        # the embedding checks the input image and says how to fix a wrong channel count or size
        kwargs.setdefault('embed_layer', CheckedPatchEmbed)
        super().__init__(*args, pos_embed='none', **kwargs)
        self.cope_resize = cope_resize
        self.cope = ComplexOrderPosEmbed(
            self.patch_embed.num_patches + self.num_prefix_tokens,
            self.embed_dim,
            fuse=cope_fuse,
            mode=cope_mode,
            positions=cope_positions,
            grid_size=self.patch_embed.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
            **dd,
        )

    def init_weights(self, mode: str = '', needs_reset: bool = True) -> None:
        super().init_weights(mode, needs_reset=needs_reset)
        # VisionTransformer.__init__ runs this before the COPE tables exist; they initialise themselves then.
        cope = getattr(self, 'cope', None)
        if cope is not None:
            cope.init_weights()

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return super().no_weight_decay() | {k for k, _ in self.cope.named_parameters(prefix='cope')}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        matcher = super().group_matcher(coarse)
        matcher['stem'] = r'^cls_token|reg_token|cope|patch_embed|norm_pre'
        return matcher

    def set_input_size(
            self,
            img_size: Optional[Tuple[int, int]] = None,
            patch_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        """Change the input size; the COPE tables follow the new grid by ``self.cope_resize``."""
        old_grid = self.patch_embed.grid_size
        super().set_input_size(img_size=img_size, patch_size=patch_size)
        new_grid = self.patch_embed.grid_size
        if tuple(new_grid) != tuple(old_grid):
            self.cope.resize(new_grid, old_grid, self.num_prefix_tokens, method=self.cope_resize)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        to_cat = []
        if self.cls_token is not None:
            to_cat.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.reg_token is not None:
            to_cat.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.dynamic_img_size:
            B, H, W, C = x.shape
            x = torch.cat(to_cat + [x.view(B, -1, C)], dim=1)
            x = self.cope(x, grid_size=(H, W), resize=self.cope_resize)
        else:
            x = torch.cat(to_cat + [x], dim=1)
            x = self.cope(x)
        return self.pos_drop(x)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: VisionTransformerCOPE) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``: unwrap train.py checkpoints and resample COPE tables made for another
    square patch grid by ``model.cope_resize``. Only transforms: strict loading then validates the result."""
    state_dict = unwrap_checkpoint(state_dict)
    table_key = 'cope.freq' if model.cope.freq is not None else 'cope.amplitude'
    table, phase = state_dict.get(table_key), state_dict.get('cope.phase')
    if table is None or phase is None or table.ndim != 3 or table.shape != phase.shape:
        return state_dict  # not COPE tables of this mode: strict loading names what is missing
    npt = model.num_prefix_tokens
    old_patches = table.shape[1] - npt
    old_side = math.isqrt(max(old_patches, 0))
    if table.shape[1] != model.cope.num_tokens and old_side > 0 and old_side * old_side == old_patches:
        state_dict = dict(state_dict)
        new_table, new_phase = resample_cope_tables(
            table.double(), phase.double(), model.patch_embed.grid_size, (old_side, old_side), npt,
            method=model.cope_resize, mode=model.cope.mode, positions=model.cope.positions)
        state_dict[table_key] = new_table.to(table.dtype).contiguous()
        state_dict['cope.phase'] = new_phase.to(phase.dtype).contiguous()
    return state_dict


def describe_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Optional[Dict[str, Any]]:
    """A COPE ViT's checkpoint: timm's ViT blocks with the two complex order tables (``cope.freq``: the
    multiplicative mode, ``cope.amplitude``: the additive one) instead of a ``pos_embed``."""
    table = next((k for k in ('cope.freq', 'cope.amplitude') if k in state_dict), None)
    if table is None or not any(k.startswith('blocks.') for k in state_dict):
        return None
    return {'family': 'COPE ViT (complex order position tables)',
            'cope_mode': 'multiplicative' if table == 'cope.freq' else 'additive', **vit_trunk_facts(state_dict, table)}


def _create_vision_transformer_cope(variant: str, pretrained: bool = False, **kwargs: Any) -> VisionTransformerCOPE:
    out_indices = kwargs.pop('out_indices', 3)
    return build_with_timm_blocks(
        VisionTransformerCOPE,
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
        'crop_pct': 0.9,
        'interpolation': 'bicubic',
        'fixed_input_size': True,
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj',
        'classifier': 'head',
        'license': 'apache-2.0',
        **COPE_VIT_PAPER.cfg(),
        **kwargs,
    }


def _tiny_imagenet_cfg(model_name: str) -> Dict[str, Any]:
    # Tiny-ImageNet images are 64x64, upsampled to 224 as in Kim & Cho: no centre crop at eval.
    return _cfg(hf_hub_id=hub_id(model_name, 'tiny_imagenet'), num_classes=200, crop_pct=1.0)


def _timm_blocks_cfgs(model_name: str, source: str) -> Dict[str, Dict[str, Any]]:
    # A warm start, not trained weights: timm's blocks with the COPE tables at their initialisation.
    return {f'{model_name}.{timm_blocks_tag(source)}': timm_blocks_cfg(source, model_name, _cfg)}


# The first tag of each model is its default: the trained weights, then the warm starts.
default_cfgs = generate_default_cfgs({
    'vit_tiny_cope.tiny_imagenet': _tiny_imagenet_cfg('vit_tiny_cope'),
    'vit_small_cope.tiny_imagenet': _tiny_imagenet_cfg('vit_small_cope'),
    'vit_base_cope.tiny_imagenet': _tiny_imagenet_cfg('vit_base_cope'),
    **_timm_blocks_cfgs('vit_tiny_cope', 'vit_tiny_patch16_224.augreg_in21k_ft_in1k'),
    **_timm_blocks_cfgs('vit_small_cope', 'vit_small_patch16_224.augreg_in21k_ft_in1k'),
    **_timm_blocks_cfgs('vit_base_cope', 'vit_base_patch16_224.augreg_in21k_ft_in1k'),
})

_FAMILY = dict(paper=COPE_VIT_PAPER, describe_checkpoint=describe_checkpoint,
               describe_baseline_checkpoint=describe_timm_vit_checkpoint, new_embedding=('cope',))
declare_models(
    ModelInfo('vit_tiny_cope', baseline='vit_tiny_patch16_224', **_FAMILY),
    ModelInfo('vit_small_cope', baseline='vit_small_patch16_224', **_FAMILY),
    ModelInfo('vit_base_cope', baseline='vit_base_patch16_224', **_FAMILY),
)


@register_model
def vit_tiny_cope(pretrained: bool = False, **kwargs: Any) -> VisionTransformerCOPE:
    """ViT-Tiny/16 with COPE (Kim & Cho's model)."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create_vision_transformer_cope('vit_tiny_cope', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_small_cope(pretrained: bool = False, **kwargs: Any) -> VisionTransformerCOPE:
    """ViT-Small/16 with COPE."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_vision_transformer_cope('vit_small_cope', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_base_cope(pretrained: bool = False, **kwargs: Any) -> VisionTransformerCOPE:
    """ViT-Base/16 with COPE."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create_vision_transformer_cope('vit_base_cope', pretrained=pretrained, **dict(model_args, **kwargs))
