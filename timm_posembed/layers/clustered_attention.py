""" Clustered conv-attention for CoaT serial blocks

CoaT's factorized attention with convolutional relative position encoding (CRPE), `Co-Scale Conv-Attentional
Image Transformers` - https://arxiv.org/abs/2104.06399 (Xu et al., ICCV 2021), with the queries clustered by
E2LSH as in the Adaptive Clustering Transformer (https://arxiv.org/abs/2011.09315), the design of Bang, Park, Jung &
Sim, `Design of Clustering CoaT Vision Model Based on Transformer` (Sunchon / Andong National University).

Two readings of "prototypes with keys give the attention map, multiplied with values", by ``attn``:
  * ``'factorized'``: CoaT's ``F = q · (softmax_N(k)ᵀ v)`` for each prototype, broadcast to its members. F is
    linear in q, so this is exactly CoaT's attention with every query replaced by its cluster mean; CoaT-Lite
    weights keep their meaning.
  * ``'softmax'``: ACT proper, ``softmax(p·kᵀ / √Ch) · v`` per prototype, broadcast to its members.
The CRPE term ``q ⊙ dwconv(v)`` always uses the original queries. No parameters beyond timm's
``FactorAttnConvRelPosEnc``, whose state dict keys this module keeps.
"""
from typing import Any, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function, use_fused_attn
from timm.models import coat as timm_coat  # through the public timm.models package, as a plugin should

from .._checks import check_int
from .adaptive_clustering import AdaptiveQueryClustering, HashOffsetRange, HashQueryScale, broadcast_to_members

__all__ = ['ClusteredFactorAttnConvRelPosEnc', 'ClusterAttnMode']

ClusterAttnMode = Literal['factorized', 'softmax']


@register_notrace_function
@torch.jit.ignore
def _check_tokens(x: torch.Tensor, size: Tuple[int, int], dim: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, 1 + H*W, dim)`` for ``size = (H, W)``."""
    if x.ndim != 3:
        raise ValueError(f'ClusteredFactorAttnConvRelPosEnc expects tokens of shape (B, 1 + H*W, C), class token '
                         f'first, got shape {tuple(x.shape)}')
    if x.shape[-1] != dim:
        raise ValueError(f'ClusteredFactorAttnConvRelPosEnc(dim={dim}): the tokens have {x.shape[-1]} channels')
    if x.shape[1] != 1 + size[0] * size[1]:
        raise ValueError(f'ClusteredFactorAttnConvRelPosEnc: size={tuple(size)} needs 1 + {size[0]}*{size[1]} = '
                         f'{1 + size[0] * size[1]} tokens (class token first), got {x.shape[1]}')


torch.fx.wrap('_check_tokens')  # a leaf for plain torch.fx.symbolic_trace too


class ClusteredFactorAttnConvRelPosEnc(timm_coat.FactorAttnConvRelPosEnc):
    """ timm's ``FactorAttnConvRelPosEnc`` with its queries clustered into prototypes (ACT).

    Same constructor arguments and parameters as the timm class, plus the clustering settings, which are passed
    to ``AdaptiveQueryClustering`` (module ``clustering``; no parameters, no state dict entries).
    """
    fused_attn: torch.jit.Final[bool]
    softmax_tokens_last: torch.jit.Final[bool]

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            qkv_bias: bool = False,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            shared_crpe: Optional[Any] = None,
            attn: ClusterAttnMode = 'factorized',
            num_rounds: int = 16,
            bucket_width: float = 8.0,
            capacity: Optional[float] = None,
            singleton: bool = False,
            seed: int = 0,
            query_scale: HashQueryScale = 'none',
            offset_range: HashOffsetRange = 'bucket',
            redraw: bool = False,
            device=None,
            dtype=None,
    ) -> None:
        """
        Args:
            dim, num_heads, qkv_bias, attn_drop, proj_drop, shared_crpe: as timm's ``FactorAttnConvRelPosEnc``
                (``attn_drop`` applies to the attention map of ``attn='softmax'``; CoaT never uses it).
            attn: ``'factorized'`` (CoaT's attention on prototypes) or ``'softmax'`` (ACT).
            num_rounds, bucket_width, capacity, singleton, seed, query_scale, offset_range, redraw: see
                ``AdaptiveQueryClustering``.
            device: Parameter device.
            dtype: Parameter dtype.
        """
        if attn not in ('factorized', 'softmax'):
            raise ValueError(f"ClusteredFactorAttnConvRelPosEnc: attn must be 'factorized' or 'softmax', got {attn!r}")
        check_int('ClusteredFactorAttnConvRelPosEnc', 'dim', dim, minimum=1)
        check_int('ClusteredFactorAttnConvRelPosEnc', 'num_heads', num_heads, minimum=1)
        if dim % num_heads:
            raise ValueError(f'ClusteredFactorAttnConvRelPosEnc: dim {dim} is not divisible by num_heads {num_heads}')
        super().__init__(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            shared_crpe=shared_crpe,
            device=device,
            dtype=dtype,
        )
        self.attn = attn
        self.softmax_attn = attn == 'softmax'
        self.fused_attn = use_fused_attn()
        # The same values either way. A softmax over the middle (token) axis is vectorised over the Ch channels
        # behind it, so with fewer than 16 (one AVX-512 vector of floats; CoaT-Lite's first stage has 8) it runs
        # scalar: about 4x slower on CPU than a softmax along the last axis of the transposed keys, which costs a
        # copy that only pays off there.
        self.softmax_tokens_last = dim // num_heads < 16
        self.clustering = AdaptiveQueryClustering(
            dim // num_heads,
            num_rounds=num_rounds,
            bucket_width=bucket_width,
            num_prefix_tokens=1,
            capacity=capacity,
            singleton=singleton,
            seed=seed,
            query_scale=query_scale,
            offset_range=offset_range,
            redraw=redraw,
            device=device,
            dtype=dtype,
        )

    @classmethod
    def from_timm(
            cls, timm_attn: timm_coat.FactorAttnConvRelPosEnc, /, **cluster_kwargs: Any,
    ) -> 'ClusteredFactorAttnConvRelPosEnc':
        """The clustered twin of timm's ``timm_attn``: same settings, sharing its CRPE module, with the parameters
        of ``timm_attn`` copied (strict: the two classes have the same state dict keys).

        ``cluster_kwargs``: ``attn``, ``num_rounds``, ``bucket_width``, ``capacity``, ``singleton``, ``seed``,
        ``query_scale``, ``offset_range``, ``redraw``.
        """
        if not isinstance(timm_attn, timm_coat.FactorAttnConvRelPosEnc):
            raise TypeError(f'ClusteredFactorAttnConvRelPosEnc.from_timm: timm_attn must be timm\'s '
                            f'FactorAttnConvRelPosEnc, got {type(timm_attn).__name__}')
        allowed = {'attn', 'num_rounds', 'bucket_width', 'capacity', 'singleton', 'seed', 'query_scale', 'offset_range',
                   'redraw'}
        unknown = sorted(set(cluster_kwargs) - allowed)
        if unknown:
            raise TypeError(f'ClusteredFactorAttnConvRelPosEnc.from_timm: unknown clustering arguments {unknown}; '
                            f'expected some of {sorted(allowed)}')
        param = timm_attn.qkv.weight
        module = cls(
            timm_attn.qkv.in_features,
            num_heads=timm_attn.num_heads,
            qkv_bias=timm_attn.qkv.bias is not None,
            attn_drop=timm_attn.attn_drop.p,
            proj_drop=timm_attn.proj_drop.p,
            shared_crpe=timm_attn.crpe,
            device=param.device,
            dtype=param.dtype,
            **cluster_kwargs,
        )
        module.load_state_dict(timm_attn.state_dict(), strict=True)
        return module

    def forward(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        _check_tokens(x, size, self.qkv.in_features)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, h, N, Ch]

        clusters = self.clustering(q, num_tokens=1 + size[0] * size[1])
        protos = clusters.prototypes  # [B, h, S, Ch], a transposed view
        if self.softmax_attn:
            protos = protos.contiguous()  # SDPA's CPU kernel takes another, differently rounded path for a view
            if self.fused_attn:
                out = F.scaled_dot_product_attention(
                    protos, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
            else:
                attn = (protos * self.scale) @ k.transpose(-2, -1)
                attn = self.attn_drop(attn.softmax(dim=-1))
                out = attn @ v
        else:
            # CoaT's factor (softmax over tokens of k)ᵀ v is shared by all queries; applied to prototypes, with the
            # scale folded into the (Ch, Ch) factor instead of multiplying the (S, Ch) output.
            if self.softmax_tokens_last:
                factor = k.transpose(-1, -2).softmax(dim=-1) @ v
            else:
                factor = k.softmax(dim=2).transpose(-1, -2) @ v
            out = protos @ (self.scale * factor)
        out = broadcast_to_members(out, clusters.index)  # [B, h, N, Ch]

        # CRPE on the original queries (the positional term is per query, not per cluster).
        crpe = self.crpe(q, v, size=size)
        x = (out + crpe).transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, attn={self.attn}'
