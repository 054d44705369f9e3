""" The clustering layers beside their authors' code: clusters per stage and accuracy of clustering CoaT-Lite under
our E2LSH settings and ACT's code's, and the super-token border modes' difference.

The measurement is ``timm_posembed.measure.clustering_fidelity`` (its docstring gives the method; ``--help`` the
options); its numbers are in benchmarks/RESULTS.md with the command that produced them.
"""

from timm_posembed.measure.clustering_fidelity import main

if __name__ == '__main__':
    main()
