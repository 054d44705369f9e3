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


# --- the output folder: publish replaces only what it wrote, checked at the moment it replaces it ---

def _listing(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob('*'))


def test_overwrite_never_replaces_a_folder_publish_did_not_write(run, tmp_path, capsys):
    mine = tmp_path / 'documents'
    (mine / 'keys').mkdir(parents=True)
    (mine / 'keys' / 'id_rsa').write_text('secret')
    (mine / 'notes.txt').write_text('mine')
    assert publish(run, mine, '--overwrite') == 2
    err = capsys.readouterr().err
    assert 'publish did not write' in err and ("'keys'" in err or "'notes.txt'" in err), err
    assert _listing(mine) == ['keys', 'keys/id_rsa', 'notes.txt']

    out = tmp_path / 'hub'
    assert publish(run, out) == 0
    (out / 'notes.txt').write_text('added by hand')  # a previous output with one file more is not ours any more
    assert publish(run, out, '--overwrite') == 2
    assert "holds the file 'notes.txt', which publish did not write" in capsys.readouterr().err
    (out / 'notes.txt').unlink()
    (out / 'README.md').write_text('edited')
    assert publish(run, out) == 2 and 'previous publish output' in capsys.readouterr().err
    assert publish(run, out, '--overwrite') == 0
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert (out / 'README.md').read_text() != 'edited'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []


def _during_write(monkeypatch, action):
    """Run ``action()`` while publish writes its weights (after every check on --out, before the move)."""
    import timm_posembed.hub.publish as publish_module
    real_save = publish_module.save_safetensors
    calls = []

    def save(*args, **kwargs):
        real_save(*args, **kwargs)
        if not calls:
            calls.append(1)
            action()

    monkeypatch.setattr(publish_module, 'save_safetensors', save)
    return calls


@pytest.mark.parametrize('appears', ['empty folder', 'folder with a file'])
def test_folder_created_at_out_while_publishing_is_kept(run, tmp_path, capsys, monkeypatch, appears):
    out = tmp_path / 'hub'

    def create():
        out.mkdir()
        if appears != 'empty folder':
            (out / 'theirs.txt').write_text('theirs')

    _during_write(monkeypatch, create)
    assert publish(run, out) == 2
    err = capsys.readouterr().err
    assert f'--out {out} was created or filled by something else' in err and len(err.strip().splitlines()) == 1
    assert _listing(out) == ([] if appears == 'empty folder' else ['theirs.txt'])
    assert [p.name for p in tmp_path.iterdir()] == ['hub'], 'staging folder left behind'


def test_two_publishes_to_one_out_exactly_one_wins(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / 'hub'
    second = []
    _during_write(monkeypatch, lambda: second.append(publish(run, out, '--label-names', str(labels))))
    labels = tmp_path / 'labels.txt'
    labels.write_text('a\nb\nc\n')
    assert publish(run, out) == 2  # the first one finishes second: it must not replace the other's folder
    assert second == [0]
    assert 'created or filled by something else' in capsys.readouterr().err
    import json
    assert json.loads((out / 'config.json').read_text())['label_names'] == ['a', 'b', 'c']


def test_overwrite_checks_the_folder_again_when_it_replaces_it(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / 'hub'
    assert publish(run, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _during_write(monkeypatch, lambda: (out / 'added_meanwhile.txt').write_text('theirs'))
    assert publish(run, out, '--overwrite') == 2
    err = capsys.readouterr().err
    assert "holds the file 'added_meanwhile.txt', which publish did not write" in err and 'left as it was' in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == dict(before, **{'added_meanwhile.txt': b'theirs'})
    assert [p.name for p in tmp_path.iterdir()] == ['hub']


def test_unwritable_or_missing_destinations_are_one_line_errors(run, tmp_path, capsys, monkeypatch):
    import errno
    import timm_posembed.hub.publish as publish_module
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    for out in (a_file / 'hub', a_file / 'deeper' / 'hub'):
        assert publish(run, out) == 2
        err = capsys.readouterr().err
        assert f'--out {out}: {a_file} is a file, not a folder' in err and len(err.strip().splitlines()) == 1, err

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[1]))

    out = tmp_path / 'new' / 'folders' / 'hub'  # publish makes missing parents, and removes them when it fails
    monkeypatch.setattr(publish_module, 'save_safetensors', full)
    assert publish(run, out) == 2
    err = capsys.readouterr().err
    assert f'--out {out}: writing' in err and 'No space left on device' in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file']
    out = tmp_path / 'hub'

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get('dir'))

    monkeypatch.setattr(publish_module.tempfile, 'mkdtemp', read_only)
    assert publish(run, out) == 2
    err = capsys.readouterr().err
    assert f'cannot create a folder in {tmp_path} (Read-only file system)' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file']


# --- what a checkpoint records must not reach the card or create_model unchecked ---

def _with_args(run, tmp_path, name, **changes):
    with torch.serialization.safe_globals([argparse.Namespace]):
        good = torch.load(str(run['ckpt']), weights_only=True, map_location='cpu')
    ckpt = tmp_path / name
    torch.save(dict(good, args=argparse.Namespace(**dict(vars(good['args']), **changes))), str(ckpt))
    return ckpt


HOSTILE_TEXT = 'x"\n---\nlicense: "other"\n<script>alert(1)</script> [a](http://evil) `c`'


def test_card_text_from_a_checkpoint_or_the_command_line_cannot_inject(run, tmp_path, capsys):
    import yaml
    from timm_posembed.hub.cards import HubCardFacts, markdown_text, render_hub_readme
    from timm_posembed.hub.card_format import load_model_cards
    out = tmp_path / 'hub'
    ckpt = _with_args(run, tmp_path, 'recorded.pth.tar', dataset='hfds/' + HOSTILE_TEXT)
    assert cli_main(['publish', str(ckpt), '--model', MODEL, '--tag', 'test', '--out', str(out), '--cards',
                     str(run['cards']), '--dry-run']) == 2
    err = capsys.readouterr().err
    assert f'{ckpt}: train.py recorded dataset' in err and 'is not a Hub dataset id' in err and '--dataset' in err
    for dataset in (HOSTILE_TEXT, 'a\nb', '---', 'a"b', '<script>'):
        assert publish(run, out, f'--dataset={dataset}') == 2
        assert '--dataset' in capsys.readouterr().err
    assert not out.exists()

    # whatever reaches the renderer, the front matter parses to exactly its fields and the text stays text
    card = load_model_cards(run['cards'])[MODEL]
    stats = pytest.importorskip('timm_posembed.measure.complexity').measure_model(MODEL, img_size=32, num_classes=3)
    facts = HubCardFacts(model_name=f'{MODEL}.test', repo_id='org/x', create_name='hf-hub:org/x',
                         license=HOSTILE_TEXT, datasets=[HOSTILE_TEXT], stats=stats, weights_note=HOSTILE_TEXT,
                         extra_details={HOSTILE_TEXT: HOSTILE_TEXT})
    readme = render_hub_readme(card, facts)
    head, rest = readme[4:].split('\n---\n', 1)
    front = yaml.safe_load(head)
    assert front['license'] == HOSTILE_TEXT and front['datasets'] == [HOSTILE_TEXT] and len(front) == 5
    assert '<script>' not in rest and '[a](http' not in rest and '\n---\nlicense' not in rest
    assert f'- **Weights:** {markdown_text(HOSTILE_TEXT)}\n' in rest and '&lt;script&gt;' in rest


def test_recorded_kwargs_that_are_not_architecture_are_refused_by_name(run, tmp_path, capsys):
    fifo = tmp_path / 'fifo'
    os.mkfifo(fifo)  # opening it would block forever: publish must refuse before it
    ckpt = _with_args(run, tmp_path, 'kwargs.pth.tar', model_kwargs={'checkpoint_path': str(fifo), 'pretrained': True,
                                                                     'img_size': 32})
    start = time.monotonic()
    assert publish(run, tmp_path / 'hub', checkpoint=ckpt) == 2
    err = capsys.readouterr().err
    assert f'{ckpt}: train.py recorded model_kwargs checkpoint_path, pretrained: not architecture arguments' in err
    assert time.monotonic() - start < 20
    assert publish(run, tmp_path / 'hub', '--model-kwargs', 'pretrained_cfg_overlay={}') == 2
    assert '--model-kwargs pretrained_cfg_overlay: not architecture arguments' in capsys.readouterr().err
    ckpt = _with_args(run, tmp_path, 'gp.pth.tar', gp='bogus')
    assert publish(run, tmp_path / 'hub', checkpoint=ckpt) == 2
    err = capsys.readouterr().err
    assert "cannot build vit_tiny_cope with" in err and "'global_pool': 'bogus'" in err


def test_a_recorded_huge_img_size_fails_on_shapes_before_allocating(run, tmp_path, capsys):
    import resource
    ckpt = _with_args(run, tmp_path, 'huge.pth.tar', img_size=40000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert publish(run, tmp_path / 'hub', checkpoint=ckpt) == 2
    err = capsys.readouterr().err
    assert 'cope.freq (1, 5, 192) vs (1, 6250001, 192)' in err, err
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mib < 500, f'{grown_mib:.0f} MiB allocated for a model that was refused'


def test_weights_of_another_kind_of_number_are_refused_by_name(run, tmp_path, capsys):
    sd = dict(run['state_dict'])
    sd['head.weight'] = sd['head.weight'].to(torch.complex64) * (1 + 1j)
    sd['head.bias'] = sd['head.bias'].to(torch.int64)
    sd['norm.weight'] = sd['norm.weight'] > 0
    ckpt = tmp_path / 'kinds.pth'
    torch.save(sd, str(ckpt))
    assert publish(run, tmp_path / 'hub', '--model-kwargs', 'img_size=32', checkpoint=ckpt) == 2
    err = capsys.readouterr().err
    assert '3 tensor(s) hold another kind of number' in err
    assert 'head.weight (torch.complex64, the model torch.float32)' in err
    assert 'head.bias (torch.int64' in err and 'norm.weight (torch.bool' in err


def test_damaged_or_foreign_checkpoint_files_are_named_for_what_they_are(run, tmp_path):
    import io
    import zipfile
    cases = {
        'notes.pth': (b'these are my notes\n', 'is not a PyTorch checkpoint nor a safetensors file'),
        'r.pth': (b'r' + bytes(range(256)) * 4, 'is not a PyTorch checkpoint nor a safetensors file'),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PublishError) as info:
            read_checkpoint(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)) and expected in str(info.value)
        assert 'arbitrary code' not in str(info.value)

    torch.save({1: torch.ones(1), (2, 3): torch.ones(1)}, str(tmp_path / 'int_keys.pth'))
    with pytest.raises(PublishError, match=r"int_keys.pth: 'state dict' has keys that are not parameter names: "
                                           r"\[1, \(2, 3\)\]"):
        read_checkpoint(tmp_path / 'int_keys.pth')

    sd = {'weird\nkey <b>': torch.ones(1), 'x' * 100_000: torch.ones(1), 'fine': torch.ones(1)}
    torch.save(sd, str(tmp_path / 'odd_keys.pth'))
    with pytest.raises(PublishError) as info:
        read_checkpoint(tmp_path / 'odd_keys.pth')
    msg = str(info.value)
    assert 'keys that are not parameter names' in msg and "'weird\\nkey <b>'" in msg
    assert '\n' not in msg and len(msg) < 400

    buffer = io.BytesIO()  # a torch zip re-compressed with deflate: 8 MB of zeros in a few KB
    torch.save({'w': torch.zeros(2 ** 21)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(tmp_path / 'bomb.pth', 'w', zipfile.ZIP_DEFLATED) as dst:
        for member in src.infolist():
            dst.writestr(member.filename, src.read(member))
    assert (tmp_path / 'bomb.pth').stat().st_size < 100_000
    with pytest.raises(PublishError, match=r'bomb.pth is a zip archive of \d+ bytes whose \d+ members expand to'):
        read_checkpoint(tmp_path / 'bomb.pth')


def test_truncated_weights_file_given_to_create_model_is_named(tmp_path):
    from timm_posembed.models import PretrainedWeightsUnavailableError
    model = timm.create_model(MODEL, img_size=32, num_classes=3)
    weights = tmp_path / 'cut.safetensors'
    safetensors.torch.save_file(model.state_dict(), str(weights))
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(PretrainedWeightsUnavailableError, match=rf"local file/folder '{weights}'.*SafetensorError"):
        timm.create_model(MODEL, pretrained=True, img_size=32, num_classes=3,
                          pretrained_cfg_overlay=dict(file=str(weights)))


def test_repo_id_names_the_tag(run, tmp_path, capsys):
    assert cli_main(['publish', str(run['ckpt']), '--model', MODEL, '--repo-id', f'someone/{MODEL}.mine_in1k',
                     '--dataset', 'none', '--out', str(tmp_path / 'hub'), '--cards', str(run['cards']),
                     '--dry-run']) == 0
    assert f'model {MODEL}.mine_in1k' in capsys.readouterr().out
    assert cli_main(['publish', str(run['ckpt']), '--model', MODEL, '--repo-id', f'someone/{MODEL}.Mine',
                     '--dataset', 'none', '--out', str(tmp_path / 'hub2'), '--dry-run']) == 2
    assert "--repo-id someone/vit_tiny_cope.Mine: its tag 'Mine' is not a pretrained tag" in capsys.readouterr().err


def test_label_files_split_on_newlines_only_and_repeats_are_named(tmp_path):
    from timm_posembed.hub.label_names import resolve_label_names
    labels = tmp_path / 'labels.txt'
    labels.write_text('cat\u2028kitten\ndog\r\nbird\n', encoding='utf-8')
    names, _ = resolve_label_names(3, labels)
    assert names == ['cat\u2028kitten', 'dog', 'bird']
    labels.write_text('same\n' * 200)
    with pytest.raises(PublishError, match="labels.txt: all 200 names are 'same'"):
        resolve_label_names(200, labels)
    deep = tmp_path / 'deep.json'
    deep.write_text('[' * 100_000 + ']' * 100_000)
    with pytest.raises(PublishError, match='deep.json: JSON nested too deep'):
        resolve_label_names(1, deep)
    labels.write_text('crane\nmaillot\ncrane\nother\n')
    names, source = resolve_label_names(4, labels)
    assert names[2] == 'crane' and "1 names repeat: 'crane' x2" in source


def test_cards_file_that_is_not_text_is_named(tmp_path, capsys):
    binary = tmp_path / 'cards.bin'
    binary.write_bytes(bytes(range(256)) * 8)
    assert cli_main(['card', MODEL, '--cards', str(binary)]) == 1
    err = capsys.readouterr().err
    assert f'model cards file {binary} is not UTF-8 text' in err and len(err.strip().splitlines()) == 1


def test_hub_weights_without_network_fail_at_once_saying_why(monkeypatch, tmp_path):
    import errno
    import socket
    import huggingface_hub.constants
    from timm_posembed.models import PretrainedWeightsUnavailableError

    def no_network(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))

    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path))
    for var in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, 'create_connection', no_network)
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailableError) as info:
        timm.create_model(MODEL, pretrained=True)
    assert time.monotonic() - start < 5, 'retried instead of failing at once'
    msg = str(info.value)
    assert 'huggingface.co:443 cannot be reached (Network is unreachable)' in msg
    assert 'HF_HUB_OFFLINE=1 makes it fail at once' in msg


def test_card_refuses_a_repo_id_that_would_land_in_its_code(capsys):
    assert cli_main(['card', MODEL, '--repo-id', "evil/x')<script>"]) == 1
    err = capsys.readouterr()
    assert "--repo-id \"evil/x')<script>\" is not a valid Hub repo id" in err.err and err.out == ''


def test_train_input_size_becomes_model_kwargs_also_on_timm_without_the_resolver(monkeypatch):
    # timm < 1.0.31 has no resolve_model_input_args: the channels still reach the model, explicit kwargs stay.
    import timm.models
    from timm_posembed.hub.checkpoints import _input_model_kwargs
    request = {'input_size': [1, 64, 64], 'img_size': None, 'in_chans': None}
    kwargs = {'img_size': 64, 'num_classes': 10}
    if hasattr(timm.models, 'resolve_model_input_args'):
        assert _input_model_kwargs('vit_tiny_cope', request, kwargs) == {'img_size': 64, 'num_classes': 10,
                                                                         'in_chans': 1}
        monkeypatch.delattr(timm.models, 'resolve_model_input_args')
    assert _input_model_kwargs('vit_tiny_cope', request, kwargs) == {'img_size': 64, 'num_classes': 10,
                                                                     'in_chans': 1}
