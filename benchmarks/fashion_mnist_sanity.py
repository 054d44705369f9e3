""" Real-data sanity run: every model of timm_posembed and its timm baseline trained briefly on Fashion-MNIST
(Debian's dataset-fashion-mnist, no download) through timm's train.py with the package's recipe
fashion_mnist_sanity.yaml.

    timm-posembed prepare fashion-mnist DATA/fashion_mnist
    export TIMM_REPO=pytorch-image-models
    python benchmarks/fashion_mnist_sanity.py --data-dir DATA/fashion_mnist -- --device cpu

Prints a markdown table (best / last top-1, wall time per run). Run `--help` for the options.
"""
import sys

from timm_posembed.reproduce.drivers import sanity_driver_main
from timm_posembed.reproduce.tables import RECIPES_DIR

if __name__ == '__main__':
    sys.exit(sanity_driver_main(recipe_path=RECIPES_DIR / 'fashion_mnist_sanity.yaml'))
