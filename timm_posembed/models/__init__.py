"""Model modules; importing them registers their entrypoints with timm."""
from ._builder import CheckpointMismatchError, PretrainedWeightsUnavailableError, check_checkpoint_fits
from ._catalog import ModelInfo, list_model_info, model_info
from ._hub import HF_HUB_ORG, hub_id
from .vision_transformer_cope import *
from .vision_transformer_supertoken import *
from .coat_clustering import *
