""" Test configuration, including the pytest plugin that runs timm's own model tests on this package's models.

timm's ``tests/test_models.py`` chooses models from timm's registry when it is imported, and chooses the
models for its ``forward_intermediates`` tests by the name of the module that registered them. This plugin
 1. imports ``timm_posembed`` before collection, so our models are in the registry;
 2. while that file is imported (see ``timm_conformance.import_timm_model_tests``), adds our model modules to
    any ``list_models(module=...)`` filter, since every model of ours implements ``forward_intermediates``;
 3. deselects every collected timm test that is not parametrized by one of our models, and those that carry
    none of the markers timm's own CI runs (the unmarked ones download pretrained weights or, like the
    prune-contract test, are "excluded from CI" upstream; set TIMM_UPSTREAM_UNMARKED=1 to run them too).
"""
import os
import sys
from pathlib import Path
from typing import List

# The tests' helpers (tests/support/) import as top-level modules in every test folder.
sys.path.insert(0, str(Path(__file__).parent / 'support'))

import timm.models._registry as timm_registry  # noqa: E402
import timm_posembed  # noqa: E402,F401  (registers the models before any test module is collected)
from timm_conformance import CONFORMANCE_MODULE, our_model_names  # noqa: E402

# Markers timm's test_models.py uses (declared in timm's own pyproject, which we do not read).
TIMM_MARKERS = ('base', 'cfg', 'cfg_nonstd', 'forward', 'backward', 'torchscript', 'features', 'fxforward',
                'fxbackward')


def pytest_configure(config):
    for m in TIMM_MARKERS:
        config.addinivalue_line('markers', f'{m}: timm test_models.py marker')


def pytest_collection_modifyitems(config, items):
    ours = our_model_names()
    keep, drop = [], []
    for item in items:
        if getattr(getattr(item, 'function', None), '__module__', '') != CONFORMANCE_MODULE:
            keep.append(item)
            continue
        params = getattr(getattr(item, 'callspec', None), 'params', {})
        name = params.get('model_name')
        ci_marked = any(item.get_closest_marker(m) for m in TIMM_MARKERS) or os.environ.get('TIMM_UPSTREAM_UNMARKED')
        if isinstance(name, str) and name.split('.')[0] in ours and ci_marked:
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def first_registered_per_module(names: List[str]) -> List[str]:
    """The first of ``names`` each model module registered (its smallest, by timm's convention of registering tiny
    first): one model per family, for tests whose code path a module's models share. Test modules import it with
    ``from conftest import first_registered_per_module``."""
    seen, firsts = set(), []
    for name, module in timm_registry._model_to_module.items():  # registration order
        if name in names and module not in seen:
            seen.add(module)
            firsts.append(name)
    return firsts
