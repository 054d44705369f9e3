"""Reusable layers, each usable on its own with any timm model."""
from .adaptive_clustering import (
    AdaptiveQueryClustering, HashOffsetRange, HashQueryScale, QueryClusters, broadcast_to_members,
)
from .clustered_attention import ClusterAttnMode, ClusteredFactorAttnConvRelPosEnc
from .conv_stem import EARLYCONV_CHANNELS, STOKEN_PAPER_CONV_STEM_CHANNELS, ConvBnReLU, ConvStemEmbed
from .cope import ComplexOrderPosEmbed
from .cope_tables import (
    CopeFuse, CopeMode, CopePositions, CopeResize, cope_angle_for_coords, cope_angle_for_grid, cope_fixed_frequencies,
    cope_token_positions, resample_cope_tables, sinusoid_frequencies,
)
from .patch_embed import CheckedPatchEmbed
from .supertoken import (
    STOKEN_CONV_CHANNELS, STOKEN_CONV_STRIDES, ConvGeluBn, StokenBorder, SuperTokenClustering, SuperTokenConvEmbed,
)
