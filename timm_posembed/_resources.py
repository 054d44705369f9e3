""" The files the installed package reads from its own folder at run time, in one list.

Every reader takes its path from here, so the release test (``tests/test_release.py``) can check that the wheel
carries each of them. Paths are relative to the package folder. Standard library only: the build step
(``build_hooks.py``) loads this file on its own, without importing the package (which needs torch).
"""
from pathlib import Path
from typing import Tuple

__all__ = ['PACKAGE_DIR', 'MODEL_CARDS', 'PAPER_TABLES', 'RECIPES', 'IMAGENET100_CLASSES', 'PACKAGE_FILES',
           'package_file']

PACKAGE_DIR = Path(__file__).resolve().parent

MODEL_CARDS = 'hub/MODEL_CARDS.md'  # copied in from the checkout's top-level MODEL_CARDS.md when the wheel is built
PAPER_TABLES = 'reproduce/paper_tables.yaml'
RECIPES = 'reproduce/recipes'  # the train.py --config files the paper tables name
IMAGENET100_CLASSES = 'data/imagenet100_cmc.txt'

RECIPE_FILES: Tuple[str, ...] = tuple(sorted(f'{RECIPES}/{p.name}' for p in (PACKAGE_DIR / RECIPES).glob('*.yaml')))
PACKAGE_FILES: Tuple[str, ...] = (MODEL_CARDS, PAPER_TABLES, IMAGENET100_CLASSES) + RECIPE_FILES


def package_file(relative: str) -> Path:
    """The path of one of the files above in this installation."""
    return PACKAGE_DIR / relative
