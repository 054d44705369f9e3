""" Fetch timm's own model tests and import them with this package's models selectable.

The tests come from timm's source distribution for the installed timm version
(``pip download --no-deps --no-binary :all: timm==VERSION``), cached under ``$TIMM_TESTS_CACHE`` (default
``~/.cache/timm_posembed``). Only ``tests/*.py`` is extracted, into a folder with no ``timm/`` package beside
it, so the installed timm is the one under test.
"""
import contextlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator, Set

import timm
import timm.models._registry as timm_registry

CONFORMANCE_MODULE = 'timm_upstream_test_models'
PACKAGE = 'timm_posembed'


def our_model_names() -> Set[str]:
    return {
        name for name in timm.list_models()
        if timm.models.model_entrypoint(name).__module__.startswith(PACKAGE + '.')
    }


def _our_model_modules() -> Set[str]:
    return {timm_registry._model_to_module[name] for name in our_model_names()}


def timm_tests_dir() -> Path:
    version = timm.__version__
    cache = Path(os.environ.get('TIMM_TESTS_CACHE', Path.home() / '.cache' / 'timm_posembed'))
    dest = cache / f'timm-{version}-tests'
    if (dest / 'test_models.py').exists():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:',
               f'timm=={version}', '-d', tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob('timm-*.tar.gz'))
        if proc.returncode != 0 or not sdists:
            raise RuntimeError(
                f'could not download timm=={version} source distribution for its model tests '
                f'({" ".join(cmd)}):\n{proc.stderr[-2000:]}\nSet TIMM_TESTS_CACHE to a folder holding '
                f'timm-{version}-tests/test_models.py to run offline.')
        staging = Path(tempfile.mkdtemp(dir=cache))
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and m.name.count('/') == 2 and m.name.split('/')[1] == 'tests'
                       and m.name.endswith('.py')]
            for m in members:
                m.name = Path(m.name).name
            tar.extractall(staging, members=members, filter='data')
        staging.rename(dest)
    return dest


@contextlib.contextmanager
def _our_modules_in_module_filters() -> Iterator[None]:
    original = timm.list_models
    extra = sorted(_our_model_modules())

    def list_models(filter='', module='', *args, **kwargs):
        if module:
            module = ([module] if isinstance(module, str) else list(module)) + extra
        return original(filter, module, *args, **kwargs)

    timm.list_models = list_models
    try:
        yield
    finally:
        timm.list_models = original


def import_timm_model_tests():
    """Import timm's test_models.py as module ``CONFORMANCE_MODULE``; return it."""
    path = timm_tests_dir() / 'test_models.py'
    spec = importlib.util.spec_from_file_location(CONFORMANCE_MODULE, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[CONFORMANCE_MODULE] = module
    with _our_modules_in_module_filters():
        spec.loader.exec_module(module)
    return module
