""" timm's real train.py with every model of the package: one short epoch on a tiny image folder, launched with the
exact command the benchmark drivers build (``timm_posembed.reproduce.train_command``) and the Fashion-MNIST recipe.

train.py lives only in timm's git repository: these tests need ``TIMM_REPO`` (see ``timm_posembed.settings``) and
are skipped, saying so, without it. An interpreter start costs ~15 s here (importing timm), so the runs share two
processes (one per core), each loading train.py once and calling its ``main()`` per command (``__main__`` below).
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from timm_posembed.models import list_model_info
from timm_posembed.reproduce import RunSpec, load_recipe, run_name, train_command, train_env
from timm_posembed.settings import TIMM_REPO_ENV, timm_repo_setting

RECIPES = Path(__file__).resolve().parents[1] / 'benchmarks' / 'recipes'
SANITY_RECIPE = RECIPES / 'fashion_mnist_sanity.yaml'
IMG_SIZE = 64  # the smallest size every model takes (CoaT-Lite's last stage is 1/32 of the input)
TRAIN_ARGS = ['--device', 'cpu', '--workers', '0', '--batch-size', '4', '--img-size', str(IMG_SIZE)]
MODELS = [info.name for info in list_model_info()]
HARNESS_PROCESSES = 2


def _train_py() -> Path:
    repo = timm_repo_setting()
    if repo is None:
        pytest.skip(f'{TIMM_REPO_ENV} is not set: these tests run timm\'s train.py, which is only in timm\'s git '
                    f'repository (set {TIMM_REPO_ENV}=/path/to/pytorch-image-models)')
    if not (repo / 'train.py').is_file():
        pytest.fail(f'{TIMM_REPO_ENV}={repo} has no train.py')
    return repo / 'train.py'


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


@pytest.fixture(scope='module')
def one_epoch_runs(image_folder, tmp_path_factory):
    """Run train.py once per model (1 epoch); {model: (run_dir, error or None)}."""
    train_py = _train_py()
    out = tmp_path_factory.mktemp('runs')
    harnesses = []
    for worker in range(HARNESS_PROCESSES):
        commands = {}
        for model in MODELS[worker::HARNESS_PROCESSES]:
            spec = RunSpec(model, {'img_size': IMG_SIZE}, epochs=1)
            argv = train_command(train_py, SANITY_RECIPE, spec, out, model, data_dir=image_folder,
                                 extra_args=TRAIN_ARGS + ['--checkpoint-hist', '1'])
            commands[model] = argv[1:]  # without the interpreter: [train.py, args...]
        spec_file, errors_file = out / f'commands{worker}.json', out / f'errors{worker}.json'
        spec_file.write_text(json.dumps(commands))
        process = subprocess.Popen([sys.executable, __file__, str(spec_file), str(errors_file)], env=train_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        harnesses.append((process, errors_file))
    errors = {}
    for process, errors_file in harnesses:
        log, _ = process.communicate(timeout=900)
        assert errors_file.is_file(), f'harness failed:\n{log[-4000:]}'
        errors.update(json.loads(errors_file.read_text()))
    return {m: (out / m, errors.get(m)) for m in MODELS}


@pytest.mark.parametrize('model', MODELS)
def test_train_py_one_epoch(one_epoch_runs, model):
    from timm_posembed.report import load_run
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
    from timm_posembed.paper_tables import load_paper_tables
    for table in load_paper_tables().values():
        recipe = load_recipe(RECIPES / table.recipe)
        assert recipe['device_modules'] == ['timm_posembed'], table.recipe
        assert recipe['num_classes'] == DATASET_NUM_CLASSES[table.dataset], table.recipe
        assert 'model' not in recipe and not recipe.get('model_kwargs'), 'rows choose the model'
    assert load_recipe(SANITY_RECIPE)['num_classes'] == DATASET_NUM_CLASSES['fashion-mnist']


def test_driver_dry_run_lists_every_row(capsys):
    from timm_posembed.paper_tables import paper_table
    from timm_posembed.commands.drivers import table_driver_main
    _train_py()  # the driver resolves train.py even for a dry run
    assert table_driver_main('seed001-8', RECIPES, ['--dry-run', '--nproc', '2', '--', '--amp']) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('[seed001-8/')]
    assert len(lines) == len(paper_table('seed001-8').rows)
    assert "n_iter=1" in lines[0] and '--batch-size 64' in lines[0] and lines[0].endswith('--amp')


def test_train_command_merges_kwargs_and_splits_the_global_batch(tmp_path):
    from timm_posembed.paper_tables import paper_table
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
    recipe_path = RECIPES / 'seed001_imagenet100.yaml'
    recipe = load_recipe(recipe_path)
    names = {run_name(recipe_path, RunSpec(r.model, r.model_kwargs, r.epochs), recipe)
             for r in (paper_table('seed001-6').row('supertoken'), paper_table('seed001-7').row('conv1-6'),
                       paper_table('seed001-8').row('t3'))}
    assert names == {'seed001_imagenet100-vit_small_supertoken_conv-extra_stride2_convFalse-n_iter3'
                     '-num_conv_modules6-ep300-seed42'}


def test_driver_skips_finished_runs_and_stops_at_unfinished_ones(tmp_path, capsys):
    from timm_posembed.reproduce import run_specs
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


def _run_commands_in_one_process(commands_json: str, errors_json: str) -> None:
    """Harness: load train.py once and call its main() for each command; record each command's error."""
    import runpy
    import time
    import traceback
    commands = json.loads(Path(commands_json).read_text())
    train_globals = None
    errors = {}
    for name, argv in commands.items():
        sys.argv = argv
        start = time.perf_counter()
        try:
            if train_globals is None:  # not as __main__: nothing runs on load, the script directory is not on sys.path
                train_globals = runpy.run_path(argv[0], run_name='timm_train_script')
            train_globals['main']()
        except BaseException as e:  # noqa: B036 (SystemExit from argparse included)
            errors[name] = f'{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}'
        print(f'HARNESS {name}: {time.perf_counter() - start:.1f} s', file=sys.stderr, flush=True)
    Path(errors_json).write_text(json.dumps(errors))


if __name__ == '__main__':
    _run_commands_in_one_process(*sys.argv[1:3])
