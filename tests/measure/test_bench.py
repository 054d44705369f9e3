""" ``timm-posembed bench`` on a tiny configuration (ViT-Tiny at 32 px, batch 2, CPU). """
import json

import pytest
import timm
import torch

from timm_posembed.measure import bench
from timm_posembed.cli import main
from timm_posembed.models import list_model_info

TINY = dict(device='cpu', batch_size=2, img_size=32, num_warmup=1, num_iters=1)


def test_cli_bench_model_beside_its_baseline(tmp_path, capsys):
    out_json, out_md = tmp_path / 'bench.json', tmp_path / 'bench.md'
    rc = main(['bench', '--models', 'vit_tiny_cope', '--device', 'cpu', '--img-size', '32', '-b', '2',
               '--warmup', '1', '--iters', '1', '--json', str(out_json), '--markdown', str(out_md)])
    assert rc == 0
    data = json.loads(out_json.read_text())
    assert data['environment']['settings']['img_size'] == 32 and data['environment']['timm'] == timm.__version__
    baseline, ours = data['results']
    assert (baseline['model'], baseline['baseline']) == ('vit_tiny_patch16_224', None)
    assert (ours['model'], ours['baseline']) == ('vit_tiny_cope', 'vit_tiny_patch16_224')
    for r in (baseline, ours):
        model = timm.create_model(r['model'], img_size=32, num_classes=1000)
        expected_params = sum(p.numel() for p in model.parameters())
        assert r['params'] == expected_params and r['input_size'] == [3, 32, 32]
        assert r['gmacs'] > 0 and r['infer_img_s'] > 0 and r['train_img_s'] > 0 and r['error'] is None
        assert r['infer_peak_mib'] is None  # peak memory is measured on CUDA only
    # COPE adds one (tokens x dim) table: 5 tokens at 32 px, width 192
    assert ours['params'] - baseline['params'] == 5 * 192
    table = out_md.read_text()
    assert table in capsys.readouterr().out + '\n'
    row = next(line for line in table.splitlines() if line.startswith('| `vit_tiny_cope`'))
    ratio = float(row.split('|')[7])
    assert ratio == pytest.approx(ours['infer_img_s'] / baseline['infer_img_s'], abs=0.01)


def test_selection_puts_each_baseline_before_its_models():
    entries = bench.select_models()
    names = [e['model'] for e in entries]
    infos = list_model_info()
    assert len(names) == len(set(names))
    for info in infos:
        assert names.index(info.baseline) < names.index(info.name)
        assert entries[names.index(info.name)]['baseline'] == info.baseline
    assert [e['model'] for e in bench.select_models(['vit_*_cope'], with_baselines=False)] == [
        'vit_base_cope', 'vit_small_cope', 'vit_tiny_cope']  # one group per baseline, in catalog order
    with pytest.raises(ValueError, match='matches no model'):
        bench.select_models(['no_such_model*'])


def test_model_kwargs_go_to_our_models_only_and_errors_are_recorded():
    cfg = bench.BenchConfig(train=False, **TINY)
    # cope_fuse is ours; timm's ViT would reject it with a TypeError
    results = bench.run_bench(cfg, ['vit_tiny_cope'], model_kwargs={'cope_fuse': 'real'})
    assert [(r.model, r.model_kwargs, r.error) for r in results] == [
        ('vit_tiny_patch16_224', {}, None), ('vit_tiny_cope', {'cope_fuse': 'real'}, None)]
    failed = bench.bench_model('vit_tiny_cope', cfg, no_such_kwarg=1)
    assert failed.error.startswith('TypeError') and failed.infer_img_s is None
    assert 'error: TypeError' in bench.format_markdown([failed], cfg)


def test_bf16_channels_last_on_cpu():
    cfg = bench.BenchConfig(precision='bf16', channels_last=True, **TINY)
    result = bench.bench_model('vit_tiny_cope', cfg)
    assert result.error is None and result.infer_img_s > 0 and result.train_img_s > 0


def test_cli_bench_rejects_unknown_models_and_cuda_without_gpu(capsys, monkeypatch):
    assert main(['bench', '--models', 'nope_*', '--device', 'cpu']) == 2
    assert 'matches no model of timm_posembed' in capsys.readouterr().err
    monkeypatch.setattr('torch.cuda.is_available', lambda: False)
    assert main(['bench', '--models', 'vit_tiny_cope', '--device', 'cuda']) == 2
    assert 'use --device cpu' in capsys.readouterr().err


@pytest.mark.parametrize('option, value, message', [
    ('-b', '0', 'argument -b/--batch-size: expected an integer >= 1, got 0'),
    ('--batch-size', '-3', 'argument -b/--batch-size: expected an integer >= 1, got -3'),
    ('--iters', '0', 'argument --iters: expected an integer >= 1, got 0'),
    ('--warmup', '-1', 'argument --warmup: expected an integer >= 0, got -1'),
    ('--img-size', '0', 'argument --img-size: expected an integer >= 1, got 0'),
    ('--num-classes', '-1', 'argument --num-classes: expected an integer >= 0, got -1'),
    ('--iters', 'ten', "argument --iters: expected an integer >= 1, got 'ten'"),
])
def test_cli_bench_rejects_non_positive_counts_before_any_work(capsys, monkeypatch, option, value, message):
    monkeypatch.setattr(bench, 'run_bench', _must_not_run)
    with pytest.raises(SystemExit) as e:
        main(['bench', '--models', 'vit_tiny_cope', '--device', 'cpu', option, value])
    assert e.value.code == 2 and message in capsys.readouterr().err


def _must_not_run(*args, **kwargs):
    raise AssertionError('bench measured although its arguments are invalid')


def test_cli_bench_checks_output_paths_before_measuring(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, 'run_bench', _must_not_run)
    a_file = tmp_path / 'notes.txt'
    a_file.write_text('x')
    base = ['bench', '--models', 'vit_tiny_cope', '--device', 'cpu']
    cases = [
        (['--json', str(tmp_path / 'missing' / 'b.json')], f'--json {tmp_path / "missing" / "b.json"}: the folder '
                                                           f'{tmp_path / "missing"} does not exist'),
        (['--json', str(a_file / 'b.json')], f'the folder {a_file} is a file, not a folder'),
        (['--markdown', str(tmp_path)], f'--markdown {tmp_path} is a folder; give a file path, e.g. '
                                        f'{tmp_path / "bench.md"}'),
        (['--num-classes', '0'], '--num-classes 0 (no classifier) measures inference only: add --no-train'),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert a_file.read_text() == 'x'


@pytest.mark.parametrize('model_name', ['vit_tiny_cope', 'vit_small_supertoken_conv', 'vit_small_conv_embed',
                                        'coat_lite_clustering', 'naflexvit_tiny_patch16_cope'])
def test_model_input_size_fallback_for_older_timm_agrees_with_timm(model_name, monkeypatch):
    # timm < 1.0.31 has no resolve_input_data_config; the fallback reads the embedding's img_size and channels.
    import timm.data
    from timm_posembed.measure.complexity import model_input_size
    kwargs = {} if 'naflex' in model_name else dict(img_size=64, in_chans=1)
    with torch.device('meta'):
        model = timm.create_model(model_name, num_classes=10, **kwargs)
    expected = (1, 64, 64) if kwargs else (3, 224, 224)
    if hasattr(timm.data, 'resolve_input_data_config'):
        assert model_input_size(model) == expected
        monkeypatch.delattr(timm.data, 'resolve_input_data_config')
    assert model_input_size(model) == expected
