""" The position-encoding study: rows differ only in the encoding, extrapolation really runs on the larger grid,
and the study can tell an encoding from none. Tiny models (16 px, 4 px patches: a 4×4 grid), seconds. """
import json

import pytest
import torch
from timm.layers import AttentionRope
from timm.models.vision_transformer import Attention

from timm_posembed.measure import pe_study
from timm_posembed.measure.pe_study import ROWS, StudyConfig, build_row_model, evaluate

CFG = StudyConfig(img_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=2, epochs=1, batch_size=16,
                  seeds=(0,))
GRID = CFG.img_size // CFG.patch_size
TOKENS = GRID * GRID + 1
ROW = {row.key: row for row in ROWS}


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_each_row_adds_exactly_its_encodings_parameters():
    base = _params(build_row_model(ROW['none'], CFG, 0))
    # written from what each encoding is: one D-vector per token (learned), two tables of them (COPE's
    # frequency or amplitude, and phase), no parameters (the rotary table is a fixed function of position)
    expected = {'none': 0, 'learned': TOKENS * CFG.embed_dim, 'cope_sum': 2 * TOKENS * CFG.embed_dim,
                'cope_grid': 2 * TOKENS * CFG.embed_dim, 'cope_additive': 2 * TOKENS * CFG.embed_dim, 'rope': 0}
    assert set(expected) == set(ROW)
    for key, delta in expected.items():
        model = build_row_model(ROW[key], CFG, 0)
        assert _params(model) - base == delta, key
        own = sum(p.numel() for n, p in model.named_parameters() if n.startswith(ROW[key].own_prefixes or ('\0',)))
        assert own == delta, key


def test_rows_share_the_trunk_weights_and_modules_of_a_seed():
    trunk = build_row_model(ROW['none'], CFG, 3).state_dict()
    other_seed = build_row_model(ROW['none'], CFG, 4).state_dict()
    assert not torch.equal(trunk['blocks.0.attn.qkv.weight'], other_seed['blocks.0.attn.qkv.weight'])
    trunk_types = {n: type(m).__name__ for n, m in build_row_model(ROW['none'], CFG, 3).named_modules()}
    for row in ROWS:
        model = build_row_model(row, CFG, 3)
        state = model.state_dict()
        assert set(state) - set(trunk) == {k for k in state if k.startswith(row.own_prefixes or ('\0',))}
        assert set(trunk) <= set(state), row.key
        for k, v in trunk.items():
            assert torch.equal(state[k], v), (row.key, k)
        types = {n: type(m).__name__ for n, m in model.named_modules()}
        differing = {n for n in trunk_types if types.get(n) != trunk_types[n]}
        # what may differ: the model class, the blocks (RoPE's take the rotary table), their attention, the
        # patch embedding class (COPE's checks the input size; same parameters)
        allowed = {'', 'patch_embed'} | {f'blocks.{i}' for i in range(CFG.depth)} | {
            f'blocks.{i}.attn' for i in range(CFG.depth)}
        assert differing <= allowed, (row.key, differing - allowed)
        attn = type(model.blocks[0].attn)
        assert attn is (AttentionRope if row.key == 'rope' else Attention), row.key


def _moved(model, row):
    """The model with its encoding's parameters moved away from their (small) init, as training would."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith(row.own_prefixes or ('\0',)):
                p.add_(0.5 * torch.randn_like(p))
    return model


def _patch_shuffled(x, grid, patch):
    """The image with its patches permuted (a fixed derangement of the grid cells)."""
    b, c = x.shape[:2]
    cells = x.reshape(b, c, grid, patch, grid, patch).permute(0, 1, 2, 4, 3, 5).reshape(b, c, grid * grid, patch, patch)
    perm = torch.roll(torch.arange(grid * grid), 5)
    cells = cells[:, :, perm]
    return cells.reshape(b, c, grid, grid, patch, patch).permute(0, 1, 2, 4, 3, 5).reshape(x.shape)


@pytest.mark.parametrize('key', [row.key for row in ROWS])
def test_only_the_encodings_see_where_a_patch_is(key):
    torch.manual_seed(0)
    x = torch.randn(3, 1, CFG.img_size, CFG.img_size)
    model = _moved(build_row_model(ROW[key], CFG, 0), ROW[key]).eval()
    with torch.no_grad():
        same = model(x)
        shuffled = model(_patch_shuffled(x, GRID, CFG.patch_size))
    if key == 'none':
        torch.testing.assert_close(shuffled, same, rtol=0, atol=1e-6)
    else:  # logits are ~0.05 at init (timm's head init): a change of 1e-4 is 100x the no-PE row's rounding
        assert (shuffled - same).abs().max() > 1e-4, key


def test_extrapolation_runs_on_the_doubled_grid_in_each_way():
    torch.manual_seed(0)
    x = torch.randn(6, 1, CFG.img_size, CFG.img_size)
    y = torch.zeros(6, dtype=torch.long)
    big_tokens = (2 * GRID) ** 2 + 1
    for row in ROWS:
        trained = _moved(build_row_model(row, CFG, 0), row)
        logits = {}
        for way, extra in row.resize_ways.items():
            model = build_row_model(row, CFG, 0, extra)
            model.load_state_dict(trained.state_dict(), strict=True)
            _, tokens = evaluate(model, x, y, 2 * CFG.img_size)
            assert tokens == big_tokens, (row.key, way)
            _, tokens = evaluate(model, x, y, CFG.img_size)
            assert tokens == TOKENS, (row.key, way)
            with torch.no_grad():
                logits[way] = (model(x), model(torch.nn.functional.interpolate(x, scale_factor=2.0)))
        if len(logits) == 2:
            # at the training grid the way does not matter; at the doubled grid it does
            torch.testing.assert_close(logits['interpolated'][0], logits['extrapolated'][0])
            assert (logits['interpolated'][1] - logits['extrapolated'][1]).abs().max() > 1e-4, row.key


def _quadrant_task(n, size, generator):
    """Class = the quadrant holding a bright patch-aligned square: every image is a patch permutation of the
    others, so a model that cannot see positions predicts one class for all of them."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    x = 0.1 * torch.randn(n, 1, size, size, generator=generator)
    half = size // 2
    for i, q in enumerate(labels.tolist()):
        r, c = divmod(q, 2)
        x[i, :, r * half:r * half + 4, c * half:c * half + 4] += 3.0
    return x, labels


def test_the_study_tells_a_position_encoding_from_none():
    g = torch.Generator().manual_seed(0)
    train_x, train_y = _quadrant_task(256, CFG.img_size, g)
    test_x, test_y = _quadrant_task(200, CFG.img_size, g)
    cfg = StudyConfig(**{**CFG.__dict__, 'depth': 1, 'epochs': 8, 'lr': 1e-2, 'seeds': (0, 1),
                         'rows': ['none', 'cope_sum']})
    lines = []
    records = pe_study.run_study(cfg, train_x, train_y, test_x, test_y, log=lines.append)
    assert len(records) == 4 and [json.loads(s) for s in lines] == records
    top1 = {(r['row'], r['seed']): r['top1'] for r in records}
    majority = 100.0 * max((test_y == c).sum().item() for c in range(4)) / len(test_y)
    for seed in (0, 1):
        # blind to position: one class for every image, whatever the training did
        assert top1[('none', seed)] <= majority + 1e-6
    assert (top1[('cope_sum', 0)] + top1[('cope_sum', 1)]) / 2 > 80
    for r in records:
        assert r['tokens'] == TOKENS and r['tokens_interpolated'] == (2 * GRID) ** 2 + 1
        assert ('top1_extrapolated' in r) == (r['row'] == 'cope_sum')
        assert r['params'] - (r['row'] == 'cope_sum') * 2 * TOKENS * CFG.embed_dim == records[0]['params']
    table = pe_study.markdown_table(pe_study.summarize(records), cfg)
    assert '16 px (4×4)' in table and '32 px (8×8), interpolated' in table
    assert table.count('\n') == 3  # header, rule, two rows


def test_summary_applies_the_spread_rule():
    recs = [{'row': 'learned', 'seed': s, 'params': 1, 'top1': v} for s, v in enumerate([70.0, 71.0, 72.0])]
    recs += [{'row': 'cope_sum', 'seed': s, 'params': 2, 'top1': v} for s, v in enumerate([74.0, 75.0, 76.0])]
    recs += [{'row': 'rope', 'seed': s, 'params': 1, 'top1': v} for s, v in enumerate([71.0, 73.0, 75.0])]
    summary = {e['row']: e for e in pe_study.summarize(recs)}
    assert summary['cope_sum']['top1_delta'] == pytest.approx(4.0)
    assert summary['cope_sum']['top1_verdict'] == 'outside'  # 4 > 1 + 1
    assert summary['rope']['top1_verdict'] == 'inside'  # 2 <= 2 + 1
    assert 'top1_delta' not in summary['learned']
