""" The papers this package's model families come from: one constant per family.

Each constant feeds the family's pretrained cfgs (``paper_ids``, ``paper_name``, which timm shows and the Hub cards
print) and its catalog entries (``ModelInfo.paper``, shown by ``timm-posembed list``), so a title is written once.
The model cards in MODEL_CARDS.md cite the same papers in full, with BibTeX.
"""
from dataclasses import dataclass
from typing import Any, Dict, Tuple

__all__ = ['Paper', 'COPE_PAPER', 'SUPER_TOKEN_CONV_PAPER', 'EARLY_CONV_PAPER', 'CLUSTERING_COAT_PAPER']


@dataclass(frozen=True)
class Paper:
    name: str  # the title timm's cfg carries as ``paper_name``
    ids: Tuple[str, ...]  # ``paper_ids``: the method's paper first, then the architecture it builds on
    summary: str  # one line for listings: the method, its authors and the seed document it was specified in

    def cfg(self) -> Dict[str, Any]:
        """The pretrained-cfg keys timm uses for a model's papers."""
        return {'paper_ids': list(self.ids), 'paper_name': self.name}


COPE_PAPER = Paper(
    name='Encoding word order in complex embeddings',
    ids=('arXiv:1912.12333', 'arXiv:2010.11929'),
    summary='Complex Order Position Embedding for ViT (Wang et al. 2020; seed 000)',
)
SUPER_TOKEN_CONV_PAPER = Paper(
    name='Super-token convolutional embedding for ViT (seed 001), after Vision Transformer with Super Token Sampling',
    ids=('arXiv:2211.11167', 'arXiv:2010.11929'),
    summary='Super-token convolutional embedding for ViT (STViT clustering; seed 001)',
)
EARLY_CONV_PAPER = Paper(
    name='Early Convolutions Help Transformers See Better',
    ids=('arXiv:2106.14881', 'arXiv:2010.11929'),
    summary='EarlyConv convolutional stem (Xiao et al. 2021; baseline of seed 001)',
)
CLUSTERING_COAT_PAPER = Paper(
    name='Design of Clustering CoaT Vision Model Based on Transformer',
    ids=('arXiv:2104.06399', 'arXiv:2011.09315'),
    summary='Clustering CoaT: CoaT-Lite with Adaptive Clustering (ACT) attention (seed 004)',
)
