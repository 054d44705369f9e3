"""Warm start from timm's ViT blocks vs. from scratch, vit_tiny_cope on small data (see
timm_posembed/measure/warm_start.py and benchmarks/RESULTS.md)."""
from timm_posembed.measure.warm_start import main

if __name__ == '__main__':
    main()
