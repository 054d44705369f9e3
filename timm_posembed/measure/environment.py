""" Where and with what a measurement was taken: the one description of the machine every benchmark and study
prints and stores beside its numbers (RESULTS.md states each number with it). """
import os
import platform
from datetime import datetime, timezone
from typing import Any, Dict, Optional

import timm
import torch

__all__ = ['describe_device', 'environment']


def describe_device(device: torch.device) -> str:
    """The accelerator's name, or the CPU with its core count and torch's thread count."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return (f'{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, '
            f'{torch.get_num_threads()} torch threads')


def environment(device: torch.device, settings: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``{date (UTC), device, torch, timm, settings}`` for a result file."""
    return {
        'date': datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'device': describe_device(device),
        'torch': torch.__version__,
        'timm': timm.__version__,
        'settings': dict(settings or {}),
    }
