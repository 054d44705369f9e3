""" Position embeddings of NaFlex ViTs at image sizes and aspect ratios not trained on: COPE beside timm's learned,
factorized and axial RoPE embeddings.

The measurement is ``timm_posembed.measure.naflex_positions`` (its docstring gives the method; ``--help`` the
options); its numbers are in benchmarks/RESULTS.md with the command that produced them.
"""

from timm_posembed.measure.naflex_positions import main

if __name__ == '__main__':
    main()
