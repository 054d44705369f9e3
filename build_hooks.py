""" Build step of the release archives (``pyproject.toml``'s ``[tool.setuptools.cmdclass]``).

``MODEL_CARDS.md`` lives at the top of the repository, where GitHub shows it and contributors edit it. The installed
package reads it at run time (``timm-posembed card``, the README.md of ``timm-posembed publish``), so the build copies
it into the package instead of keeping a second copy by hand. ``timm_posembed.hub.cards.default_cards_path`` looks
there first, then at the top of a source checkout.
"""
import importlib.util
import shutil
from pathlib import Path

from setuptools.command.build_py import build_py

MODEL_CARDS = 'MODEL_CARDS.md'
PACKAGE = 'timm_posembed'


def _packaged_path() -> str:
    """Where the package reads its cards: ``timm_posembed._resources.MODEL_CARDS``, read without importing the
    package (its ``__init__`` needs torch, which the build environment lacks)."""
    spec = importlib.util.spec_from_file_location('_resources', Path(PACKAGE, '_resources.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MODEL_CARDS


class BuildPyWithModelCards(build_py):
    def run(self) -> None:
        super().run()
        source = Path(MODEL_CARDS)
        if not source.is_file():
            raise FileNotFoundError(
                f'{source.resolve()} is missing: the package ships the model cards, so build from a source checkout '
                f'or an sdist (both hold {MODEL_CARDS} at the top)')
        target = Path(self.build_lib, PACKAGE, _packaged_path())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    def get_outputs(self, include_bytecode: bool = True):
        return super().get_outputs(include_bytecode) + [str(Path(self.build_lib, PACKAGE, _packaged_path()))]
