""" Reading a timm ``VisionTransformer`` state dict: the facts every ViT family of this package shares (width, depth,
position table), and the description of timm's own ViT layout, the baseline of those families. """
import re
from typing import Any, Dict, Mapping, Optional, Sequence

import torch

__all__ = ['count_blocks', 'vit_trunk_facts', 'describe_timm_vit_checkpoint']


def count_blocks(keys: Sequence[str], prefix: str) -> int:
    """How many ``prefix.N.`` blocks the keys hold."""
    pattern = re.compile(re.escape(prefix) + r'\.(\d+)\.')
    return len({m.group(1) for k in keys for m in [pattern.match(k)] if m})


def vit_trunk_facts(state_dict: Mapping[str, torch.Tensor], position_table: Optional[str] = None) -> Dict[str, Any]:
    """``embed_dim``, ``depth`` and (from the ``(1, T, D)`` tensor ``position_table``) ``position_tokens``, the length
    of the position table with the prefix tokens."""
    facts: Dict[str, Any] = {}
    width = state_dict.get('cls_token', state_dict.get('norm.weight'))
    if isinstance(width, torch.Tensor) and width.ndim >= 1:
        facts['embed_dim'] = int(width.shape[-1])
    facts['depth'] = count_blocks(list(state_dict), 'blocks')
    table = state_dict.get(position_table) if position_table else None
    if isinstance(table, torch.Tensor) and table.ndim == 3:
        facts['position_tokens'] = int(table.shape[1])
    return facts


def describe_timm_vit_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> Optional[Dict[str, Any]]:
    """timm's ViT layout (``blocks.N.``, a patch embedding, a learned ``pos_embed`` or none)."""
    if not any(k.startswith('blocks.') for k in state_dict):
        return None
    learned = 'a learned pos_embed' if 'pos_embed' in state_dict else 'no position table'
    return {'family': f'ViT with a patch embed and {learned}', **vit_trunk_facts(state_dict, 'pos_embed')}
