""" How COPE's tables follow a new input size, beside timm's learned position embedding.

The measurement is ``timm_posembed.measure.cope_resize`` (its docstring gives the method; ``--help`` the options);
its numbers are in benchmarks/RESULTS.md with the command that produced them.
"""

from timm_posembed.measure.cope_resize import main

if __name__ == '__main__':
    main()
