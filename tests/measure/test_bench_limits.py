""" ``timm-posembed bench`` against sizes that cannot fit and outputs that cannot be written: refused before any
allocation, or ended with one line naming the path, the previous file kept. """
import errno
import json
import os

import pytest

from timm_posembed.cli import main
from timm_posembed.measure import bench

GIB = 1 << 30
TINY = dict(device='cpu', batch_size=2, img_size=32, num_warmup=0, num_iters=1, train=False)


def _must_not_build(*args, **kwargs):
    raise AssertionError('bench built a model although the batch cannot fit')


@pytest.mark.parametrize('extra, message', [
    (['-b', '100000'], '-b 100000 input images of 3x224x224 (fp32) alone need at least 56.1 GiB, more than the '
                       '8.0 GiB available on cpu; lower -b/--batch-size or --img-size'),
    (['--img-size', '100000'], '-b 64 input images of 3x100000x100000 (fp32) alone need at least 7,152.6 GiB'),
])
def test_a_batch_larger_than_memory_is_refused_before_any_model_is_built(capsys, monkeypatch, extra, message):
    monkeypatch.setattr(bench, 'available_memory', lambda device: 8 * GIB, raising=False)
    monkeypatch.setattr(bench, '_prepare', _must_not_build)
    assert main(['bench', '--models', 'vit_tiny_cope', 'coat_lite_clustering', '--device', 'cpu'] + extra) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_model_estimated_beyond_memory_is_refused_before_it_is_allocated(monkeypatch):
    monkeypatch.setattr(bench, 'available_memory', lambda device: GIB)
    created, create_model = [], bench.timm.create_model

    def create_on_meta_only(*args, **kwargs):  # complexity counts on the meta device; a real model must not come
        if bench.torch.empty(0).device.type != 'meta':
            created.append(args)
            _must_not_build()
        return create_model(*args, **kwargs)

    monkeypatch.setattr(bench.timm, 'create_model', create_on_meta_only)
    # 512 training images at 224 px: ~12 GiB of stored activations for ViT-Tiny alone
    cfg = bench.BenchConfig(device='cpu', batch_size=512, num_warmup=0, num_iters=1)
    result = bench.bench_model('vit_tiny_cope', cfg)
    assert result.error.startswith('MemoryError: batch 512 at 3x224x224 (training) need about ')
    assert 'more than the 1.0 GiB available on cpu' in result.error and '--skip-memory-check' in result.error
    assert not created and result.infer_img_s is None


def test_the_estimate_counts_inputs_weights_and_training_state():
    cfg = bench.BenchConfig(device='cpu', batch_size=8)
    inputs = 8 * 3 * 32 * 32 * 4
    assert bench.memory_needed(cfg, params=1000, activations=100, input_size=(3, 32, 32)) == (
        inputs + 3 * 1000 * 4 + 8 * 100 * 4)
    inference = bench.BenchConfig(device='cpu', batch_size=8, train=False)
    assert bench.memory_needed(inference, params=1000, activations=100, input_size=(3, 32, 32)) == inputs + 4000
    bf16 = bench.BenchConfig(device='cpu', batch_size=8, precision='bf16')
    assert bench.memory_needed(bf16, params=1000, activations=100, input_size=(3, 32, 32)) == (
        inputs + 3 * 1000 * 4 + 8 * 100 * 2)
    assert 0 < bench.available_memory(bench.torch.device('cpu'))


def test_skip_memory_check_lets_a_model_beyond_the_estimate_run(monkeypatch):
    monkeypatch.setattr(bench, 'available_memory', lambda device: 1)
    assert bench.bench_model('vit_tiny_cope', bench.BenchConfig(**TINY)).error.startswith('MemoryError')
    result = bench.bench_model('vit_tiny_cope', bench.BenchConfig(**TINY, check_memory=False))
    assert result.error is None and result.infer_img_s > 0


def _fake_run_bench(cfg, patterns, with_baselines, model_kwargs, progress=None):
    results = [bench.BenchResult(model='vit_tiny_cope', baseline=None, model_kwargs={}, input_size=[3, 32, 32],
                                 params=1, gmacs=0.1, infer_img_s=10.0)]
    for r in results:
        progress(r)
    return results


@pytest.mark.parametrize('option, name', [('--json', 'bench.json'), ('--markdown', 'bench.md')])
@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EROFS])
def test_output_on_a_full_or_read_only_disk_names_the_path_and_keeps_the_old_file(tmp_path, capsys, monkeypatch,
                                                                                  option, name, code):
    monkeypatch.setattr(bench, 'run_bench', _fake_run_bench)
    out = tmp_path / name
    out.write_text(json.dumps({'previous': 'run'}))

    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, 'replace', failing_replace)
    assert main(['bench', '--models', 'vit_tiny_cope', '--device', 'cpu', '--no-train', option, str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == 'vit_tiny_cope: 10 img/s inference' and len(err) == 2  # the progress line, then the error
    assert err[1] == (f'timm-posembed bench: error: {option} {out}: cannot write it: {os.strerror(code)} '
                           f'({errno.errorcode[code]}); nothing was written (a previous file there is unchanged)')
    assert json.loads(out.read_text()) == {'previous': 'run'}
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no staging file left


def test_an_output_path_that_is_a_fifo_is_refused_not_replaced(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, 'run_bench', _fake_run_bench)
    fifo = tmp_path / 'bench.json'
    os.mkfifo(fifo)
    assert main(['bench', '--models', 'vit_tiny_cope', '--device', 'cpu', '--json', str(fifo)]) == 2
    assert f'--json {fifo} is not a regular file' in capsys.readouterr().err
    assert not fifo.is_file() and fifo.exists()


@pytest.mark.parametrize('device', ['meta', 'foo', 'cpu:x'])
def test_a_device_bench_cannot_time_is_refused(capsys, monkeypatch, device):
    monkeypatch.setattr(bench, '_prepare', _must_not_build)
    assert main(['bench', '--models', 'vit_tiny_cope', '--device', device]) == 2
    assert f"timm-posembed bench: error: device must be cpu or cuda[:N], got '{device}'" in capsys.readouterr().err
