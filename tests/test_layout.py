""" The package's layering, read from its imports (CONTRIBUTING.md, "Layout"):
CLI -> commands -> library -> models -> layers, and only timm's public API.

A new module that imports across a layer (a layer reaching into a model, the Hub code reaching into a model module's
internals, a command imported by the library) fails here with the import named. """
import ast
from pathlib import Path
from typing import Iterator, Tuple

import pytest

import timm_posembed

PACKAGE_DIR = Path(timm_posembed.__file__).parent
PACKAGE = 'timm_posembed'

# timm names that timm 1.0.31 does not re-export publicly, each used in one place; a new one needs a reason here.
TIMM_PRIVATE_ALLOWED = {
    ('publish.py', 'timm.models._hub'),  # save_config_for_hf: the config.json writer save_for_hf uses
    ('models/coat_clustering.py', 'timm.models._features'),  # feature_take_indices, as timm's own models use it
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path) -> Iterator[Tuple[str, Tuple[str, ...]]]:
    """(absolute module, imported names) for each import statement of ``path``."""
    module = _module_name(path)
    package = module if path.name == '__init__.py' else module.rsplit('.', 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                name = '.'.join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ''
            yield name, tuple(a.name for a in node.names)


def _package_files():
    return sorted(p for p in PACKAGE_DIR.rglob('*.py'))


def _layer(module: str) -> str:
    parts = module.split('.')
    if len(parts) > 1 and parts[1] in ('layers', 'models', 'commands'):
        return parts[1]
    if module in (PACKAGE, f'{PACKAGE}.cli', f'{PACKAGE}.version'):
        return 'root'
    return 'library'


def _ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + '.')


@pytest.mark.parametrize('path', _package_files(), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_imports_follow_the_layers(path):
    layer = _layer(_module_name(path))
    for name, names in _imports(path):
        if not _ours(name):
            continue
        target = _layer(name)
        if layer == 'layers':
            assert target == 'layers', f'{path.name}: a layer imports {name}; layers are usable alone'
        elif layer == 'models':
            assert target in ('layers', 'models'), f'{path.name}: a model module imports {name}'
        elif layer == 'library':
            assert target != 'commands', f'{path.name}: library code imports the CLI module {name}'
            # models are reached through timm's registry and the package's public names, never a model module
            assert name != f'{PACKAGE}.models' or all(not n.startswith('_') for n in names), (path.name, names)
            assert not name.startswith(f'{PACKAGE}.models.'), f'{path.name}: reaches into {name}'
            assert not name.startswith(f'{PACKAGE}.layers.'), f'{path.name}: reaches into {name}'
        elif layer == 'commands':
            assert not name.startswith(f'{PACKAGE}.models.'), f'{path.name}: a command reaches into {name}'


@pytest.mark.parametrize('path', _package_files(), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_only_timms_public_api(path):
    rel = path.relative_to(PACKAGE_DIR).as_posix()
    for name, _ in _imports(path):
        if name.startswith('timm.') and any(part.startswith('_') for part in name.split('.')):
            assert (rel, name) in TIMM_PRIVATE_ALLOWED, f'{rel} imports timm\'s private module {name}'


def test_the_layout_check_sees_a_violation(tmp_path, monkeypatch):
    # the checker itself: a layer importing a model module must be reported
    bad = PACKAGE_DIR / 'layers' / 'cope.py'
    source = bad.read_text(encoding='utf-8') + '\nfrom ..models import vision_transformer_cope  # noqa\n'
    fake = tmp_path / 'cope.py'
    fake.write_text(source, encoding='utf-8')
    monkeypatch.setattr(Path, 'read_text', lambda self, encoding=None: source if self == bad else
                        Path.read_bytes(self).decode(encoding or 'utf-8'))
    with pytest.raises(AssertionError, match='a layer imports timm_posembed.models'):
        test_imports_follow_the_layers(bad)
