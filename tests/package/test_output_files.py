""" Result files (``bench --json/--markdown``, ``report --plot``) are replaced whole or not at all. """
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from timm_posembed._output_files import write_atomically


def test_complete_file_replaces_the_old_one(tmp_path):
    path = tmp_path / 'bench.json'
    path.write_text('old')
    write_atomically(path, lambda tmp: tmp.write_text('new'))
    assert path.read_text() == 'new'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bench.json']


@pytest.mark.parametrize('error', [OSError('disk full'), KeyboardInterrupt()])
def test_interrupted_write_leaves_the_old_file_and_no_partial(tmp_path, error):
    path = tmp_path / 'bench.json'
    path.write_text('old')

    def write(tmp):
        tmp.write_text('half')
        raise error

    with pytest.raises(type(error)):
        write_atomically(path, write)
    assert path.read_text() == 'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bench.json']


def test_sigterm_midway_leaves_the_old_file_and_no_partial(tmp_path):
    # what `timeout`, SLURM or `docker stop` send to a `bench --json` still rewriting its file
    path = tmp_path / 'bench.json'
    path.write_text('old')
    child = textwrap.dedent('''
        import sys, time
        from timm_posembed._output_files import write_atomically
        def write(tmp):
            tmp.write_text('half')
            print('midway', flush=True)
            time.sleep(60)
        write_atomically(sys.argv[1], write)
    ''')
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, '-c', child, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == 'midway', proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM  # unwound by SystemExit, after clean-up
    assert path.read_text() == 'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bench.json']


def test_result_file_gets_the_umasks_permissions(tmp_path):
    # mkstemp creates 0600 files; a result file should be readable as any file the user writes
    old = os.umask(0o022)
    try:
        path = write_atomically(tmp_path / 'table.md', lambda tmp: tmp.write_text('x'))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_report_plot_is_written_atomically(tmp_path, monkeypatch):
    pytest.importorskip('matplotlib')
    import matplotlib.figure
    from timm_posembed.reproduce import report

    from train_runs import write_run
    from timm_posembed.reproduce.runs import load_run

    run = load_run(write_run(tmp_path / 'runs', 'r', 'vit_tiny_cope', [10.0, 20.0]))
    out = tmp_path / 'plots'
    out.mkdir()
    png = out / 'curves.png'
    png.write_bytes(b'previous plot')

    def interrupted_savefig(self, fname, **kwargs):
        with open(fname, 'wb') as f:
            f.write(b'\x89PNG partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', interrupted_savefig)
    with pytest.raises(KeyboardInterrupt):
        report.plot_curves([('r', run)], png, 'title')
    assert png.read_bytes() == b'previous plot'
    assert sorted(p.name for p in out.iterdir()) == ['curves.png']
