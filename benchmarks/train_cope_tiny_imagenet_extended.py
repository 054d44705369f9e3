""" Kim & Cho's table 1 extended: ViT-Tiny/16 with no position embedding, timm's learned one, COPE (sum / real /
additive / grid positions) and rotary embeddings from timm's Eva (axial and mixed), all with ViT-Tiny's blocks and
the same recipe, on Tiny-ImageNet (224 px).

Trains every row of the paper table `cope-tiny-imagenet-extended` with timm's train.py and the table's recipe (both
shipped in the package), then prints our numbers beside the paper's: the same as `timm-posembed reproduce
cope-tiny-imagenet-extended`. `--help` lists the options; e.g. on two GPUs, with timm's repository checked out in
pytorch-image-models/:

    export TIMM_REPO=pytorch-image-models
    python benchmarks/train_cope_tiny_imagenet_extended.py --data-dir DATA --nproc 2 --seeds 0 1 2 \
        -- --amp --amp-dtype bfloat16

Every row is trained once per seed; the report gives mean ± std over the seeds.
"""
import sys

from timm_posembed.reproduce.drivers import table_driver_main

if __name__ == '__main__':
    sys.exit(table_driver_main('cope-tiny-imagenet-extended'))
