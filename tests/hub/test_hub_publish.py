""" Publishing weights to the Hugging Face Hub and loading them back with ``pretrained=True``, without a network.

The transport is simulated: nothing here talks to huggingface.co. ``timm-posembed publish --dry-run`` writes the repo
folder; the test lays that folder out the way huggingface_hub's cache holds a downloaded repo
(``models--ORG--NAME/refs/main``, ``blobs/``, ``snapshots/<sha>/...``), standing in for the Hub, and a fresh Python
process with ``HF_HUB_OFFLINE=1`` and every socket connection refused loads it through timm's own pretrained paths
(``NAME.TAG``, ``hf-hub:ORG/NAME.TAG``, ``local-dir:DIR``). The upload test replaces ``HfApi.create_repo`` /
``HfApi.upload_folder`` (huggingface_hub's network boundary) with recorders.

Time on one CPU core goes into building models (weight init), about ten builds per model. By default the round trip
and the offline "not published" error run for the first model each model module registers (one per family: every
code path, as a module's models share its ``_create_*`` helper); ``TIMM_POSEMBED_SLOW=1`` (set it in CI) runs them
for every registered model.
"""
import argparse
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import pytest
import safetensors.torch
import timm
import torch
from timm.models import get_pretrained_cfg
from timm.utils import CheckpointSaver, ModelEmaV3

from conftest import first_registered_per_module
from hf_hub_cache import seed_hf_cache
from timm_posembed.cli import main as cli_main
from timm_posembed.models import HF_HUB_ORG, hub_id, list_model_info

MODEL_NAMES = [info.name for info in list_model_info()]
SMALL_IMG_SIZE = 64  # fast on one core; every model here runs at it (coat_lite_clustering* do not at 32)
RUN_SLOW = bool(os.environ.get('TIMM_POSEMBED_SLOW'))


ROUND_TRIP_MODELS = MODEL_NAMES if RUN_SLOW else first_registered_per_module(MODEL_NAMES)


def synthetic_cards(models: List[str]) -> str:
    """A well-formed MODEL_CARDS.md covering ``models``, so these tests do not depend on the real cards' progress
    (tests/test_model_cards.py checks those)."""
    return textwrap.dedent(f'''\
        # cards for tests
        <!-- card: {" ".join(models)} -->
        ## Test card

        ### Description
        A model under test.

        ### Papers
        - A paper, 2020.

        ### Recipe
        `train.py --model NAME`

        ### Results
        #### Paper's numbers
        | model | top-1 |
        |---|---|
        | x | 1.0 |
        #### Our numbers
        none yet

        ### Limitations
        Tests only.

        ### Citation
        ```bibtex
        @article{{test2020, title={{Test}}}}
        ```
        ''')


def default_tag(arch: str) -> str:
    return get_pretrained_cfg(arch).tag


def train_and_save(arch: str, tag: str, img_size: int, ckpt_dir: Path, seed: int):
    """A couple of SGD steps with an EMA, saved by timm's CheckpointSaver exactly as train.py saves.
    Returns (model, ema_model)."""
    torch.manual_seed(seed)
    model = timm.create_model(f'{arch}.{tag}', img_size=img_size)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, img_size, img_size))  # fail here, clearly, if the size does not suit it
    ema = ModelEmaV3(model, decay=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(2, 3, img_size, img_size)
    y = torch.randint(0, model.num_classes, (2,))
    model.train()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
    # what train.py records (its argparse.Namespace), trimmed to the fields publish reads
    args = argparse.Namespace(
        model=arch, num_classes=model.num_classes, img_size=img_size, input_size=None, in_chans=None, gp=None,
        model_kwargs={}, dataset='', data_dir=str(ckpt_dir / 'no_such_data'), train_split='train', class_map='',
        lr=0.05, epochs=1,
    )
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(ckpt_dir),
                            recovery_dir=str(ckpt_dir), max_history=1)
    saver.save_checkpoint(epoch=0, metric=0.5)
    return model.eval(), ema.module.eval()


# Runs in a fresh interpreter: nothing imported or cached by the test process can help it.
FRESH_PROCESS_CHECKS = r'''
import json, socket, sys, traceback

def _refuse(*args, **kwargs):
    raise OSError('network access attempted in the offline round trip')
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse

import torch, timm, timm_posembed, safetensors.torch
from timm_posembed.models._builder import PretrainedWeightsUnavailableError

torch.set_num_threads(1)
manifest = json.load(open(sys.argv[1]))
results = {}

def same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)

for entry in manifest['models']:
    arch, name, kw = entry['arch'], entry['name'], entry['model_kwargs']
    ref = safetensors.torch.load_file(entry['reference'])
    x = ref['input']
    checks = {}

    def run(check, fn):
        try:
            fn()
            checks[check] = 'ok'
        except Exception:
            checks[check] = traceback.format_exc(limit=4)

    def logits_match(model_name, **kwargs):
        def fn():
            model = timm.create_model(model_name, pretrained=True, **kwargs).eval()
            with torch.no_grad():
                out = model(x)
            assert same(out, ref['logits']), f'{model_name}: outputs differ from the original model'
        return fn

    run('registry_name', logits_match(name, **kw, **entry['registry_kwargs']))
    run('hf_hub', logits_match('hf-hub:' + entry['repo_id']))
    run('local_dir', logits_match('local-dir:' + entry['folder']))

    def new_head():
        n = entry['num_classes'] + 3
        model = timm.create_model(name, pretrained=True, num_classes=n, **kw, **entry['registry_kwargs']).eval()
        with torch.no_grad():
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
            out = model(x)
        assert same(feats, ref['pre_logits']), 'trunk (pre-logits) differs from the original model'
        assert out.shape == (x.shape[0], n), f'logits shape {tuple(out.shape)}, expected {(x.shape[0], n)}'
    run('num_classes_changed', new_head)

    def features():
        model = timm.create_model(name, pretrained=True, features_only=True, **kw, **entry['registry_kwargs']).eval()
        with torch.no_grad():
            outs = model(x)
        n = sum(1 for k in ref if k.startswith('feature.'))
        assert len(outs) == n, f'{len(outs)} feature maps, expected {n}'
        for i, o in enumerate(outs):
            assert same(o, ref[f'feature.{i}']), f'feature map {i} differs from the original model'
    run('features_only', features)

    results[arch] = checks

for entry in manifest['unpublished']:
    # every model: with nothing published (an empty cache) and no network, pretrained=True must explain itself.
    # Built on the meta device: the weights are never reached, so the check costs no weight init.
    try:
        timm.create_model(entry['name'], pretrained=True, device='meta', cache_dir=manifest['empty_cache'])
    except PretrainedWeightsUnavailableError as e:
        msg = str(e)
        missing = [part for part in (entry['registered_hub_id'], repr(entry['tag']), 'benchmarks/',
                                     'pretrained_cfg_overlay=dict(file=', 'timm-posembed publish') if part not in msg]
        outcome = 'ok' if not missing else f'{missing} missing from the message: {msg}'
    except Exception:
        outcome = 'not the helpful error:\n' + traceback.format_exc(limit=3)
    else:
        outcome = 'pretrained=True with nothing published and no network did not raise'
    results.setdefault(entry['arch'], {})['unavailable_message'] = outcome

json.dump(results, open(sys.argv[2], 'w'))
'''


@pytest.fixture(scope='module')
def round_trip(tmp_path_factory) -> Dict[str, Any]:
    """Train, save, publish and cache each model in ROUND_TRIP_MODELS, then run FRESH_PROCESS_CHECKS once for all."""
    root = tmp_path_factory.mktemp('hub_round_trip')
    cards = root / 'MODEL_CARDS.md'
    cards.write_text(synthetic_cards(MODEL_NAMES))
    cache = root / 'hf_cache'
    empty_cache = root / 'empty_cache'
    empty_cache.mkdir()
    entries, published = [], {}
    for seed, arch in enumerate(ROUND_TRIP_MODELS):
        tag = default_tag(arch)
        size = SMALL_IMG_SIZE
        work = root / arch
        _, original = train_and_save(arch, tag, size, work / 'train', seed)
        repo_id = hub_id(arch, tag)
        folder = work / 'hub'
        rc = cli_main(['publish', str(work / 'train' / 'model_best.pth.tar'), '--model', arch, '--tag', tag,
                       '--repo-id', repo_id, '--out', str(folder), '--ema', '--dry-run', '--cards', str(cards)])
        assert rc == 0, f'publish --dry-run failed for {arch}'
        published[arch] = folder
        seed_hf_cache(cache, repo_id, {f.name: f.read_bytes() for f in sorted(folder.iterdir())})
        registered_hub_id = get_pretrained_cfg(f'{arch}.{tag}').hf_hub_id
        # NAME.TAG loads from the repo its cfg names. Where that is not ours (coat_lite_clustering* start from
        # timm's coat_lite repos), point the cfg at the repo we published to; the rest of the path is the same.
        registry_kwargs = {} if registered_hub_id == repo_id else {'pretrained_cfg_overlay': {'hf_hub_id': repo_id}}

        torch.manual_seed(1000 + seed)
        x = torch.randn(2, 3, size, size)
        reference_features = timm.create_model(
            f'{arch}.{tag}', pretrained=True, features_only=True, img_size=size,
            pretrained_cfg_overlay=dict(state_dict=original.state_dict())).eval()
        # The fresh process runs with one thread; so must the reference. Thread count changes float rounding, and
        # the clustering models' LSH buckets turn a last-bit difference into a different cluster.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                ref = {'input': x, 'logits': original(x),
                       'pre_logits': original.forward_head(original.forward_features(x), pre_logits=True)}
                ref.update({f'feature.{i}': f for i, f in enumerate(reference_features(x))})
        finally:
            torch.set_num_threads(threads)
        reference = work / 'reference.safetensors'
        safetensors.torch.save_file({k: v.contiguous() for k, v in ref.items()}, str(reference))
        entries.append(dict(arch=arch, tag=tag, name=f'{arch}.{tag}', repo_id=repo_id, registry_kwargs=registry_kwargs,
                            folder=str(folder), model_kwargs={'img_size': size}, num_classes=original.num_classes,
                            reference=str(reference)))
    unpublished = [dict(arch=a, tag=default_tag(a), name=f'{a}.{default_tag(a)}',
                        registered_hub_id=get_pretrained_cfg(f'{a}.{default_tag(a)}').hf_hub_id)
                   for a in ROUND_TRIP_MODELS]

    manifest = root / 'manifest.json'
    manifest.write_text(json.dumps({'models': entries, 'unpublished': unpublished, 'empty_cache': str(empty_cache)}))
    results_file = root / 'results.json'
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_HOME=str(root / 'hf_home'),
               TORCH_HOME=str(root / 'torch_home'), OMP_NUM_THREADS='1')
    env.pop('HF_TOKEN', None)
    proc = subprocess.run([sys.executable, '-c', FRESH_PROCESS_CHECKS, str(manifest), str(results_file)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f'fresh process failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return dict(results=json.loads(results_file.read_text()), published=published)


ROUND_TRIP_CHECKS = ('registry_name', 'hf_hub', 'local_dir', 'num_classes_changed', 'features_only')


@pytest.mark.parametrize('arch', MODEL_NAMES)
def test_offline_round_trip(round_trip, arch):
    if arch not in ROUND_TRIP_MODELS:
        pytest.skip('one model per family by default; TIMM_POSEMBED_SLOW=1 runs the round trip for every model')
    folder = round_trip['published'][arch]
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == arch
    for key in ('num_classes', 'num_features', 'global_pool', 'model_args', 'pretrained_cfg'):
        assert key in config, f'config.json lacks {key}'
    checks = round_trip['results'][arch]
    failed = {c: checks.get(c, 'not run') for c in ROUND_TRIP_CHECKS if checks.get(c) != 'ok'}
    assert not failed, '\n'.join(f'--- {c}:\n{msg}' for c, msg in failed.items())


@pytest.mark.parametrize('arch', MODEL_NAMES)
def test_offline_pretrained_without_published_weights_explains(round_trip, arch):
    if arch not in ROUND_TRIP_MODELS:
        # the error comes from the module's _create_* helper, shared by all its models: one per module covers it
        pytest.skip('one model per family by default; TIMM_POSEMBED_SLOW=1 checks every model')
    outcome = round_trip['results'][arch]['unavailable_message']
    assert outcome == 'ok', outcome


# --- smaller end-to-end pieces on vit_tiny_cope at 32 px: cheap to build, and every path is generic -------------

TINY = 'vit_tiny_cope'


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny')
    model, ema_model = train_and_save(TINY, default_tag(TINY), 32, root / 'train', seed=7)
    cards = root / 'MODEL_CARDS.md'
    cards.write_text(synthetic_cards([TINY]))
    return dict(root=root, ckpt=root / 'train' / 'model_best.pth.tar', cards=cards,
                state_dict=model.state_dict(), ema_state_dict=ema_model.state_dict())


def _publish(tiny, out, *extra, checkpoint=None, model=TINY):
    return cli_main(['publish', str(checkpoint or tiny['ckpt']), '--model', model, '--out', str(out),
                     '--cards', str(tiny['cards']), *extra])


def _assert_nothing_written(out: Path):
    assert not out.exists(), f'{out} was created by a refused publish'
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith('.' + out.name)]
    assert not leftovers, f'half-written staging folders left behind: {leftovers}'


def test_ema_flag_selects_the_weights(tiny_checkpoint, tmp_path):
    tiny = tiny_checkpoint
    assert _publish(tiny, tmp_path / 'plain', '--dry-run') == 0
    assert _publish(tiny, tmp_path / 'ema', '--dry-run', '--ema') == 0
    plain = safetensors.torch.load_file(str(tmp_path / 'plain' / 'model.safetensors'))
    ema = safetensors.torch.load_file(str(tmp_path / 'ema' / 'model.safetensors'))
    assert any(not torch.equal(tiny['state_dict'][k], tiny['ema_state_dict'][k]) for k in plain)
    assert all(torch.equal(plain[k], tiny['state_dict'][k]) for k in tiny['state_dict'])
    assert all(torch.equal(ema[k], tiny['ema_state_dict'][k]) for k in tiny['ema_state_dict'])


def test_readme_is_timm_card_format(tiny_checkpoint, tmp_path):
    tiny = tiny_checkpoint
    assert _publish(tiny, tmp_path / 'hub', '--dry-run', '--ema') == 0
    readme = (tmp_path / 'hub' / 'README.md').read_text()
    import yaml
    front = yaml.safe_load(readme.split('---\n')[1])
    assert front['library_name'] == 'timm' and front['license'] == 'apache-2.0'
    assert {'image-classification', 'timm', 'timm_posembed'} <= set(front['tags'])
    assert front['datasets'] == ['tiny-imagenet']
    for heading in ('# Model card for vit_tiny_cope.tiny_imagenet', '## Model Details', '## Model Usage',
                    '### Image Classification', '### Feature Map Extraction', '### Image Embeddings',
                    '## Training Recipe', '## Results', "### Paper's numbers", '### Our numbers',
                    '## Limitations', '## Citation', '```bibtex'):
        assert f'\n{heading}' in readme, f'{heading!r} missing'
    snippets = readme.split('```python')[1:]
    assert len(snippets) == 4 and all('import timm_posembed' in s.split('```')[0] for s in snippets)
    assert "pipeline('image-classification', model='timm-posembed/vit_tiny_cope.tiny_imagenet')" in snippets[3]
    # the published model was trained at 32 px, so only the hf-hub: name recreates it; the snippets must use it
    assert "timm.create_model('hf-hub:timm-posembed/vit_tiny_cope.tiny_imagenet', pretrained=True)" in readme
    assert 'Image size: 32 x 32' in readme and 'EMA weights of model_best.pth.tar' in readme


def test_upload_sends_the_folder_through_huggingface_hub(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub import RepoUrl
    monkeypatch.setattr('socket.socket.connect', lambda *a, **k: pytest.fail('upload test touched the network'))
    sent = {}

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        sent['create_repo'] = dict(repo_id=repo_id, private=private, exist_ok=exist_ok)
        return RepoUrl(f'https://huggingface.co/{repo_id}')

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, commit_message=None, **kwargs):
        folder = Path(folder_path)
        files = sorted(p.name for p in folder.iterdir() if not allow_patterns or p.name in allow_patterns)
        sent['upload_folder'] = dict(repo_id=repo_id, files=files, commit_message=commit_message,
                                     config=json.loads((folder / 'config.json').read_text()),
                                     weights=safetensors.torch.load_file(str(folder / 'model.safetensors')),
                                     readme=(folder / 'README.md').read_text())
        return type('Commit', (), {'commit_url': f'https://huggingface.co/{repo_id}/commit/0123abc'})()

    monkeypatch.setattr(huggingface_hub.HfApi, 'create_repo', create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, 'upload_folder', upload_folder)
    token = 'hf_publishtestsentineltoken0123456789'
    monkeypatch.setenv('HF_TOKEN', token)
    tiny = tiny_checkpoint
    # the repo name implies the tag (mine), which names no dataset: --dataset says it
    assert _publish(tiny, tmp_path / 'hub', '--private', '--repo-id', 'someone/vit_tiny_cope.mine',
                    '--dataset', 'tiny-imagenet') == 0

    assert sent['create_repo'] == dict(repo_id='someone/vit_tiny_cope.mine', private=True, exist_ok=True)
    upload = sent['upload_folder']
    assert upload['repo_id'] == 'someone/vit_tiny_cope.mine'
    assert upload['files'] == ['README.md', 'config.json', 'model.safetensors']
    assert upload['config']['architecture'] == TINY and upload['config']['num_classes'] == 200
    assert all(torch.equal(upload['weights'][k], v) for k, v in tiny['state_dict'].items())
    assert "timm.create_model('hf-hub:someone/vit_tiny_cope.mine', pretrained=True)" in upload['readme']
    out = capsys.readouterr()
    assert token not in out.out + out.err
    assert 'uploaded to https://huggingface.co/someone/vit_tiny_cope.mine' in out.out


def test_upload_without_token_fails_clearly(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    for var in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_OIDC_RESOURCE'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_TOKEN_PATH', str(tmp_path / 'no_token'))
    monkeypatch.setattr(huggingface_hub.HfApi, 'upload_folder',
                        lambda *a, **k: pytest.fail('uploaded without a token'))
    assert _publish(tiny_checkpoint, tmp_path / 'hub', '--repo-id', 'someone/x.y') == 2
    err = capsys.readouterr().err
    assert 'no Hugging Face token' in err and 'hf auth login' in err and 'HF_TOKEN' in err
    # the folder was written and checked before the upload was attempted; it stays for a later upload
    assert sorted(p.name for p in (tmp_path / 'hub').iterdir()) == ['README.md', 'config.json', 'model.safetensors']


def test_refuses_checkpoint_of_another_architecture(tiny_checkpoint, tmp_path, capsys):
    # a bare safetensors file records no architecture, so the strict key check is what catches it
    other = timm.create_model('vit_tiny_patch16_224', img_size=32, num_classes=200)
    weights = tmp_path / 'other.safetensors'
    safetensors.torch.save_file(other.state_dict(), str(weights))
    out = tmp_path / 'hub'
    assert _publish(tiny_checkpoint, out, '--dry-run', checkpoint=weights) == 2
    err = capsys.readouterr().err
    assert 'does not match vit_tiny_cope' in err
    assert 'missing keys [cope.freq, cope.phase]' in err and 'unexpected keys [pos_embed]' in err
    _assert_nothing_written(out)


def test_refuses_train_checkpoint_recorded_as_another_model(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / 'hub'
    assert _publish(tiny_checkpoint, out, '--dry-run', model='vit_small_cope') == 2
    assert 'was trained as vit_tiny_cope' in capsys.readouterr().err
    _assert_nothing_written(out)


def test_refuses_mis_shaped_weights(tiny_checkpoint, tmp_path, capsys):
    # right keys, wrong sizes: the 32 px checkpoint published as if it were the default 224 px model
    weights = tmp_path / 'tiny.safetensors'
    safetensors.torch.save_file(tiny_checkpoint['state_dict'], str(weights))
    out = tmp_path / 'hub'
    assert _publish(tiny_checkpoint, out, '--dry-run', checkpoint=weights) == 2
    err = capsys.readouterr().err
    assert 'shape mismatches' in err and 'cope.freq (1, 5, 192) vs (1, 197, 192)' in err
    _assert_nothing_written(out)
    # with the size train.py would have recorded, the same file publishes
    assert _publish(tiny_checkpoint, out, '--dry-run', '--model-kwargs', 'img_size=32', checkpoint=weights) == 0


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_refuses_corrupt_safetensors(tiny_checkpoint, tmp_path, capsys, damage):
    weights = tmp_path / 'tiny.safetensors'
    safetensors.torch.save_file(tiny_checkpoint['state_dict'], str(weights))
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2] if damage == 'truncated' else b'\x13\x37' * 64)
    out = tmp_path / 'hub'
    assert _publish(tiny_checkpoint, out, '--dry-run', checkpoint=weights) == 2
    assert 'is not a readable safetensors file' in capsys.readouterr().err
    _assert_nothing_written(out)


def test_refuses_truncated_train_checkpoint(tiny_checkpoint, tmp_path, capsys):
    ckpt = tmp_path / 'model_best.pth.tar'
    data = tiny_checkpoint['ckpt'].read_bytes()
    ckpt.write_bytes(data[:len(data) // 3])
    out = tmp_path / 'hub'
    assert _publish(tiny_checkpoint, out, '--dry-run', checkpoint=ckpt) == 2
    assert 'is not a readable PyTorch checkpoint' in capsys.readouterr().err
    _assert_nothing_written(out)


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_refuses_pickle_that_would_run_code(tiny_checkpoint, tmp_path, capsys):
    marker = tmp_path / 'code_ran'
    ckpt = tmp_path / 'model_best.pth.tar'
    torch.save({'state_dict': tiny_checkpoint['state_dict'], 'payload': _RunsCodeWhenUnpickled(marker)}, str(ckpt))
    out = tmp_path / 'hub'
    assert _publish(tiny_checkpoint, out, '--dry-run', checkpoint=ckpt) == 2
    err = capsys.readouterr().err
    assert 'refusing to load' in err and 'could run arbitrary code' in err
    assert not marker.exists(), 'unpickling ran code from the checkpoint'
    _assert_nothing_written(out)


def test_refuses_existing_output_folder(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / 'hub'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    for extra in ((), ('--overwrite',)):  # --overwrite replaces only a folder publish wrote
        assert _publish(tiny_checkpoint, out, '--dry-run', *extra) == 2
        err = capsys.readouterr().err
        assert "holds the file 'notes.txt', which publish did not write" in err
        assert [p.name for p in out.iterdir()] == ['notes.txt'] and (out / 'notes.txt').read_text() == 'keep me'
    (out / 'notes.txt').unlink()
    assert _publish(tiny_checkpoint, out, '--dry-run') == 0
    assert _publish(tiny_checkpoint, out, '--dry-run') == 2
    assert 'holds a previous publish output' in capsys.readouterr().err
    assert _publish(tiny_checkpoint, out, '--dry-run', '--overwrite') == 0
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.hub')], 'staging/backup folders left behind'


def test_refuses_model_without_card(tiny_checkpoint, tmp_path, capsys):
    cards = tmp_path / 'MODEL_CARDS.md'
    cards.write_text(synthetic_cards(['vit_small_cope']))
    out = tmp_path / 'hub'
    rc = cli_main(['publish', str(tiny_checkpoint['ckpt']), '--model', TINY, '--out', str(out), '--dry-run',
                   '--cards', str(cards)])
    assert rc == 2
    err = capsys.readouterr().err
    assert 'no card for vit_tiny_cope.tiny_imagenet' in err and '<!-- card: vit_tiny_cope -->' in err
    _assert_nothing_written(out)


def test_label_names_from_file_and_train_folders(tiny_checkpoint, tmp_path, capsys):
    from timm_posembed.hub.checkpoints import PublishError
    from timm_posembed.hub.label_names import resolve_label_names
    names = [f'class_{i}' for i in range(200)]
    label_file = tmp_path / 'labels.txt'
    label_file.write_text('\n'.join(names))
    assert _publish(tiny_checkpoint, tmp_path / 'hub', '--dry-run', '--label-names', str(label_file)) == 0
    assert json.loads((tmp_path / 'hub' / 'config.json').read_text())['label_names'] == names
    with pytest.raises(PublishError, match='has 3 names but the model has 200 classes'):
        label_file.write_text('a\nb\nc')
        resolve_label_names(200, label_file)
    # an image-folder dataset recorded by train.py: names in timm's class order (natural sort: c2 before c10)
    train = tmp_path / 'data' / 'train'
    for c in ('c10', 'c2', 'c1'):
        (train / c).mkdir(parents=True)
        (train / c / 'img.jpg').write_bytes(b'')
    found, source = resolve_label_names(3, train_args={'data_dir': str(tmp_path / 'data'), 'dataset': ''})
    assert found == ['c1', 'c2', 'c10'] and 'class folders' in source
    assert resolve_label_names(5, train_args={'data_dir': str(tmp_path / 'data'), 'dataset': ''})[0] is None


def test_unpublished_weights_raise_helpful_error(monkeypatch):
    """A repo that does not exist (a simulated 404 from the Hub) gives the one clear error, the 404 chained."""
    import timm.models._hub as timm_hub
    from huggingface_hub.errors import RepositoryNotFoundError
    from timm_posembed.models._builder import PretrainedWeightsUnavailableError
    import huggingface_hub.errors as hf_errors

    def not_found(repo_id, filename=None, **kwargs):
        request = hf_errors.Response.__module__  # the HTTP library huggingface_hub uses (httpx2 / httpx / requests)
        http = __import__(request.split('.')[0])
        response = http.Response(404, request=http.Request('HEAD', f'https://huggingface.co/{repo_id}/{filename}'))
        raise RepositoryNotFoundError(f'404 Client Error: Repository Not Found for url: {repo_id}', response=response)

    monkeypatch.setattr(timm_hub, 'hf_hub_download', not_found)
    # the Hub answers the builder's connection check (this machine may have no network): the 404 comes after it
    monkeypatch.setattr('socket.create_connection', lambda *args, **kwargs: io.BytesIO())
    with pytest.raises(PretrainedWeightsUnavailableError) as info:
        timm.create_model('vit_tiny_cope', pretrained=True, img_size=32)
    msg = str(info.value)
    assert f"'{HF_HUB_ORG}/vit_tiny_cope.tiny_imagenet' (tag 'tiny_imagenet')" in msg
    assert 'benchmarks/' in msg and "pretrained_cfg_overlay=dict(file=" in msg
    assert 'timm-posembed publish /path/to/model_best.pth.tar --model vit_tiny_cope --tag tiny_imagenet' in msg
    assert isinstance(info.value.__cause__, RepositoryNotFoundError)
    # timm's own models keep timm's behaviour
    with pytest.raises(RepositoryNotFoundError):
        timm.create_model('vit_tiny_patch16_224', pretrained=True, img_size=32)


def test_missing_local_file_names_the_file():
    from timm_posembed.models._builder import PretrainedWeightsUnavailableError
    with pytest.raises(PretrainedWeightsUnavailableError, match="local file/folder '/no/such/weights.safetensors'"):
        timm.create_model('vit_tiny_cope', pretrained=True, img_size=32,
                          pretrained_cfg_overlay=dict(file='/no/such/weights.safetensors'))


def test_publish_option_errors(tiny_checkpoint, tmp_path):
    from timm_posembed.commands._model_kwargs import parse_model_kwargs
    from timm_posembed.hub.checkpoints import PublishError
    from timm_posembed.hub.publish import publish_checkpoint
    with pytest.raises(PublishError, match="not a timm_posembed model"):
        publish_checkpoint(tiny_checkpoint['ckpt'], 'resnet50', tmp_path / 'a')
    with pytest.raises(PublishError, match="names tag 'x' but --tag is 'y'"):
        publish_checkpoint(tiny_checkpoint['ckpt'], 'vit_tiny_cope.x', tmp_path / 'a', tag='y')
    with pytest.raises(PublishError, match='expected ORG/NAME.TAG'):
        publish_checkpoint(tiny_checkpoint['ckpt'], TINY, tmp_path / 'a', repo_id='no-org-here')
    with pytest.raises(ValueError, match="--model-kwargs 'img_size': expected KEY=VALUE"):
        parse_model_kwargs(['img_size'])
    with pytest.raises(PublishError, match="has no 'state_dict_ema'"):
        ckpt = tmp_path / 'no_ema.pth.tar'
        torch.save({'state_dict': tiny_checkpoint['state_dict']}, str(ckpt))
        publish_checkpoint(ckpt, TINY, tmp_path / 'a', use_ema=True)
    assert not (tmp_path / 'a').exists()
