""" Seed 004: CoaT-Lite Tiny vs clustering CoaT-Lite on ImageNet100.

Trains every row of the paper table `seed004-imagenet100` (timm_posembed/data/paper_tables.yaml) with timm's train.py
and the table's recipe (shipped in the package), then prints our numbers beside the paper's. `--help` lists the options; e.g.
on two GPUs, with timm's repository checked out in pytorch-image-models/:

    export TIMM_REPO=pytorch-image-models
    python benchmarks/train_seed004_imagenet100.py --data-dir DATA --nproc 2 -- --amp --amp-dtype bfloat16
"""
import sys
from timm_posembed.commands.drivers import table_driver_main

if __name__ == '__main__':
    sys.exit(table_driver_main('seed004-imagenet100'))
