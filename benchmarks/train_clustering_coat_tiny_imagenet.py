""" Bang et al.'s clustering CoaT: CoaT-Lite Tiny vs clustering CoaT-Lite on Tiny-ImageNet (224 px).

Trains every row of the paper table `clustering-coat-tiny-imagenet` with timm's train.py and the table's recipe (both
shipped in the package), then prints our numbers beside the paper's: the same as `timm-posembed reproduce
clustering-coat-tiny-imagenet`. `--help` lists the options; e.g. on two GPUs, with timm's repository checked out in
pytorch-image-models/:

    export TIMM_REPO=pytorch-image-models
    python benchmarks/train_clustering_coat_tiny_imagenet.py --data-dir DATA --nproc 2 -- --amp --amp-dtype bfloat16
"""
import sys

from timm_posembed.reproduce.drivers import table_driver_main

if __name__ == '__main__':
    sys.exit(table_driver_main('clustering-coat-tiny-imagenet'))
