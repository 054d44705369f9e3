""" Adaptive query clustering with E2LSH (Adaptive Clustering Transformer)

After `End-to-End Object Detection with Adaptive Clustering Transformer` - https://arxiv.org/abs/2011.09315
(Zheng et al., 2020): queries are hashed by ``L`` rounds of Euclidean LSH, ``h_l(q) = floor((a_l·q + b_l) / r)``;
queries with identical codes in every round form one cluster, whose prototype is the mean of its members.
Attention is computed for the prototypes and broadcast back to the members. The number of clusters adapts to the
input: similar queries share a cluster, so a flat image gives fewer clusters than noise.

Pure PyTorch with static shapes, so it runs on the meta device and traces with torch.fx / TorchScript:
  * the ``L`` codes of a query are folded into one 58-bit key by one small float64 matmul (two random integer
    combinations of the codes, exact in float64, each reduced modulo a prime near 2^29); groups are found by
    sorting the keys, comparing neighbours and a cumulative sum;
  * prototypes are a scatter-add mean, broadcast is a selection of rows. Prototypes live in ``N`` slots (one per
    query), so no shape depends on the data; the slots left empty are zeros. ``capacity`` bounds the slots (see
    below).
  * Autograd of scatter-add-mean then row selection gives ACT's rules exactly: a member's gradient is its
    prototype's gradient divided by the cluster size, a prototype's gradient is the sum over its members.

The hash projections ``a`` and offsets ``b`` are fixed, seeded, non-persistent buffers (float32): evaluation is
deterministic, checkpoints carry no hashing state, and ``init_non_persistent_buffers`` rebuilds them after
``to_empty``. ACT's code draws fresh ones at every call; ``redraw=True`` does so in training only.

Where ACT's code (``AdaClusteringAttention._compute_hashes`` in gaopengcuhk/SMCA-DETR) differs, and the options that
give its hash: it hashes the attention-scaled queries ``q·Ch^-0.5`` (``query_scale='head_dim'``), draws
``b ~ U(0, 1)`` rather than E2LSH's ``U(0, r)`` (``offset_range='unit'``), uses r = 8 and 32 rounds
(``num_rounds=32``; its ``q_hashes`` argument does not reach the hash), and packs each round's code, shifted to
start at 0, into 2 bits of one int64 (``Σ_l c_l·4^l``), so rounds whose codes span more than 4 values carry into
the next round's bits and can merge distinct code vectors. This key keeps them apart: its partition always refines
ACT's, and equals it when no round spans more than 4 values.
"""
import math
from typing import Literal, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import register_notrace_function, register_notrace_module

from .._checks import check_int

__all__ = ['AdaptiveQueryClustering', 'QueryClusters', 'broadcast_to_members', 'HashQueryScale', 'HashOffsetRange']

# What the hash sees: the raw queries, or the queries times the attention's Ch^-0.5 (ACT's code).
HashQueryScale = Literal['none', 'head_dim']
# Range of the E2LSH offsets b: U(0, r) (E2LSH's definition) or U(0, 1) (ACT's code).
HashOffsetRange = Literal['bucket', 'unit']
_QUERY_SCALES = ('none', 'head_dim')
_OFFSET_RANGES = ('bucket', 'unit')

# The largest prime below 2^29. The key weights are integers in [1, p); two independent weight vectors give two
# residues modulo p, packed into one int64 key below p^2 < 2^58.
_PRIME = 536870909
# float64 represents every integer up to 2^53 exactly: with |code| <= bound and L weights below p, every partial
# sum of the weighted codes stays below L * bound * p <= 2^53, so the matmul is exact in any summation order.
_EXACT_FLOAT64 = 2 ** 53
_LEGACY_DRAW_HIGH = 2147483629


class QueryClusters(NamedTuple):
    """Result of clustering queries of shape ``(B, heads, N, Ch)`` into ``S`` prototype slots."""
    index: torch.Tensor  # (B, heads, N) int64: prototype slot of each query
    prototypes: torch.Tensor  # (B, heads, S, Ch): mean of the members of each slot (zeros where empty)
    counts: torch.Tensor  # (B, heads, S) float32: members per slot
    num_clusters: torch.Tensor  # (B, heads) int64: non-empty slots (prefix tokens included)


@register_notrace_function
@torch.jit.ignore
def _check_queries(q: torch.Tensor, head_dim: int) -> None:
    """Raise ``ValueError`` unless ``q`` is ``(B, heads, N, head_dim)`` floating point with N >= 1."""
    if q.ndim != 4:
        raise ValueError(f'AdaptiveQueryClustering expects queries of shape (B, heads, N, head_dim), got shape '
                         f'{tuple(q.shape)}')
    if q.shape[-1] != head_dim:
        raise ValueError(f'AdaptiveQueryClustering(head_dim={head_dim}): the queries have {q.shape[-1]} channels per '
                         f'head (last dimension); create it with head_dim={q.shape[-1]}')
    if not q.is_floating_point():
        raise ValueError(f'AdaptiveQueryClustering expects floating-point queries, got {q.dtype}')


torch.fx.wrap('_check_queries')  # a leaf for plain torch.fx.symbolic_trace too


def _flat_rows(index: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Slot ``index`` ``(B, heads, N)`` as rows of the ``(B * heads * num_slots, D)`` matrix of all groups' slots."""
    B, H, N = index.shape
    group_start = torch.arange(B * H, device=index.device, dtype=index.dtype).view(B, H, 1) * num_slots
    return (index + group_start).reshape(B * H * N)


def broadcast_to_members(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-slot ``values`` ``(B, heads, S, D)`` to every member query, ``(B, heads, N, D)``, by the slot ``index``
    ``(B, heads, N)``. Its gradient sums the members' gradients into their prototype."""
    B, H, N = index.shape
    S, D = values.shape[-2:]
    # Row selection from one (B*heads*S, D) matrix: on CPU about 3x faster than the equivalent gather along dim 2
    # (whole contiguous rows are copied instead of per-element index arithmetic), and its backward (index_add)
    # is faster than gather's (scatter_add).
    rows = values.reshape(B * H * S, D).index_select(0, _flat_rows(index, S))
    return rows.view(B, H, N, D)


@register_notrace_module  # a leaf for timm's fx feature extraction: ~70 fewer nodes per block, counts kept
class AdaptiveQueryClustering(nn.Module):
    """ E2LSH clustering of attention queries into prototypes (ACT), per (batch, head) group.

    Input queries ``(B, heads, N, Ch)``; the first ``num_prefix_tokens`` (the class token) are each their own
    cluster, the others are hashed. After each forward the number of clusters of every (batch, head) group is
    kept, detached, in ``last_num_clusters`` (shape ``(B, heads)``) for reading outside the forward; no
    ``.item()`` or host sync happens inside it. The module traces with torch.fx (static shapes); timm's fx
    feature extraction keeps it as a leaf module, so its GraphModules still update the count.

    ``capacity`` (optional) bounds the prototype slots to ``ceil(capacity * N)`` per group, so the attention on
    prototypes is computed for fewer rows than queries, with static shapes. When the hash finds more clusters,
    the most populated ones keep their slots (ties: lower cluster id) and each query of a dropped cluster joins
    the kept prototype nearest to it (Euclidean, costs ``N * slots * Ch`` multiply-adds); prototypes are then the
    means of their final members. Without ``capacity`` every query's cluster is the set of queries with its L codes
    (ACT's clustering; see the module docstring for how ACT's code combines the codes).

    The hash: ``query_scale`` (``'none'``: the raw queries; ``'head_dim'``: ``q·Ch^-0.5``, as ACT's code),
    ``offset_range`` (``'bucket'``: ``b ~ U(0, r)``, E2LSH's definition; ``'unit'``: ``b ~ U(0, 1)``, ACT's code)
    and ``redraw`` (``True``: fresh ``a``, ``b`` from the global RNG at every training forward, as ACT's code at
    every call; evaluation always uses the seeded buffers, so it stays deterministic).

    ``singleton=True`` is the degenerate clustering, every query its own cluster (prototypes = queries), through
    the same scatter and broadcast path: for equivalence checks against the unclustered attention and for ablations.
    """
    last_num_clusters: Optional[torch.Tensor]

    def __init__(
            self,
            head_dim: int,
            num_rounds: int = 16,
            bucket_width: float = 8.0,
            num_prefix_tokens: int = 1,
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
            head_dim: Channels per head Ch of the queries.
            num_rounds: Hash rounds L (ACT recommends 16-32 for DETR; its code uses 32; each costs N·Ch
                multiply-adds per head).
            bucket_width: E2LSH bucket width r, in the units of what is hashed (the queries, times Ch^-0.5 with
                ``query_scale='head_dim'``). ACT's code uses r = 8 on ``q·Ch^-0.5``. Larger: fewer, bigger
                clusters.
            num_prefix_tokens: Leading tokens (class token) that are never merged with others.
            capacity: Optional bound on the prototype slots as a fraction of the tokens, in (0, 1].
            singleton: Every query its own cluster (degenerate clustering).
            seed: Seed of the hash projections and offsets.
            query_scale: ``'none'`` (hash q) or ``'head_dim'`` (hash ``q·Ch^-0.5``, ACT's code).
            offset_range: ``'bucket'`` (``b ~ U(0, r)``) or ``'unit'`` (``b ~ U(0, 1)``, ACT's code).
            redraw: Draw fresh projections and offsets at every training forward (ACT's code); eval is seeded.
            device: Device of the hash buffers.
            dtype: Accepted for the timm factory convention; the hash buffers are always float32, since they
                define the hash function and are not model weights.
        """
        super().__init__()
        check_int('AdaptiveQueryClustering', 'head_dim', head_dim, minimum=1)
        check_int('AdaptiveQueryClustering', 'num_rounds', num_rounds, minimum=1, maximum=4096)
        if not bucket_width > 0:
            raise ValueError(f'AdaptiveQueryClustering: bucket_width must be > 0, got {bucket_width}')
        check_int('AdaptiveQueryClustering', 'num_prefix_tokens', num_prefix_tokens, minimum=0)
        if capacity is not None and not 0.0 < capacity <= 1.0:
            raise ValueError(f'AdaptiveQueryClustering: capacity must be in (0, 1] or None, got {capacity}')
        if query_scale not in _QUERY_SCALES:
            raise ValueError(f"AdaptiveQueryClustering: query_scale must be one of {_QUERY_SCALES} ('head_dim': hash "
                             f"q·head_dim^-0.5 as ACT's code), got {query_scale!r}")
        if offset_range not in _OFFSET_RANGES:
            raise ValueError(f"AdaptiveQueryClustering: offset_range must be one of {_OFFSET_RANGES} ('bucket': "
                             f"b ~ U(0, bucket_width); 'unit': b ~ U(0, 1) as ACT's code), got {offset_range!r}")
        self.head_dim = int(head_dim)
        self.num_rounds = int(num_rounds)
        self.bucket_width = float(bucket_width)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.capacity = capacity
        self.singleton = singleton
        self.seed = seed
        self.query_scale = str(query_scale)
        self.offset_range = str(offset_range)
        self.redraw = bool(redraw)
        # multiplies the queries inside the hash only (the prototypes are means of the unscaled queries)
        self.hash_scale = float(head_dim ** -0.5) if query_scale == 'head_dim' else 1.0
        self.offset_high = self.bucket_width if offset_range == 'bucket' else 1.0
        # Codes are clamped to +-code_bound so that the weighted sums of the key stay exact in float64.
        self.code_bound = float(min(2 ** 20, _EXACT_FLOAT64 // (num_rounds * _PRIME)))
        self.prime = _PRIME  # an attribute, not a global: TorchScript reads no global constants
        self.register_buffer('hash_proj', torch.empty(head_dim, num_rounds, device=device), persistent=False)
        self.register_buffer('hash_offset', torch.empty(num_rounds, device=device), persistent=False)
        # (L, 2) float64 integer weights in [1, p) of the two residues of the key (drawn once, part of the hash).
        self.register_buffer(
            'key_weights', torch.empty(num_rounds, 2, device=device, dtype=torch.float64), persistent=False)
        self.last_num_clusters = None
        self.init_non_persistent_buffers()

    def init_non_persistent_buffers(self) -> None:
        """(Re)build the hash projections ``a ~ N(0, I)``, offsets ``b ~ U(0, r)`` (or ``U(0, 1)``, see
        ``offset_range``) and key weights from the seed."""
        if self.hash_proj.is_meta:
            return
        # Drawn on the CPU with their own generator: the same hash on every device, independent of global RNG.
        gen = torch.Generator(device='cpu').manual_seed(self.seed)
        # Drawn and discarded: keeps a and b (so every partition into clusters) those of earlier releases, whose
        # key came from two draws here.
        torch.randint(1, _LEGACY_DRAW_HIGH, (2,), generator=gen, device='cpu')
        proj = torch.randn(self.head_dim, self.num_rounds, generator=gen, device='cpu', dtype=torch.float32)
        offset = torch.rand(self.num_rounds, generator=gen, device='cpu', dtype=torch.float32) * self.offset_high
        weights = torch.randint(1, self.prime, (self.num_rounds, 2), generator=gen, device='cpu')
        with torch.no_grad():
            self.hash_proj.copy_(proj)
            self.hash_offset.copy_(offset)
            self.key_weights.copy_(weights.double())

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        # The hash buffers are a function of the seed, defined in float32. After a conversion (.to(dtype),
        # .half(), to_empty, ...) rebuild them: a bf16 round trip would otherwise change the hash for good.
        self.hash_proj = self.hash_proj.float()
        self.hash_offset = self.hash_offset.float()
        self.key_weights = self.key_weights.double()
        self.init_non_persistent_buffers()
        return self

    def num_slots(self, num_tokens: int) -> int:
        """Prototype slots for ``num_tokens`` queries: ``num_tokens``, or the capacity bound."""
        if self.capacity is None or self.singleton:
            return num_tokens
        num_patches = num_tokens - self.num_prefix_tokens
        kept = max(1, int(math.ceil(self.capacity * num_patches)))
        return self.num_prefix_tokens + min(kept, num_patches)

    def macs(self, num_tokens: int) -> int:
        """Multiply-adds of clustering ``num_tokens`` queries of one (image, head) group: the matrix products of
        ``forward``, which ``FlopCounterMode`` counts too. The hash projects every query on the L directions (L·Ch
        each) and combines its L codes into the key (2·L); under a capacity, each hashed query's distance to the
        kept prototypes adds (slots - prefix)·Ch. Sorting, scatter and selection are not multiply-adds, and timm's
        model cards do not count them either."""
        if self.singleton:
            return 0
        total = num_tokens * self.num_rounds * (self.head_dim + 2)
        num_slots = self.num_slots(num_tokens)
        if num_slots < num_tokens:
            P = self.num_prefix_tokens
            total += (num_tokens - P) * (num_slots - P) * self.head_dim
        return total

    def hash_params(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """The projections ``a`` ``(Ch, L)`` and offsets ``b`` ``(L,)`` the next hash uses: the seeded buffers, or in
        training with ``redraw`` fresh draws from the global RNG (ACT's code draws them at every call)."""
        if self.redraw and self.training:
            proj = torch.randn(self.head_dim, self.num_rounds, device=device, dtype=torch.float32)
            offset = torch.rand(self.num_rounds, device=device, dtype=torch.float32) * self.offset_high
            return proj, offset
        return self.hash_proj.float(), self.hash_offset.float()

    def hash_keys(self, q: torch.Tensor) -> torch.Tensor:
        """One int64 key per query ``(B, heads, M, Ch) -> (B, heads, M)``, equal iff all L E2LSH codes are equal
        (up to a collision probability of 1/p^2 < 4e-18 per pair of distinct code vectors)."""
        # Detached (codes are discrete: no gradient) and in place on the one fresh tensor: the hash is a few
        # passes over (B, heads, L, M) floats, the largest tensor of the clustering. Tokens along the last axis:
        # for the token-last queries that forward passes (a transposed view), both GEMMs read and write
        # contiguous rows, about 1.7x faster on CPU than the token-major layout.
        # (a·sq + b) / r is computed as (s·a/r)·q + b/r: exactly the same when s/r is a power of two (the default
        # s = 1, r = 8; scaling by 2^k is exact in floating point), else up to float32 rounding at bucket edges.
        r = self.bucket_width
        proj, offset = self.hash_params(q.device)
        q_t = q.detach().float().transpose(-1, -2)  # (B, heads, Ch, M)
        # (.float(): under autocast the matmul returns float16/bfloat16, whose range cannot hold the clamp bound.)
        codes = torch.matmul(proj.t() * (self.hash_scale / r), q_t).float()  # (B, heads, L, M)
        # float32 holds these integers exactly (|code| <= code_bound <= 2^20); beyond it codes merge, far outside
        # any realistic |a·q| / r.
        codes = codes.add_(offset.unsqueeze(-1) / r).floor_()
        codes = codes.clamp_(-self.code_bound, self.code_bound)
        # Two integer combinations Σ_l w_l c_l of the codes, exact in float64 (see code_bound), in one matmul
        # instead of L int64 passes per hash. For distinct code vectors c != c' (|c_l - c'_l| < p) and weights
        # uniform in [1, p), the residues mod p agree with probability about 1/p each, independently.
        sums = torch.matmul(self.key_weights.t(), codes.double()).to(torch.int64)  # (B, heads, 2, M)
        residues = torch.remainder(sums, self.prime)
        return residues[:, :, 0] * self.prime + residues[:, :, 1]

    @staticmethod
    def _group(keys: torch.Tensor) -> torch.Tensor:
        """Cluster id in ``[0, M)`` of each of the ``M`` hashed queries, ``(B, heads, M)`` int64, from their keys.
        Ids are consecutive in the order of the sorted keys: sort, flag where the key changes, cumulative sum."""
        sorted_keys, order = torch.sort(keys, dim=-1)
        changed = (sorted_keys[..., 1:] != sorted_keys[..., :-1]).to(torch.int64)  # ONNX's CumSum takes no bool
        # the first id comes from sorted_keys, not changed: with one query, changed is empty
        sorted_ids = torch.cat([torch.zeros_like(sorted_keys[..., :1]), changed.cumsum(dim=-1)], dim=-1)
        return torch.empty_like(sorted_ids).scatter_(-1, order, sorted_ids)  # order is a permutation: all set

    def _limit_to_capacity(self, q_patch: torch.Tensor, ids: torch.Tensor, num_kept: int) -> torch.Tensor:
        """Map cluster ids in ``[0, M)`` to ``num_kept`` slots: the most populated clusters keep a slot, the members
        of the others join the nearest kept prototype. Discrete choice, so computed on detached queries."""
        qd = q_patch.detach().float()
        B, H, M, C = qd.shape
        ones = torch.ones_like(ids)
        counts = torch.zeros_like(ids).scatter_add(-1, ids, ones)  # (B, H, M) members of cluster id
        # Unique integer scores: more members first, then lower id (int64, exact for any M).
        rank = torch.arange(M, device=ids.device, dtype=torch.int64)
        kept_ids = torch.topk(counts * (M + 1) - rank, num_kept, dim=-1).indices  # (B, H, K)
        slot_range = torch.arange(num_kept, device=ids.device, dtype=torch.int64).expand(B, H, num_kept)
        slot_of_id = torch.full_like(ids, -1).scatter(-1, kept_ids, slot_range)
        slot = slot_of_id.gather(-1, ids)  # -1 where the cluster was dropped

        sums = torch.zeros_like(qd).scatter_add(2, ids.unsqueeze(-1).expand(B, H, M, C), qd)
        kept_sum = sums.gather(2, kept_ids.unsqueeze(-1).expand(B, H, num_kept, C))
        kept_count = counts.gather(-1, kept_ids).clamp(min=1).to(qd.dtype)
        kept_proto = kept_sum / kept_count.unsqueeze(-1)
        dist = (
            qd.pow(2).sum(-1, keepdim=True)
            - 2.0 * torch.matmul(qd, kept_proto.transpose(-1, -2))
            + kept_proto.pow(2).sum(-1).unsqueeze(-2)
        )
        # A kept cluster may be empty only when every cluster fits, and then no query needs the nearest.
        nearest = dist.argmin(dim=-1)
        return torch.where(slot >= 0, slot, nearest)

    def forward(self, q: torch.Tensor, num_tokens: Optional[int] = None) -> QueryClusters:
        """Cluster ``q`` of shape ``(B, heads, N, Ch)``.

        ``num_tokens``: N as a Python int. Needed only with ``capacity`` under torch.fx tracing, where ``q.shape``
        is symbolic and the slot count must be a constant (CoaT passes ``1 + H * W`` from its static grid).
        """
        _check_queries(q, self.head_dim)
        B, H, N, C = q.shape
        # Means in float32: a low-precision sum over thousands of members would lose the mean. Token-last
        # (B, heads, Ch, N), in one copy: the queries usually arrive as a strided view of a fused qkv projection,
        # and the hash GEMMs and the scatter along the last, contiguous axis are each about 2x faster on CPU than
        # on the token-major layout.
        q_t = q.float().transpose(-1, -2).contiguous()
        q32 = q_t.transpose(-1, -2)  # (B, heads, N, Ch) view
        P = self.num_prefix_tokens
        num_slots = N
        if self.singleton:
            index = torch.arange(N, device=q.device, dtype=torch.int64).expand(B, H, N)
        else:
            # Hashed with the prefix tokens (their keys are dropped): one GEMM over all queries.
            ids = self._group(self.hash_keys(q32)[:, :, P:])
            if self.capacity is not None:
                tokens = num_tokens if num_tokens is not None else int(N)
                num_slots = self.num_slots(tokens)
                if num_slots < tokens:
                    ids = self._limit_to_capacity(q32[:, :, P:], ids, num_slots - P)
            prefix = torch.arange(P, device=q.device, dtype=torch.int64).expand(B, H, P)
            index = torch.cat([prefix, ids + P], dim=-1)

        # In place into fresh zeros (the out-of-place scatter_add would copy them first).
        counts = torch.zeros((B, H, num_slots), device=q.device, dtype=torch.float32)
        counts = counts.scatter_add_(-1, index, torch.ones((1, 1, 1), device=q.device).expand(B, H, N))
        sums = torch.zeros((B, H, C, num_slots), device=q.device, dtype=torch.float32)
        sums = sums.scatter_add_(3, index.unsqueeze(2).expand(B, H, C, N), q_t)
        # In place (autograd-safe: scatter_add's backward does not read its output), by the reciprocal: one
        # multiply pass instead of a division into a fresh tensor. Returned as a (B, heads, S, Ch) view.
        prototypes = sums.mul_(counts.clamp(min=1.0).reciprocal().unsqueeze(2)).transpose(-1, -2).to(q.dtype)
        num_clusters = (counts > 0).sum(dim=-1)
        self.last_num_clusters = num_clusters.detach()
        return QueryClusters(index, prototypes, counts, num_clusters)

    def extra_repr(self) -> str:
        s = (f'head_dim={self.head_dim}, num_rounds={self.num_rounds}, bucket_width={self.bucket_width}, '
             f'num_prefix_tokens={self.num_prefix_tokens}, seed={self.seed}')
        if self.capacity is not None:
            s += f', capacity={self.capacity}'
        if self.query_scale != 'none' or self.offset_range != 'bucket' or self.redraw:
            s += f', query_scale={self.query_scale}, offset_range={self.offset_range}, redraw={self.redraw}'
        if self.singleton:
            s += ', singleton=True'
        return s
