"""Model modules; importing them registers their entrypoints with timm."""
from ._hub import HF_HUB_ORG, hub_id
from .vision_transformer_cope import *
