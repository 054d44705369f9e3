""" Where this package's pretrained weights live on the Hugging Face Hub.

The one place that names the Hub organisation: every model's pretrained cfg builds its ``hf_hub_id`` here.
"""

__all__ = ['HF_HUB_ORG', 'hub_id']

HF_HUB_ORG = 'timm-posembed'


def hub_id(model_name: str, tag: str) -> str:
    """Full ``hf_hub_id`` of ``model_name.tag`` under this package's organisation (timm only completes 'timm/')."""
    return f'{HF_HUB_ORG}/{model_name}.{tag}'
