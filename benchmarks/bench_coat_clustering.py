""" The cost of clustering CoaT-Lite beside timm's CoaT-Lite.

The measurement is ``timm_posembed.measure.clustering_cost`` (its docstring gives the method; ``--help`` the options);
its numbers are in benchmarks/RESULTS.md with the command that produced them.
"""

from timm_posembed.measure.clustering_cost import main

if __name__ == '__main__':
    main()
