""" Clustering CoaT-Lite: CoaT-Lite whose conv-attention clusters similar queries (Adaptive Clustering)

Bang, Park, Jung & Sim, `Design of Clustering CoaT Vision Model Based on Transformer` (Sunchon / Andong National
University), propose CoaT-Lite with the queries of its conv-attention grouped by the Adaptive Clustering
Transformer's E2LSH clustering, to cut training cost. It publishes no numbers; MODEL_CARDS.md has ours.

Papers:
  * `Co-Scale Conv-Attentional Image Transformers` - https://arxiv.org/abs/2104.06399 (Xu et al., ICCV 2021)
  * `End-to-End Object Detection with Adaptive Clustering Transformer` - https://arxiv.org/abs/2011.09315
    (Zheng et al., 2020)

Built on timm's ``CoaT`` (serial blocks only, i.e. CoaT-Lite): the factorized attention of the chosen stages is
replaced by ``ClusteredFactorAttnConvRelPosEnc``, which has exactly the parameters of timm's, so timm's
``coat_lite_*`` ImageNet-1k weights load with ``strict=True`` and ``pretrained=True`` uses them (clustering applied
at inference, not fine-tuned). Beyond timm's CoaT: gradient checkpointing, and per-stage cluster counts.
"""
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import _assert, to_2tuple
from timm.models import generate_default_cfgs, register_model
from timm.models import coat as timm_coat
from timm.models._features import feature_take_indices
from timm.models import checkpoint
from timm.models.coat import CoaT, insert_cls, remove_cls

from ..layers import ClusterAttnMode, ClusteredFactorAttnConvRelPosEnc, HashOffsetRange, HashQueryScale
from ._builder import build_with_helpful_pretrained_errors, unwrap_checkpoint
from ._catalog import ModelInfo, declare_models
from ._papers import CLUSTERING_COAT_PAPER
from ._hub import hub_id
from ._vit_checkpoints import count_blocks
from .._checks import check_image_input

__all__ = ['CoaTClustering']

# a leaf for plain torch.fx.symbolic_trace too (timm's tracer already knows it)
torch.fx.wrap('check_image_input')

NUM_STAGES = 4


def _tokens_to_map(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``(B, 1 + H*W, C)`` tokens, class token first, to a ``(B, C, H, W)`` map without the class token."""
    # the channel count spelled out: with -1 an empty batch (0 elements) makes the reshape ambiguous
    return remove_cls(x).reshape(x.shape[0], size[0], size[1], x.shape[-1]).permute(0, 3, 1, 2).contiguous()


def _check_img_size(img_size: Any, patch_size: Any) -> None:
    # CoaT's four stages patchify by patch_size, then by 2 three times: a smaller image would otherwise fail deep
    # inside a convolution ("Kernel size can't be greater than actual input size").
    reduction = int(patch_size) * 2 ** (NUM_STAGES - 1)
    size = to_2tuple(img_size)
    if not all(isinstance(s, int) and s >= reduction for s in size):
        raise ValueError(
            f'img_size {img_size!r} is too small for CoaT-Lite with patch_size={patch_size}: each side must be at '
            f'least {reduction} (the patch size times the three stride-2 stages), e.g. img_size={reduction * 2}.')


class CoaTClustering(CoaT):
    """ CoaT-Lite with E2LSH query clustering (ACT) in the conv-attention of its serial blocks.

    Takes timm ``CoaT``'s arguments (``parallel_depth`` must be 0 and ``return_interm_layers`` False: use
    ``features_only=True`` or ``forward_intermediates`` for features), plus, all reachable through
    ``create_model(..., **kwargs)`` and timm's ``--model-kwargs``:
        cluster_attn: ``'factorized'`` (default; CoaT's attention on prototypes, exactly "each query replaced by
            its cluster mean", pretrained CoaT-Lite weights keep their meaning) or ``'softmax'`` (ACT proper).
        cluster_num_rounds: hash rounds L (default 16).
        cluster_bucket_width: E2LSH bucket width r (default 8.0; ACT's code uses 8 on ``q·Ch^-0.5``, so the same r
            means other buckets on the raw queries).
        cluster_stages: stage indices (0-3) whose blocks cluster; the others are timm's CoaT-Lite attention.
        cluster_capacity: optional bound on the prototypes per (image, head), as a fraction of the tokens, so the
            prototype attention runs on fewer rows (static shapes); see ``AdaptiveQueryClustering``.
        cluster_singleton: the degenerate clustering, every query its own cluster. With
            ``cluster_attn='factorized'`` the model then computes timm's CoaT-Lite exactly (to float rounding).
        cluster_seed: seed of the hash projections (each block derives its own).
        cluster_query_scale: ``'none'`` (hash the queries) or ``'head_dim'`` (hash ``q·Ch^-0.5``, ACT's code).
        cluster_offset_range: ``'bucket'`` (``b ~ U(0, r)``, E2LSH) or ``'unit'`` (``b ~ U(0, 1)``, ACT's code).
        cluster_redraw: fresh hash projections at every training forward (ACT's code); eval stays seeded.
    """

    def __init__(
            self,
            *args: Any,
            cluster_attn: ClusterAttnMode = 'factorized',
            cluster_num_rounds: int = 16,
            cluster_bucket_width: float = 8.0,
            cluster_stages: Sequence[int] = (0, 1, 2, 3),
            cluster_capacity: Optional[float] = None,
            cluster_singleton: bool = False,
            cluster_seed: int = 0,
            cluster_query_scale: HashQueryScale = 'none',
            cluster_offset_range: HashOffsetRange = 'bucket',
            cluster_redraw: bool = False,
            **kwargs: Any,
    ) -> None:
        if kwargs.get('parallel_depth', 0):
            raise ValueError(
                'CoaTClustering is CoaT-Lite (serial blocks only): parallel_depth must be 0, got '
                f'{kwargs["parallel_depth"]}; the clustering applies to the serial blocks\' conv-attention.')
        if kwargs.get('return_interm_layers', False):
            raise ValueError(
                'CoaTClustering does not support return_interm_layers; use features_only=True or '
                'forward_intermediates() for per-stage features.')
        _check_img_size(kwargs.get('img_size', 224), kwargs.get('patch_size', 16))
        if isinstance(cluster_stages, int):
            cluster_stages = (cluster_stages,)
        cluster_stages = tuple(sorted({int(s) for s in cluster_stages}))
        bad = [s for s in cluster_stages if not 0 <= s < NUM_STAGES]
        if bad:
            raise ValueError(f'cluster_stages must be stage indices in 0..{NUM_STAGES - 1}, got {bad}')
        super().__init__(*args, **kwargs)
        if not hasattr(self, 'feature_info'):
            # timm's CoaT states its stages only from timm 1.0.31 on; for the older releases this package supports
            # (pyproject.toml's timm>=), the same facts, which features_only and forward_intermediates read
            patch_size = int(to_2tuple(kwargs.get('patch_size', 16))[0])
            self.feature_info = [
                dict(num_chs=int(self.embed_dims[i]), reduction=patch_size * 2 ** i, module=f'serial_blocks{i + 1}')
                for i in range(NUM_STAGES)]
        self.cluster_attn = cluster_attn
        self.cluster_stages = cluster_stages
        self.grad_checkpointing = False

        layer_idx = 0
        for stage in range(NUM_STAGES):
            for blk in getattr(self, f'serial_blocks{stage + 1}'):
                layer_idx += 1
                if stage not in cluster_stages:
                    continue
                blk.factoratt_crpe = ClusteredFactorAttnConvRelPosEnc.from_timm(
                    blk.factoratt_crpe,
                    attn=cluster_attn,
                    num_rounds=cluster_num_rounds,
                    bucket_width=cluster_bucket_width,
                    capacity=cluster_capacity,
                    singleton=cluster_singleton,
                    query_scale=cluster_query_scale,
                    offset_range=cluster_offset_range,
                    redraw=cluster_redraw,
                    # distinct, reproducible hash per block (ACT draws a fresh one at every call)
                    seed=cluster_seed * 1000 + layer_idx,
                )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def clustered_attentions(self) -> Dict[int, List[ClusteredFactorAttnConvRelPosEnc]]:
        """The clustered attention modules of each stage (empty list for stages without clustering or pruned)."""
        out: Dict[int, List[ClusteredFactorAttnConvRelPosEnc]] = {}
        for stage in range(NUM_STAGES):
            blocks = getattr(self, f'serial_blocks{stage + 1}', None) or []
            out[stage] = [
                b.factoratt_crpe for b in blocks if isinstance(b.factoratt_crpe, ClusteredFactorAttnConvRelPosEnc)]
        return out

    @torch.jit.ignore
    def cluster_counts(self) -> Dict[int, torch.Tensor]:
        """Clusters of the last forward per stage, ``(blocks, B, heads)`` int64, class token's cluster included.
        Stages that do not cluster, or did not run, are left out. Read outside the forward: no sync inside."""
        out: Dict[int, torch.Tensor] = {}
        for stage, attns in self.clustered_attentions().items():
            counts = [a.clustering.last_num_clusters for a in attns]
            if counts and all(c is not None for c in counts):
                out[stage] = torch.stack(counts)
        return out

    @torch.jit.unused
    def _blocks(self, stage: int, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """The serial blocks of ``stage``, each checkpointed when grad checkpointing is on (eager / fx only)."""
        for blk in getattr(self, f'serial_blocks{stage + 1}'):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, size)
            else:
                x = blk(x, size=size)
        return x

    @torch.jit.ignore
    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features that returns intermediates.

        Args:
            x: Input image tensor.
            indices: Take last n stages if int, all if None, select matching indices if sequence. Indices 0-3 are
                the outputs of the four stages (stride 4-32), class token removed.
            norm: Apply the final norm (``norm4``) to the index 3 intermediate.
            stop_early: Stop after the last stage that is taken.
            output_fmt: Shape of intermediate feature outputs, only ``'NCHW'``.
            intermediates_only: Only return intermediate features.

        Returns:
            ``(final tokens, intermediates)`` or the intermediates. The final tokens are those of
            ``forward_features``: normed stage 4 tokens, or the last stage run when stopped early or pruned.
        """
        _assert(output_fmt == 'NCHW', 'Output shape must be NCHW.')
        check_image_input(x, self.in_chans, self.patch_embed1.img_size, None, False, '', '',
                          self.patch_embed1.proj.weight)
        take_indices, max_index = feature_take_indices(NUM_STAGES, indices)
        num_stages = max_index + 1 if stop_early else NUM_STAGES
        intermediates = []
        last_stage = -1
        size = (0, 0)
        for i in range(num_stages):
            patch_embed = getattr(self, f'patch_embed{i + 1}')
            if patch_embed is None:
                break  # pruned
            if i > 0:
                x = _tokens_to_map(x, size)
            x = patch_embed(x)
            size = patch_embed.grid_size
            x = insert_cls(x, getattr(self, f'cls_token{i + 1}'))
            x = self._blocks(i, x, size)
            last_stage = i
            if i in take_indices:
                feat = self.norm4(x) if norm and i == NUM_STAGES - 1 else x
                intermediates.append(_tokens_to_map(feat, size))

        if intermediates_only:
            return intermediates
        if last_stage == NUM_STAGES - 1:
            x = self.norm4(x)
        return x, intermediates

    def forward_features(self, x0: torch.Tensor) -> torch.Tensor:
        # Written out per stage (not a getattr loop) so TorchScript compiles it; pruned stages are None.
        size1 = self.patch_embed1.grid_size
        x1 = insert_cls(self.patch_embed1(x0), self.cls_token1)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x1 = self._blocks(0, x1, size1)
        else:
            for blk in self.serial_blocks1:
                x1 = blk(x1, size=size1)
        if self.patch_embed2 is None:
            return x1

        size2 = self.patch_embed2.grid_size
        x2 = insert_cls(self.patch_embed2(_tokens_to_map(x1, size1)), self.cls_token2)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x2 = self._blocks(1, x2, size2)
        else:
            for blk in self.serial_blocks2:
                x2 = blk(x2, size=size2)
        if self.patch_embed3 is None:
            return x2

        size3 = self.patch_embed3.grid_size
        x3 = insert_cls(self.patch_embed3(_tokens_to_map(x2, size2)), self.cls_token3)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x3 = self._blocks(2, x3, size3)
        else:
            for blk in self.serial_blocks3:
                x3 = blk(x3, size=size3)
        if self.patch_embed4 is None:
            return x3

        size4 = self.patch_embed4.grid_size
        x4 = insert_cls(self.patch_embed4(_tokens_to_map(x3, size3)), self.cls_token4)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x4 = self._blocks(3, x4, size4)
        else:
            for blk in self.serial_blocks4:
                x4 = blk(x4, size=size4)
        return self.norm4(x4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # every argument given: TorchScript calls an ignored function without its defaults
        check_image_input(x, self.in_chans, self.patch_embed1.img_size, None, False, '',
                          'CoaT-Lite has a fixed input size; create the model with img_size= for another',
                          self.patch_embed1.proj.weight)
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: CoaTClustering) -> Dict[str, torch.Tensor]:
    """Load timm / official CoaT-Lite checkpoints: unwrap train.py checkpoints and drop the unused norms of the
    original release (timm's CoaT filter). Only transforms: whether the result fits ``model`` (a CoaT-Lite of the
    same widths and depths) is checked by the builder (``check_checkpoint_fits``), which names what it is."""
    return timm_coat.checkpoint_filter_fn(unwrap_checkpoint(state_dict), model)


def describe_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Optional[Dict[str, Any]]:
    """A CoaT checkpoint (timm's layout, which the clustering models keep): CoaT-Lite's four stages of serial blocks
    (their widths and depths), or CoaT with parallel blocks, which CoaT-Lite cannot load."""
    keys = list(state_dict)
    if any(k.startswith('parallel_blocks.') for k in keys):
        return {'family': 'CoaT with parallel blocks (coat_tiny/mini/small), not CoaT-Lite'}
    if 'patch_embed1.proj.weight' not in state_dict:
        return None
    embed_dims = [int(state_dict[f'patch_embed{i}.proj.weight'].shape[0]) for i in range(1, NUM_STAGES + 1)
                  if f'patch_embed{i}.proj.weight' in state_dict]
    return {'family': 'CoaT-Lite', 'embed_dims': embed_dims,
            'serial_depths': [count_blocks(keys, f'serial_blocks{i}') for i in range(1, NUM_STAGES + 1)]}


def _create_coat_clustering(variant: str, pretrained: bool = False, **kwargs: Any) -> CoaTClustering:
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    return build_with_helpful_pretrained_errors(
        CoaTClustering,
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
        'first_conv': 'patch_embed1.proj',
        'classifier': 'head',
        'license': 'apache-2.0',
        **CLUSTERING_COAT_PAPER.cfg(),
        **kwargs,
    }


# The weights are timm's CoaT-Lite ImageNet-1k weights (no new parameters): clustering applied at inference.
default_cfgs = generate_default_cfgs({
    'coat_lite_clustering.in1k': _cfg(hf_hub_id='timm/coat_lite_tiny.in1k'),
    # Trained with clustering in the loop by `timm-posembed reproduce clustering-coat-*`; published under our org.
    'coat_lite_clustering.tiny_imagenet': _cfg(
        hf_hub_id=hub_id('coat_lite_clustering', 'tiny_imagenet'), num_classes=200, crop_pct=1.0),
    'coat_lite_clustering.in100': _cfg(hf_hub_id=hub_id('coat_lite_clustering', 'in100'), num_classes=100),
    'coat_lite_clustering_tiny.in1k': _cfg(hf_hub_id='timm/coat_lite_tiny.in1k'),
    'coat_lite_clustering_mini.in1k': _cfg(hf_hub_id='timm/coat_lite_mini.in1k'),
    'coat_lite_clustering_small.in1k': _cfg(hf_hub_id='timm/coat_lite_small.in1k'),
    'coat_lite_clustering_medium.in1k': _cfg(hf_hub_id='timm/coat_lite_medium.in1k'),
})

_FAMILY = dict(paper=CLUSTERING_COAT_PAPER, describe_checkpoint=describe_checkpoint)
declare_models(
    ModelInfo('coat_lite_clustering', baseline='coat_lite_tiny', **_FAMILY),
    ModelInfo('coat_lite_clustering_tiny', baseline='coat_lite_tiny', **_FAMILY),
    ModelInfo('coat_lite_clustering_mini', baseline='coat_lite_mini', **_FAMILY),
    ModelInfo('coat_lite_clustering_small', baseline='coat_lite_small', **_FAMILY),
    ModelInfo('coat_lite_clustering_medium', baseline='coat_lite_medium', **_FAMILY),
)

# CoaT-Lite configurations, as timm's coat_lite_* (same shapes, so their weights load).
_TINY = dict(patch_size=4, embed_dims=[64, 128, 256, 320], serial_depths=[2, 2, 2, 2], mlp_ratios=[8, 8, 4, 4])
_MINI = dict(patch_size=4, embed_dims=[64, 128, 320, 512], serial_depths=[2, 2, 2, 2], mlp_ratios=[8, 8, 4, 4])
_SMALL = dict(patch_size=4, embed_dims=[64, 128, 320, 512], serial_depths=[3, 4, 6, 3], mlp_ratios=[8, 8, 4, 4])
_MEDIUM = dict(patch_size=4, embed_dims=[128, 256, 320, 512], serial_depths=[3, 6, 10, 8])


@register_model
def coat_lite_clustering(pretrained: bool = False, **kwargs: Any) -> CoaTClustering:
    """Clustering CoaT-Lite, Bang et al.'s model: CoaT-Lite Tiny configuration (= coat_lite_clustering_tiny)."""
    return _create_coat_clustering('coat_lite_clustering', pretrained=pretrained, **dict(_TINY, **kwargs))


@register_model
def coat_lite_clustering_tiny(pretrained: bool = False, **kwargs: Any) -> CoaTClustering:
    """Clustering CoaT-Lite Tiny: coat_lite_tiny's shapes, so its weights load."""
    return _create_coat_clustering('coat_lite_clustering_tiny', pretrained=pretrained, **dict(_TINY, **kwargs))


@register_model
def coat_lite_clustering_mini(pretrained: bool = False, **kwargs: Any) -> CoaTClustering:
    """Clustering CoaT-Lite Mini: coat_lite_mini's shapes, so its weights load."""
    return _create_coat_clustering('coat_lite_clustering_mini', pretrained=pretrained, **dict(_MINI, **kwargs))


@register_model
def coat_lite_clustering_small(pretrained: bool = False, **kwargs: Any) -> CoaTClustering:
    """Clustering CoaT-Lite Small: coat_lite_small's shapes, so its weights load."""
    return _create_coat_clustering('coat_lite_clustering_small', pretrained=pretrained, **dict(_SMALL, **kwargs))


@register_model
def coat_lite_clustering_medium(pretrained: bool = False, **kwargs: Any) -> CoaTClustering:
    """Clustering CoaT-Lite Medium: coat_lite_medium's shapes, so its weights load."""
    return _create_coat_clustering('coat_lite_clustering_medium', pretrained=pretrained, **dict(_MEDIUM, **kwargs))
