""" Small generated source trees in the layouts ``timm-posembed prepare`` reads, shared by the preparation tests.
Images are a few bytes each: preparation links files, it never decodes them (Fashion-MNIST excepted, whose idx
files are written here with real pixel data). """
import gzip
import struct
from pathlib import Path

import timm_posembed.data as prep

NUM_TINY_CLASSES = prep.TINY_IMAGENET_NUM_CLASSES


def tiny_wnid(i: int) -> str:
    return f'n{i:08d}'


def make_tiny_imagenet(root: Path, train_per_class: int = 2, val_per_class: int = 1) -> Path:
    """The tiny-imagenet-200 release layout with ``train_per_class`` / ``val_per_class`` images per class."""
    wnids = [tiny_wnid(i) for i in range(NUM_TINY_CLASSES)]
    (root / 'val' / 'images').mkdir(parents=True)
    (root / 'wnids.txt').write_text('\n'.join(wnids) + '\n')
    annotations = []
    for c, wnid in enumerate(wnids):
        images = root / 'train' / wnid / 'images'
        images.mkdir(parents=True)
        (root / 'train' / wnid / f'{wnid}_boxes.txt').write_text('')  # present in the release, not an image
        for i in range(train_per_class):
            (images / f'{wnid}_{i}.JPEG').write_bytes(f'{wnid}-{i}'.encode())
        for i in range(val_per_class):
            name = f'val_{c * val_per_class + i}.JPEG'
            (root / 'val' / 'images' / name).write_bytes(name.encode())
            annotations.append(f'{name}\t{wnid}\t0\t0\t63\t63')
    (root / 'val' / 'val_annotations.txt').write_text('\n'.join(annotations) + '\n')
    return root


def make_imagenet(root: Path, wnids, val_per_class: int = 2) -> Path:
    for wnid in wnids:
        for split, n in (('train', 3), ('val', val_per_class)):
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                (root / split / wnid / f'{wnid}_{i}.JPEG').write_bytes(b'x')
    return root


def write_idx_files(root: Path, split: str, labels, size: int = 28) -> None:
    """Write gzipped idx3/idx1 files: image k is filled with the value 10 * k (mod 256)."""
    images_name, labels_name = prep.FASHION_MNIST_IDX_FILES[split]
    pixels = b''.join(bytes([(10 * k) % 256]) * size * size for k in range(len(labels)))
    root.mkdir(parents=True, exist_ok=True)
    (root / images_name).write_bytes(gzip.compress(struct.pack('>IIII', 0x803, len(labels), size, size) + pixels))
    (root / labels_name).write_bytes(gzip.compress(struct.pack('>II', 0x801, len(labels)) + bytes(labels)))
