""" Bang et al.'s clustering CoaT: CoaT-Lite Tiny vs clustering CoaT-Lite on ImageNet100.

Trains every row of the paper table `clustering-coat-in100` with timm's train.py and the table's recipe (both shipped in
the package), then prints our numbers beside the paper's: the same as `timm-posembed reproduce clustering-coat-in100`.
`--help` lists the options; e.g. on two GPUs, with timm's repository checked out in pytorch-image-models/:

    export TIMM_REPO=pytorch-image-models
    python benchmarks/train_clustering_coat_in100.py --data-dir DATA --nproc 2 -- --amp --amp-dtype bfloat16
"""
import sys

from timm_posembed.reproduce.drivers import table_driver_main

if __name__ == '__main__':
    sys.exit(table_driver_main('clustering-coat-in100'))
