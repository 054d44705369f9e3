""" ``timm-posembed prepare``: Tiny-ImageNet, ImageNet100 and Fashion-MNIST on small synthetic source trees,
well-formed and malformed. The images are a few bytes each: preparation links files, it never decodes them
(Fashion-MNIST excepted, whose idx files are made here with real pixel data). """
import gzip
import os
from pathlib import Path

import pytest
from timm.data import create_dataset

from timm_posembed.cli import main
import timm_posembed.data as prep
from dataset_trees import make_imagenet, make_tiny_imagenet, tiny_wnid, write_idx_files

NUM_TINY_CLASSES = prep.TINY_IMAGENET_NUM_CLASSES


@pytest.fixture
def tiny_src(tmp_path):
    return make_tiny_imagenet(tmp_path / 'tiny-imagenet-200')


def test_tiny_imagenet_layout_counts_and_labels(tiny_src, tmp_path):
    dst = tmp_path / 'out'
    result = prep.prepare_tiny_imagenet(tiny_src, dst)
    assert result.num_classes == {'train': NUM_TINY_CLASSES, 'val': NUM_TINY_CLASSES}
    assert result.num_images == {'train': 2 * NUM_TINY_CLASSES, 'val': NUM_TINY_CLASSES}
    assert result.created == 3 * NUM_TINY_CLASSES and result.link_mode == 'hardlink'
    # training images moved up out of images/, the boxes file left behind
    assert sorted(p.name for p in (dst / 'train' / tiny_wnid(7)).iterdir()) == [
        f'{tiny_wnid(7)}_0.JPEG', f'{tiny_wnid(7)}_1.JPEG']
    # validation image of class 7 sorted into its class folder, by hard link (same inode as the source)
    target = dst / 'val' / tiny_wnid(7) / 'val_7.JPEG'
    assert os.path.samefile(target, tiny_src / 'val' / 'images' / 'val_7.JPEG')
    assert any('official release has 100,000' in n for n in result.notes)


def test_tiny_imagenet_output_is_labelled_by_timm(tiny_src, tmp_path):
    dst = tmp_path / 'out'
    prep.prepare_tiny_imagenet(tiny_src, dst, link='symlink')
    # train.py's default --val-split 'validation' resolves to the val/ folder
    val = create_dataset('', root=str(dst), split='validation')
    classes = sorted(val.reader.class_to_idx)
    assert classes == [tiny_wnid(i) for i in range(NUM_TINY_CLASSES)]  # not a single 'images' class
    names_and_labels = {Path(p).name: t for p, t in val.reader.samples}
    assert names_and_labels['val_42.JPEG'] == val.reader.class_to_idx[tiny_wnid(42)]
    assert (dst / 'val' / tiny_wnid(42) / 'val_42.JPEG').is_symlink()


def test_tiny_imagenet_is_idempotent(tiny_src, tmp_path):
    dst = tmp_path / 'out'
    first = prep.prepare_tiny_imagenet(tiny_src, dst)
    again = prep.prepare_tiny_imagenet(tiny_src, dst)
    assert again.created == 0 and again.num_images == first.num_images


@pytest.mark.parametrize('breakage, message', [
    (lambda src: (src / 'wnids.txt').unlink(), 'wnids.txt is missing'),
    (lambda src: (src / 'wnids.txt').write_text('n00000001\n'), 'lists 1 classes; Tiny-ImageNet has 200'),
    # images directly in train/<wnid>/, without the release's images/ folder
    (lambda src: os.rename(src / 'train' / tiny_wnid(3) / 'images', src / 'train' / tiny_wnid(3) / 'pics'),
     f'train/{tiny_wnid(3)}/images is missing'),
    (lambda src: (src / 'val' / 'images' / 'val_extra.JPEG').write_bytes(b'x'), 'have no line in'),
    (lambda src: (src / 'val' / 'images' / 'val_5.JPEG').unlink(), 'names 1 images that are not in'),
    (lambda src: (src / 'val' / 'val_annotations.txt').write_text('val_0.JPEG\tn99999999\t0\t0\t1\t1\n'),
     "class 'n99999999' of val_0.JPEG is not in wnids.txt"),
    (lambda src: (src / 'train' / 'n99999999').mkdir(), 'class folders not in wnids.txt'),
])
def test_tiny_imagenet_malformed_trees_say_what_is_wrong(tiny_src, tmp_path, breakage, message):
    breakage(tiny_src)
    with pytest.raises(prep.DatasetLayoutError, match=message.replace('.', r'\.')) as e:
        prep.prepare_tiny_imagenet(tiny_src, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()  # nothing half-written from a source that fails its checks
    if 'is missing' in str(e.value):
        assert 'SRC/train/<wnid>/images/*.JPEG' in str(e.value)  # the expected layout is spelled out


def test_tiny_imagenet_refuses_a_destination_it_did_not_make(tiny_src, tmp_path):
    dst = tmp_path / 'out'
    (dst / 'train' / tiny_wnid(0)).mkdir(parents=True)
    (dst / 'train' / tiny_wnid(0) / 'someone_elses.JPEG').write_bytes(b'x')
    with pytest.raises(prep.DatasetLayoutError, match='would not make'):
        prep.prepare_tiny_imagenet(tiny_src, dst)


def test_cli_prepare_tiny_imagenet_and_its_error_message(tiny_src, tmp_path, capsys):
    assert main(['prepare', 'tiny-imagenet', str(tiny_src), str(tmp_path / 'out'), '--link', 'copy']) == 0
    assert '400 images in 200 classes' in capsys.readouterr().out
    assert not os.path.samefile(tmp_path / 'out' / 'val' / tiny_wnid(0) / 'val_0.JPEG',
                                tiny_src / 'val' / 'images' / 'val_0.JPEG')
    assert main(['prepare', 'tiny-imagenet', str(tmp_path / 'nowhere'), str(tmp_path / 'out2')]) == 2
    err = capsys.readouterr().err
    assert 'is not a directory' in err and 'tiny-imagenet-200' in err


def test_imagenet100_class_list_is_shipped():
    wnids = prep.read_class_list()
    assert len(wnids) == 100 and len(set(wnids)) == 100
    assert wnids[:2] == ['n02869837', 'n01749939']  # the CMC list's own order


def test_imagenet100_keeps_exactly_the_listed_classes(tmp_path):
    wnids = prep.read_class_list()
    src = make_imagenet(tmp_path / 'imagenet', wnids + ['n09999999', 'n09999998'])
    result = prep.prepare_imagenet100(src, tmp_path / 'in100')
    assert result.num_classes == {'train': 100, 'val': 100}
    assert result.num_images == {'train': 300, 'val': 200}
    assert sorted(p.name for p in (tmp_path / 'in100' / 'train').iterdir()) == sorted(wnids)
    assert any("ImageNet's 50 validation images" in n for n in result.notes)
    assert prep.prepare_imagenet100(src, tmp_path / 'in100').created == 0


def test_imagenet100_malformed_trees(tmp_path):
    wnids = prep.read_class_list()
    src = make_imagenet(tmp_path / 'imagenet', wnids[:99])
    with pytest.raises(prep.DatasetLayoutError, match=rf"lacks 1 of the 100 classes, e\.g\. \['{wnids[99]}'\]"):
        prep.prepare_imagenet100(src, tmp_path / 'out')
    flat = tmp_path / 'flat'
    make_imagenet(flat, wnids)
    (flat / 'val' / 'ILSVRC2012_val_00000001.JPEG').write_bytes(b'x')  # the unsorted ILSVRC2012 val folder
    with pytest.raises(prep.DatasetLayoutError, match='valprep.sh'):
        prep.prepare_imagenet100(flat, tmp_path / 'out')
    bad_list = tmp_path / 'list.txt'
    bad_list.write_text('n01440764\ngoldfish\n')
    with pytest.raises(prep.DatasetLayoutError, match='not ImageNet wnids'):
        prep.prepare_imagenet100(src, tmp_path / 'out', class_list=bad_list)


@pytest.fixture
def fmnist_src(tmp_path):
    src = tmp_path / 'fashion-mnist'
    write_idx_files(src, 'train', [k % 10 for k in range(30)])
    write_idx_files(src, 'val', [9 - k % 10 for k in range(10)])
    return src


def test_fashion_mnist_imagefolder_pixels_labels_and_limits(fmnist_src, tmp_path):
    from PIL import Image
    dst = tmp_path / 'fm'
    result = prep.prepare_fashion_mnist(dst, src=fmnist_src, max_per_class={'train': 2})
    assert result.num_images == {'train': 20, 'val': 10} and result.num_classes == {'train': 10, 'val': 10}
    image = Image.open(dst / 'train' / '3_dress' / '00013.png')  # image 13 has label 3 and value 130
    assert image.size == (28, 28) and image.mode == 'L' and image.getextrema() == (130, 130)
    ds = create_dataset('', root=str(dst), split='train')
    assert ds.reader.class_to_idx['9_ankle_boot'] == 9  # folder order keeps Fashion-MNIST's label indices
    assert prep.prepare_fashion_mnist(dst, src=fmnist_src, max_per_class={'train': 2}).created == 0
    # a smaller limit into the same DST
    with pytest.raises(prep.DatasetLayoutError, match='holds 2 entries where this preparation makes 1'):
        prep.prepare_fashion_mnist(dst, src=fmnist_src, max_per_class={'train': 1})


def test_fashion_mnist_torchvision_layout_reads_back(fmnist_src, tmp_path):
    from torchvision.datasets import FashionMNIST
    result = prep.prepare_fashion_mnist(tmp_path / 'fm', src=fmnist_src, layout='torchvision')
    assert result.num_images == {'train': 30, 'val': 10}
    train = FashionMNIST(str(tmp_path / 'fm'), train=True, download=False)
    assert len(train) == 30 and train[13][1] == 3


def test_fashion_mnist_malformed_idx(fmnist_src, tmp_path, capsys):
    images = fmnist_src / prep.FASHION_MNIST_IDX_FILES['val'][0]
    images.write_bytes(gzip.decompress(images.read_bytes())[:-5])  # truncated, and no longer gzipped
    with pytest.raises(prep.DatasetLayoutError, match='truncated'):
        prep.prepare_fashion_mnist(tmp_path / 'fm', src=fmnist_src)
    assert main(['prepare', 'fashion-mnist', str(tmp_path / 'fm'), '--src', str(tmp_path / 'none')]) == 2
    assert 'apt-get install dataset-fashion-mnist' in capsys.readouterr().err
