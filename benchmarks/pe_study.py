""" Position encodings side by side on one ViT (Fashion-MNIST): no PE, timm's learned PE, COPE (three
variants) and 2D RoPE on the same blocks, several random seeds, and accuracy at twice the training side.

The study is ``timm_posembed.measure.pe_study`` (its docstring gives the method; ``--help`` the options); its
numbers are in benchmarks/RESULTS.md with the command that produced them.
"""

from timm_posembed.measure.pe_study import main

if __name__ == '__main__':
    main()
