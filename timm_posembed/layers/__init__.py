"""Reusable layers, each usable on its own with any timm model."""
from .cope import (
    ComplexOrderPosEmbed, cope_angle_for_grid, cope_token_positions, resample_cope_tables, sinusoid_frequencies)
from .conv_stem import ConvBnReLU, ConvStemEmbed
from .patch_embed import CheckedPatchEmbed
from .supertoken import ConvGeluBn, SuperTokenClustering, SuperTokenConvEmbed
from .adaptive_clustering import AdaptiveQueryClustering, QueryClusters, broadcast_to_members
from .clustered_attention import ClusteredFactorAttnConvRelPosEnc
