""" Facts about the benchmark datasets, in one place: split folder names, class counts, the shipped ImageNet100
class list, where Debian installs Fashion-MNIST and its label names. The preparation modules, the paper tables and
the CLI read them from here. """
import re
from pathlib import Path
from typing import Dict, Tuple

from .._resources import IMAGENET100_CLASSES, package_file

__all__ = [
    'TRAIN_SPLIT', 'VAL_SPLIT', 'TINY_IMAGENET_NUM_CLASSES', 'TINY_IMAGENET_OFFICIAL_COUNTS',
    'IMAGENET100_CLASS_LIST', 'IMAGENET100_NUM_CLASSES', 'IMAGENET_VAL_IMAGES_PER_CLASS',
    'WNID', 'DEBIAN_FASHION_MNIST_DIR', 'FASHION_MNIST_IDX_FILES', 'FASHION_MNIST_CLASSES', 'DATASET_NUM_CLASSES',
]

# Output split folder names; timm's train.py finds 'val' for its default --val-split 'validation'.
TRAIN_SPLIT, VAL_SPLIT = 'train', 'val'

TINY_IMAGENET_NUM_CLASSES = 200
TINY_IMAGENET_OFFICIAL_COUNTS = {TRAIN_SPLIT: 100_000, VAL_SPLIT: 10_000}

# An ImageNet class id (WordNet noun id): 'n' and 8 digits, e.g. n01440764.
WNID = re.compile(r'n\d{8}')

# The CMC ImageNet100 subset of ImageNet-1k, one wnid per line, in the list's own order.
IMAGENET100_CLASS_LIST = package_file(IMAGENET100_CLASSES)
IMAGENET100_NUM_CLASSES = 100
IMAGENET_VAL_IMAGES_PER_CLASS = 50

# Where `dpkg -L dataset-fashion-mnist` puts the idx files.
DEBIAN_FASHION_MNIST_DIR = Path('/usr/share/datasets/fashion-mnist')
FASHION_MNIST_IDX_FILES: Dict[str, Tuple[str, str]] = {
    TRAIN_SPLIT: ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    VAL_SPLIT: ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
# Label order of the dataset; folder names carry the index so ImageFolder's sorted order keeps the labels.
FASHION_MNIST_CLASSES = (
    't-shirt_top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle_boot')

# Classes of each benchmark dataset, by the name the CLI, the paper tables and the recipes use.
DATASET_NUM_CLASSES = {
    'tiny-imagenet': TINY_IMAGENET_NUM_CLASSES,
    'imagenet100': IMAGENET100_NUM_CLASSES,
    'fashion-mnist': len(FASHION_MNIST_CLASSES),
}
