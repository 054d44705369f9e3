""" Seed 000, table 1: ViT-Tiny/16 learnable PE vs COPE on Tiny-ImageNet (224 px).

Trains every row of the paper table `seed000-1` (timm_posembed/data/paper_tables.yaml) with timm's train.py
and the table's recipe (shipped in the package), then prints our numbers beside the paper's. `--help` lists the options; e.g.
on two GPUs, with timm's repository checked out in pytorch-image-models/:

    export TIMM_REPO=pytorch-image-models
    python benchmarks/train_seed000_table1.py --data-dir DATA --nproc 2 -- --amp --amp-dtype bfloat16
"""
import sys
from timm_posembed.commands.drivers import table_driver_main

if __name__ == '__main__':
    sys.exit(table_driver_main('seed000-1'))
