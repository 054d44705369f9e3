""" ``timm-posembed report`` (and the recipe reader of the table drivers) on hostile run folders and recipes: every
one ends in a one- or two-line error naming the file (and line), fast, with nothing written. """
import errno
import os
import time

import pytest

from timm_posembed.cli import main
from timm_posembed.reproduce.launch import load_recipe
from timm_posembed.reproduce.runs import RunFormatError, load_run

from train_runs import SUMMARY_HEADER, write_run

ST = 'vit_small_supertoken_conv'

# nine levels of nine aliases: ~400 bytes naming 9**9 (~4e8) strings
BILLION_LAUGHS = ('a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
                  + ''.join(f'a{i}: &a{i} [{", ".join([f"*a{i - 1}"] * 9)}]\n' for i in range(1, 10)))


def _report_error(capsys, *argv) -> str:
    """Run ``report`` expecting a failure; return its stderr, checked to be one or two lines and no traceback."""
    assert main(['report', *map(str, argv)]) != 0
    err = capsys.readouterr().err
    assert err.startswith('timm-posembed report: error: ') and 'Traceback' not in err, err
    assert len(err.strip().splitlines()) <= 2, err
    return err


def test_alias_bomb_in_args_yaml_is_refused_at_once(tmp_path, capsys):
    run = write_run(tmp_path, 'r', ST, [10.0])
    # the bomb inside model_kwargs: formatting the row would walk every expanded string
    (run / 'args.yaml').write_text(BILLION_LAUGHS + 'model: vit_small_supertoken_conv\nepochs: 1\nmodel_kwargs:\n'
                                   '  stoken_num_iters: *a9\n')
    start = time.perf_counter()
    err = _report_error(capsys, run, '--no-params')
    assert time.perf_counter() - start < 1.0
    assert f'{run / "args.yaml"}: its aliases (*name) expand to more than' in err


def test_oversized_args_yaml_is_refused_by_its_size(tmp_path, capsys):
    run = write_run(tmp_path, 'r', ST, [10.0])
    with (run / 'args.yaml').open('a') as f:
        f.write('notes: "' + 'x' * (8 << 20) + '"\n')  # 8 MB: minutes of parsing
    start = time.perf_counter()
    err = _report_error(capsys, run)
    assert time.perf_counter() - start < 1.0
    assert f'{run / "args.yaml"}: larger than 262,144 bytes' in err


def test_a_user_recipe_is_read_with_the_same_bounds(tmp_path, capsys):
    bomb = tmp_path / 'bomb.yaml'
    bomb.write_text(BILLION_LAUGHS + 'epochs: 1\nbatch_size: 8\nseed: 0\nnum_classes: 10\nmodel_kwargs: {x: *a9}\n')
    start = time.perf_counter()
    with pytest.raises(ValueError, match='bomb.yaml: its aliases'):
        load_recipe(bomb)
    assert time.perf_counter() - start < 1.0
    bad = tmp_path / 'bad.yaml'
    bad.write_text('epochs: 1\nbatch_size: 8\nseed: 0\nnum_classes: ten\n')
    with pytest.raises(ValueError, match=r'bad.yaml:4: num_classes must be an integer >= 1'):
        load_recipe(bad)
    run = write_run(tmp_path / 'runs', 'r', ST, [10.0])
    err = _report_error(capsys, run, '--table', 'stoken-in100-iterations', '--no-params', '--recipe', bad)
    assert 'bad.yaml:4: num_classes' in err


@pytest.mark.parametrize('lines, bad_line, message', [
    (['0,3.0,2.0,inf,50,0.1'], 2, 'eval_top1 is a percentage, 0..100'),
    (['0,3.0,2.0,20,50,0.1', '1,3.0,2.0,150,50,0.1'], 3, 'eval_top1 is a percentage, 0..100 .*got 150'),
    (['0,3.0,2.0,-20,50,0.1'], 2, 'eval_top1 is a percentage, 0..100 .*got -20'),
    (['0,3.0,2.0,20,500,0.1'], 2, 'eval_top5 is a percentage'),
    (['0.2,3.0,2.0,20,50,0.1', '0.7,3.0,2.0,30,50,0.1'], 2, 'epoch must be an integer >= 0.*got 0.2'),
    (['nan,3.0,2.0,20,50,0.1'], 2, 'epoch must be an integer >= 0'),
    (['inf,3.0,2.0,20,50,0.1'], 2, 'epoch must be an integer >= 0'),
    (['-1,3.0,2.0,20,50,0.1'], 2, 'epoch must be an integer >= 0'),
])
def test_numbers_train_py_cannot_write_are_refused_with_file_and_line(tmp_path, capsys, lines, bad_line, message):
    run = write_run(tmp_path, 'r', ST, [10.0])
    (run / 'summary.csv').write_text('\n'.join([SUMMARY_HEADER] + lines) + '\n')
    with pytest.raises(RunFormatError, match=f'summary.csv:{bad_line}: {message}'):
        load_run(run)
    assert f'summary.csv:{bad_line}: ' in _report_error(capsys, run)


def test_a_diverged_nan_epoch_is_still_read(tmp_path):
    run = write_run(tmp_path, 'r', ST, [float('nan'), 30.0])
    assert load_run(run).best_top1 == 30.0


M = b'model: vit_small_supertoken_conv\n'


@pytest.mark.parametrize('args_yaml, message', [
    (M + b'epochs: 3\nnotes: \xff\xfe\n', r'args.yaml:3: not UTF-8 text'),
    (M + b'epochs: abc\n', r'args.yaml:2: epochs must be an integer >= 0, got .abc.'),
    (M + b'epochs: [1]\n', r'args.yaml:2: epochs must be an integer >= 0, got \[1\]'),
    (M + b'epochs: .inf\n', r'args.yaml:2: epochs must be an integer >= 0, got inf'),
    (M + b'epochs: 3\nmodel_kwargs: 5\n', r'args.yaml:3: model_kwargs must be a mapping'),
    (M + b'epochs: 3\nnum_classes: abc\n', r'args.yaml:3: num_classes must be an integer'),
    (b'model: [1, 2]\nepochs: 3\n', r'args.yaml:1: model must be a timm model name'),
    (b'model: "a|b\\n---\\n<script>"\nepochs: 3\n', r'args.yaml:1: model must be a timm model name'),
    (M + b'epochs: 1\nepochs: 2\n', r"args.yaml:3: 'epochs' is set twice \(also on line 2\)"),
    (b'- just\n- a list\n', r'args.yaml: is a list, not a mapping of keys'),
])
def test_malformed_args_yaml_names_file_and_line(tmp_path, capsys, args_yaml, message):
    run = write_run(tmp_path, 'r', ST, [10.0])
    (run / 'args.yaml').write_bytes(args_yaml)
    with pytest.raises(RunFormatError, match=message):
        load_run(run)
    _report_error(capsys, run)


@pytest.mark.parametrize('content, message', [
    (SUMMARY_HEADER.encode() + b'\n0,3.0,2.0,"' + b'1' * (10 << 20) + b'",1,1\n', r'summary.csv:2: not a train.py '
                                                                                   r'summary line \(field larger'),
    (SUMMARY_HEADER.encode() + b'\n0,3.0,2.0,\xff,1,1\n', r'summary.csv:2: not UTF-8 text'),
    (SUMMARY_HEADER.encode() + b'\n0,3.0,2.0,1\x00,1,1\n', r'summary.csv:2: not a numeric summary row'),
])
def test_malformed_summary_csv_names_file_and_line(tmp_path, capsys, content, message):
    run = write_run(tmp_path, 'r', ST, [10.0])
    (run / 'summary.csv').write_bytes(content)
    with pytest.raises(RunFormatError, match=message):
        load_run(run)
    _report_error(capsys, run)


def _plot_args(tmp_path, png):
    for t in (1, 3):
        write_run(tmp_path / 'runs', f't{t}', ST, [40.0, 60.0 + t])
    return [tmp_path / 'runs', '--no-params', '--plot', png]


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EROFS])
def test_plot_on_a_full_or_read_only_disk_names_the_path_and_keeps_the_old_file(tmp_path, capsys, monkeypatch,
                                                                                code):
    pytest.importorskip('matplotlib')
    png = tmp_path / 'curves.png'
    png.write_bytes(b'the previous plot')
    argv = _plot_args(tmp_path, png)

    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, 'replace', failing_replace)  # the moment the finished PNG would replace the old one
    err = _report_error(capsys, *argv)
    assert f'--plot {png}: cannot write it: {os.strerror(code)} ({errno.errorcode[code]})' in err
    assert png.read_bytes() == b'the previous plot'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['curves.png', 'runs']  # no staging file left


def test_plot_below_a_file_or_in_a_missing_folder_is_refused_before_any_work(tmp_path, capsys):
    a_file = tmp_path / 'notes.txt'
    a_file.write_text('x')
    err = _report_error(capsys, *_plot_args(tmp_path, a_file / 'curves.png'))
    assert f'the folder {a_file} is a file, not a folder' in err
    missing = tmp_path / 'new' / 'deeper' / 'curves.png'
    err = _report_error(capsys, tmp_path / 'runs', '--plot', missing)
    assert f'the folder {missing.parent} does not exist' in err
    assert not (tmp_path / 'new').exists() and a_file.read_text() == 'x'


def test_a_run_file_that_is_not_a_regular_file_is_named_not_read(tmp_path, capsys):
    run = write_run(tmp_path, 'r', ST, [10.0])
    (run / 'args.yaml').unlink()
    os.mkfifo(run / 'args.yaml')  # reading it would block until a writer comes
    assert f'{run / "args.yaml"} is not a regular file' in _report_error(capsys, run)


def test_a_byte_order_mark_and_newlines_in_kwargs_do_not_break_the_report(tmp_path, capsys):
    run = write_run(tmp_path, 'r', ST, [10.0, 20.0], model_kwargs={'note': 'two\nlines | and a pipe'})
    (run / 'summary.csv').write_bytes(b'\xef\xbb\xbf' + (run / 'summary.csv').read_bytes())
    assert main(['report', str(run)]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 3 and 'note=two lines \\| and a pipe' in rows[2] and '| 20.00 |' in rows[2]


def test_reproduce_without_train_py_is_a_usage_error_not_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(['reproduce', 'stoken-in100-iterations', '--data-dir', str(tmp_path), '--timm-repo', str(tmp_path)])
    assert e.value.code == 2
    assert f'no train.py in the timm repository {tmp_path}' in capsys.readouterr().err


def test_a_folder_of_runs_is_looked_at_one_level_and_bounded(tmp_path, capsys, monkeypatch):
    from timm_posembed.reproduce import runs
    monkeypatch.setattr(runs, 'MAX_FOLDER_ENTRIES', 5, raising=False)
    for i in range(6):
        (tmp_path / 'many' / f'junk{i}').mkdir(parents=True)
    assert f'{tmp_path / "many"} holds more than 5 entries' in _report_error(capsys, tmp_path / 'many')
