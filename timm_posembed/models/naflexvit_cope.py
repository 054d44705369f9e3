""" NaFlex Vision Transformer with Complex Order Position Embedding (COPE)

timm's ``NaFlexVit`` (patch sequences of any resolution and aspect ratio, packed with padding masks) whose position
embedding is COPE: every patch token is the amplitude of ``x·exp(i(p·Ω + Θ))``, its angle evaluated per image from
the patch coordinates NaFlex passes (the image's own grid), padding tokens left as they are. The tables are made for
one reference grid (``pos_embed_grid_size``, 14x14 = a 224 px ViT/16), so a ``vit_*_cope`` checkpoint of that grid
loads and gives the same logits at its size; another grid follows ``cope_resize`` as the ViT's dynamic sizes do.

Papers:
  * `Encoding word order in complex embeddings` - https://arxiv.org/abs/1912.12333 (Wang et al., ICLR 2020)
  * Kim & Cho, `Image classification using vision transformers with complex positional embeddings` (Chonnam
    National University)
  * `Patch n' Pack: NaViT, a Vision Transformer for any Aspect Ratio and Resolution` - https://arxiv.org/abs/2307.06304
  * `FlexiViT: One Model for All Patch Sizes` - https://arxiv.org/abs/2212.08013

Built on timm's ``NaFlexVit`` and ``NaFlexEmbeds`` with ``pos_embed='none'``; blocks, masks, pooling, heads and the
NaFlex data pipeline are timm's.
"""
from typing import Any, Dict, Mapping, Optional, Set, Tuple

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_module
from timm.models import generate_default_cfgs, register_model
from timm.models.naflexvit import NaFlexEmbeds, NaFlexVit, NaFlexVitCfg
from timm.models.naflexvit import checkpoint_filter_fn as naflexvit_checkpoint_filter_fn

from ..layers import ComplexOrderPosEmbed, CopeFuse, CopeMode, CopePositions, CopeResize, resample_cope_tables
from ._builder import build_with_helpful_pretrained_errors, unwrap_checkpoint
from ._catalog import ModelInfo, declare_models
from ._hub import hub_id
from ._papers import COPE_VIT_PAPER
from ._vit_checkpoints import describe_timm_vit_checkpoint, vit_trunk_facts

__all__ = ['NaFlexEmbedsCOPE', 'NaFlexVitCOPE']

COPE_KEYS = ('embeds.cope.freq', 'embeds.cope.amplitude', 'embeds.cope.phase')


@register_notrace_module  # a leaf for timm's fx tracers, as its parent NaFlexEmbeds is
class NaFlexEmbedsCOPE(NaFlexEmbeds):
    """ timm's ``NaFlexEmbeds`` (patch embedding, prefix tokens) with COPE as its position embedding.

    Takes every ``NaFlexEmbeds`` argument except ``pos_embed`` (always ``'none'``); ``pos_embed_grid_size`` is the
    grid the COPE tables are made for. The ``cope_*`` arguments are ``VisionTransformerCOPE``'s. COPE is applied to
    the whole sequence (prefix tokens at their own positions, as in the COPE ViT): to a NaFlex batch per image from
    its ``patch_coord`` (``ComplexOrderPosEmbed.forward_coords``), to a plain ``(B, C, H, W)`` batch for its grid.
    """

    def __init__(
            self,
            *args: Any,
            cope_fuse: CopeFuse = 'sum',
            cope_mode: CopeMode = 'multiplicative',
            cope_positions: CopePositions = 'grid',
            cope_resize: CopeResize = 'interpolate',
            **kwargs: Any,
    ) -> None:
        pos_embed = kwargs.pop('pos_embed', 'none')
        if pos_embed not in ('', 'none'):
            raise ValueError(f"NaFlexEmbedsCOPE: COPE is the position embedding, pos_embed must be 'none', got "
                             f"{pos_embed!r}")
        super().__init__(*args, pos_embed='none', **kwargs)
        self._add_cope(cope_fuse, cope_mode, cope_positions, cope_resize, kwargs.get('device'), kwargs.get('dtype'))

    @classmethod
    def adopt(cls, embeds: NaFlexEmbeds, **cope_kwargs: Any) -> 'NaFlexEmbedsCOPE':
        """Turn the ``NaFlexEmbeds`` that ``NaFlexVit`` built itself (it takes no embedding class) into this class in
        place, keeping every argument timm built it with, and add the COPE tables; returns it. The way
        ``torch.nn.utils.parametrize`` retypes a module: same instance, a subclass, one attribute more."""
        if type(embeds) is not NaFlexEmbeds or embeds.pos_embed_type != 'none':
            raise ValueError(f"NaFlexEmbedsCOPE.adopt takes a NaFlexEmbeds built with pos_embed='none', got "
                             f"{type(embeds).__name__} with pos_embed={getattr(embeds, 'pos_embed_type', None)!r}")
        embeds.__class__ = cls
        cope_kwargs = {k.replace('cope_', '', 1): v for k, v in cope_kwargs.items()}
        weight = embeds.proj.weight
        embeds._add_cope(device=weight.device, dtype=weight.dtype, **cope_kwargs)
        return embeds

    def _add_cope(
            self,
            fuse: CopeFuse = 'sum',
            mode: CopeMode = 'multiplicative',
            positions: CopePositions = 'grid',
            resize: CopeResize = 'interpolate',
            device=None,
            dtype=None,
    ) -> None:
        if resize not in ('interpolate', 'extrapolate'):
            raise ValueError(f"cope_resize must be 'interpolate' or 'extrapolate', got {resize!r}")
        grid = self.pos_embed_grid_size
        if grid is None:
            raise ValueError('NaFlexEmbedsCOPE needs pos_embed_grid_size (or img_size): the grid its COPE tables are '
                             'made for')
        grid = (int(grid[0]), int(grid[1]))
        self.cope_resize = resize
        self.cope = ComplexOrderPosEmbed(
            self.num_prefix_tokens + grid[0] * grid[1], self.embed_dim, fuse=fuse, mode=mode, positions=positions,
            grid_size=grid, num_prefix_tokens=self.num_prefix_tokens, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        cope = self._modules.get('cope')  # NaFlexEmbeds.__init__ resets before the tables exist
        if cope is not None:
            cope.init_weights()

    def forward(
            self,
            x: torch.Tensor,
            patch_coord: Optional[torch.Tensor] = None,
            patch_valid: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Optional[Tuple[int, int]]]:
        # COPE multiplies each token, so it commutes with NaFlexEmbeds' (pos_drop) dropout; with the additive mode
        # the wave is added after the dropout, which the COPE ViT applies after it.
        x, grid_size = super().forward(x, patch_coord=patch_coord, patch_valid=patch_valid)
        if patch_coord is not None:
            x = self.cope.forward_coords(x, patch_coord, patch_valid, resize=self.cope_resize)
        else:
            assert grid_size is not None
            x = self.cope(x, grid_size=(grid_size[0], grid_size[1]), resize=self.cope_resize)
        return x, grid_size


class NaFlexVitCOPE(NaFlexVit):
    """ timm's ``NaFlexVit`` with COPE in place of its position embedding.

    Takes every ``NaFlexVit`` argument (a ``NaFlexVitCfg`` and its fields as keyword arguments) except a
    ``pos_embed`` other than ``'none'``, plus ``VisionTransformerCOPE``'s ``cope_fuse``, ``cope_mode``,
    ``cope_positions`` (default ``'grid'``: the patch's row in half of the channels, its column in the other half,
    the natural positions of an image of any shape) and ``cope_resize`` (how the tables made for
    ``pos_embed_grid_size`` serve another image grid: ``'interpolate'``, the default, or ``'extrapolate'``).
    """

    def __init__(
            self,
            cfg: Optional[NaFlexVitCfg] = None,
            *args: Any,
            cope_fuse: CopeFuse = 'sum',
            cope_mode: CopeMode = 'multiplicative',
            cope_positions: CopePositions = 'grid',
            cope_resize: CopeResize = 'interpolate',
            **kwargs: Any,
    ) -> None:
        cfg = cfg or NaFlexVitCfg(pos_embed='none')
        pos_embed = kwargs.pop('pos_embed', cfg.pos_embed)
        if pos_embed not in ('', 'none'):
            raise ValueError(
                f"NaFlexVitCOPE replaces the position embedding with COPE; pos_embed must be 'none', got "
                f"{pos_embed!r} (use timm's naflexvit_* models for a learned or factorized position embedding)")
        super().__init__(cfg, *args, pos_embed='none', **kwargs)
        self.embeds = NaFlexEmbedsCOPE.adopt(
            self.embeds, cope_fuse=cope_fuse, cope_mode=cope_mode, cope_positions=cope_positions,
            cope_resize=cope_resize)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return set(super().no_weight_decay()) | {k for k, _ in self.embeds.cope.named_parameters(prefix='embeds.cope')}


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: NaFlexVitCOPE) -> Dict[str, torch.Tensor]:
    """Adapt a checkpoint to ``model``. A ``vit_*_cope`` checkpoint (timm's ViT layout: conv ``patch_embed``,
    ``cope.*``) goes through timm's own ViT-to-NaFlex conversion (the conv patch embedding becomes the linear one
    over ``(row, column, channel)`` patches), its COPE tables move under ``embeds.cope`` and are resampled to the
    model's reference grid if they were made for another square one. A NaFlex COPE checkpoint is left as it is.
    Only transforms: strict loading then validates the result."""
    state_dict = unwrap_checkpoint(state_dict)
    if 'patch_embed.proj.weight' not in state_dict:
        return state_dict
    cope = {k[len('cope.'):]: v for k, v in state_dict.items() if k.startswith('cope.')}
    out = naflexvit_checkpoint_filter_fn({k: v for k, v in state_dict.items() if not k.startswith('cope.')}, model)
    weight = state_dict['patch_embed.proj.weight']
    if not getattr(model.embeds, 'channels_last', True) and weight.ndim == 4:
        out['embeds.proj.weight'] = weight.flatten(1)  # the model reads (channel, row, column) patches
    layer = model.embeds.cope
    table_name = 'freq' if layer.freq is not None else 'amplitude'
    table, phase = cope.get(table_name), cope.get('phase')
    npt = layer.num_prefix_tokens
    if (isinstance(table, torch.Tensor) and isinstance(phase, torch.Tensor) and table.ndim == 3
            and table.shape == phase.shape and table.shape[1] != layer.num_tokens):
        old_patches = table.shape[1] - npt
        side = int(round(max(old_patches, 0) ** 0.5))
        if side > 0 and side * side == old_patches:
            new_table, new_phase = resample_cope_tables(
                table.double(), phase.double(), layer.grid_size, (side, side), npt, method=model.embeds.cope_resize,
                mode=layer.mode, positions=layer.positions)
            cope[table_name] = new_table.to(table.dtype).contiguous()
            cope['phase'] = new_phase.to(phase.dtype).contiguous()
    out.update({f'embeds.cope.{k}': v for k, v in cope.items()})
    return out


def describe_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Optional[Dict[str, Any]]:
    """A NaFlex COPE ViT's checkpoint: timm's NaFlex layout (``embeds.proj``, ``blocks.N.``) with the complex order
    tables under ``embeds.cope``."""
    table = next((k for k in COPE_KEYS[:2] if k in state_dict), None)
    if table is None or not any(k.startswith('blocks.') for k in state_dict):
        return None
    facts = vit_trunk_facts(state_dict, table)
    width = state_dict.get('embeds.cls_token')
    if isinstance(width, torch.Tensor) and width.ndim == 3:
        facts['embed_dim'] = int(width.shape[-1])
    return {'family': 'NaFlex COPE ViT (complex order position tables under embeds.cope)',
            'cope_mode': 'multiplicative' if table == 'embeds.cope.freq' else 'additive', **facts}


def _create_naflexvit_cope(variant: str, pretrained: bool = False, **kwargs: Any) -> NaFlexVitCOPE:
    out_indices = kwargs.pop('out_indices', 3)
    return build_with_helpful_pretrained_errors(
        NaFlexVitCOPE,
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
        'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'embeds.proj',
        'classifier': 'head',
        'license': 'apache-2.0',
        **COPE_VIT_PAPER.cfg(),
        **kwargs,
    }


def _tiny_imagenet_cfg(model_name: str) -> Dict[str, Any]:
    # the COPE ViT's dataset (Kim & Cho); not published yet: pretrained=True says how to train and publish them.
    # Until then a vit_*_cope checkpoint of the same width loads into these models (checkpoint_filter_fn).
    return _cfg(hf_hub_id=hub_id(model_name, 'tiny_imagenet'), num_classes=200, crop_pct=1.0)


default_cfgs = generate_default_cfgs({
    'naflexvit_tiny_patch16_cope.tiny_imagenet': _tiny_imagenet_cfg('naflexvit_tiny_patch16_cope'),
    'naflexvit_small_patch16_cope.tiny_imagenet': _tiny_imagenet_cfg('naflexvit_small_patch16_cope'),
})

_FAMILY = dict(paper=COPE_VIT_PAPER, describe_checkpoint=describe_checkpoint,
               describe_baseline_checkpoint=describe_timm_vit_checkpoint)
declare_models(
    # timm has no NaFlex ViT of these widths: the baseline is timm's ViT of the same width and depth
    ModelInfo('naflexvit_tiny_patch16_cope', baseline='vit_tiny_patch16_224', **_FAMILY),
    ModelInfo('naflexvit_small_patch16_cope', baseline='vit_small_patch16_224', **_FAMILY),
)


def _vit_cope_cfg(**kwargs: Any) -> NaFlexVitCfg:
    """The COPE ViT's architecture in NaFlex terms (class token pooling, no registers, timm's ViT blocks), so that
    its checkpoints load; 14x14 is the grid of a 224 px image with 16 px patches."""
    return NaFlexVitCfg(
        patch_size=16, class_token=True, reg_tokens=0, global_pool='token', fc_norm=False, pos_embed='none',
        pos_embed_grid_size=(14, 14), embed_proj_type='linear', **kwargs)


@register_model
def naflexvit_tiny_patch16_cope(pretrained: bool = False, **kwargs: Any) -> NaFlexVitCOPE:
    """NaFlex ViT-Tiny/16 with COPE (grid positions): loads ``vit_tiny_cope`` checkpoints."""
    cfg = _vit_cope_cfg(embed_dim=192, depth=12, num_heads=3)
    return _create_naflexvit_cope('naflexvit_tiny_patch16_cope', pretrained=pretrained, cfg=cfg, **kwargs)


@register_model
def naflexvit_small_patch16_cope(pretrained: bool = False, **kwargs: Any) -> NaFlexVitCOPE:
    """NaFlex ViT-Small/16 with COPE (grid positions): loads ``vit_small_cope`` checkpoints."""
    cfg = _vit_cope_cfg(embed_dim=384, depth=12, num_heads=6)
    return _create_naflexvit_cope('naflexvit_small_patch16_cope', pretrained=pretrained, cfg=cfg, **kwargs)
