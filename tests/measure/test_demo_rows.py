""" The demo's training table: rows from the model catalog, several seeds, differences judged against the spread.
No training here (the quadrant task itself is tested in test_cli.py). """
import pytest

from timm_posembed.commands.demo import _training_cells
from timm_posembed.measure.demo import DEMO_MODELS, NO_POSITION, DemoRun, training_rows
from timm_posembed.models import model_info


def test_rows_pair_each_model_with_its_catalog_baseline():
    rows = training_rows()
    labels = [r.label for r in rows]
    assert labels == ['vit_tiny_cope', 'vit_tiny_patch16_224', "vit_tiny_patch16_224(pos_embed=none)",
                      'vit_tiny_supertoken_conv', 'coat_lite_clustering', 'coat_lite_tiny']
    by_key = {r.key: r for r in rows}
    for name in DEMO_MODELS:
        ours = next(r for r in rows if r.model == name)
        assert by_key[ours.compared_with].model == model_info(name).baseline  # the catalog's, not a second list
    control = next(r for r in rows if r.model_kwargs == NO_POSITION)
    assert by_key[control.compared_with].label == 'vit_tiny_patch16_224'


def test_rows_follow_the_catalog(monkeypatch):
    import dataclasses
    import timm_posembed.models as models
    real = models.model_info
    moved = lambda name: real(name) if name != 'vit_tiny_supertoken_conv' else dataclasses.replace(  # noqa: E731
        real(name), baseline='vit_small_patch16_224')
    monkeypatch.setattr(models, 'model_info', moved)
    rows = training_rows()
    st = next(r for r in rows if r.model == 'vit_tiny_supertoken_conv')
    assert st.compared_with == ('vit_small_patch16_224', ())
    assert any(r.model == 'vit_small_patch16_224' for r in rows)


def _runs(row, accuracies):
    row.runs = [DemoRun(row.label, 5_000_000, 2.0, 0.5, a, seed=s) for s, a in enumerate(accuracies)]


@pytest.mark.parametrize('ours, baseline, expected', [
    ([0.90, 0.92], [0.60, 0.62], '+30.0 points (outside the spread)'),
    ([0.70, 0.80], [0.68, 0.76], '+3.0 points (inside the spread)'),
    ([0.90], [0.60], '+30.0 points (one seed: no spread)'),
])
def test_cells_state_whether_a_difference_is_within_the_spread(ours, baseline, expected):
    rows = training_rows()
    cope, learned = rows[0], rows[1]
    _runs(cope, ours)
    _runs(learned, baseline)
    cells = _training_cells(cope, rows)
    assert cells[1] == 'vit_tiny_patch16_224' and cells[-1] == expected
    assert cells[4] == ', '.join(f'{a:.1%}' for a in ours)
    assert _training_cells(learned, rows)[1:2] == ('(timm baseline)',)
