""" The super-token conv embedding paper, table 8: super-token clustering iterations t = 1..4 (ViT-S,
ImageNet100).

Trains every row of the paper table `stoken-in100-iterations` with timm's train.py and the table's recipe (both shipped
in the package), then prints our numbers beside the paper's: the same as `timm-posembed reproduce
stoken-in100-iterations`. `--help` lists the options; e.g. on two GPUs, with timm's repository checked out in
pytorch-image-models/:

    export TIMM_REPO=pytorch-image-models
    python benchmarks/train_stoken_in100_iterations.py --data-dir DATA --nproc 2 -- --amp --amp-dtype bfloat16
"""
import sys

from timm_posembed.reproduce.drivers import table_driver_main

if __name__ == '__main__':
    sys.exit(table_driver_main('stoken-in100-iterations'))
