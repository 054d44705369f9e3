""" ``timm-posembed prepare`` on hostile and broken source trees: names that would place files outside the
destination, links out of the source, corrupt or wrong files, and runs that fail or are killed midway. Every case
must leave the destination as it was and write nothing anywhere else. Trees are generated, a few bytes per image. """
import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from timm_posembed.cli import main
import timm_posembed.data as prep
from timm_posembed.data import fashion_mnist
from dataset_trees import make_imagenet, make_tiny_imagenet, tiny_wnid, write_idx_files

REPO = Path(__file__).resolve().parents[2]
NUM_TRAIN = prep.TINY_IMAGENET_NUM_CLASSES  # one training image per class in the fixture below


@pytest.fixture
def tiny_src(tmp_path):
    return make_tiny_imagenet(tmp_path / 'tiny-imagenet-200', train_per_class=1)


def _tree(root: Path) -> set:
    """Every path under ``root`` (links not followed), to show that a failed run wrote nothing."""
    return {str(p.relative_to(root)) for p in root.rglob('*')}


@pytest.mark.parametrize('evil', ['../../evil', '/ABSOLUTE/evil'])
def test_tiny_imagenet_class_names_cannot_leave_the_destination(tiny_src, tmp_path, evil):
    if evil.startswith('/'):
        evil = str(tmp_path / 'abs_evil')
    # class 0 renamed to a path in wnids.txt and val_annotations.txt, with a train folder where that path leads
    wnids = (tiny_src / 'wnids.txt').read_text().replace(tiny_wnid(0), evil)
    (tiny_src / 'wnids.txt').write_text(wnids)
    annotations = tiny_src / 'val' / 'val_annotations.txt'
    annotations.write_text(annotations.read_text().replace(f'\t{tiny_wnid(0)}\t', f'\t{evil}\t'))
    images = tiny_src / 'train' / evil / 'images'
    images.mkdir(parents=True, exist_ok=True)
    (images / 'x.JPEG').write_bytes(b'x')
    before = _tree(tmp_path)
    dst = tmp_path / 'a' / 'out'
    with pytest.raises(prep.DatasetLayoutError, match=r'are not wnids; expected .* n \+ 8 digits'):
        prep.prepare_tiny_imagenet(tiny_src, dst)
    assert _tree(tmp_path) == before  # in particular no tmp_path/a/evil, no DST


def test_tiny_imagenet_annotation_file_names_are_plain_names(tiny_src, tmp_path):
    annotations = tiny_src / 'val' / 'val_annotations.txt'
    annotations.write_text(annotations.read_text().replace('val_0.JPEG', '../../val_0.JPEG'))
    with pytest.raises(prep.DatasetLayoutError, match=r"val_annotations\.txt:1: image file name '\.\./\.\./val_0"):
        prep.prepare_tiny_imagenet(tiny_src, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('link', ['auto', 'hardlink', 'symlink', 'copy'])
def test_links_out_of_the_source_are_refused_in_every_mode(tiny_src, tmp_path, link):
    secret = tmp_path / 'secret.txt'
    secret.write_bytes(b'not an image')
    evil = tiny_src / 'train' / tiny_wnid(4) / 'images' / 'evil.JPEG'
    evil.symlink_to(secret)
    with pytest.raises(prep.DatasetLayoutError, match='outside the source folder') as e:
        prep.prepare_tiny_imagenet(tiny_src, tmp_path / 'out', link=link)
    assert str(evil) in str(e.value)  # names the link
    assert not (tmp_path / 'out').exists() and secret.stat().st_nlink == 1


def test_a_fifo_named_like_an_image_is_an_error_not_a_missing_image(tiny_src, tmp_path):
    fifo = tiny_src / 'train' / tiny_wnid(4) / 'images' / 'fifo.JPEG'
    os.mkfifo(fifo)
    with pytest.raises(prep.DatasetLayoutError, match=f'{fifo} is not a regular file'):
        prep.prepare_tiny_imagenet(tiny_src, tmp_path / 'out', link='copy')


def test_a_destination_filled_meanwhile_is_not_replaced(tiny_src, tmp_path, monkeypatch):
    dst = tmp_path / 'out'
    real_replace = os.replace

    def another_run_finishes_first(stage, target):
        (dst / 'theirs').mkdir(parents=True)
        return real_replace(stage, target)

    monkeypatch.setattr(os, 'replace', another_run_finishes_first)
    with pytest.raises(prep.DatasetLayoutError, match='was created or filled by something else'):
        prep.prepare_tiny_imagenet(tiny_src, dst)
    assert os.listdir(dst) == ['theirs'] and _staging_leftovers(tmp_path) == []


def test_a_link_loop_is_an_error_naming_it(tiny_src, tmp_path):
    loop = tiny_src / 'train' / tiny_wnid(4) / 'images' / 'loop.JPEG'
    loop.symlink_to(loop.name)
    with pytest.raises(prep.DatasetLayoutError, match=f'{loop} cannot be resolved'):
        prep.prepare_tiny_imagenet(tiny_src, tmp_path / 'out')


def test_a_linked_folder_out_of_the_source_is_refused_by_name(tmp_path):
    wnids = prep.read_class_list()
    src = make_imagenet(tmp_path / 'imagenet', wnids)
    elsewhere = tmp_path / 'elsewhere'
    os.rename(src / 'val' / wnids[7], elsewhere)
    (src / 'val' / wnids[7]).symlink_to(elsewhere)
    with pytest.raises(prep.DatasetLayoutError, match=rf"val/{wnids[7]} is a symbolic link to .*elsewhere, outside"):
        prep.prepare_imagenet100(src, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


def test_links_inside_the_source_are_followed(tiny_src, tmp_path):
    # a source that shares one image between two classes by a relative link stays inside itself
    link = tiny_src / 'train' / tiny_wnid(1) / 'images' / 'shared.JPEG'
    link.symlink_to(Path('..', '..', tiny_wnid(2), 'images', f'{tiny_wnid(2)}_0.JPEG'))
    result = prep.prepare_tiny_imagenet(tiny_src, tmp_path / 'out')
    assert result.num_images['train'] == NUM_TRAIN + 1
    assert (tmp_path / 'out' / 'train' / tiny_wnid(1) / 'shared.JPEG').read_bytes() == f'{tiny_wnid(2)}-0'.encode()


def test_non_utf8_wnids_file_names_the_file(tiny_src, tmp_path):
    (tiny_src / 'wnids.txt').write_bytes(b'n00000000\n\xff\xfe\n')
    with pytest.raises(prep.DatasetLayoutError, match=r'wnids\.txt is not UTF-8 text \(byte 0xff at offset 10\)'):
        prep.prepare_tiny_imagenet(tiny_src, tmp_path / 'out')


def test_an_annotation_file_that_is_a_fifo_is_refused_not_read(tiny_src, tmp_path):
    annotations = tiny_src / 'val' / 'val_annotations.txt'
    annotations.unlink()
    os.mkfifo(annotations)  # reading it would block forever
    with pytest.raises(prep.DatasetLayoutError, match=r'val_annotations\.txt is not a regular file'):
        prep.prepare_tiny_imagenet(tiny_src, tmp_path / 'out')


def test_a_destination_that_is_a_file(tiny_src, tmp_path, capsys):
    dst = tmp_path / 'out'
    dst.write_text('my notes')
    assert main(['prepare', 'tiny-imagenet', str(tiny_src), str(dst)]) == 2
    assert f'destination {dst} is a file, not a folder' in capsys.readouterr().err
    assert dst.read_text() == 'my notes'


@pytest.mark.parametrize('content, message', [
    ('', 'is empty; expected ImageNet class ids'),
    ('\n\n', 'is empty; expected ImageNet class ids'),
    (None, r'is missing; expected a class list: ImageNet class ids \(wnids: n \+ 8 digits'),
])
def test_empty_or_missing_class_list(tmp_path, content, message):
    src = make_imagenet(tmp_path / 'imagenet', ['n01440764'])
    class_list = tmp_path / 'list.txt'
    if content is not None:
        class_list.write_text(content)
    with pytest.raises(prep.DatasetLayoutError, match=message):
        prep.prepare_imagenet100(src, tmp_path / 'out', class_list=class_list)
    assert not (tmp_path / 'out').exists()


@pytest.fixture
def fmnist_src(tmp_path):
    src = tmp_path / 'fashion-mnist'
    write_idx_files(src, 'train', [k % 10 for k in range(20)])
    write_idx_files(src, 'val', [k % 10 for k in range(10)])
    return src


@pytest.mark.parametrize('damage, message', [
    (lambda data: data[:-12], 'is a truncated gzip file'),
    (lambda data: data[:40] + bytes(b ^ 0x55 for b in data[40:60]) + data[60:], 'is a corrupt gzip file'),
])
def test_damaged_gzip_names_the_file(fmnist_src, tmp_path, damage, message):
    images = fmnist_src / prep.FASHION_MNIST_IDX_FILES['train'][0]
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(prep.DatasetLayoutError, match=message) as e:
        prep.prepare_fashion_mnist(tmp_path / 'fm', src=fmnist_src)
    assert str(images) in str(e.value) and 'download it again' in str(e.value)
    assert not (tmp_path / 'fm').exists()


def test_decompression_is_bounded(fmnist_src, tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, '_MAX_IDX_BYTES', 2000)  # the real bound is 256 MiB; same code path
    with pytest.raises(prep.DatasetLayoutError, match='decompresses to more than 2,000 bytes'):
        prep.prepare_fashion_mnist(tmp_path / 'fm', src=fmnist_src)


def _staging_leftovers(folder: Path) -> list:
    return [p.name for p in folder.iterdir() if 'staging' in p.name]


def test_a_failure_midway_leaves_the_destination_as_it_was(tiny_src, tmp_path, monkeypatch):
    real_link, calls = os.link, []

    def link_until_the_disk_is_full(*args, **kwargs):
        calls.append(args)
        if len(calls) > 50:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_link(*args, **kwargs)

    monkeypatch.setattr(os, 'link', link_until_the_disk_is_full)
    (tmp_path / 'empty_out').mkdir()
    for dst in (tmp_path / 'new' / 'out', tmp_path / 'empty_out'):
        existed = dst.exists()
        calls.clear()
        with pytest.raises(OSError, match='No space left'):
            prep.prepare_tiny_imagenet(tiny_src, dst, link='hardlink')
        assert dst.exists() == existed and (not existed or not any(dst.iterdir()))
        assert _staging_leftovers(tmp_path) == [] and len(calls) == 51  # it failed midway
    assert not (tmp_path / 'new').exists()  # the parent folder it made for DST is gone too


CHILD = textwrap.dedent('''
    import os, signal, sys, time
    from timm_posembed.cli import main
    # Ctrl-C as in a terminal: a test suite started as a background job (`cmd &`) hands its children SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler, so the SIGINT below would be lost.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    real_link, calls = os.link, []
    def slow_link(*args, **kwargs):  # pauses midway so that the test can interrupt the run there
        real_link(*args, **kwargs)
        calls.append(1)
        if len(calls) == 20:
            print('midway', flush=True)
            time.sleep(120)
    os.link = slow_link
    sys.exit(main(sys.argv[1:]))
''')


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_leaves_nothing_behind(tiny_src, tmp_path, sig):
    child = tmp_path / 'child.py'
    child.write_text(CHILD)
    before = sorted(os.listdir(tmp_path))
    dst = tmp_path / 'out'
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(child), 'prepare', 'tiny-imagenet', str(tiny_src), str(dst),
                             '--link', 'hardlink'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    watchdog = threading.Timer(120, proc.kill)  # a child that never reaches midway must not hang the suite
    watchdog.start()
    try:
        assert proc.stdout.readline().strip() == 'midway', proc.stderr.read()
        assert _staging_leftovers(tmp_path)  # it was staging when interrupted
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        proc.kill()
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM  # SystemExit from the handler, after clean-up
    assert sorted(os.listdir(tmp_path)) == before  # no DST, no staging folder


def test_stale_staging_folders_of_killed_runs_are_removed(tiny_src, tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    stale = tmp_path / f'.out.timm-posembed-staging-{dead.pid}-0123abcd'
    (stale / 'train').mkdir(parents=True)
    (stale / '.timm-posembed-staging').write_text(f'{dead.pid}\n')
    unmarked = tmp_path / f'.out.timm-posembed-staging-{dead.pid}-89abcdef'  # not ours: no marker inside
    unmarked.mkdir()
    running = tmp_path / f'.out.timm-posembed-staging-{os.getpid()}-00000000'  # a live process may still use it
    running.mkdir()
    (running / '.timm-posembed-staging').write_text('')
    prep.prepare_tiny_imagenet(tiny_src, tmp_path / 'out')
    assert not stale.exists() and unmarked.exists() and running.exists()


def test_an_incomplete_destination_is_refused_untouched(tiny_src, tmp_path):
    dst = tmp_path / 'out'
    prep.prepare_tiny_imagenet(tiny_src, dst)
    (dst / 'val' / tiny_wnid(3) / 'val_3.JPEG').unlink()
    before = _tree(dst)
    with pytest.raises(prep.DatasetLayoutError, match=rf'{tiny_wnid(3)} lacks 1 of the 1 entries .* incomplete'):
        prep.prepare_tiny_imagenet(tiny_src, dst)
    assert _tree(dst) == before
