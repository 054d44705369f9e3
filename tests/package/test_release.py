""" What ``pip install timm-posembed`` gives a user: the release archives, built and installed as a user gets them.

``python -m build`` makes the sdist and the wheel of this checkout (no warnings; ``twine check --strict`` clean).
The wheel goes into a fresh virtual environment (not ``-e .``), and every command runs its real job from a folder
outside the checkout: ``card`` for every model family, ``list``, ``publish --dry-run`` of a small train.py
checkpoint, ``report --table`` on generated runs, ``prepare`` on a generated tree, a tiny ``bench``, ``run`` of a
timm script's ``--help``. Each command runs under an audit hook that records the files the package opens inside its
own folder: each must be in the wheel (and declared in ``timm_posembed._resources``). Then the same environment gets
the package from the sdist instead, for ``card`` and ``report``; and finally the oldest timm the package declares
(``timm>=`` in pyproject.toml), under which the package's model tests and timm's own model test suite run.

One environment serves all of it (creating one with torch takes minutes on CI's 2 cores). The tests run in file
order and each needs the environment as the one before left it; a failure stops the rest (pytest's ``-x`` is not
needed: the fixture records it).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The pins of the README's commands: pip keeps the torch the machine has instead of pulling a new build.
TORCH_PINS = ('torch==2.14.1', 'torchvision==0.29.1')
PACKAGE = 'timm_posembed'
ONE_MODEL_PER_FAMILY = ('vit_tiny_cope', 'vit_small_supertoken_conv', 'vit_small_conv_embed', 'coat_lite_clustering')

pytestmark = [
    pytest.mark.skipif(not (ROOT / 'pyproject.toml').is_file(), reason='needs the source checkout to build from'),
    # pytest-timeout counts a fixture's setup in the first test that uses it: the environment takes minutes
    pytest.mark.timeout(2400),
]


def _run(argv: Sequence[str], cwd: Path, env: Dict[str, str] = None, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        pytest.fail(f'{" ".join(map(str, argv))} exited with {result.returncode}\n--- stdout\n{result.stdout[-4000:]}'
                    f'\n--- stderr\n{result.stderr[-4000:]}')
    return result


@pytest.fixture(scope='module')
def archives(tmp_path_factory) -> Dict[str, Path]:
    out = tmp_path_factory.mktemp('dist')
    # a copy of the tracked files: a build must not depend on what is lying around in the working tree
    # (build/, *.egg-info, a stale copy of the cards in the package), as the clean clone of CI has none of it
    src = tmp_path_factory.mktemp('src') / 'timm-posembed'
    files = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split('\0')
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    # setuptools warns that byte-compiling is disabled when the environment disables it (PYTHONDONTWRITEBYTECODE):
    # a setting of the machine, not of the package
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONDONTWRITEBYTECODE'}
    result = _run([sys.executable, '-m', 'build', '--sdist', '--wheel', '--outdir', out, src], cwd=src, env=env)
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if re.search(r'warn', line, re.I)]
    assert not warnings, 'python -m build printed warnings:\n' + '\n'.join(warnings)
    wheels, sdists = sorted(out.glob('*.whl')), sorted(out.glob('*.tar.gz'))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {'wheel': wheels[0], 'sdist': sdists[0], 'src': src}


def test_twine_check_strict(archives):
    _run([sys.executable, '-m', 'twine', 'check', '--strict', archives['wheel'], archives['sdist']],
         cwd=archives['src'])


def _version() -> str:
    text = (ROOT / PACKAGE / 'version.py').read_text()
    return re.search(r"""__version__ = ['"]([^'"]+)['"]""", text).group(1)


def test_the_archives_carry_license_cards_and_every_runtime_file(archives):
    from timm_posembed._resources import PACKAGE_FILES
    with zipfile.ZipFile(archives['wheel']) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f'{PACKAGE}-{_version()}.dist-info/METADATA').decode()
    assert f'timm_posembed-{_version()}.dist-info/licenses/LICENSE' in names
    assert re.search(r'^License-Expression: Apache-2.0$', metadata, re.M), metadata[:2000]
    assert re.search(r'^Version: ' + re.escape(_version()) + '$', metadata, re.M)
    missing = [p for p in PACKAGE_FILES if f'{PACKAGE}/{p}' not in names]
    assert not missing, f'the wheel lacks files the package opens at run time: {missing}'
    with tarfile.open(archives['sdist']) as sdist:
        top = f'timm_posembed-{_version()}'
        members = {m.name[len(top) + 1:] for m in sdist.getmembers() if m.name.startswith(top + '/')}
    for name in ('LICENSE', 'MODEL_CARDS.md', 'CHANGELOG.md', 'README.md', 'build_hooks.py', 'pyproject.toml'):
        assert name in members, f'the sdist lacks {name}'
    assert not [m for m in members if '__pycache__' in m or m.endswith('.pyc')]


# ---------------------------------------------------------------------------------------------------------------
# The installed wheel, used from outside the checkout

@pytest.fixture(scope='module')
def installed(archives, tmp_path_factory) -> Dict[str, Path]:
    env_dir = tmp_path_factory.mktemp('venv') / 'env'
    venv.create(env_dir, with_pip=True)
    python = env_dir / 'bin' / 'python'
    _run([python, '-m', 'pip', 'install', '--quiet', archives['wheel'], *TORCH_PINS, 'pytest', 'pytest-timeout'],
         cwd=archives['src'].parent, timeout=1500)
    work = tmp_path_factory.mktemp('user')
    return {'python': python, 'bin': env_dir / 'bin', 'work': work, 'wheel': archives['wheel']}


# Runs the CLI as the console script does (argv[0] "timm-posembed"), recording the files opened inside the package.
_AUDITED_CLI = textwrap.dedent('''\
    import json, os, sys
    record, argv = sys.argv[1], sys.argv[2:]
    opened = set()
    def hook(event, args):
        if event == 'open' and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.add(os.path.abspath(os.fsdecode(args[0])))
    sys.addaudithook(hook)
    sys.argv = ['timm-posembed'] + argv
    try:
        from timm_posembed.cli import main
        status = main(argv)
    finally:
        import timm_posembed
        root = os.path.dirname(os.path.abspath(timm_posembed.__file__))
        mine = sorted(os.path.relpath(p, root) for p in opened if p.startswith(root + os.sep))
        with open(record, 'w') as f:
            json.dump({'package': root, 'opened': [p for p in mine if not p.endswith(('.py', '.pyc'))]}, f)
    sys.exit(status)
''')


def _cli(installed, *argv, cwd=None, check: bool = True) -> subprocess.CompletedProcess:
    record = installed['work'] / 'opened.json'
    script = installed['work'] / 'audited_cli.py'
    script.write_text(_AUDITED_CLI)
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONSAFEPATH='1')
    env.pop('PYTHONPATH', None)
    argv = [installed['python'], script, record, *argv]
    result = (_run(argv, cwd=cwd or installed['work'], env=env) if check else
              subprocess.run([str(a) for a in argv], cwd=cwd or installed['work'], env=env, capture_output=True,
                             text=True, timeout=900))
    facts = json.loads(record.read_text())
    assert not Path(facts['package']).is_relative_to(ROOT), f'imported the checkout, not the wheel: {facts}'
    with zipfile.ZipFile(installed['wheel']) as whl:
        shipped = {n[len(PACKAGE) + 1:] for n in whl.namelist() if n.startswith(PACKAGE + '/')}
    unshipped = [p for p in facts['opened'] if p not in shipped]
    assert not unshipped, f'{argv[3:]} opened package files the wheel does not carry: {unshipped}'
    installed.setdefault('opened', set()).update(facts['opened'])
    return result


def test_card_renders_every_family_from_the_wheel(installed):
    for model in ONE_MODEL_PER_FAMILY:
        text = _cli(installed, 'card', model).stdout
        assert text.startswith('---\n') and f'# Model card for {model}.' in text, text[:500]
        assert '## Citation' in text and '```bibtex' in text
    assert 'MODEL_CARDS.md' in ' '.join(installed['opened'])


def test_list_from_the_wheel(installed):
    out = _cli(installed, 'list').stdout
    for model in ONE_MODEL_PER_FAMILY:
        assert re.search(rf'^{model}\s+\d+\.\d\dM', out, re.M), out


_CHECKPOINT = textwrap.dedent('''\
    import argparse, sys, timm, torch
    import timm_posembed
    model = timm.create_model('vit_tiny_cope', num_classes=10, img_size=32)
    args = argparse.Namespace(model='vit_tiny_cope', model_kwargs={}, num_classes=10, img_size=32, input_size=None,
                              in_chans=None, gp=None, dataset='', data_dir='')
    torch.save({'epoch': 3, 'arch': 'vit_tiny_cope', 'state_dict': model.state_dict(), 'args': args,
                'metric': 42.0}, sys.argv[1])
''')


def test_publish_dry_run_from_the_wheel(installed):
    work = installed['work']
    (work / 'make_checkpoint.py').write_text(_CHECKPOINT)
    _run([installed['python'], work / 'make_checkpoint.py', work / 'model_best.pth.tar'], cwd=work)
    _cli(installed, 'publish', 'model_best.pth.tar', '--model', 'vit_tiny_cope', '--tag', 'fashion_mnist',
         '--dataset', 'fashion_mnist', '--out', 'hub/vit_tiny_cope.fashion_mnist', '--dry-run')
    out = work / 'hub' / 'vit_tiny_cope.fashion_mnist'
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    readme = (out / 'README.md').read_text()
    assert '# Model card for vit_tiny_cope.fashion_mnist' in readme and 'epoch 3' in readme
    assert json.loads((out / 'config.json').read_text())['architecture'] == 'vit_tiny_cope'


def _write_run(folder: Path, model: str, model_kwargs: dict, num_classes: int, epochs: int, seed: int,
               top1: Sequence[float]) -> None:
    import yaml
    folder.mkdir(parents=True)
    (folder / 'args.yaml').write_text(yaml.safe_dump(dict(
        model=model, model_kwargs=model_kwargs, num_classes=num_classes, epochs=epochs, seed=seed)))
    lines = ['epoch,train_loss,eval_loss,eval_top1,eval_top5']
    lines += [f'{e},{2.0 - 0.1 * e},{2.1 - 0.1 * e},{t},{min(100.0, t + 20)}' for e, t in enumerate(top1)]
    (folder / 'summary.csv').write_text('\n'.join(lines) + '\n')


def _report_runs(work: Path) -> Path:
    runs = work / 'runs'
    if not runs.is_dir():
        for seed, offset in ((0, 0.0), (1, 0.4)):
            _write_run(runs / f'learned-{seed}', 'vit_tiny_patch16_224', {}, 200, 2, seed, [20.0 + offset, 30.0])
            _write_run(runs / f'cope-{seed}', 'vit_tiny_cope', {}, 200, 2, seed, [22.0, 33.0 + offset])
    return runs


def _first_table_with(models: Sequence[str]) -> str:
    import yaml
    tables = yaml.safe_load((ROOT / PACKAGE / _table_file()).read_text())['tables']
    return next(t for t, table in tables.items()
                if {r['model'] for r in table['rows'] if not r.get('model_kwargs')} >= set(models))


def _table_file() -> str:
    from timm_posembed._resources import PAPER_TABLES
    return PAPER_TABLES


def test_report_from_the_wheel(installed):
    table = _first_table_with(['vit_tiny_patch16_224', 'vit_tiny_cope'])
    out = _cli(installed, 'report', str(_report_runs(installed['work'])), '--table', table, '--no-params').stdout
    assert re.search(r'33\.2\d \u00b1 0\.28', out), out  # mean ± std of the two COPE seeds' best top-1
    assert 'n=2' in out or '| 2 |' in out, out


def test_prepare_from_the_wheel(installed):
    from dataset_trees import NUM_TINY_CLASSES, make_tiny_imagenet
    src = make_tiny_imagenet(installed['work'] / 'tiny-imagenet-200')
    out = _cli(installed, 'prepare', 'tiny-imagenet', str(src), 'tiny').stdout
    dst = installed['work'] / 'tiny'
    assert len(list((dst / 'train').iterdir())) == NUM_TINY_CLASSES, out
    assert sum(1 for _ in (dst / 'val').glob('*/*.JPEG')) == NUM_TINY_CLASSES


def test_bench_from_the_wheel(installed):
    out = _cli(installed, 'bench', '--device', 'cpu', '--models', 'vit_tiny_cope', '-b', '1', '--img-size', '32',
               '--warmup', '0', '--iters', '1', '--no-train', '--json', 'bench.json').stdout
    results = json.loads((installed['work'] / 'bench.json').read_text())['results']
    assert [r['model'] for r in results] == ['vit_tiny_patch16_224', 'vit_tiny_cope'], out
    assert all(r['infer_img_s'] and r['infer_img_s'] > 0 and not r['error'] for r in results), results


def test_run_a_timm_script_from_the_wheel(installed):
    from timm_posembed.reproduce.timm_repo import timm_repo_setting
    repo = timm_repo_setting()
    if repo is None or not (repo / 'validate.py').is_file():
        pytest.skip('TIMM_REPO is not set (timm\'s validate.py is in timm\'s git repository; .ci/run sets it)')
    out = _cli(installed, 'run', str(repo / 'validate.py'), '--help').stdout
    assert '--checkpoint' in out and 'usage:' in out


def test_only_declared_package_files_are_opened(installed):
    from timm_posembed._resources import PACKAGE_FILES
    undeclared = sorted(set(installed.get('opened', ())) - set(PACKAGE_FILES))
    assert not undeclared, f'opened at run time but not listed in timm_posembed/_resources.py: {undeclared}'


# ---------------------------------------------------------------------------------------------------------------
# The sdist, then the oldest timm we declare, in the same environment

def test_card_and_report_from_the_sdist(installed, archives):
    _run([installed['python'], '-m', 'pip', 'install', '--quiet', '--force-reinstall', '--no-deps', archives['sdist']],
         cwd=installed['work'], timeout=900)
    text = _cli(installed, 'card', 'coat_lite_clustering').stdout
    assert '# Model card for coat_lite_clustering.' in text
    table = _first_table_with(['vit_tiny_patch16_224', 'vit_tiny_cope'])
    out = _cli(installed, 'report', str(_report_runs(installed['work'])), '--table', table, '--no-params').stdout
    assert re.search(r'33\.2\d \u00b1 0\.28', out), out


def _timm_floor() -> str:
    text = (ROOT / 'pyproject.toml').read_text()
    return re.search(r'"timm>=([0-9.]+)"', text).group(1)


def test_model_tests_pass_on_the_oldest_declared_timm(installed):
    floor = _timm_floor()
    python = installed['python']
    _run([python, '-m', 'pip', 'install', '--quiet', f'timm=={floor}', *TORCH_PINS], cwd=installed['work'])
    versions = _run([python, '-c', 'import timm, torch; print(timm.__version__, torch.__version__)'],
                    cwd=installed['work']).stdout.split()
    assert versions[0] == floor, versions
    env = dict(os.environ, HF_HUB_OFFLINE='1')
    env.pop('PYTHONPATH', None)
    _run([python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--rootdir', ROOT, *MODEL_TEST_FOLDERS],
         cwd=ROOT / 'tests', env=env, timeout=1500)


# The package's model tests: its layers and models, timm's own model test suite on them included (tests/models/).
MODEL_TEST_FOLDERS: List[str] = ['layers', 'models']
