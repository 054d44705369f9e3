"""Model modules; importing them registers their entrypoints with timm."""
from ._builder import (
    CheckpointMismatchError, PretrainedWeightsUnavailableError, check_checkpoint_fits, describe_checkpoint,
    unwrap_checkpoint,
)
from ._catalog import CheckpointDescriber, ModelInfo, list_model_info, model_info
from ._hub import HF_HUB_ORG, hub_id
from ._papers import PAPERS, Paper
from .timm_blocks import TIMM_BLOCKS_TAG_PREFIX, TimmBlocksResult, load_timm_blocks, timm_blocks_tag_refusal
# the model classes; importing the modules registers their entrypoints with timm, in this order
from .vision_transformer_cope import *  # noqa: F401,F403,I001
from .vision_transformer_supertoken import *  # noqa: F401,F403
from .coat_clustering import *  # noqa: F401,F403
from .naflexvit_cope import *  # noqa: F401,F403
