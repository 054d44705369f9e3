""" The package's layout, read from its imports and held against the tree CONTRIBUTING.md draws ("Layout").

CONTRIBUTING.md's layout block names each part of the package and the parts it may import; this file parses that
block and fails on an import that goes against it, on a part the block does not name (or names but the package
lacks), on a module that re-exports names it does not define (one import path per name), and on an absolute import
of the package from inside it. """
import ast
import re
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import pytest

import timm_posembed

PACKAGE_DIR = Path(timm_posembed.__file__).parent
PACKAGE = 'timm_posembed'
CONTRIBUTING = PACKAGE_DIR.parent / 'CONTRIBUTING.md'
# Parts whose names the rest of the package imports from the package, never from its modules.
FACADES = ('layers', 'models')

# timm names that timm 1.0.31 does not re-export publicly, each used in one place; a new one needs a reason here.
TIMM_PRIVATE_ALLOWED = {
    ('hub/publish.py', 'timm.models._hub'),  # save_config_for_hf: the config.json writer save_for_hf uses
    ('models/coat_clustering.py', 'timm.models._features'),  # feature_take_indices, as timm's own models use it
}

pytestmark = pytest.mark.skipif(not CONTRIBUTING.is_file(), reason='needs the source checkout (CONTRIBUTING.md)')


def read_layout(text: str) -> Dict[str, Set[str]]:
    """{part: parts it may import} from CONTRIBUTING.md's ``<!-- layout -->`` block (``name  words  → a, b``)."""
    block = text.split('<!-- layout -->', 1)[1].split('```', 2)[1]
    allowed: Dict[str, Set[str]] = {}
    for line in block.splitlines()[1:]:
        if not line.strip() or line.strip() == f'{PACKAGE}/':
            continue
        m = re.match(r'^\s+(\S+)\s.*→\s*(.*)$', line)
        assert m, f'CONTRIBUTING.md layout line not of the form "name  what  → parts": {line!r}'
        part = m.group(1).rstrip('/').removesuffix('.py')
        allowed[part] = {p.strip() for p in m.group(2).split(',') if p.strip()}
    return allowed


LAYOUT = read_layout(CONTRIBUTING.read_text(encoding='utf-8')) if CONTRIBUTING.is_file() else {}
PRIVATE_HELPERS = {part for part in LAYOUT if part.startswith('_')}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path) -> Iterator[Tuple[str, Tuple[str, ...], int]]:
    """(absolute module, imported names, level) for each import statement of ``path``."""
    module = _module_name(path)
    package = module if path.name == '__init__.py' else module.rsplit('.', 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), 0
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                name = '.'.join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ''
            yield name, tuple(a.name for a in node.names), node.level


def _part(module: str) -> str:
    """The layout part a module of the package belongs to: its first component below the package."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else '__init__'


def _targets(name: str, names: Tuple[str, ...]) -> Set[str]:
    """The modules an import reaches: ``from timm_posembed import models`` reaches ``timm_posembed.models``."""
    if name == PACKAGE and names:
        return {f'{PACKAGE}.{n}' for n in names}
    return {name}


def _package_files():
    return sorted(PACKAGE_DIR.rglob('*.py'))


def test_the_layout_names_exactly_the_parts_of_the_package():
    parts = {p.name.removesuffix('.py') for p in PACKAGE_DIR.iterdir()
             if (p.is_dir() and (p / '__init__.py').is_file()) or p.suffix == '.py'}
    assert parts == set(LAYOUT), (f'CONTRIBUTING.md layout names {sorted(set(LAYOUT) - parts)} that the package '
                                  f'lacks, and lacks {sorted(parts - set(LAYOUT))}')
    unknown = {t for targets in LAYOUT.values() for t in targets} - set(LAYOUT)
    assert not unknown, f'the layout lets parts import {unknown}, which are not parts'


def test_the_package_root_holds_only_the_entry_points_subpackages_and_private_helpers():
    modules = {p.stem for p in PACKAGE_DIR.glob('*.py')}
    assert modules - {'__init__', 'cli', 'version'} <= PRIVATE_HELPERS, sorted(modules)


@pytest.mark.parametrize('path', _package_files(), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_imports_follow_the_layout(path):
    part = _part(_module_name(path))
    for name, names, level in _imports(path):
        if not (name == PACKAGE or name.startswith(PACKAGE + '.')):
            continue
        assert level or path.name == '__init__.py' and part == '__init__', (
            f'{path.relative_to(PACKAGE_DIR)}: imports {name} absolutely; inside the package, imports are relative')
        for target in _targets(name, names):
            target_part = _part(target)
            if target_part in (part, '__init__') or target_part in PRIVATE_HELPERS:
                continue
            assert target_part in LAYOUT[part], (
                f'{path.relative_to(PACKAGE_DIR)}: {part} imports {target}, but CONTRIBUTING.md lets {part} import '
                f'only {sorted(LAYOUT[part]) or "itself"}')
            if target_part in FACADES:
                assert target == f'{PACKAGE}.{target_part}', (
                    f'{path.relative_to(PACKAGE_DIR)}: reaches into {target}; import its names from '
                    f'{PACKAGE}.{target_part}')


def _defined_names(tree: ast.Module) -> Set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                elts = target.elts if isinstance(target, ast.Tuple) else [target]
                names |= {t.id for t in elts if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _all(tree: ast.Module) -> Set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


@pytest.mark.parametrize('path', [p for p in _package_files() if p.name != '__init__.py'],
                         ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_no_module_re_exports_names_it_does_not_define(path):
    tree = ast.parse(path.read_text(encoding='utf-8'))
    foreign = sorted(_all(tree) - _defined_names(tree))
    assert not foreign, (f'{path.relative_to(PACKAGE_DIR)} lists {foreign} in __all__ without defining them: import '
                         f'them from where they are defined (one import path per name)')


@pytest.mark.parametrize('path', _package_files(), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_only_timms_public_api(path):
    rel = path.relative_to(PACKAGE_DIR).as_posix()
    for name, _, _ in _imports(path):
        if name.startswith('timm.') and any(part.startswith('_') for part in name.split('.')):
            assert (rel, name) in TIMM_PRIVATE_ALLOWED, f'{rel} imports timm\'s private module {name}'


def test_the_layout_check_sees_a_violation(monkeypatch):
    # the checker itself: a layer importing a model module must be reported
    bad = PACKAGE_DIR / 'layers' / 'cope.py'
    source = bad.read_text(encoding='utf-8') + '\nfrom ..models import vision_transformer_cope  # noqa\n'
    monkeypatch.setattr(Path, 'read_text', lambda self, encoding=None: source if self == bad else
                        Path.read_bytes(self).decode(encoding or 'utf-8'))
    with pytest.raises(AssertionError, match='layers imports timm_posembed.models'):
        test_imports_follow_the_layout(bad)


def test_the_layout_block_is_parsed():
    layout = read_layout('<!-- layout -->\n```\ntimm_posembed/\n  hub/   what   → measure, models\n'
                         '  data/   what   →\n```\n')
    assert layout == {'hub': {'measure', 'models'}, 'data': set()}
