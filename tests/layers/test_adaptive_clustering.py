""" Tests of the E2LSH query clustering (ACT) and the clustered CoaT conv-attention layers. """
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.coat import ConvRelPosEnc, FactorAttnConvRelPosEnc

from timm_posembed.layers import AdaptiveQueryClustering, ClusteredFactorAttnConvRelPosEnc, broadcast_to_members


def _reference_codes(clustering: AdaptiveQueryClustering, q: torch.Tensor) -> torch.Tensor:
    """E2LSH codes floor((a·q + b) / r) of each query, float64 from the layer's own a, b, r."""
    a = clustering.hash_proj.double()
    b = clustering.hash_offset.double()
    return torch.floor((q.double() @ a + b) / clustering.bucket_width)


def _partition(index: torch.Tensor):
    """The clusters of one (batch, head) group as a set of frozensets of query positions (labels ignored)."""
    groups = {}
    for pos, slot in enumerate(index.tolist()):
        groups.setdefault(slot, set()).add(pos)
    return {frozenset(g) for g in groups.values()}


def _queries(seed: int = 0, shape=(2, 3, 33, 8), scale: float = 4.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_clusters_are_the_groups_of_identical_codes():
    clustering = AdaptiveQueryClustering(8, num_rounds=4, bucket_width=4.0)
    q = _queries()
    # duplicate some queries: they must share a cluster whatever their codes
    q[:, :, 5] = q[:, :, 9]
    out = clustering(q)
    codes = _reference_codes(clustering, q[:, :, 1:])
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            expected = {}
            for pos, code in enumerate(codes[b, h].tolist(), start=1):
                expected.setdefault(tuple(code), set()).add(pos)
            expected = {frozenset(g) for g in expected.values()} | {frozenset({0})}
            assert _partition(out.index[b, h]) == expected
    assert torch.equal(out.index[:, :, 5], out.index[:, :, 9])
    # ... and the reported count is the number of distinct code vectors plus the class token
    n_expected = torch.tensor([[len({tuple(c) for c in codes[b, h].tolist()}) + 1 for h in range(3)] for b in range(2)])
    assert torch.equal(out.num_clusters, n_expected)
    assert torch.equal(clustering.last_num_clusters, n_expected)


def test_class_token_is_its_own_cluster():
    clustering = AdaptiveQueryClustering(8, num_rounds=2, bucket_width=1e6)  # one huge bucket for the patches
    q = _queries()
    q[:, :, 0] = q[:, :, 1]  # even identical to a patch query, the class token stays alone
    out = clustering(q)
    assert (out.index[:, :, 0] == 0).all()
    assert (out.index[:, :, 1:] == 1).all()
    assert (out.num_clusters == 2).all()


def test_prototypes_are_member_means():
    clustering = AdaptiveQueryClustering(8, num_rounds=3, bucket_width=6.0)
    q = _queries(1)
    out = clustering(q)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for slot in out.index[b, h].unique().tolist():
                members = out.index[b, h] == slot
                torch.testing.assert_close(out.prototypes[b, h, slot], q[b, h, members].mean(0))
                assert out.counts[b, h, slot] == members.sum()
    # broadcast gives every query its prototype
    torch.testing.assert_close(
        broadcast_to_members(out.prototypes, out.index),
        torch.stack([torch.stack([out.prototypes[b, h, out.index[b, h]] for h in range(3)]) for b in range(2)]))


def test_strided_queries_cluster_like_contiguous_ones():
    # the queries of an attention are a strided view of its fused (B, N, 3, heads, Ch) qkv projection; the layer
    # works on its own token-last copy, so layout must change nothing
    clustering = AdaptiveQueryClustering(8, num_rounds=4, bucket_width=4.0)
    qkv = torch.randn((2, 33, 3, 3, 8), generator=torch.Generator().manual_seed(7))
    strided = qkv.permute(2, 0, 3, 1, 4)[0]
    assert not strided.is_contiguous()
    a, b = clustering(strided), clustering(strided.contiguous())
    assert torch.equal(a.index, b.index) and torch.equal(a.counts, b.counts)
    assert torch.equal(a.prototypes, b.prototypes)
    assert (a.num_clusters < 33).all() and (a.num_clusters > 2).all()


def test_number_of_clusters_adapts_to_the_input():
    clustering = AdaptiveQueryClustering(8, num_rounds=8, bucket_width=2.0)
    noise = _queries(2)
    flat = noise[:, :, :1].expand_as(noise).clone() + 1e-3 * _queries(3)  # nearly one query repeated
    n_noise = clustering(noise).num_clusters
    n_flat = clustering(flat).num_clusters
    assert (n_flat < n_noise).all(), (n_flat, n_noise)
    assert n_noise.float().mean() > 0.5 * noise.shape[2]


def test_gradients_follow_act_rules():
    """Member gradient = prototype gradient / cluster size; prototype gradient = sum over its members."""
    clustering = AdaptiveQueryClustering(8, num_rounds=2, bucket_width=8.0)
    q = _queries(4).requires_grad_(True)
    out = clustering(q)
    proto_grad = {}
    out.prototypes.register_hook(lambda g: proto_grad.setdefault('g', g))
    upstream = torch.randn(q.shape, generator=torch.Generator().manual_seed(5))
    (broadcast_to_members(out.prototypes, out.index) * upstream).sum().backward()

    sizes = out.counts.gather(-1, out.index)  # (B, h, N) size of each query's cluster
    assert (sizes > 1).any(), 'test needs clusters with several members'
    expected_proto = torch.zeros_like(out.prototypes).index_put_(
        (torch.arange(2).view(2, 1, 1), torch.arange(3).view(1, 3, 1), out.index), upstream, accumulate=True)
    torch.testing.assert_close(proto_grad['g'], expected_proto)
    expected_q = broadcast_to_members(expected_proto, out.index) / sizes.unsqueeze(-1)
    torch.testing.assert_close(q.grad, expected_q)


def test_eval_is_deterministic_and_rows_are_independent():
    clustering = AdaptiveQueryClustering(8, num_rounds=4, bucket_width=3.0)
    q = _queries(6)
    first, second = clustering(q), clustering(q.clone())
    assert torch.equal(first.index, second.index) and torch.equal(first.prototypes, second.prototypes)
    copies = q[:1].expand(4, -1, -1, -1).contiguous()
    out = clustering(copies)
    assert all(torch.equal(out.index[0], out.index[i]) for i in range(1, 4))
    assert all(torch.equal(out.prototypes[0], out.prototypes[i]) for i in range(1, 4))


def test_hash_state_is_seeded_and_not_in_the_state_dict():
    a = AdaptiveQueryClustering(8, num_rounds=4, seed=3)
    b = AdaptiveQueryClustering(8, num_rounds=4, seed=3)
    c = AdaptiveQueryClustering(8, num_rounds=4, seed=4)
    assert len(a.state_dict()) == 0
    assert torch.equal(a.hash_proj, b.hash_proj) and torch.equal(a.hash_offset, b.hash_offset)
    assert not torch.equal(a.hash_proj, c.hash_proj)
    assert (a.hash_offset >= 0).all() and (a.hash_offset < a.bucket_width).all()
    # created on the meta device, materialised with to_empty: init_non_persistent_buffers restores the hash
    meta = AdaptiveQueryClustering(8, num_rounds=4, seed=3, device='meta')
    assert meta.hash_proj.is_meta
    meta = meta.to_empty(device='cpu')
    meta.init_non_persistent_buffers()
    assert torch.equal(meta.hash_proj, a.hash_proj) and torch.equal(meta.hash_offset, a.hash_offset)
    # a dtype round trip (as timm's dtype-change check does) must not leave a rounded hash behind
    b.to(torch.bfloat16)
    assert b.hash_proj.dtype == torch.float32 and torch.equal(b.hash_proj, a.hash_proj)
    q = _queries(10).to(torch.bfloat16)
    assert torch.equal(b(q).index, a(q).index) and b(q).prototypes.dtype == torch.bfloat16


def test_singleton_is_every_query_its_own_cluster():
    clustering = AdaptiveQueryClustering(8, singleton=True)
    q = _queries(7)
    out = clustering(q)
    assert torch.equal(out.index, torch.arange(q.shape[2]).expand(2, 3, -1))
    assert torch.equal(out.prototypes, q)
    assert (out.num_clusters == q.shape[2]).all()


def test_capacity_bounds_the_prototypes():
    q = _queries(8, shape=(2, 3, 65, 8))
    free = AdaptiveQueryClustering(8, num_rounds=4, bucket_width=3.0)
    capped = AdaptiveQueryClustering(8, num_rounds=4, bucket_width=3.0, capacity=0.25)
    n_free = free(q).num_clusters
    out = capped(q)
    slots = capped.num_slots(65)
    assert slots == 1 + math.ceil(0.25 * 64)
    assert (n_free > slots).all(), 'test needs more clusters than slots'
    assert out.prototypes.shape == (2, 3, slots, 8)
    assert (out.num_clusters <= slots).all() and (out.index < slots).all()
    assert (out.index[:, :, 0] == 0).all() and (out.index[:, :, 1:] > 0).all()
    ref_codes = _reference_codes(capped, q[:, :, 1:])
    for b in range(2):
        for h in range(3):
            idx = out.index[b, h]
            # means of the final members
            for slot in idx.unique().tolist():
                torch.testing.assert_close(out.prototypes[b, h, slot], q[b, h, idx == slot].mean(0))
            # the largest hash cluster keeps its own slot, whole
            codes = [tuple(c) for c in ref_codes[b, h].tolist()]
            largest = max(set(codes), key=codes.count)
            members = torch.tensor([c == largest for c in codes])
            assert idx[1:][members].unique().numel() == 1
    # a capacity that fits every cluster leaves ACT's partition unchanged
    loose = AdaptiveQueryClustering(8, num_rounds=4, bucket_width=3.0, capacity=1.0)
    torch.testing.assert_close(loose(q).index, free(q).index)


def test_scripted_traced_and_meta_match_eager():
    for kwargs in (dict(), dict(capacity=0.3)):
        clustering = AdaptiveQueryClustering(8, num_rounds=4, bucket_width=3.0, **kwargs)
        q = _queries(9)
        expected = clustering(q)
        scripted = torch.jit.script(clustering)(q)
        assert torch.equal(scripted.index, expected.index)
        traced = torch.fx.symbolic_trace(clustering, concrete_args={'num_tokens': q.shape[2]})
        traced = traced(q, q.shape[2])
        assert torch.equal(traced.index, expected.index)
        meta = clustering.to('meta')(q.to('meta'), num_tokens=q.shape[2])
        assert meta.prototypes.shape == expected.prototypes.shape


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match='num_rounds'):
        AdaptiveQueryClustering(8, num_rounds=0)
    with pytest.raises(ValueError, match='bucket_width'):
        AdaptiveQueryClustering(8, bucket_width=0.0)
    with pytest.raises(ValueError, match='capacity'):
        AdaptiveQueryClustering(8, capacity=1.5)
    with pytest.raises(ValueError, match='attn'):
        ClusteredFactorAttnConvRelPosEnc(32, num_heads=4, attn='linear')


# --- clustered conv-attention -----------------------------------------------------------------------------------

def _attention_pair(attn: str, **kwargs):
    """Our clustered attention and timm's, with the same weights and shared CRPE (4 heads x 8 channels)."""
    torch.manual_seed(0)
    crpe = ConvRelPosEnc(head_chs=8, num_heads=4, window={3: 2, 5: 2})
    ours = ClusteredFactorAttnConvRelPosEnc(32, num_heads=4, qkv_bias=True, shared_crpe=crpe, attn=attn, **kwargs)
    timm_attn = FactorAttnConvRelPosEnc(32, num_heads=4, qkv_bias=True, shared_crpe=crpe)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.5)
    timm_attn.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), timm_attn.eval()


def _qkv(module, x):
    B, N, C = x.shape
    qkv = module.qkv(x).reshape(B, N, 3, module.num_heads, C // module.num_heads).permute(2, 0, 3, 1, 4)
    return qkv.unbind(0)


def test_factorized_equals_cluster_mean_query_reference():
    ours, _ = _attention_pair('factorized', num_rounds=2, bucket_width=6.0)
    size = (6, 6)
    x = torch.randn(2, 37, 32)
    out = ours(x, size)
    q, k, v = _qkv(ours, x)
    clusters = ours.clustering(q)
    assert (clusters.num_clusters < 37).all(), 'test needs clusters with several members'
    # reference: timm's factorized attention with each query replaced by the mean of its cluster
    q_mean = torch.empty_like(q)
    for b in range(2):
        for h in range(4):
            for slot in clusters.index[b, h].unique():
                members = clusters.index[b, h] == slot
                q_mean[b, h, members] = q[b, h, members].mean(0)
    factor = k.softmax(dim=2).transpose(-1, -2) @ v
    ref = ours.scale * (q_mean @ factor) + ours.crpe(q, v, size=size)
    ref = ours.proj(ref.transpose(1, 2).reshape(2, 37, 32))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_singleton_factorized_equals_timm_attention():
    ours, timm_attn = _attention_pair('factorized', singleton=True)
    x = torch.randn(2, 37, 32)
    expected = timm_attn(x, (6, 6))
    # float32 rounding of outputs up to ~200: the key softmax runs along another (contiguous) axis than timm's
    torch.testing.assert_close(ours(x, (6, 6)), expected, rtol=1e-5, atol=1e-6 * expected.abs().max().item())
    assert set(ours.state_dict()) == set(timm_attn.state_dict())


@pytest.mark.parametrize('fused', [True, False])
def test_softmax_is_act_attention_of_prototypes(fused):
    ours, _ = _attention_pair('softmax', num_rounds=2, bucket_width=6.0)
    ours.fused_attn = fused
    size = (6, 6)
    x = torch.randn(2, 37, 32)
    out = ours(x, size)
    q, k, v = _qkv(ours, x)
    clusters = ours.clustering(q)
    assert (clusters.num_clusters < 37).all()
    rows = []
    for b in range(2):
        heads = []
        for h in range(4):
            idx = clusters.index[b, h]
            per_query = torch.empty(37, 8)
            for slot in idx.unique():
                members = idx == slot
                proto = q[b, h, members].mean(0)
                attn = torch.softmax(proto @ k[b, h].T / math.sqrt(8), dim=-1)
                per_query[members] = attn @ v[b, h]
            heads.append(per_query)
        rows.append(torch.stack(heads))
    ref = torch.stack(rows) + ours.crpe(q, v, size=size)
    ref = ours.proj(ref.transpose(1, 2).reshape(2, 37, 32))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_softmax_singleton_is_full_softmax_attention():
    ours, _ = _attention_pair('softmax', singleton=True)
    x = torch.randn(1, 37, 32)
    q, k, v = _qkv(ours, x)
    ref = F.scaled_dot_product_attention(q, k, v) + ours.crpe(q, v, size=(6, 6))
    ref = ours.proj(ref.transpose(1, 2).reshape(1, 37, 32))
    torch.testing.assert_close(ours(x, (6, 6)), ref, rtol=1e-5, atol=1e-5)


def test_a_single_patch_query_is_one_cluster():
    # CoaT-Lite's last stage at 32 px has one patch token beside the class token.
    clustering = AdaptiveQueryClustering(8, num_rounds=4, bucket_width=4.0)
    q = _queries(shape=(2, 3, 2, 8))
    out = clustering(q)
    assert out.index.shape == (2, 3, 2)
    assert out.index[..., 0].eq(0).all() and out.index[..., 1].eq(1).all()
    torch.testing.assert_close(out.prototypes[..., :2, :], q[..., :2, :])


# --- the packed key, misuse, and building from timm's attention ------------------------------------------------

def test_key_is_the_exact_integer_combination_of_the_codes():
    # identity projection, no offset, r = 1: the codes are the (integer) queries themselves
    L = 16
    clustering = AdaptiveQueryClustering(L, num_rounds=L, bucket_width=1.0)
    with torch.no_grad():
        clustering.hash_proj.copy_(torch.eye(L))
        clustering.hash_offset.zero_()
    bound = int(clustering.code_bound)
    assert bound == 2 ** 20  # 16 rounds: the float64 sums stay below 2^53
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(-bound, bound + 1, (1, 1, 64, L), generator=gen)
    codes[0, 0, :4] = torch.tensor([bound, -bound]).repeat(L // 2)  # the extremes
    codes[0, 0, 10] = codes[0, 0, 11]
    keys = clustering.hash_keys(codes.float())
    p = clustering.prime
    weights = clustering.key_weights.long().tolist()
    for i, code in enumerate(codes[0, 0].tolist()):
        ka = sum(c * w[0] for c, w in zip(code, weights)) % p
        kb = sum(c * w[1] for c, w in zip(code, weights)) % p
        assert keys[0, 0, i].item() == ka * p + kb
    assert keys[0, 0, 10] == keys[0, 0, 11]
    assert keys.unique().numel() == codes[0, 0].unique(dim=0).shape[0]  # distinct codes, distinct keys


def test_many_tokens_give_exactly_the_code_partition():
    # a CoaT stage-1 sized group with coarse buckets: many shared codes, no false merge or split
    clustering = AdaptiveQueryClustering(8, num_rounds=16, bucket_width=8.0)
    q = _queries(3, shape=(1, 2, 3137, 8), scale=1.0)
    out = clustering(q)
    codes = _reference_codes(clustering, q[:, :, 1:])
    for h in range(2):
        expected = {}
        for pos, code in enumerate(codes[0, h].tolist(), start=1):
            expected.setdefault(tuple(code), set()).add(pos)
        expected = {frozenset(g) for g in expected.values()} | {frozenset({0})}
        assert _partition(out.index[0, h]) == expected
        assert 1 < len(expected) < 3137


def test_misused_queries_name_the_argument():
    clustering = AdaptiveQueryClustering(8)
    with pytest.raises(ValueError, match=r'\(B, heads, N, head_dim\)'):
        clustering(torch.randn(2, 33, 8))
    with pytest.raises(ValueError, match='head_dim=8.*create it with head_dim=16'):
        clustering(torch.randn(2, 3, 33, 16))
    with pytest.raises(ValueError, match='floating-point'):
        clustering(torch.ones(2, 3, 33, 8, dtype=torch.int64))
    for bad in (2.5, 0, True):
        with pytest.raises(ValueError, match='head_dim'):
            AdaptiveQueryClustering(bad)
    with pytest.raises(ValueError, match='num_rounds'):
        AdaptiveQueryClustering(8, num_rounds=1.5)
    with pytest.raises(ValueError, match='num_prefix_tokens'):
        AdaptiveQueryClustering(8, num_prefix_tokens=0.5)


def test_misused_clustered_attention_names_the_argument():
    with pytest.raises(ValueError, match='num_heads'):
        ClusteredFactorAttnConvRelPosEnc(32, num_heads=0)
    with pytest.raises(ValueError, match='dim must be'):
        ClusteredFactorAttnConvRelPosEnc(32.5, num_heads=4)
    crpe = ConvRelPosEnc(head_chs=8, num_heads=4, window={3: 2, 5: 2})
    attn = ClusteredFactorAttnConvRelPosEnc(32, num_heads=4, shared_crpe=crpe)
    with pytest.raises(ValueError, match=r'\(B, 1 \+ H\*W, C\)'):
        attn(torch.randn(2, 32, 4, 4), size=(4, 4))
    with pytest.raises(ValueError, match='size=\\(4, 4\\) needs 1 \\+ 4\\*4 = 17 tokens'):
        attn(torch.randn(2, 16, 32), size=(4, 4))
    with pytest.raises(ValueError, match='dim=32'):
        attn(torch.randn(2, 17, 16), size=(4, 4))


def test_from_timm_copies_settings_and_weights():
    torch.manual_seed(0)
    crpe = ConvRelPosEnc(head_chs=8, num_heads=4, window={3: 2, 5: 2})
    timm_attn = FactorAttnConvRelPosEnc(32, num_heads=4, qkv_bias=True, proj_drop=0.1, shared_crpe=crpe).eval()
    ours = ClusteredFactorAttnConvRelPosEnc.from_timm(timm_attn, attn='factorized', singleton=True, seed=3).eval()
    assert ours.crpe is timm_attn.crpe and ours.num_heads == 4 and ours.proj_drop.p == 0.1
    assert ours.qkv.bias is not None and ours.clustering.seed == 3 and ours.clustering.singleton
    x = torch.randn(2, 1 + 16, 32)
    torch.testing.assert_close(ours(x, size=(4, 4)), timm_attn(x, size=(4, 4)))
    with pytest.raises(TypeError, match='unknown clustering arguments'):
        ClusteredFactorAttnConvRelPosEnc.from_timm(timm_attn, rounds=4)
    with pytest.raises(TypeError, match='FactorAttnConvRelPosEnc'):
        ClusteredFactorAttnConvRelPosEnc.from_timm(torch.nn.Linear(2, 2))


# --- ACT's hash: the options that reproduce it, and where its key differs ---------------------------------------

def _act_partition(q: torch.Tensor, a: torch.Tensor, b: torch.Tensor, r: float):
    """ACT's code's clustering of one row of queries ``q`` (N, Ch), written from its description: hash ``q·Ch^-0.5``
    with ``floor((a_l·x + b_l) / r)`` for every round l (float32, as its code), shift each round's codes so the
    smallest is 0, pack them as ``Σ_l c_l·4^l`` into a wrapping 64-bit integer (a round's code that reaches 4
    carries into the next round's bits), and group equal keys. Returns (partition, largest shifted code)."""
    x = q.float() * q.shape[-1] ** -0.5
    codes = torch.floor((x @ a.float() + b.float()) / r).long()  # (N, L)
    codes = codes - codes.min(dim=0).values
    groups = {}
    for pos, row in enumerate(codes.tolist()):
        key = sum(c * 4 ** rnd for rnd, c in enumerate(row)) % 2 ** 64
        groups.setdefault(key, set()).add(pos)
    return {frozenset(g) for g in groups.values()}, int(codes.max())


def _act_clustering(head_dim: int = 16, **kwargs) -> AdaptiveQueryClustering:
    return AdaptiveQueryClustering(head_dim, num_rounds=32, bucket_width=8.0, num_prefix_tokens=0,
                                   query_scale='head_dim', offset_range='unit', **kwargs)


def _clustered_queries(seed: int, spread: float, shape=(2, 2, 160, 16)) -> torch.Tensor:
    """Queries around 12 centres (an image's flat regions), so that clusters of several members occur."""
    g = torch.Generator().manual_seed(seed)
    B, H, N, C = shape
    centres = torch.randn(B, H, 12, C, generator=g) * spread
    which = torch.randint(0, 12, (B, H, N), generator=g)
    return centres.gather(2, which.unsqueeze(-1).expand(B, H, N, C)) + 0.01 * torch.randn(shape, generator=g)


def test_act_settings_and_the_same_a_b_give_acts_partition():
    clustering = _act_clustering()
    # ACT's draws (a ~ N(0, 1), b ~ U(0, 1)) put into the layer's buffers: the same a and b on both sides
    g = torch.Generator().manual_seed(11)
    a, b = torch.randn(16, 32, generator=g), torch.rand(32, generator=g)
    clustering.hash_proj.copy_(a)
    clustering.hash_offset.copy_(b)
    q = _clustered_queries(0, spread=3.0)
    out = clustering(q)
    sizes = []
    for i in range(2):
        for h in range(2):
            expected, largest_code = _act_partition(q[i, h], a, b, 8.0)
            assert largest_code <= 3, 'test needs rounds whose codes fit ACT\'s 2 bits (no carries)'
            assert _partition(out.index[i, h]) == expected
            sizes.append(len(expected))
    assert 12 <= min(sizes) and max(sizes) < 100, sizes  # several clusters, and clusters with several members


def test_where_act_codes_carry_our_partition_refines_acts():
    # Rounds 0 and 1 read query channels 0 and 1 (the other rounds see nothing): query A has codes (4, 0), query B
    # (0, 1), the zero query (0, 0). ACT's packing gives A and B the same key 4·1 + 0·4 = 0 + 1·4, merging two
    # queries far apart; our key keeps every distinct code vector apart.
    clustering = _act_clustering()
    with torch.no_grad():
        clustering.hash_proj.zero_()
        clustering.hash_proj[0, 0] = clustering.hash_proj[1, 1] = 1.0
        clustering.hash_offset.fill_(0.5)
    q = torch.zeros(1, 1, 3, 16)
    q[0, 0, 0, 0] = 4 * 8.0 * 4 + 1  # x = q·16^-0.5: code floor((32.25 + 0.5) / 8) = 4
    q[0, 0, 1, 1] = 8.0 * 4 + 1  # code floor((8.25 + 0.5) / 8) = 1
    act, largest_code = _act_partition(q[0, 0], clustering.hash_proj, clustering.hash_offset, 8.0)
    assert largest_code == 4 and act == {frozenset({0, 1}), frozenset({2})}
    assert _partition(clustering(q).index[0, 0]) == {frozenset({0}), frozenset({1}), frozenset({2})}
    # on queries whose rounds span more than 4 buckets, ours is always a refinement of ACT's
    q = _clustered_queries(1, spread=60.0)
    out = clustering(q)
    for i in range(2):
        for h in range(2):
            act, largest_code = _act_partition(q[i, h], clustering.hash_proj, clustering.hash_offset, 8.0)
            assert largest_code >= 4
            assert all(any(c <= a for a in act) for c in _partition(out.index[i, h]))


def test_query_scale_and_offset_range_define_the_hash():
    q = _queries(12, shape=(1, 2, 65, 16), scale=6.0)
    for query_scale, scale in (('none', 1.0), ('head_dim', 16 ** -0.5)):
        for offset_range, high in (('bucket', 4.0), ('unit', 1.0)):
            clustering = AdaptiveQueryClustering(16, num_rounds=8, bucket_width=4.0, num_prefix_tokens=0, seed=2,
                                                 query_scale=query_scale, offset_range=offset_range)
            b = clustering.hash_offset
            assert (b >= 0).all() and (b < high).all() and (b.max() > high / 2)
            codes = torch.floor((q.double() * scale @ clustering.hash_proj.double() + b.double()) / 4.0)
            out = clustering(q)
            for h in range(2):
                expected = {}
                for pos, code in enumerate(codes[0, h].tolist()):
                    expected.setdefault(tuple(code), set()).add(pos)
                assert _partition(out.index[0, h]) == {frozenset(v) for v in expected.values()}
    # the two offset ranges are the same draws, scaled: 'bucket' keeps the partitions of earlier releases
    unit = AdaptiveQueryClustering(16, num_rounds=8, bucket_width=4.0, offset_range='unit', seed=2)
    bucket = AdaptiveQueryClustering(16, num_rounds=8, bucket_width=4.0, seed=2)
    torch.testing.assert_close(unit.hash_offset * 4.0, bucket.hash_offset)


def test_redraw_draws_fresh_hashes_in_training_only():
    q = _clustered_queries(3, spread=3.0)
    fixed = _act_clustering()
    redraw = _act_clustering(redraw=True)
    buffers = redraw.hash_proj.clone(), redraw.hash_offset.clone()
    redraw.train()
    torch.manual_seed(0)
    first = redraw(q).index
    second = redraw(q).index
    assert not torch.equal(first, second)  # a new hash at every training forward, as ACT's code
    torch.manual_seed(0)
    assert torch.equal(redraw(q).index, first)  # drawn from the global RNG: seeding reproduces a run
    assert torch.equal(redraw.hash_proj, buffers[0]) and torch.equal(redraw.hash_offset, buffers[1])
    # evaluation: the seeded hash, the same as without redraw, every time
    redraw.eval()
    assert torch.equal(redraw(q).index, fixed.eval()(q).index) and torch.equal(redraw(q).index, fixed(q).index)
    # and a scripted module keeps the behaviour
    scripted = torch.jit.script(_act_clustering(redraw=True).train())
    assert not torch.equal(scripted(q).index, scripted(q).index)


def test_hash_options_are_checked():
    with pytest.raises(ValueError, match=r"query_scale must be one of \('none', 'head_dim'\).*got 'sqrt'"):
        AdaptiveQueryClustering(8, query_scale='sqrt')
    with pytest.raises(ValueError, match=r"offset_range must be one of \('bucket', 'unit'\).*got 'r'"):
        AdaptiveQueryClustering(8, offset_range='r')
