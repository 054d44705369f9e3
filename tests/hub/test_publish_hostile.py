""" ``publish`` on untrusted inputs: checkpoints from other people's runs, the paths they recorded, and an output
folder chosen carelessly. Each case must end in one clear error (or a safe result), never a hang, a deleted input, a
half-written folder or a broken model on the Hub. Everything runs on generated files: a 32 px ``vit_tiny_cope``.
"""
import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from timm_posembed.cli import main as cli_main
from timm_posembed.hub.checkpoints import PublishError, read_checkpoint

MODEL = 'vit_tiny_cope'
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A train.py-style checkpoint of a 32 px, 3-class model, and a cards file for it."""
    root = tmp_path_factory.mktemp('hostile')
    model = timm.create_model(MODEL, img_size=32, num_classes=3)
    args = argparse.Namespace(model=MODEL, num_classes=3, img_size=32, input_size=None, in_chans=None, gp=None,
                              model_kwargs={}, dataset='', data_dir='', train_split='train', class_map='')
    (root / 'train').mkdir()
    ckpt = root / 'train' / 'model_best.pth.tar'
    torch.save({'epoch': 0, 'arch': MODEL, 'state_dict': model.state_dict(), 'args': args}, str(ckpt))
    cards = root / 'MODEL_CARDS.md'
    cards.write_text(textwrap.dedent(f'''\
        <!-- card: {MODEL} -->
        ## COPE ViT
        ### Description
        A test card.
        ### Papers
        - A paper
        ### Recipe
        Two steps.
        ### Results
        #### Paper's numbers
        None.
        #### Our numbers
        None.
        ### Limitations
        A test.
        ### Citation
        ```bibtex
        @misc{{x, title={{x}}}}
        ```
        '''))
    return dict(root=root, ckpt=ckpt, cards=cards, state_dict=model.state_dict())


def publish(run, out, *extra, checkpoint=None):
    return cli_main(['publish', str(checkpoint or run['ckpt']), '--model', MODEL, '--tag', 'test', '--dataset',
                     'none', '--out', str(out), '--cards', str(run['cards']), '--dry-run', *extra])


def test_nonfinite_weights_are_refused_by_name(run, tmp_path, capsys):
    sd = {k: v.clone() for k, v in run['state_dict'].items()}
    sd['blocks.3.attn.qkv.weight'][0, :2] = float('nan')
    sd['head.bias'][1] = float('inf')
    weights = tmp_path / 'diverged.safetensors'
    safetensors.torch.save_file(sd, str(weights))
    out = tmp_path / 'hub'
    assert publish(run, out, '--model-kwargs', 'img_size=32', checkpoint=weights) == 2
    err = capsys.readouterr().err
    assert 'blocks.3.attn.qkv.weight (2 of' in err and 'head.bias (1 of 3 values)' in err and '--allow-nonfinite' in err
    assert not out.exists()
    assert publish(run, out, '--model-kwargs', 'img_size=32', '--allow-nonfinite', checkpoint=weights) == 0


def test_out_holding_the_checkpoint_or_the_current_folder_is_refused(run, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    ckpt = run_dir / 'model_best.pth.tar'
    ckpt.write_bytes(run['ckpt'].read_bytes())
    (run_dir / 'summary.csv').write_text('epoch\n0\n')
    assert publish(run, run_dir, '--overwrite', checkpoint=ckpt) == 2
    err = capsys.readouterr().err
    assert f'--out {run_dir} contains the input {ckpt}' in err and 'never deletes' in err
    assert ckpt.read_bytes() == run['ckpt'].read_bytes() and (run_dir / 'summary.csv').exists()

    monkeypatch.chdir(run_dir)
    for out in ('.', str(tmp_path)):
        assert publish(run, out, '--overwrite', checkpoint=run['ckpt']) == 2
        err = capsys.readouterr().err
        assert 'is the current folder or one above it' in err and f'--out {MODEL}.test' in err
    assert sorted(p.name for p in run_dir.iterdir()) == ['model_best.pth.tar', 'summary.csv']


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, '-c', ''])
    proc.wait()
    return proc.pid


def test_stale_staging_of_a_killed_run_is_removed_and_nothing_else(run, tmp_path, capsys):
    out = tmp_path / 'hub'
    stale = tmp_path / f'.hub.partial.{_dead_pid()}.abc_1234'
    live = tmp_path / f'.hub.partial.{os.getpid()}.abc_1234'
    foreign = tmp_path / f'.hub.partial.{_dead_pid()}.def_5678'  # same name pattern, but holds a file of someone's
    for folder in (stale, live, foreign):
        folder.mkdir()
        (folder / 'model.safetensors').write_bytes(b'\0' * 10)
    (foreign / 'notes.txt').write_text('mine')
    assert publish(run, out) == 0
    assert not stale.exists() and f'removed {stale}' in capsys.readouterr().out
    assert live.exists() and (foreign / 'notes.txt').read_text() == 'mine'


SIGTERM_DURING_WRITE = r'''
import sys, time
import timm_posembed.hub.publish as publish
from timm_posembed.cli import main

def slow_save(tensors, path, metadata=None):
    with open(path, 'wb') as f:
        f.write(b'\0' * 1000)  # a partial weights file, as a killed run leaves it
    print('writing', flush=True)
    time.sleep(120)

publish.save_safetensors = slow_save
sys.exit(main(sys.argv[1:]))
'''


def test_sigterm_while_writing_removes_the_staging_folder(run, tmp_path):
    out = tmp_path / 'hub'
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.Popen(
        [sys.executable, '-c', SIGTERM_DURING_WRITE, 'publish', str(run['ckpt']), '--model', MODEL, '--tag', 'test',
         '--dataset', 'none', '--out', str(out), '--cards', str(run['cards']), '--dry-run'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.stdout.readline().strip() != 'writing':
            assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith('.hub')], 'staging folder left behind'


def test_checkpoint_files_are_read_for_what_they_hold(run, tmp_path):
    weights = tmp_path / 'w.safetensors'
    safetensors.torch.save_file({'a': torch.ones(2)}, str(weights))
    renamed = tmp_path / 'model_best.pth.tar'  # a safetensors file under a checkpoint's name
    renamed.write_bytes(weights.read_bytes())
    ckpt = read_checkpoint(renamed)
    assert ckpt.weights == 'safetensors' and torch.equal(ckpt.state_dict['a'], torch.ones(2))
    pickled = tmp_path / 'really_a_checkpoint.safetensors'  # and the reverse
    pickled.write_bytes(run['ckpt'].read_bytes())
    assert read_checkpoint(pickled).weights == 'state_dict'

    cases = {
        'empty.pth.tar': (b'', 'is empty (0 bytes)'),
        'empty.safetensors': (b'', 'is empty (0 bytes)'),
        'cut.safetensors': (weights.read_bytes()[:-5], 'is not a readable safetensors file'),
        'cut.pth.tar': (run['ckpt'].read_bytes()[:5000], 'is not a readable PyTorch checkpoint'),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PublishError) as info:
            read_checkpoint(tmp_path / name)
        msg = str(info.value)
        assert msg.startswith(str(tmp_path / name)) and expected in msg, msg
        assert 'arbitrary code' not in msg and len(msg.splitlines()) <= 2
    torch.save([torch.ones(1)], str(tmp_path / 'list.pth.tar'))
    with pytest.raises(PublishError, match=r'list.pth.tar holds a list, not a checkpoint: expected a train.py '
                                           r'checkpoint \(a dict with state_dict\) or a state dict'):
        read_checkpoint(tmp_path / 'list.pth.tar')


LABEL_LOOKUP = r'''
import json, sys
from timm_posembed.hub.label_names import resolve_label_names
args = json.loads(sys.argv[1])
print(json.dumps(resolve_label_names(args.pop('num_classes'), train_args=args)))
'''


def _lookup(**train_args):
    """resolve_label_names in a child process with a time limit: a walk without bound must fail, not hang CI."""
    import json
    proc = subprocess.run([sys.executable, '-c', LABEL_LOOKUP, json.dumps(train_args)], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_label_lookup_stays_in_the_expected_layout(tmp_path):
    data = tmp_path / 'data'
    train = data / 'train'
    for name in ('c1', 'c2'):
        (train / name).mkdir(parents=True)
        (train / name / 'a.jpg').write_bytes(b'')
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'x.jpg').write_bytes(b'')
    (train / 'c3').symlink_to(outside)  # a class folder that is a link out of the dataset
    for i in range(3):  # link loops inside class folders: a recursive walk that follows links never ends
        (train / 'c1' / f'loop{i}').symlink_to('..')
    names, reason = _lookup(num_classes=3, data_dir=str(data), dataset='')
    assert names is None and 'links leading out of it' in reason and 'c3' in reason
    (train / 'c3').unlink()
    (train / 'c3').mkdir()
    (train / 'c3' / 'b.png').write_bytes(b'')
    assert _lookup(num_classes=3, data_dir=str(data), dataset='')[0] == ['c1', 'c2', 'c3']
    # a checkpoint recording data_dir='/' (or a split that climbs out) gives no names, quickly
    assert _lookup(num_classes=3, data_dir='/', dataset='')[0] is None
    assert _lookup(num_classes=3, data_dir=str(data), dataset='', train_split='../..')[0] is None


def test_label_file_that_is_not_utf8_is_named(tmp_path):
    from timm_posembed.hub.label_names import resolve_label_names
    labels = tmp_path / 'labels.txt'
    labels.write_bytes(b'cat\n\xff\xfedog\n')
    with pytest.raises(PublishError, match=r'labels.txt is not UTF-8 text .* expected one class name per line'):
        resolve_label_names(2, labels)


def test_recorded_train_args_of_the_wrong_type_are_named(run, tmp_path, capsys):
    from timm_posembed.hub.label_names import resolve_label_names
    with torch.serialization.safe_globals([argparse.Namespace]):
        good = torch.load(str(run['ckpt']), weights_only=True, map_location='cpu')
    for field, value, expected in (('model_kwargs', [1, 2], 'recorded model_kwargs [1, 2], expected KEY=VALUE'),
                                   ('num_classes', 'abc', "recorded num_classes='abc', expected a class count")):
        ckpt = tmp_path / f'{field}.pth.tar'
        torch.save(dict(good, args=argparse.Namespace(**dict(vars(good['args']), **{field: value}))), str(ckpt))
        assert publish(run, tmp_path / 'hub', checkpoint=ckpt) == 2
        assert f'{ckpt}: train.py {expected}' in capsys.readouterr().err
    assert resolve_label_names(3, train_args={'data_dir': 123, 'dataset': ''}) == (
        None, 'not recorded (pass --label-names FILE)')
    with pytest.raises(PublishError, match='/dev/null: not a regular file'):
        resolve_label_names(3, '/dev/null')
