"""timm_posembed: a timm plugin. ``import timm_posembed`` registers its models with ``timm.create_model``."""
import os
import sys

from .version import __version__


def _started_as_console_script() -> bool:
    # The `timm-posembed` console script imports this package (to reach timm_posembed.cli) before it parses a
    # command. Its --help and argument errors must answer without importing torch, which takes seconds, so the
    # models are registered there by the commands that use them (see timm_posembed.cli), not here. The script is
    # named so on every platform (on Windows with .exe); no library import runs with that argv[0].
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ''
    return os.path.splitext(name)[0] in ('timm-posembed', 'timm-posembed-script')


if not _started_as_console_script():
    from . import layers  # noqa: F401
    from . import models  # noqa: F401
    # the warm start's entry point, at the root as the users call it: timm_posembed.load_timm_blocks(...)
    from .models import TimmBlocksResult, load_timm_blocks  # noqa: F401


def __getattr__(name: str):
    # `timm_posembed.layers` / `.models` in a process started as the console script: imported (and so the models
    # registered) on first use.
    if name in ('layers', 'models'):
        import importlib
        return importlib.import_module(f'{__name__}.{name}')
    if name in ('load_timm_blocks', 'TimmBlocksResult'):
        import importlib
        return getattr(importlib.import_module(f'{__name__}.models'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
