""" timm's train.py with its NaFlex loader (``--naflex-loader``) on a NaFlex COPE ViT: one epoch on generated images of
mixed sizes and aspect ratios, packed into variable-length patch sequences of two patch sizes.

Run through the shared harness of ``timm_scripts`` (one process); needs ``TIMM_REPO`` like the other script tests.
"""
import csv
import json
import subprocess
import sys

import pytest
import yaml

import timm_scripts
from timm_posembed.reproduce.launch import train_env
from timm_posembed.reproduce.timm_repo import TIMM_REPO_ENV, timm_repo_setting

MODEL = 'naflexvit_tiny_patch16_cope'
NUM_CLASSES = 3
# (height, width) of the generated images: square, wide, tall, sizes no patch size divides
IMAGE_SIZES = [(48, 48), (40, 96), (100, 36), (57, 70)]


@pytest.fixture(scope='module')
def naflex_run(tmp_path_factory):
    repo = timm_repo_setting()
    if repo is None or not (repo / 'train.py').is_file():
        pytest.skip(f'{TIMM_REPO_ENV} is not set to a timm repository: this test runs its train.py')
    from PIL import Image
    root = tmp_path_factory.mktemp('naflex_images')
    for split, per_class in (('train', 4), ('validation', 2)):
        for c in range(NUM_CLASSES):
            (root / split / f'class{c}').mkdir(parents=True)
            for i in range(per_class):
                h, w = IMAGE_SIZES[(c + i) % len(IMAGE_SIZES)]
                Image.new('RGB', (w, h), color=(80 * c, 50 * i, 120)).save(root / split / f'class{c}' / f'{i}.png')
    out = root / 'out'
    argv = [str(repo / 'train.py'), '--device-modules', 'timm_posembed', '--model', MODEL,
            '--model-kwargs', 'depth=2', 'enable_patch_interpolator=True', '--num-classes', str(NUM_CLASSES),
            '--data-dir', str(root), '--output', str(out), '--experiment', 'run',
            '--naflex-loader', '--naflex-train-seq-lens', '12', '24', '--naflex-max-seq-len', '24',
            '--naflex-patch-sizes', '8', '16',
            '--epochs', '1', '--device', 'cpu', '--workers', '0', '--batch-size', '4', '--checkpoint-hist', '1']
    steps, errors = root / 'steps.json', root / 'errors.json'
    steps.write_text(json.dumps([['naflex:train.py', 'train', argv]]))
    proc = subprocess.run([sys.executable, timm_scripts.__file__, str(steps), str(errors)], env=train_env(),
                          capture_output=True, text=True, timeout=900)
    assert errors.is_file(), f'harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return out / 'run', json.loads(errors.read_text()).get('naflex:train.py'), proc.stderr


def test_train_py_naflex_loader_one_epoch(naflex_run):
    run_dir, error, log = naflex_run
    assert error is None, error
    args = yaml.safe_load((run_dir / 'args.yaml').read_text())
    assert args['model'] == MODEL and args['naflex_loader'] and args['naflex_patch_sizes'] == [8, 16]
    with (run_dir / 'summary.csv').open(newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]['train_loss']) > 0 and 0.0 <= float(rows[0]['eval_top1']) <= 100.0
    assert (run_dir / 'model_best.pth.tar').is_file()
    assert 'Using variable patch sizes: [8, 16]' in log  # train.py took the NaFlex route, not its fixed-size one
