""" The settings of ``timm-posembed bench`` (``timm_posembed.measure.bench``), in a module of their own: the
command's ``--help`` states their defaults without importing torch. """
from dataclasses import dataclass
from typing import Optional

__all__ = ['BenchConfig', 'PRECISIONS']

PRECISIONS = ('fp32', 'bf16', 'fp16')  # fp32, or autocast to bfloat16 / float16


@dataclass(frozen=True)
class BenchConfig:
    device: str = 'cuda'
    precision: str = 'fp32'
    channels_last: bool = False
    compile_mode: Optional[str] = None  # None: eager; else a torch.compile mode ('default', 'max-autotune', ...)
    batch_size: int = 64
    img_size: Optional[int] = None  # None: each model's pretrained-cfg input size
    num_classes: int = 1000
    num_warmup: int = 3
    num_iters: int = 10
    num_rounds: int = 1  # round-robin rounds of each baseline group; the median round is reported
    train: bool = True
    # refuse a model whose estimated memory (measure.bench.memory_needed) exceeds the device's before allocating it
    check_memory: bool = True
