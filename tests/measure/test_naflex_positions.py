""" The NaFlex position-embedding study: its batches are timm's NaFlex layout, its models differ only in the
position embedding, and a tiny run reports every size. """
import gzip

import pytest
import torch
from timm.models.naflexvit import batch_patchify

from dataset_trees import write_idx_files
from timm_posembed.measure.naflex_positions import (
    EVAL_SIZES, TRAIN_SIZES, VARIANTS, create_variant, format_table, naflex_batch, run_study,
)


def test_batch_packs_each_image_at_its_size_with_padding_after():
    images = torch.randn(3, 1, 28, 28)
    sizes = [(16, 24), (8, 8), (24, 16)]
    batch = naflex_batch(images, sizes, patch_size=8)
    assert batch['patches'].shape == (3, 6, 64) and batch['patch_valid'].sum(1).tolist() == [6, 1, 6]
    for i, size in enumerate(sizes):
        alone, grid = batch_patchify(torch.nn.functional.interpolate(
            images[i:i + 1], size=size, mode='bilinear', align_corners=False), (8, 8))
        n = grid[0] * grid[1]
        torch.testing.assert_close(batch['patches'][i, :n], alone[0])
        assert (batch['patch_coord'][i, :n].amax(0) + 1).tolist() == list(grid)
        assert batch['patch_coord'][i, :n].tolist() == [[r, c] for r in range(grid[0]) for c in range(grid[1])]
        assert not batch['patch_valid'][i, n:].any() and (batch['patches'][i, n:] == 0).all()


def test_variants_differ_only_in_their_position_tables():
    dim, grid = 16, (3, 4)
    counts = {label: sum(p.numel() for p in create_variant(name, dict(kw), dim, 2, 2, 8, grid).parameters())
              for label, name, kw in VARIANTS}
    rope = counts['timm axial RoPE']  # no table: RoPE has no learnable parameters
    cells = grid[0] * grid[1]
    assert counts['timm learned pos_embed'] - rope == cells * dim
    assert counts['timm factorized pos_embed'] - rope == (grid[0] + grid[1]) * dim
    for label, _, _ in VARIANTS[:2]:  # COPE: a frequency and a phase table, the class token's row included
        assert counts[label] - rope == 2 * (1 + cells) * dim


def test_tiny_study_reports_every_size_and_marks_the_untrained_ones(tmp_path):
    raw = tmp_path / 'FashionMNIST' / 'raw'
    for split, n in (('train', 40), ('val', 20)):
        write_idx_files(tmp_path / 'gz', split, [k % 10 for k in range(n)])
    raw.mkdir(parents=True)
    for path in (tmp_path / 'gz').iterdir():
        (raw / path.name.removesuffix('.gz')).write_bytes(gzip.decompress(path.read_bytes()))
    rows = run_study(str(tmp_path), limit=32, test_limit=20, epochs=1, batch_size=16, lr=1e-3, embed_dim=16,
                     depth=1, num_heads=2, patch_size=8, seed=0, variants=VARIANTS[:1])
    assert len(rows) == 1 and rows[0]['model'] == 'naflexvit_tiny_patch16_cope'
    names = [f'{h}x{w}' for h, w in EVAL_SIZES]
    assert all(0.0 <= rows[0][n] <= 1.0 for n in names)
    table = format_table(rows)
    header = table.splitlines()[0]
    assert all(f'{h}x{w} |' in header for h, w in TRAIN_SIZES)
    assert all(f'{h}x{w} * |' in header for h, w in EVAL_SIZES if (h, w) not in TRAIN_SIZES)


def test_cli_names_the_variants_for_an_unknown_one(tmp_path, capsys):
    from timm_posembed.measure.naflex_positions import main
    with pytest.raises(SystemExit):
        main(['--data-dir', str(tmp_path), '--only', '9'])
    assert '--only takes variant numbers 0..4: 0 = COPE' in capsys.readouterr().err
