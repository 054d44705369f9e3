""" Seed 000, table 1 extended: ViT-Tiny/16 with no position embedding, timm's learned one, COPE (sum / real /
additive / grid positions) and rotary embeddings from timm's Eva (axial and mixed), all with ViT-Tiny's blocks and
the same recipe, on Tiny-ImageNet (224 px).

Trains every row of the paper table `seed000-1-extended` (timm_posembed/data/paper_tables.yaml) with timm's
train.py, once per seed, then prints the rows (mean ± std over seeds) beside the seed's two rows. E.g.:

    export TIMM_REPO=pytorch-image-models
    python benchmarks/train_seed000_table1_extended.py --data-dir DATA --seeds 0 1 2 -- --amp --amp-dtype bfloat16

The CPU-sized study of benchmarks/RESULTS.md adds `--recipe benchmarks/recipes/fashion_mnist_study.yaml`.
"""
import sys
from timm_posembed.commands.drivers import table_driver_main

if __name__ == '__main__':
    sys.exit(table_driver_main('seed000-1-extended'))
