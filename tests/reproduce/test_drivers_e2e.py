""" Every table driver end to end, on the CPU: ``benchmarks/train_<table>.py``'s code path (rows → train.py commands
→ timm's real train.py → the report) on small generated datasets in the layout ``prepare`` writes, overridden to
the smallest run, then ``timm-posembed report`` prints each table with our numbers beside the paper's and writes the
PNG. The GPU reproduction path is the same code with the tables' own recipes.

The smallest run: each table's own recipe (its augmentation, mixup, schedule, class count) with 64 px images,
1 epoch, batch 20, one image per class and split, and every row at depth 1 (``depth=1``; CoaT-Lite:
``serial_depths=[1, 1, 1, 1]``) given through the recipe's ``model_kwargs`` the way the CPU study gives
``img_size``. Rows that several tables share (the same recipe and configuration) train once. train.py is loaded
once per process and its ``main()`` called per run (an interpreter start with timm costs ~15 s here), in two
processes, one per core.

Needs timm's train.py (``TIMM_REPO``, see ``timm_posembed.reproduce.timm_repo``): skipped, saying so, without it.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from timm_posembed.reproduce.tables import RECIPES_DIR, load_paper_tables, paper_table
from timm_posembed.reproduce.launch import train_env
from timm_posembed.reproduce.timm_repo import TIMM_REPO_ENV, timm_repo_setting

IMG_SIZE = 64  # CoaT-Lite's last stage is 1/32 of the input
TRAIN_ARGS = ['--device', 'cpu', '--workers', '0']
TABLES = list(load_paper_tables())


def _train_py_dir() -> Path:
    repo = timm_repo_setting()
    if repo is None:
        pytest.skip(f'{TIMM_REPO_ENV} is not set: the drivers run timm\'s train.py, which is only in timm\'s git '
                    f'repository (set {TIMM_REPO_ENV}=/path/to/pytorch-image-models)')
    if not (repo / 'train.py').is_file():
        pytest.fail(f'{TIMM_REPO_ENV}={repo} has no train.py')
    return repo


def _has_cope_positions() -> bool:
    import inspect
    from timm_posembed.models.vision_transformer_cope import VisionTransformerCOPE
    return 'cope_positions' in inspect.signature(VisionTransformerCOPE.__init__).parameters


def _smallest_recipe(table_id: str, out: Path) -> Path:
    """The table's recipe, overridden to the smallest run; one file per (recipe, family) so shared rows share runs."""
    table = paper_table(table_id)
    coat = table.rows[0].model.startswith('coat')
    depth = {'serial_depths': [1, 1, 1, 1]} if coat else {'depth': 1}
    recipe = yaml.safe_load((RECIPES_DIR / table.recipe).read_text())
    recipe.update(img_size=IMG_SIZE, model_kwargs={'img_size': IMG_SIZE, **depth}, epochs=1, warmup_epochs=0,
                  batch_size=20, pin_mem=False, log_interval=100, checkpoint_hist=1)
    path = out / f'ci_{Path(table.recipe).stem}{"_coat" if coat else ""}.yaml'
    path.write_text(yaml.safe_dump(recipe))
    return path


def _dataset(root: Path, num_classes: int) -> Path:
    """``prepare``'s layout: DST/{train,val}/<wnid>/<name>.JPEG, one image per class and split."""
    from PIL import Image
    dst = root / f'classes{num_classes}'
    for split in ('train', 'val'):
        for c in range(num_classes):
            folder = dst / split / f'n{c:08d}'
            folder.mkdir(parents=True)
            colour = (c * 37 % 256, c * 91 % 256, c * 53 % 256)
            Image.new('RGB', (IMG_SIZE, IMG_SIZE), colour).save(folder / f'n{c:08d}_{split}.JPEG', quality=90)
    return dst


@pytest.fixture(scope='module')
def driven_tables(tmp_path_factory):
    """Run every table's driver (two processes); {table: (recipe, runs folder, driver stdout, exit status)}."""
    repo = _train_py_dir()
    root = tmp_path_factory.mktemp('drivers')
    data = {n: _dataset(root, n) for n in sorted({paper_table(t).num_classes for t in TABLES})}
    jobs, recipes = [], {t: _smallest_recipe(t, root) for t in TABLES}
    for table_id in TABLES:
        table = paper_table(table_id)
        rows = [r.id for r in table.rows if 'cope_positions' not in r.model_kwargs or _has_cope_positions()]
        argv = ['--data-dir', str(data[table.num_classes]), '--recipe', str(recipes[table_id]),
                '--timm-repo', str(repo), '--output', str(root / 'runs'), '--epochs', '1', '--rows', *rows,
                '--', *TRAIN_ARGS]
        jobs.append((table_id, argv))
    # one process per recipe group, so runs shared by tables are trained once, by the first table that asks
    groups = [[j for j in jobs if paper_table(j[0]).num_classes == 200],
              [j for j in jobs if paper_table(j[0]).num_classes != 200]]
    processes = []
    for i, group in enumerate(groups):
        spec, result, log = root / f'jobs{i}.json', root / f'results{i}.json', root / f'harness{i}.log'
        spec.write_text(json.dumps(group))
        with log.open('w') as log_file:  # a file, not a pipe: a full pipe would stall one process on the other
            process = subprocess.Popen([sys.executable, __file__, str(spec), str(result)], env=train_env(),
                                       stdout=log_file, stderr=subprocess.STDOUT)
        processes.append((process, result, log))
    results = {}
    for process, result, log in processes:
        process.wait(timeout=3600)  # a hang guard: ~2 min on two free cores
        assert result.is_file(), f'driver harness failed:\n{log.read_text()[-4000:]}'
        results.update(json.loads(result.read_text()))
    return {t: (recipes[t], root / 'runs', *results[t]) for t in TABLES}


@pytest.mark.parametrize('table_id', TABLES)
def test_driver_trains_every_row_and_report_prints_ours_beside_the_papers(driven_tables, table_id, tmp_path, capsys):
    from PIL import Image

    from timm_posembed.cli import main
    recipe, runs, stdout, status = driven_tables[table_id]
    table = paper_table(table_id)
    assert status == 0, stdout[-4000:]
    assert f'### {table.title}' in stdout  # the driver's own report

    png = tmp_path / f'{table_id}.png'
    assert main(['report', str(runs), '--table', table_id, '--recipe', str(recipe), '--plot', str(png),
                 '--format', 'json']) == 0
    report = json.loads(capsys.readouterr().out)
    # at --epochs 1 a row that differs from another only in its epochs (the super-token paper's 500-epoch rows) is the
    # same run, placed in the row of the recipe's length
    trained = [r for r in table.rows if r.epochs is None
               and ('cope_positions' not in r.model_kwargs or _has_cope_positions())]
    by_row = {r['row']: r for r in report['rows']}
    assert all(by_row[r.id]['num_runs'] == 0 for r in table.rows if r.epochs is not None)
    for row in trained:
        record = by_row[row.id]
        assert record['num_runs'] == 1 and record['epochs_done'] == 1, (row.id, record)
        assert 0.0 <= record['ours_top1'] <= 100.0 and record['ours_params'] > 0
        assert record['paper_top1'] == row.paper_numbers.get('top1')  # the paper's number, beside ours
    with Image.open(png) as image:
        assert image.format == 'PNG'

    assert main(['report', str(runs), '--table', table_id, '--recipe', str(recipe), '--no-params']) == 0
    text = capsys.readouterr().out
    assert "Our runs are not the paper's setting" in text and f'Paper top-1 (%), {table.dataset}' in text


def test_cope_grid_row_end_to_end(driven_tables):
    if not _has_cope_positions():
        pytest.skip('the COPE ViTs of this checkout have no cope_positions kwarg yet (grid positions)')
    _, runs, stdout, status = driven_tables['cope-tiny-imagenet-extended']
    assert status == 0 and any('cope_positionsgrid' in p.name for p in runs.iterdir()), stdout[-2000:]


def _drive(jobs_json: str, results_json: str) -> None:
    """Harness: run each (table, argv) driver in this process, train.py's main() called in-process per run."""
    import contextlib
    import io
    import logging
    import runpy
    import traceback

    from timm_posembed.reproduce.drivers import table_driver_main
    train_globals = {}

    def in_process(argv, env):
        sys.argv = argv[1:]  # [train.py, args...]
        logging.getLogger().handlers.clear()  # train.py adds its log handler on every main()
        try:
            if not train_globals:  # not as __main__: the script's folder (timm/ of the repo) stays off sys.path
                train_globals.update(runpy.run_path(argv[1], run_name='timm_train_script'))
            train_globals['main']()
            return 0
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 1
        except Exception:  # noqa: BLE001 (reported as the run's failure, like a process's exit status)
            traceback.print_exc()
            return 1

    results = {}
    for table_id, argv in json.loads(Path(jobs_json).read_text()):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = table_driver_main(table_id, argv, runner=in_process)
        results[table_id] = (out.getvalue(), status)
        print(out.getvalue()[-3000:], flush=True)
    Path(results_json).write_text(json.dumps(results))


if __name__ == '__main__':
    _drive(*sys.argv[1:3])
