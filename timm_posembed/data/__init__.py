""" Dataset preparation for the papers' tables and the studies: source trees -> the ``DST/{train,val}/<class>/<image>``
folders timm's ``ImageFolder`` (``train.py --data-dir DST``) reads. One module per dataset:

 * ``tiny_imagenet``: the Tiny-ImageNet release (training images under ``images/``, validation labelled by
   ``val_annotations.txt``).
 * ``imagenet100``: the CMC 100-class subset of ImageNet-1k (class list shipped as ``imagenet100_cmc.txt``).
 * ``fashion_mnist``: Debian's ``dataset-fashion-mnist`` idx files, decoded to PNGs (or laid out for
   ``train.py --dataset torch/fashion_mnist``).

``dataset_facts`` holds the class lists and counts, ``source_tree`` reads a source without leaving it, and
``staging`` writes the output: every name checked first, built beside the destination and renamed into place, so a
run that fails or is interrupted leaves the destination as it was. Images are linked, not copied, where they
already exist as files. Every preparation is idempotent (a re-run over its own complete output changes nothing),
refuses a destination holding anything else, and verifies what it wrote against the plan made from the source.
This package gathers the public names of its modules in one import. It needs no torch.
"""
from .dataset_facts import (
    DATASET_NUM_CLASSES, DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES, FASHION_MNIST_IDX_FILES,
    IMAGENET100_CLASS_LIST, IMAGENET100_NUM_CLASSES, IMAGENET_VAL_IMAGES_PER_CLASS, TINY_IMAGENET_NUM_CLASSES,
    TINY_IMAGENET_OFFICIAL_COUNTS, TRAIN_SPLIT, VAL_SPLIT)
from .fashion_mnist import FASHION_MNIST_LAYOUTS, TORCHVISION_FASHION_MNIST_RAW, prepare_fashion_mnist
from .imagenet100 import IMAGENET_LAYOUT, prepare_imagenet100, read_class_list
from .staging import LINK_MODES, DatasetLayoutError, LinkMode, PrepareResult
from .tiny_imagenet import TINY_IMAGENET_LAYOUT, prepare_tiny_imagenet

__all__ = [
    'DatasetLayoutError', 'PrepareResult', 'LinkMode', 'LINK_MODES', 'IMAGENET100_CLASS_LIST',
    'DEBIAN_FASHION_MNIST_DIR', 'FASHION_MNIST_CLASSES', 'FASHION_MNIST_IDX_FILES', 'FASHION_MNIST_LAYOUTS',
    'DATASET_NUM_CLASSES', 'TRAIN_SPLIT', 'VAL_SPLIT', 'prepare_tiny_imagenet', 'prepare_imagenet100',
    'prepare_fashion_mnist', 'read_class_list', 'IMAGENET100_NUM_CLASSES', 'IMAGENET_VAL_IMAGES_PER_CLASS',
    'TINY_IMAGENET_NUM_CLASSES', 'TINY_IMAGENET_OFFICIAL_COUNTS', 'TORCHVISION_FASHION_MNIST_RAW', 'IMAGENET_LAYOUT',
    'TINY_IMAGENET_LAYOUT',
]
