""" The ``list``, ``run`` and ``demo`` commands and the demo's generated task. """
import subprocess
import sys
import textwrap

import pytest
import torch

from timm_posembed.cli import main as cli_main
from timm_posembed.measure.demo import QuadrantDataset, train_and_evaluate
from timm_posembed.models import list_model_info
from timm_posembed.reproduce.timm_repo import timm_repo_setting


def test_list_shows_every_model_with_its_size_and_paper(capsys):
    assert cli_main(['list']) == 0
    out = capsys.readouterr().out
    for info in list_model_info():
        assert info.name in out and info.baseline in out
    cope_row = next(line for line in out.splitlines() if line.startswith('vit_tiny_cope '))
    assert '5.60M' in cope_row and '1.25' in cope_row and 'tiny_imagenet' in cope_row


def test_list_with_num_classes_and_filter(capsys):
    assert cli_main(['list', '*cope*', '--num-classes', '200']) == 0
    out = capsys.readouterr().out
    assert 'vit_tiny_cope' in out and 'supertoken' not in out
    assert cli_main(['list', 'no_such_model*']) == 1


def test_run_imports_the_plugin_before_the_script(tmp_path, capsys):
    script = tmp_path / 'script.py'
    script.write_text(textwrap.dedent('''
        import sys, timm
        print('args', sys.argv[1:], timm.is_model('vit_tiny_cope'))
        sys.exit(3)
    '''))
    assert cli_main(['run', str(script), '--model', 'vit_tiny_cope']) == 3
    assert "args ['--model', 'vit_tiny_cope'] True" in capsys.readouterr().out


def test_run_names_a_missing_script(capsys):
    assert cli_main(['run', 'no/such/validate.py']) == 2
    assert "timm's git repository" in capsys.readouterr().err


def test_run_keeps_the_scripts_exit_message_and_status(tmp_path, capsys):
    script = tmp_path / 'script.py'
    script.write_text('raise SystemExit("no such model: vit_huge_cope")\n')
    direct = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert cli_main(['run', str(script)]) == direct.returncode == 1
    assert capsys.readouterr().err == direct.stderr == 'no such model: vit_huge_cope\n'
    script.write_text('import sys; sys.exit(None)\n')
    assert cli_main(['run', str(script)]) == 0


ARGV_SCRIPT = textwrap.dedent('''
    import argparse, sys
    parser = argparse.ArgumentParser(description='the script help')
    parser.add_argument('--model')
    parser.add_argument('data', nargs='*')
    print('argv', sys.argv[1:], vars(parser.parse_args()))
''')


@pytest.mark.parametrize('run_args, script_argv', [
    (['--model', 'x', 'd'], ['--model', 'x', 'd']),
    # run's own `--`, right after SCRIPT or after some of the script's arguments, is not passed on ...
    (['--', '--model', 'x'], ['--model', 'x']),
    (['--model', 'x', '--', 'd'], ['--model', 'x', 'd']),
    # ... a second one is the script's
    (['--model', 'x', '--', 'd', '--', '-e'], ['--model', 'x', 'd', '--', '-e']),
])
def test_run_hands_every_argument_after_the_script_to_it(tmp_path, capsys, run_args, script_argv):
    script = tmp_path / 'script.py'
    script.write_text(ARGV_SCRIPT)
    assert cli_main(['run', str(script)] + run_args) == 0
    assert f'argv {script_argv}' in capsys.readouterr().out


def test_run_script_help_is_the_scripts(tmp_path, capsys):
    script = tmp_path / 'script.py'
    script.write_text(ARGV_SCRIPT)
    for flag in ('--help', '-h'):
        assert cli_main(['run', str(script), flag]) == 0
        out = capsys.readouterr().out
        assert 'the script help' in out and 'Imports timm_posembed' not in out
    with pytest.raises(SystemExit):  # run's own help, before SCRIPT
        cli_main(['run', '--help'])
    assert 'Imports timm_posembed' in capsys.readouterr().out
    assert cli_main(['run']) == 2 and 'SCRIPT is missing' in capsys.readouterr().err


def test_run_timm_validate_help(capsys):
    repo = timm_repo_setting()
    if repo is None or not (repo / 'validate.py').is_file():
        pytest.skip(f'needs timm\'s validate.py, which is only in timm\'s git repository: set TIMM_REPO (now {repo})')
    assert cli_main(['run', str(repo / 'validate.py'), '--help']) == 0
    out = capsys.readouterr().out
    assert 'PyTorch ImageNet Validation' in out and '--checkpoint' in out


def test_quadrant_labels_match_where_the_square_is():
    images, labels = QuadrantDataset(img_size=32, noise=0.0, seed=3).batch(64)
    half = 16
    for image, label in zip(images, labels.tolist()):
        quadrant_sums = [image[:, r * half:(r + 1) * half, c * half:(c + 1) * half].sum()
                         for r in (0, 1) for c in (0, 1)]
        assert int(torch.stack(quadrant_sums).argmax()) == label
    assert set(labels.tolist()) == {0, 1, 2, 3}


def test_demo_training_learns_position_only_with_a_position_embedding():
    cope = train_and_evaluate('vit_tiny_cope', steps=40)
    no_position = train_and_evaluate('vit_tiny_patch16_224', {'pos_embed': 'none'}, steps=40)
    assert cope.accuracy > 0.6, cope
    assert no_position.accuracy < 0.45, no_position  # chance is 0.25: patch tokens alone carry no position


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit):
        cli_main(['list', '--num-classes', 'many'])


# The console script, as pip writes it: argv[0] is the script's name when timm_posembed is first imported.
_CONSOLE_SCRIPT = textwrap.dedent('''\
    import atexit, sys
    atexit.register(lambda: print('torch imported' if 'torch' in sys.modules else 'torch not imported',
                                  file=sys.stderr))
    sys.argv[0] = 'timm-posembed'
    from timm_posembed.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def _console(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', _CONSOLE_SCRIPT, *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize('command', [None, 'list', 'demo', 'run', 'prepare', 'reproduce', 'report', 'bench',
                                     'publish', 'card'])
def test_help_answers_without_importing_torch(command):
    result = _console(*([command] if command else []), '--help')
    assert result.returncode == 0, result.stderr
    assert 'usage: timm-posembed' in result.stdout
    assert result.stderr.strip().splitlines()[-1] == 'torch not imported', result.stderr


def test_an_argument_error_answers_without_importing_torch():
    result = _console('bench', '--batch-size', 'zero')
    assert result.returncode == 2 and 'expected an integer >= 1' in result.stderr
    assert result.stderr.strip().splitlines()[-1] == 'torch not imported'


def test_a_command_that_needs_the_models_registers_them():
    # the console script's own import of the package skips the models; a command that needs them imports them
    result = _console('list', 'vit_tiny_cope')
    assert result.returncode == 0, result.stderr
    assert 'vit_tiny_cope' in result.stdout and result.stderr.strip().splitlines()[-1] == 'torch imported'
