""" ``timm-posembed report`` and the paper tables it fills, on synthetic train.py output folders
(``args.yaml`` + ``summary.csv`` written the way timm's train.py writes them). """
import inspect
import json
import math
from pathlib import Path

import pytest
import timm
import torch

from timm_posembed.cli import main
from timm_posembed.reproduce.tables import load_paper_tables, paper_table
from timm_posembed.measure.seed_spread import spread_verdict
from timm_posembed.reproduce.report import format_table_report, match_table
from timm_posembed.reproduce.runs import RunFormatError, load_run, load_runs

from train_runs import SUMMARY_HEADER, write_run


ST = 'vit_small_supertoken_conv'


def st_kwargs(n_iter=3, num_conv_modules=6, extra=False):
    return {'stoken_num_conv_modules': num_conv_modules, 'stoken_extra_stride2_conv': extra, 'stoken_num_iters': n_iter}


def test_load_run_best_last_and_resumed_epochs(tmp_path):
    run = write_run(tmp_path, 'r', ST, [10.0, 30.0, 20.0], epochs=5)
    with (run / 'summary.csv').open('a') as f:  # a resumed run repeats epoch 2: the later line counts
        f.write('2,2.5,1.5,25.0,35.0,0.001\n')
    loaded = load_run(run)
    assert (loaded.epochs_done, loaded.epochs_planned, loaded.complete) == (3, 5, False)
    assert (loaded.best_top1, loaded.last_top1) == (30.0, 25.0)


def test_table8_places_each_run_in_its_row(tmp_path):
    for t, top1 in ((1, 80.0), (2, 81.0), (3, 83.0), (4, 82.0)):
        write_run(tmp_path, f't{t}', ST, [top1 - 5, top1], model_kwargs=st_kwargs(n_iter=t), epochs=2)
    write_run(tmp_path, 'other_ablation', ST, [50.0], model_kwargs=dict(st_kwargs(), stoken_grad_through_assoc=True))
    write_run(tmp_path, 'other_dataset', ST, [50.0], model_kwargs=st_kwargs(), num_classes=200)
    report = match_table(paper_table('stoken-in100-iterations'), load_runs([tmp_path]), count_params=False)
    got = {r.row.id: r.top1()[0] for r in report.rows}
    assert got == {'t1': 80.0, 't2': 81.0, 't3': 83.0, 't4': 82.0}
    assert sorted(r.path.name for r in report.unmatched) == ['other_ablation', 'other_dataset']

    text = format_table_report(report)
    t1_line = next(line for line in text.splitlines() if line.startswith('| t = 1 |'))
    cells = [c.strip() for c in t1_line.strip('|').split('|')]
    # row, model, paper, ours, delta, ours last, epochs, runs, paper params, ours params, paper img/s
    assert cells[2:8] == ['82.96', '80.00', '-2.96', '80.00', '2/2', '1']
    assert cells[10] == '766'
    assert 'not in this table: `' in text and 'other_ablation' in text


def test_table6_epochs_and_seeds(tmp_path):
    write_run(tmp_path, 'patch_s1', 'vit_small_patch16_224', [70.0, 78.0], seed=1)
    write_run(tmp_path, 'patch_s2', 'vit_small_patch16_224', [70.0, 79.0], seed=2)
    write_run(tmp_path, 'patch_500', 'vit_small_patch16_224', [79.5], epochs=500)  # unfinished 500-epoch run
    report = match_table(paper_table('stoken-in100-embeddings'), load_runs([tmp_path]), count_params=False)
    rows = {r.row.id: r for r in report.rows}
    mean, std = rows['patch'].top1()
    assert mean == pytest.approx(78.5) and std == pytest.approx(0.7071, abs=1e-4)
    assert [r.path.name for r in rows['patch_500ep'].runs] == ['patch_500']
    assert rows['conv'].runs == [] and rows['conv'].top1() == (None, None)
    records = json.loads(format_table_report(report, 'json'))['rows']
    patch_500 = next(r for r in records if r['row'] == 'patch_500ep')
    assert (patch_500['epochs_done'], patch_500['epochs_planned']) == (1, 500)
    assert '1/500 (unfinished)' in format_table_report(report)
    assert '78.50 ± 0.71' in format_table_report(report)


def test_coat_rows_are_told_apart_by_dataset_and_attention(tmp_path):
    write_run(tmp_path, 'soft_tiny', 'coat_lite_clustering', [40.0], {'cluster_attn': 'softmax'}, num_classes=200)
    write_run(tmp_path, 'fact_in100', 'coat_lite_clustering', [70.0], {'cluster_attn': 'factorized'})
    runs = load_runs([tmp_path])
    tiny = {r.row.id: len(r.runs) for r in match_table(paper_table('clustering-coat-tiny-imagenet'), runs, False).rows}
    in100 = {r.row.id: len(r.runs) for r in match_table(paper_table('clustering-coat-in100'), runs, False).rows}
    assert tiny == {'coat_lite_tiny': 0, 'clustering_factorized': 0, 'clustering_softmax': 1}
    assert in100 == {'coat_lite_tiny': 0, 'clustering_factorized': 1, 'clustering_softmax': 0}


def test_our_parameter_counts_beside_the_papers(tmp_path):
    # Kim & Cho's counts are exact and are timm's ViT-Tiny/16 and ours at 200 classes.
    report = match_table(paper_table('cope-tiny-imagenet'), [], count_params=True)
    assert {r.row.id: (r.params, r.row.paper_numbers['params']) for r in report.rows} == {
        'learnable_pe': (5_563_016, 5_563_016), 'cope': (5_600_840, 5_600_840)}
    assert '| 5,600,840 | 5,600,840 |' in format_table_report(report)


def _has_kwarg(model_name: str, kwarg: str) -> bool:
    with torch.device('meta'):
        model = timm.create_model(model_name, num_classes=10)
    return any(kwarg in inspect.signature(c.__init__).parameters for c in type(model).__mro__ if '__init__' in vars(c))


_ROW_CONFIGS = sorted({(row.model, repr(sorted(row.model_kwargs.items())), table.num_classes)
                       for table in load_paper_tables().values() for row in table.rows})


@pytest.mark.parametrize('model_name, kwargs_repr, num_classes', _ROW_CONFIGS)
def test_every_table_row_builds_with_its_kwargs(model_name, kwargs_repr, num_classes):
    # A row whose model or kwargs timm cannot build would only fail hours into a GPU run.
    kwargs = dict(eval(kwargs_repr))  # noqa: S307 (our own repr of literals)
    if 'cope_positions' in kwargs and not _has_kwarg(model_name, 'cope_positions'):
        pytest.skip('cope_positions (COPE grid positions) is not in this checkout\'s COPE ViT yet')
    with torch.device('meta'):
        model = timm.create_model(model_name, num_classes=num_classes, **kwargs)
    assert model.num_classes == num_classes, (model_name, kwargs)


def test_a_row_kwarg_that_timm_create_model_would_drop_is_refused():
    # timm.create_model drops None-valued kwargs: `init_values: null` on an Eva row used to train Eva's default
    # layer scale while the table said "no layer scale".
    from timm_posembed.reproduce.tables import _parse_table
    raw = {'title': 't', 'paper': 'cope_vit', 'dataset': 'tiny-imagenet', 'recipe': 'tiny_imagenet.yaml',
           'rows': [{'id': 'rope', 'label': 'RoPE', 'model': 'vit_small_patch16_rope_224',
                     'model_kwargs': {'embed_dim': 192, 'init_values': None}}]}
    with pytest.raises(ValueError, match=r"row 'rope': model_kwargs \['init_values'\] are None"):
        _parse_table('t', raw)
    for table in load_paper_tables().values():
        assert all(v is not None for row in table.rows for v in row.model_kwargs.values()), table.id


def test_paper_tables_does_not_import_the_dataset_preparation():
    # The tables, the report and the run launcher know nothing of dataset layouts (their imports, read statically);
    # the dataset facts (class counts) are all they may read from the data package.
    import ast
    import timm_posembed
    package = Path(timm_posembed.__file__).parent
    for module in ('tables.py', 'report.py', 'runs.py', 'launch.py'):
        tree = ast.parse((package / 'reproduce' / module).read_text())
        # the data package as `..data.X` from reproduce/, or absolutely
        imported = {f'timm_posembed.{n.module}' for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.level == 2 and n.module}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        layout = {m for m in imported if m.startswith('timm_posembed.data') and m != 'timm_posembed.data.dataset_facts'}
        assert not layout, module


def test_truncated_last_summary_line_is_skipped_with_a_warning(tmp_path):
    run = write_run(tmp_path, 'r', ST, [10.0, 30.0], epochs=5)
    with (run / 'summary.csv').open('a') as f:
        f.write('2,2.5,1.5,4')  # train.py killed (or still writing) mid-line: no newline, fields missing
    with pytest.warns(UserWarning, match=r'summary.csv:4: skipping a partial last line'):
        loaded = load_run(run)
    assert (loaded.epochs_done, loaded.best_top1, loaded.last_top1) == (2, 30.0, 30.0)
    # a last line with all its fields but no newline yet is as partial (top-1 "4" may be "45.2" a moment later)
    (run / 'summary.csv').write_text(SUMMARY_HEADER + '\n0,3.0,2.0,10.0,20.0,0.001\n1,2.9,1.9,40.0,50.0,0.001')
    with pytest.warns(UserWarning, match='partial last line'):
        assert load_run(run).epochs_done == 1
    # the same damage before the last line is a corrupt file, not a run in progress
    (run / 'summary.csv').write_text(SUMMARY_HEADER + '\n0,3.0,2.0\n1,2.9,1.9,40.0,50.0,0.001\n')
    with pytest.raises(RunFormatError, match='summary.csv:2: not a numeric summary row'):
        load_run(run)


def test_cli_report_survives_a_run_being_written(tmp_path, capsys):
    run = write_run(tmp_path, 'r', ST, [10.0, 30.0], model_kwargs=st_kwargs(n_iter=1), epochs=4)
    with (run / 'summary.csv').open('a') as f:
        f.write('2,2.5')
    with pytest.warns(UserWarning, match='partial last line'):
        assert main(['report', str(tmp_path), '--table', 'stoken-in100-iterations', '--no-params']) == 0
    assert '| t = 1 | `vit_small_supertoken_conv`' in capsys.readouterr().out


@pytest.mark.parametrize('top1s', [[math.nan, 30.0, 20.0], [20.0, math.nan, 30.0], [30.0, 20.0, math.nan]])
def test_nan_epoch_is_never_the_best(tmp_path, top1s):
    loaded = load_run(write_run(tmp_path, 'r', ST, top1s))
    assert loaded.best_top1 == 30.0
    assert math.isnan(load_run(write_run(tmp_path, 'all_nan', ST, [math.nan])).best_top1)


def _seed_runs(root, name, model, top1s, model_kwargs=None, num_classes=200, **kwargs):
    for seed, top1 in enumerate(top1s):
        write_run(root, f'{name}_s{seed}', model, [top1 - 10, top1], model_kwargs=model_kwargs, seed=seed,
                  num_classes=num_classes, **kwargs)


def test_seeds_are_aggregated_and_differences_judged_against_the_spread(tmp_path):
    _seed_runs(tmp_path, 'learned', 'vit_tiny_patch16_224', [30.0, 31.0, 32.0])  # 31 ± 1
    _seed_runs(tmp_path, 'cope', 'vit_tiny_cope', [33.5, 34.0, 34.5])  # 34 ± 0.5: |Δ| 3 > 1.5, outside
    _seed_runs(tmp_path, 'real', 'vit_tiny_cope', [31.0, 32.0, 33.0], {'cope_fuse': 'real'})  # 32 ± 1: inside
    _seed_runs(tmp_path, 'additive', 'vit_tiny_cope', [40.0], {'cope_mode': 'additive'})  # one run: no spread
    report = match_table(paper_table('cope-tiny-imagenet-extended'), load_runs([tmp_path]), count_params=False)
    rows = {r.row.id: r for r in report.rows}
    assert rows['learned'].top1() == (pytest.approx(31.0), pytest.approx(1.0))
    assert len(rows['cope_sum'].runs) == 3 and report.baseline is rows['learned']
    base = rows['learned'].top1_values()
    assert spread_verdict(rows['cope_sum'].top1_values(), base) == 'outside'
    assert spread_verdict(rows['cope_real'].top1_values(), base) == 'inside'
    assert spread_verdict(rows['cope_additive'].top1_values(), base) is None
    assert spread_verdict([1.0, 3.0], [3.5, 5.5]) == 'inside'  # |Δ| 2.5 < std 1.41 + 1.41
    assert spread_verdict([1.0, 3.0], [4.0, 6.0]) == 'outside'  # |Δ| 3 > 2.83
    text = format_table_report(report)
    cells = {line.split('|')[1].strip(): [c.strip() for c in line.strip('|').split('|')] for line in text.splitlines()
             if line.startswith('| ViT-Tiny')}
    assert cells['ViT-Tiny/16, COPE (sum, the paper\'s)'][2:5] == ['34.00', '34.00 ± 0.50', '+0.00']
    assert cells['ViT-Tiny/16, COPE (sum, the paper\'s)'][-1] == '+3.00 (outside the spread)'
    assert cells['ViT-Tiny/16, COPE (real part only)'][-1] == '+1.00 (inside the spread)'
    assert cells['ViT-Tiny/16, COPE (additive)'][-1] == '+9.00 (no spread (n < 2))'
    assert cells['ViT-Tiny/16, learnable PE (timm\'s)'][-1] == '(baseline)'
    assert cells['ViT-Tiny/16, learnable PE (timm\'s)'][7] == '3'  # n
    record = next(r for r in json.loads(format_table_report(report, 'json'))['rows'] if r['row'] == 'cope_sum')
    assert record['seeds'] == [0, 1, 2] and record['vs_baseline_spread'] == 'outside'


def test_runs_of_a_smaller_study_recipe_are_placed_but_never_compared_with_the_paper(tmp_path):
    # e.g. Fashion-MNIST at 32 px: the recipe gives every row img_size=32 and has 10 classes
    study = {'img_size': 32}
    _seed_runs(tmp_path, 'learned', 'vit_tiny_patch16_224', [60.0, 62.0], {'img_size': 32}, num_classes=10)
    _seed_runs(tmp_path, 'grid', 'vit_tiny_cope', [61.0, 63.0], {'img_size': 32, 'cope_positions': 'grid'},
               num_classes=10)
    _seed_runs(tmp_path, 'paper_size', 'vit_tiny_patch16_224', [30.0])  # 200 classes, no img_size: not this study
    runs = load_runs([tmp_path])
    table = paper_table('cope-tiny-imagenet-extended')
    report = match_table(table, runs, count_params=False, num_classes=10, recipe_kwargs=study)
    rows = {r.row.id: len(r.runs) for r in report.rows}
    assert rows['learned'] == 2 and rows['cope_grid'] == 2 and [r.path.name for r in report.unmatched] == [
        'paper_size_s0']
    text = format_table_report(report)
    assert "Our runs are not the paper's setting" in text and 'img_size=32' in text
    learned = next(line for line in text.splitlines() if line.startswith('| ViT-Tiny/16, learnable PE'))
    assert [c.strip() for c in learned.strip('|').split('|')][2:5] == ['32.20', '61.00 ± 1.41', '—']
    # the paper-size table does not take the study's runs
    assert sum(len(r.runs) for r in match_table(table, runs, count_params=False).rows) == 1


def test_params_of_a_row_that_cannot_be_built_are_reported_not_raised(tmp_path):
    report = match_table(paper_table('cope-tiny-imagenet-extended'), [], count_params=True, num_classes=10,
                         recipe_kwargs={'img_size': 32})
    rows = {r.row.id: r for r in report.rows}
    assert rows['rope_axial'].params is not None and rows['none'].params < rows['learned'].params
    if not _has_kwarg('vit_tiny_cope', 'cope_positions'):
        assert rows['cope_grid'].params is None and 'cope_positions' in rows['cope_grid'].params_error
        assert 'cope_grid: parameters not counted' in format_table_report(report)


@pytest.mark.parametrize('breakage, message', [
    (lambda run: (run / 'args.yaml').unlink(), 'has no args.yaml'),
    (lambda run: (run / 'args.yaml').write_text('model: [unclosed'), 'is not valid YAML'),
    (lambda run: (run / 'summary.csv').write_text('epoch,train_loss,eval_loss\n0,1.0,1.0\n'),
     "lacks columns \\['eval_top1'\\]"),
    (lambda run: (run / 'summary.csv').write_text(SUMMARY_HEADER + '\n0,1.0,1.0,x,1,1\n'),
     'not a numeric summary row'),
    (lambda run: (run / 'summary.csv').write_text(SUMMARY_HEADER + '\n'), 'has no epochs yet'),
])
def test_malformed_runs_say_what_is_wrong(tmp_path, breakage, message):
    run = write_run(tmp_path, 'r', ST, [1.0])
    breakage(run)
    with pytest.raises(RunFormatError, match=message):
        load_run(run)


def test_cli_report_table_and_plot(tmp_path, capsys):
    from PIL import Image
    for t in (1, 3):
        write_run(tmp_path / 'runs', f't{t}', ST, [40.0, 60.0 + t, 70.0 + t], model_kwargs=st_kwargs(n_iter=t))
    png = tmp_path / 'fig3.png'
    assert main(['report', str(tmp_path / 'runs'), '--table', 'stoken-in100-iterations', '--no-params',
                 '--plot', str(png)]) == 0
    out = capsys.readouterr().out
    assert '### Super-token conv embedding paper, table 8' in out and '| t = 3 (proposed) |' in out and '73.00' in out
    with Image.open(png) as image:
        assert image.format == 'PNG' and image.size == (1440, 540)

    assert main(['report', str(tmp_path / 'runs'), '--format', 'csv']) == 0  # no table: one line per run
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith('model,model_kwargs,baseline,best_top1') and len(lines) == 3

    (tmp_path / 'empty').mkdir()
    assert main(['report', str(tmp_path / 'empty'), '--table', 'stoken-in100-iterations']) == 2
    assert 'no summary.csv and no sub-folder with one' in capsys.readouterr().err
