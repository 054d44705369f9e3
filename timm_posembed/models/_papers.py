""" The papers this package's model families come from: one constant per paper, cited by title and authors.

Each constant feeds the family's pretrained cfgs (``paper_ids``, ``paper_name``, which timm shows and the Hub cards
print), its catalog entries (``ModelInfo.paper``, shown by ``timm-posembed list``) and the paper tables
(``timm_posembed/reproduce/paper_tables.yaml`` names a paper by its ``key``), so a title is written once. The model
cards in MODEL_CARDS.md cite the same papers in full, with BibTeX.
"""
from dataclasses import dataclass
from typing import Any, Dict, Tuple

__all__ = ['Paper', 'PAPERS', 'COPE_VIT_PAPER', 'SUPER_TOKEN_CONV_PAPER', 'EARLY_CONV_PAPER', 'CLUSTERING_COAT_PAPER']


@dataclass(frozen=True)
class Paper:
    key: str  # how the paper tables name it
    name: str  # the title, as timm's cfg carries it in ``paper_name``
    authors: str  # as a reader cites them: "Kim & Cho"; what our copy of the paper says when it names none
    ids: Tuple[str, ...]  # ``paper_ids``: the method's paper first, then the architecture it builds on
    summary: str  # one line for listings

    @property
    def citation(self) -> str:
        """Authors and title, the way the README and the listings name the paper."""
        return f'{self.authors}, "{self.name}"' if self.authors else f'"{self.name}"'

    def cfg(self) -> Dict[str, Any]:
        """The pretrained-cfg keys timm uses for a model's papers."""
        return {'paper_ids': list(self.ids), 'paper_name': self.name}


COPE_VIT_PAPER = Paper(
    key='cope_vit',
    name='Image classification using vision transformers with complex positional embeddings',
    authors='Kim & Cho (Chonnam National University)',
    ids=('arXiv:1912.12333', 'arXiv:2010.11929'),
    summary='ViT-Tiny with the Complex Order Position Embedding of Wang et al. (ICLR 2020), Tiny-ImageNet',
)
SUPER_TOKEN_CONV_PAPER = Paper(
    key='supertoken_conv_embed',
    name='Super-token convolutional embedding for ViT (ImageNet100), after Vision Transformer with Super Token '
         'Sampling',
    authors='',  # our copy of the paper gives neither its title nor its authors
    ids=('arXiv:2211.11167', 'arXiv:2010.11929'),
    summary='ViT-S patch embedding replaced by convolutions + STViT super-token clustering, ImageNet100 '
            '(our copy of the paper names no title or authors)',
)
EARLY_CONV_PAPER = Paper(
    key='early_conv',
    name='Early Convolutions Help Transformers See Better',
    authors='Xiao et al. 2021',
    ids=('arXiv:2106.14881', 'arXiv:2010.11929'),
    summary='EarlyConv convolutional stem, the convolutional baseline of the super-token embedding paper',
)
CLUSTERING_COAT_PAPER = Paper(
    key='clustering_coat',
    name='Design of Clustering CoaT Vision Model Based on Transformer',
    authors='Bang, Park, Jung & Sim (Sunchon / Andong National University)',
    ids=('arXiv:2104.06399', 'arXiv:2011.09315'),
    summary='CoaT-Lite whose conv-attention clusters queries with the Adaptive Clustering Transformer\'s E2LSH',
)

PAPERS: Dict[str, Paper] = {p.key: p for p in (COPE_VIT_PAPER, SUPER_TOKEN_CONV_PAPER, EARLY_CONV_PAPER,
                                               CLUSTERING_COAT_PAPER)}
