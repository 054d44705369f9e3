""" timm's real scripts with this package's models.

* train.py, one short epoch for one model of each family on a tiny image folder, launched with the exact command the
  table drivers build (``timm_posembed.reproduce.launch.train_command``) and the Fashion-MNIST recipe;
* for one model of each family, every command of README.md's timm-script block (train.py, then validate.py,
  inference.py, benchmark.py and onnx_export.py with both exporters on its checkpoint), parsed from README.md
  (``timm_scripts.readme_commands``) so that the README and the tests cannot drift apart.

The scripts live only in timm's git repository: these tests need ``TIMM_REPO`` (see
``timm_posembed.reproduce.timm_repo``) and are skipped, saying so, without it. All commands run in two shared
processes (see ``timm_scripts``).
"""
import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest
import yaml

from timm_posembed.models import list_model_info
from timm_posembed.reproduce.launch import RunSpec, load_recipe, run_name, train_command, train_env
from timm_posembed.reproduce.tables import RECIPES_DIR
from timm_posembed.reproduce.timm_repo import TIMM_REPO_ENV, timm_repo_setting
import timm_scripts

SANITY_RECIPE = RECIPES_DIR / 'fashion_mnist_sanity.yaml'
IMG_SIZE = 64  # the smallest size every model takes (CoaT-Lite's last stage is 1/32 of the input)
TRAIN_ARGS = ['--device', 'cpu', '--workers', '0', '--batch-size', '4', '--img-size', str(IMG_SIZE)]
HARNESS_PROCESSES = 2
# Each harness needs ~3 min of CPU; the bound leaves room for a machine shared with other jobs.
HARNESS_TIMEOUT_S = 3000
TIMM_SCRIPTS = ('train.py', 'validate.py', 'inference.py', 'benchmark.py', 'onnx_export.py')
# One model per family for the README commands; each harness process gets two families (their commands run in
# order: train.py first, then the scripts that read its checkpoint).
FAMILY_MODELS = {
    'cope': 'vit_tiny_cope',
    'supertoken': 'vit_tiny_supertoken_conv',
    'conv_embed': 'vit_small_conv_embed',
    'clustering': 'coat_lite_clustering',
}
# The drivers' command is run for the same four: a family's other models differ only in width and depth.
DRIVER_MODELS = list(FAMILY_MODELS.values())
FAMILY_PROCESS = {'cope': 0, 'clustering': 0, 'supertoken': 1, 'conv_embed': 1}
README_NUM_CLASSES = 4
# Options appended to the README's commands so that they run in seconds on a CPU: the README's lines are written
# for a GPU at the models' default size.
SMALL_RUN_ARGS = {
    'train.py': ['--epochs', '1', '--device', 'cpu', '--workers', '0', '--batch-size', '8',
                 '--img-size', str(IMG_SIZE), '--checkpoint-hist', '1', '--model-kwargs', f'img_size={IMG_SIZE}'],
    'validate.py': ['--device', 'cpu', '--workers', '0', '--batch-size', '8', '--img-size', str(IMG_SIZE),
                    '--model-kwargs', f'img_size={IMG_SIZE}'],
    'inference.py': ['--device', 'cpu', '--workers', '0', '--batch-size', '8', '--img-size', str(IMG_SIZE),
                     '--model-kwargs', f'img_size={IMG_SIZE}'],
    # benchmark.py logs every num_bench_iter // 5 steps (it divides by that: 5 is the least)
    'benchmark.py': ['--device', 'cpu', '--batch-size', '2', '--num-warm-iter', '1', '--num-bench-iter', '5',
                     '--img-size', str(IMG_SIZE), '--model-kwargs', f'img_size={IMG_SIZE}'],
    'onnx_export.py': [],
    'onnx_export.py+dynamo': [],
}
ONNX_STEPS = ('onnx_export.py', 'onnx_export.py+dynamo')
# Fixed on the branch that makes the super-token embedding exportable with the TorchScript-based exporter.


def _timm_repo() -> Path:
    repo = timm_repo_setting()
    if repo is None:
        pytest.skip(f'{TIMM_REPO_ENV} is not set: these tests run timm\'s train.py, validate.py, inference.py, '
                    f'benchmark.py and onnx_export.py, which are only in timm\'s git repository '
                    f'(set {TIMM_REPO_ENV}=/path/to/pytorch-image-models)')
    missing = [name for name in TIMM_SCRIPTS if not (repo / name).is_file()]
    if missing:
        pytest.fail(f'{TIMM_REPO_ENV}={repo} has no {", ".join(missing)}')
    return repo


def _train_py() -> Path:
    return _timm_repo() / 'train.py'


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory) -> Path:
    """10 classes (the recipe's), one 28x28 greyscale PNG per class and split."""
    from PIL import Image
    root = tmp_path_factory.mktemp('tiny_images')
    for split in ('train', 'val'):
        for c in range(10):
            (root / split / f'class{c}').mkdir(parents=True)
            Image.new('L', (28, 28), color=25 * c).save(root / split / f'class{c}' / f'{split}{c}.png')
    return root


def _has_pandas() -> bool:
    return importlib.util.find_spec('pandas') is not None


@pytest.fixture(scope='module')
def readme_images(tmp_path_factory) -> Path:
    """4 classes, 6 train and 2 val RGB images each, every file name unique (inference.py reports base names)."""
    from PIL import Image
    root = tmp_path_factory.mktemp('readme_images')
    for split, per_class in (('train', 6), ('val', 2)):
        for c in range(README_NUM_CLASSES):
            (root / split / f'class{c}').mkdir(parents=True)
            for i in range(per_class):
                Image.new('RGB', (32, 32), color=(60 * c, 37 * i % 256, 200 - 40 * c)).save(
                    root / split / f'class{c}' / f'{split}_c{c}_{i}.png')
    return root


@dataclass
class ScriptRuns:
    driver_runs: Dict[str, Tuple[Path, Optional[str]]]  # model -> (run dir, error)
    readme_out: Dict[Tuple[str, str], Path]  # (family, step) -> the command's OUT folder
    readme_errors: Dict[Tuple[str, str], Optional[str]]


def _readme_steps(repo: Path, family: str, data: Path, out: Path):
    """[(name, kind, argv)] of the README commands for ``family``, and {step: OUT folder}."""
    import timm
    import torch
    model = FAMILY_MODELS[family]
    steps, outs = [], {}
    for step, argv in timm_scripts.readme_commands().items():
        if step == 'inference.py' and not _has_pandas():
            continue  # test_readme_inference says why
        step_out = out / family / ('train' if step not in ONNX_STEPS else step.replace('+', '_'))
        if step in ONNX_STEPS:
            # onnx_export.py builds the model at its default size (it has no --model-kwargs), so it gets a
            # checkpoint of that size in the README's place, OUT/RUN/model_best.pth.tar.
            (step_out / 'run').mkdir(parents=True)
            torch.save(timm.create_model(model, num_classes=README_NUM_CLASSES).state_dict(),
                       step_out / 'run' / 'model_best.pth.tar')
        filled = timm_scripts.fill(argv, repo, model, README_NUM_CLASSES,
                                   {'DATA': str(data), 'OUT': str(step_out), 'RUN': 'run'})
        kind = 'train' if step == 'train.py' else 'cli'
        steps.append((f'{family}:{step}', kind, filled + SMALL_RUN_ARGS[step]))
        outs[step] = step_out
    return steps, outs


@pytest.fixture(scope='module')
def script_runs(image_folder, readme_images, tmp_path_factory) -> ScriptRuns:
    """Every train.py run of the drivers' command and every README command, in HARNESS_PROCESSES processes."""
    repo = _timm_repo()
    out = tmp_path_factory.mktemp('runs')
    steps = [[] for _ in range(HARNESS_PROCESSES)]
    readme_out = {}
    for family, process in FAMILY_PROCESS.items():
        family_steps, outs = _readme_steps(repo, family, readme_images, out / 'readme')
        steps[process] += family_steps
        readme_out.update({(family, step): folder for step, folder in outs.items()})
    for worker in range(HARNESS_PROCESSES):
        for model in DRIVER_MODELS[worker::HARNESS_PROCESSES]:
            spec = RunSpec(model, {'img_size': IMG_SIZE}, epochs=1)
            argv = train_command(repo / 'train.py', SANITY_RECIPE, spec, out / 'drivers', model,
                                 data_dir=image_folder, extra_args=TRAIN_ARGS + ['--checkpoint-hist', '1'])
            steps[worker].append((f'driver:{model}', 'train', argv[1:]))  # without the interpreter
    harnesses = []
    for worker, worker_steps in enumerate(steps):
        steps_file, errors_file = out / f'steps{worker}.json', out / f'errors{worker}.json'
        steps_file.write_text(json.dumps(worker_steps))
        log_file = out / f'harness{worker}.log'
        with log_file.open('w') as log:
            process = subprocess.Popen([sys.executable, timm_scripts.__file__, str(steps_file), str(errors_file)],
                                       env=train_env(), stdout=log, stderr=subprocess.STDOUT)
        harnesses.append((process, errors_file, log_file))
    errors = {}
    try:
        for process, errors_file, log_file in harnesses:
            process.wait(timeout=HARNESS_TIMEOUT_S)
            assert errors_file.is_file(), f'harness failed:\n{log_file.read_text()[-4000:]}'
            errors.update(json.loads(errors_file.read_text()))
    finally:
        for process, _, _ in harnesses:
            if process.poll() is None:
                process.kill()
    return ScriptRuns(
        driver_runs={m: (out / 'drivers' / m, errors.get(f'driver:{m}')) for m in DRIVER_MODELS},
        readme_out=readme_out,
        readme_errors={key: errors.get(f'{key[0]}:{key[1]}') for key in readme_out},
    )


def _readme_step(script_runs: ScriptRuns, family: str, step: str) -> Path:
    error = script_runs.readme_errors[(family, step)]
    assert error is None, f'{FAMILY_MODELS[family]}: README {step} command failed: {error}'
    return script_runs.readme_out[(family, step)]


@pytest.fixture(scope='module')
def one_epoch_runs(script_runs):
    """{model: (run_dir, error or None)} of the driver-command train.py runs."""
    return script_runs.driver_runs


@pytest.mark.parametrize('model', DRIVER_MODELS)
def test_train_py_one_epoch(one_epoch_runs, model):
    from timm_posembed.reproduce.runs import load_run
    run_dir, error = one_epoch_runs[model]
    assert error is None, error
    run = load_run(run_dir)
    assert run.model == model and run.model_kwargs == {'img_size': IMG_SIZE}
    assert run.epochs_done == 1 and run.complete
    assert 0.0 <= run.best_top1 <= 100.0 and run.history[0]['train_loss'] > 0
    args = yaml.safe_load((run_dir / 'args.yaml').read_text())
    assert args['device_modules'] == ['timm_posembed'] and args['num_classes'] == 10  # the recipe was applied


def test_recipes_agree_with_the_paper_tables():
    from timm_posembed.data.dataset_facts import DATASET_NUM_CLASSES
    from timm_posembed.reproduce.tables import RECIPES_DIR, load_paper_tables
    for table in load_paper_tables().values():
        recipe = load_recipe(RECIPES_DIR / table.recipe)
        assert recipe['device_modules'] == ['timm_posembed'], table.recipe
        assert recipe['num_classes'] == DATASET_NUM_CLASSES[table.dataset], table.recipe
        assert 'model' not in recipe and not recipe.get('model_kwargs'), 'rows choose the model'
    assert load_recipe(SANITY_RECIPE)['num_classes'] == DATASET_NUM_CLASSES['fashion-mnist']


def test_driver_dry_run_lists_every_row(capsys):
    from timm_posembed.reproduce.tables import paper_table
    from timm_posembed.reproduce.drivers import table_driver_main
    _train_py()  # the driver resolves train.py even for a dry run
    assert table_driver_main('stoken-in100-iterations', ['--dry-run', '--nproc', '2', '--', '--amp']) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('[stoken-in100-iterations/')]
    assert len(lines) == len(paper_table('stoken-in100-iterations').rows)
    assert "stoken_num_iters=1" in lines[0] and '--batch-size 64' in lines[0] and lines[0].endswith('--amp')


def test_train_command_merges_kwargs_and_splits_the_global_batch(tmp_path):
    from timm_posembed.reproduce.tables import paper_table
    train_py = tmp_path / 'train.py'
    spec = RunSpec('coat_lite_clustering', {'cluster_attn': 'softmax', 'img_size': 96}, epochs=7)
    argv = train_command(train_py, SANITY_RECIPE, spec, tmp_path / 'out', 'exp', data_dir=tmp_path, nproc=4,
                         seed=3, extra_args=['--amp'])
    kwargs = argv[argv.index('--model-kwargs') + 1:argv.index('--data-dir')]
    # the recipe's img_size=32 is overridden by the row's, and strings survive train.py's literal_eval
    assert kwargs == ["img_size=96", "cluster_attn='softmax'"]
    assert argv[argv.index('--batch-size') + 1] == '16' and argv[argv.index('--epochs') + 1] == '7'
    assert argv[argv.index('--seed') + 1] == '3' and argv[-1] == '--amp'
    with pytest.raises(ValueError, match='does not split evenly over 3 processes'):
        train_command(train_py, SANITY_RECIPE, spec, tmp_path, 'exp', nproc=3)
    # one configuration, one run folder, whichever table asks for it
    recipe_path = RECIPES_DIR / 'imagenet100.yaml'
    recipe = load_recipe(recipe_path)
    names = {run_name(recipe_path, RunSpec(r.model, r.model_kwargs, r.epochs), recipe)
             for r in (paper_table('stoken-in100-embeddings').row('supertoken'),
                       paper_table('stoken-in100-conv-modules').row('conv1-6'),
                       paper_table('stoken-in100-iterations').row('t3'))}
    assert names == {'imagenet100-vit_small_supertoken_conv-stoken_extra_stride2_convFalse-stoken_num_conv_modules6'
                     '-stoken_num_iters3-ep300-seed42'}


def test_driver_skips_finished_runs_and_stops_at_unfinished_ones(tmp_path, capsys):
    from timm_posembed.reproduce.launch import run_specs
    (tmp_path / 'repo').mkdir()
    (tmp_path / 'repo' / 'train.py').write_text('')  # never executed: dry run
    recipe = load_recipe(SANITY_RECIPE)
    specs = [RunSpec('vit_tiny_cope'), RunSpec('vit_tiny_patch16_224'), RunSpec('coat_lite_tiny')]
    summary = 'epoch,train_loss,eval_top1\n' + ''.join(f'{e},1.0,50.0\n' for e in range(recipe['epochs']))
    for spec, text in zip(specs[:2], (summary, summary.splitlines()[0] + '\n0,1.0,50.0\n')):
        run_dir = tmp_path / 'out' / run_name(SANITY_RECIPE, spec, recipe)
        run_dir.mkdir(parents=True)
        (run_dir / 'summary.csv').write_text(text)
    outcomes = run_specs(specs, SANITY_RECIPE, tmp_path / 'out', tmp_path, timm_repo=tmp_path / 'repo', dry_run=True)
    assert [o.status for o in outcomes] == ['done', 'unfinished', 'dry-run']
    assert 'pass --resume' in capsys.readouterr().err
    resumed = run_specs(specs[1:2], SANITY_RECIPE, tmp_path / 'out', tmp_path, timm_repo=tmp_path / 'repo',
                        resume=True, dry_run=True)
    assert resumed[0].status == 'dry-run' and 'last.pth.tar' in capsys.readouterr().out


@pytest.mark.parametrize('family', FAMILY_MODELS)
def test_readme_train_py(script_runs, family):
    out = _readme_step(script_runs, family, 'train.py')
    args = yaml.safe_load((out / 'run' / 'args.yaml').read_text())
    assert args['model'] == FAMILY_MODELS[family] and args['device_modules'] == ['timm_posembed']
    assert (out / 'run' / 'model_best.pth.tar').is_file()


def _eval_top1(train_out: Path) -> float:
    import csv
    with (train_out / 'run' / 'summary.csv').open(newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1, rows
    return float(rows[0]['eval_top1'])


@pytest.mark.parametrize('family', FAMILY_MODELS)
def test_readme_validate_py_matches_train_py_eval(script_runs, family):
    """validate.py on the checkpoint scores exactly what train.py measured for it after its one epoch."""
    out = _readme_step(script_runs, family, 'validate.py')
    result = json.loads((out / 'validate.json').read_text())
    assert result['model'] == FAMILY_MODELS[family] and result['img_size'] == IMG_SIZE
    assert result['top1'] == pytest.approx(_eval_top1(out))


@pytest.mark.parametrize('family', FAMILY_MODELS)
def test_readme_inference_py_agrees_with_validate_py(script_runs, readme_images, family):
    if not _has_pandas():
        pytest.skip('timm\'s inference.py imports pandas, which is not installed (it is in the test extra)')
    out = _readme_step(script_runs, family, 'inference.py')
    predictions = json.loads((out / f'{FAMILY_MODELS[family]}-{IMG_SIZE}.json').read_text())
    val_files = {p.name: int(p.parent.name[len('class'):]) for p in (readme_images / 'val').glob('*/*.png')}
    assert set(predictions) == set(val_files)
    assert all(0.0 <= p['prob'] <= 1.0 for p in predictions.values())
    correct = sum(predictions[name]['index'] == label for name, label in val_files.items())
    validate = json.loads((script_runs.readme_out[(family, 'validate.py')] / 'validate.json').read_text())
    assert 100.0 * correct / len(val_files) == pytest.approx(validate['top1'])


@pytest.mark.parametrize('family', FAMILY_MODELS)
def test_readme_benchmark_py(script_runs, family):
    import timm
    out = _readme_step(script_runs, family, 'benchmark.py')
    result = json.loads((out / 'benchmark.json').read_text())
    assert result['infer_samples_per_sec'] > 0 and result['train_samples_per_sec'] > 0
    assert result['infer_img_size'] == IMG_SIZE and result['train_img_size'] == IMG_SIZE
    params = sum(p.numel() for p in timm.create_model(FAMILY_MODELS[family], img_size=IMG_SIZE).parameters())
    assert result['param_count'] == pytest.approx(params / 1e6, abs=0.01)


@pytest.mark.parametrize('family,step', [(family, step) for family in FAMILY_MODELS for step in ONNX_STEPS])
def test_readme_onnx_export_py(script_runs, family, step):
    """onnx_export.py --check-forward passed (onnxruntime matched PyTorch); the file takes any batch size."""
    out = _readme_step(script_runs, family, step)
    import numpy as np
    import onnxruntime
    session = onnxruntime.InferenceSession(str(out / f'{FAMILY_MODELS[family]}.onnx'))
    logits, = session.run(None, {session.get_inputs()[0].name: np.zeros((3, 3, 224, 224), np.float32)})
    assert logits.shape == (3, README_NUM_CLASSES) and np.isfinite(logits).all()


def test_every_model_belongs_to_a_tested_family():
    """FAMILY_MODELS covers every registered model: a new family needs its own entry there."""
    import fnmatch
    patterns = {'cope': '*_cope', 'supertoken': '*_supertoken_conv', 'conv_embed': '*_conv_embed',
                'clustering': 'coat_lite_clustering*'}
    assert all(fnmatch.fnmatch(FAMILY_MODELS[f], pattern) for f, pattern in patterns.items())
    for info in list_model_info():
        assert any(fnmatch.fnmatch(info.name, pattern) for pattern in patterns.values()), info.name
