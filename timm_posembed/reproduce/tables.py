""" The papers' result tables (``paper_tables.yaml`` beside this module): which model reproduces each row, with
which recipe (``recipes/``), and what the paper reported. Read by the table drivers
(``timm_posembed.reproduce.drivers``) and ``timm-posembed report``. A table's class count comes from the dataset facts
(``data/dataset_facts.py``), the one place that knows them; its paper from the paper constants of
``timm_posembed.models``.
"""
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .._resources import PAPER_TABLES, RECIPES, package_file
from ..data.dataset_facts import DATASET_NUM_CLASSES
from .yaml_files import read_yaml_file

__all__ = ['PAPER_TABLES_FILE', 'RECIPES_DIR', 'PaperRow', 'PaperTable', 'load_paper_tables', 'paper_table',
           'list_paper_tables', 'list_recipes', 'resolve_recipe']

PAPER_TABLES_FILE = package_file(PAPER_TABLES)
# The train.py --config files the tables name (package data, so an installed package can reproduce them).
RECIPES_DIR = package_file(RECIPES)


@dataclass(frozen=True)
class PaperRow:
    id: str
    label: str
    model: str
    model_kwargs: Dict[str, Any]
    paper_numbers: Dict[str, float]  # the paper's metrics: top1 (%), params or params_m, train_img_s
    epochs: Optional[int] = None  # set only where the row trains longer/shorter than its recipe

    def matches(self, model: str, model_kwargs: Dict[str, Any]) -> bool:
        """Whether a run of ``model`` with ``model_kwargs`` is this row's configuration (the drivers pass exactly
        the row's kwargs; a run with any other kwarg is another experiment and stays out of the table)."""
        return model == self.model and dict(model_kwargs) == self.model_kwargs


@dataclass(frozen=True)
class PaperTable:
    id: str
    title: str
    paper_key: str  # the key of the paper's constant (timm_posembed.models.PAPERS)
    dataset: str
    recipe: str  # file name in RECIPES_DIR
    rows: Tuple[PaperRow, ...]
    notes: Tuple[str, ...] = field(default_factory=tuple)
    baseline: Optional[str] = None  # id of the row the others are compared with (inside / outside the spread)

    @property
    def paper(self):
        """The paper the table is from (a ``timm_posembed.models.Paper``). Imported here, not at the top: listing
        the tables (``timm-posembed report --help``) needs no torch."""
        from ..models import PAPERS
        return PAPERS[self.paper_key]

    @property
    def recipe_path(self) -> Path:
        """The recipe file (a train.py ``--config``) the rows are trained with."""
        return RECIPES_DIR / self.recipe

    @property
    def num_classes(self) -> int:
        # the dataset's class count: runs with another head belong to another dataset
        return DATASET_NUM_CLASSES[self.dataset]

    def row(self, row_id: str) -> PaperRow:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise KeyError(f'table {self.id} has no row {row_id!r}; rows: {[r.id for r in self.rows]}')


_ROW_KEYS = {'id', 'label', 'model', 'model_kwargs', 'paper_numbers', 'epochs'}


def _parse_table(table_id: str, raw: Dict[str, Any]) -> PaperTable:
    where = f'{PAPER_TABLES_FILE.name}: table {table_id}'
    for key in ('title', 'paper', 'dataset', 'recipe'):
        if key not in raw:
            raise ValueError(f'{where}: missing key {key!r}')
    if raw['dataset'] not in DATASET_NUM_CLASSES:
        raise ValueError(f'{where}: dataset must be one of {sorted(DATASET_NUM_CLASSES)}, got {raw["dataset"]!r}')
    rows = []
    for i, r in enumerate(raw.get('rows') or []):
        unknown = set(r) - _ROW_KEYS
        missing = {'id', 'label', 'model'} - set(r)
        if unknown or missing:
            raise ValueError(f'{where}, row {i}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}')
        kwargs = dict(r.get('model_kwargs') or {})
        dropped = sorted(k for k, v in kwargs.items() if v is None)
        if dropped:
            # timm.create_model drops every kwarg whose value is None before the model sees it, so such a row would
            # silently train the entrypoint's default (e.g. Eva's layer scale for init_values=None).
            raise ValueError(f'{where}, row {r["id"]!r}: model_kwargs {dropped} are None, which timm.create_model '
                             f'drops (the model would keep its default); give a value or remove the key')
        rows.append(PaperRow(
            id=str(r['id']), label=str(r['label']), model=str(r['model']),
            model_kwargs=kwargs, paper_numbers=dict(r.get('paper_numbers') or {}),
            epochs=int(r['epochs']) if r.get('epochs') is not None else None,
        ))
    ids = [r.id for r in rows]
    if not rows or len(set(ids)) != len(ids):
        raise ValueError(f'{where}: needs rows with unique ids, got {ids}')
    baseline = raw.get('baseline')
    if baseline is not None and baseline not in ids:
        raise ValueError(f'{where}: baseline {baseline!r} is not one of its rows {ids}')
    return PaperTable(
        id=table_id, title=str(raw['title']), paper_key=str(raw['paper']), dataset=str(raw['dataset']),
        recipe=str(raw['recipe']), rows=tuple(rows),
        notes=tuple(raw.get('notes') or ()), baseline=baseline,
    )


@lru_cache(maxsize=None)
def load_paper_tables() -> Dict[str, PaperTable]:
    raw = read_yaml_file(PAPER_TABLES_FILE, 'paper tables file').data
    return {table_id: _parse_table(table_id, t) for table_id, t in raw['tables'].items()}


def list_paper_tables() -> List[str]:
    return list(load_paper_tables())


def paper_table(table_id: str) -> PaperTable:
    tables = load_paper_tables()
    if table_id not in tables:
        raise KeyError(f'no paper table {table_id!r}; known: {", ".join(tables)}')
    return tables[table_id]


def list_recipes() -> List[str]:
    """The names of the recipes the package ships (train.py ``--config`` files)."""
    return sorted(p.name for p in RECIPES_DIR.glob('*.yaml'))


def resolve_recipe(recipe: Union[str, Path]) -> Path:
    """A recipe given as a path, or by the name of one the package ships (``fashion_mnist_study.yaml``)."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / path.name
    if path.name == str(recipe) and shipped.is_file():
        return shipped
    raise FileNotFoundError(f'no recipe {recipe}: give the path of a train.py --config file, or the name of one the '
                            f'package ships: {", ".join(list_recipes())}')
