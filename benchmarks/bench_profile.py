""" Where a model's CPU time goes: torch.profiler's top ops.

The measurement is ``timm_posembed.measure.profiles`` (its docstring gives the method; ``--help`` the options);
its numbers are in benchmarks/RESULTS.md with the command that produced them.
"""

from timm_posembed.measure.profiles import main

if __name__ == '__main__':
    main()
