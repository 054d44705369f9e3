""" The cost of the super-token conv embedding beside ViT-S's patch embedding and EarlyConv.

The measurement is ``timm_posembed.measure.supertoken_cost`` (its docstring gives the method; ``--help`` the options);
its numbers are in benchmarks/RESULTS.md with the command that produced them.
"""

from timm_posembed.measure.supertoken_cost import main

if __name__ == '__main__':
    main()
