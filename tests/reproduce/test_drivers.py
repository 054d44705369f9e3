""" The table drivers' command line (``timm_posembed.commands.drivers``): seeds, epoch overrides, another recipe,
and torchrun's options for one or several nodes, checked on the train.py commands a dry run prints. """
import shlex
from pathlib import Path

import pytest

from timm_posembed.reproduce.drivers import table_driver_main
from timm_posembed.reproduce.tables import RECIPES_DIR, paper_table
from timm_posembed.reproduce.launch import Launch



@pytest.fixture
def fake_repo(tmp_path) -> Path:
    (tmp_path / 'repo').mkdir()
    (tmp_path / 'repo' / 'train.py').write_text('')  # never executed: dry runs
    return tmp_path / 'repo'


def _commands(capsys, table_id):
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f'[{table_id}/')]
    return [(line[1:line.index(']')], shlex.split(line[line.index(']') + 2:])) for line in lines]


def test_seeds_train_every_row_once_per_seed_seeds_outer(fake_repo, tmp_path, capsys):
    argv = ['--dry-run', '--timm-repo', str(fake_repo), '--output', str(tmp_path / 'out'), '--seeds', '0', '1', '2']
    assert table_driver_main('cope-tiny-imagenet', argv) == 0
    commands = _commands(capsys, 'cope-tiny-imagenet')
    assert [tag for tag, _ in commands] == [f'cope-tiny-imagenet/{row} seed {s}' for s in (0, 1, 2)
                                           for row in ('learnable_pe', 'cope')]
    for tag, cmd in commands:
        seed = tag.rsplit(' ', 1)[1]
        assert cmd[cmd.index('--seed') + 1] == seed and cmd[cmd.index('--experiment') + 1].endswith(f'-seed{seed}')


def test_epochs_override_merges_rows_that_differ_only_in_epochs(fake_repo, tmp_path, capsys):
    argv = ['--dry-run', '--timm-repo', str(fake_repo), '--output', str(tmp_path), '--epochs', '1']
    assert table_driver_main('stoken-in100-embeddings', argv) == 0
    commands = _commands(capsys, 'stoken-in100-embeddings')
    # patch / patch_500ep and conv / conv_500ep are one configuration each at one epoch
    assert [tag for tag, _ in commands] == [f'stoken-in100-embeddings/{row}' for row in ('patch', 'conv', 'supertoken')]
    assert all(cmd[cmd.index('--epochs') + 1] == '1' for _, cmd in commands)
    with pytest.raises(SystemExit):
        table_driver_main('stoken-in100-embeddings', argv[:-1] + ['0'])
    assert '--epochs must be >= 1' in capsys.readouterr().err


def test_another_recipe_gives_every_row_its_model_kwargs(fake_repo, tmp_path, capsys):
    study = RECIPES_DIR / 'fashion_mnist_study.yaml'
    argv = ['--dry-run', '--timm-repo', str(fake_repo), '--output', str(tmp_path), '--recipe', str(study),
            '--rows', 'none', 'rope_mixed']
    assert table_driver_main('cope-tiny-imagenet-extended', argv) == 0
    (_, none), (_, rope) = _commands(capsys, 'cope-tiny-imagenet-extended')
    assert none[none.index('--config') + 1] == str(study)
    assert none[none.index('--model-kwargs') + 1:none.index('--output')] == ['img_size=32', "pos_embed='none'"]
    assert rope[rope.index('--model') + 1] == 'vit_small_patch16_rope_mixed_224'
    assert rope[rope.index('--model-kwargs') + 1:rope.index('--output')] == [
        'img_size=32', 'embed_dim=192', 'num_heads=3']


def test_two_nodes_pass_torchrun_options_and_split_the_global_batch(fake_repo, tmp_path, capsys):
    argv = ['--dry-run', '--timm-repo', str(fake_repo), '--output', str(tmp_path), '--rows', 't1',
            '--nproc', '4', '--nnodes', '2', '--node-rank', '1', '--rdzv-endpoint', 'node0:29500', '--', '--amp']
    assert table_driver_main('stoken-in100-iterations', argv) == 0
    [(_, cmd)] = _commands(capsys, 'stoken-in100-iterations')
    run = cmd.index('torch.distributed.run')
    assert cmd[run + 1:run + 5] == ['--nproc-per-node=4', '--nnodes=2', '--rdzv-endpoint=node0:29500',
                                    '--node-rank=1']
    assert '--standalone' not in cmd
    assert cmd[cmd.index('--batch-size') + 1] == '16'  # the recipe's global 128 over 2 x 4 processes
    assert cmd[-1] == '--amp'


def test_one_node_stays_standalone():
    assert Launch(nproc=2).prefix()[2:] == ['torch.distributed.run', '--standalone', '--nproc-per-node=2']
    assert Launch().prefix()[1:] == []
    c10d = Launch(nproc=8, nnodes=4, rdzv_endpoint='head:29400', rdzv_backend='c10d', rdzv_id='job7')
    assert c10d.world_size == 32 and c10d.prefix()[-2:] == ['--rdzv-backend=c10d', '--rdzv-id=job7']


@pytest.mark.parametrize('options, message', [
    (['--nnodes', '2', '--node-rank', '0'], '--nnodes=2 needs --rdzv-endpoint=HOST:PORT'),
    (['--nnodes', '2', '--rdzv-endpoint', 'h:1'], 'several nodes need --node-rank'),
    (['--nnodes', '2', '--node-rank', '2', '--rdzv-endpoint', 'h:1'], '--node-rank must be in 0..1'),
    (['--nproc', '0'], '--nproc and --nnodes must be >= 1'),
])
def test_bad_node_options_are_refused_before_any_run(fake_repo, tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exit_info:
        table_driver_main('stoken-in100-iterations', ['--dry-run', '--timm-repo', str(fake_repo)] + options)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_every_table_has_a_driver():
    drivers = Path(__file__).resolve().parents[2] / 'benchmarks'
    tables = {path.read_text().split("table_driver_main('", 1)[1].split("'", 1)[0]
              for path in drivers.glob('train_*.py')}
    from timm_posembed.reproduce.tables import list_paper_tables
    assert tables == set(list_paper_tables())
    assert all(paper_table(t).baseline for t in tables)
