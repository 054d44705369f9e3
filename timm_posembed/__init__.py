"""timm_posembed: a timm plugin. ``import timm_posembed`` registers its models with ``timm.create_model``."""
from .version import __version__
from . import layers
from . import models
