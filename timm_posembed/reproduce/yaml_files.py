""" Reading a YAML file that may be hostile: a train.py ``args.yaml``, a user's recipe (a train.py ``--config``), the
paper tables. The one YAML reader of the package.

Three things make a plain ``yaml.safe_load`` unsafe on a file nobody checked: its size (pure-Python parsing of a few
MB takes minutes), alias expansion ("billion laughs": a few hundred bytes of nested aliases name ~10⁹ nodes; loading
shares them, but anything that walks or prints the result then hangs) and bytes that are not UTF-8. The file's size
is bounded before it is read, the composed node graph is measured with every alias expanded (each node once,
memoised: linear in the file) and refused beyond a bound, and every error names the file and, where YAML knows it,
the line.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Union

import yaml

__all__ = ['YamlFileError', 'YamlFile', 'read_yaml_file', 'top_level_mapping', 'MAX_YAML_BYTES', 'MAX_YAML_NODES']

# train.py's args.yaml is ~5 KB, the recipes ~1 KB, paper_tables.yaml ~11 KB: 256 KiB leaves 20x room and parses in
# ~0.6 s with libyaml (~3 s without; 1 MiB takes 2.5 s / 13 s).
MAX_YAML_BYTES = 256 << 10
# Nodes after alias expansion: an args.yaml has ~150, paper_tables.yaml ~1,000. Written out, MAX_YAML_BYTES holds at
# most ~130k nodes ("[1,1,...]"), so a larger expanded count can only come from aliases multiplying them.
MAX_YAML_NODES = 200_000

_Loader = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)  # libyaml when built with it (~10x faster), same rules


class YamlFileError(ValueError):
    """A YAML file that cannot be read safely or is not valid YAML; the message names the file (and line)."""


@dataclass(frozen=True)
class YamlFile:
    """A loaded YAML file: its ``data`` and, for a mapping document, the 1-based line of each top-level key."""
    path: Path
    data: Any
    key_lines: Dict[str, int] = field(default_factory=dict)

    def where(self, key: str) -> str:
        """``path:line`` of the top-level ``key`` (just ``path`` when unknown), for an error message."""
        line = self.key_lines.get(key)
        return f'{self.path}:{line}' if line else str(self.path)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes of ``root``'s graph with every alias expanded, counting each distinct node once (memoised) and stopping
    as soon as ``limit`` is passed. Iterative: a deeply nested file cannot overflow the stack."""
    sizes: Dict[int, int] = {}
    on_path = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        items = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
        if not children_done:
            if key in on_path:  # a recursive alias (&a [*a]) expands without end
                return limit + 1
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in items if id(child) not in sizes)
            continue
        on_path.discard(key)
        sizes[key] = 1 + sum(sizes[id(child)] for child in items)
        if sizes[key] > limit:
            return sizes[key]
    return sizes[id(root)]


def read_yaml_file(
        path: Union[str, Path],
        what: str = 'YAML file',
        max_bytes: int = MAX_YAML_BYTES,
        max_nodes: int = MAX_YAML_NODES,
) -> YamlFile:
    """Load one YAML document from ``path`` (safe tags only), bounded in bytes and in nodes after alias expansion.

    Raises ``YamlFileError`` naming the file (``what`` says what it should be, e.g. "train.py args.yaml") for a
    missing or oversized file, bytes that are not UTF-8, invalid YAML or too many expanded nodes."""
    path = Path(path)
    try:
        with path.open('rb') as f:
            raw = f.read(max_bytes + 1)  # never more than the bound, whatever the file claims (a FIFO, /dev/zero)
    except OSError as e:
        raise YamlFileError(f'{path}: cannot read the {what}: {e.strerror or e}') from None
    if len(raw) > max_bytes:
        raise YamlFileError(f'{path}: larger than {max_bytes:,} bytes, too large for a {what}; is it the right file?')
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b'\n') + 1
        raise YamlFileError(f'{path}:{line}: not UTF-8 text (byte {e.start}); a {what} is UTF-8 YAML') from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlFile(path, None)
        size = _expanded_size(node, max_nodes)
        if size > max_nodes:
            raise YamlFileError(
                f'{path}: its aliases (*name) expand to more than {max_nodes:,} nodes; a {what} does not need '
                f'that many (a "billion laughs" file?): write the values out')
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f'{path}:{mark.line + 1}' if mark is not None else str(path)
        raise YamlFileError(f'{where}: is not valid YAML ({e.problem or e.context}); expected a {what}') from None
    except yaml.YAMLError as e:
        raise YamlFileError(f'{path}: is not valid YAML ({e}); expected a {what}') from None
    except RecursionError:
        raise YamlFileError(f'{path}: nested too deeply to be a {what}') from None
    finally:
        loader.dispose()
    key_lines: Dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key, line = str(key_node.value), key_node.start_mark.line + 1
                if key in key_lines:  # YAML would keep the last silently; which one the writer meant is unknown
                    raise YamlFileError(f'{path}:{line}: {key!r} is set twice (also on line {key_lines[key]}); '
                                        f'a {what} sets each key once')
                key_lines[key] = line
    return YamlFile(path, data, key_lines)


def top_level_mapping(doc: YamlFile, what: str) -> Dict[str, Any]:
    """``doc.data`` as a dict, or a ``YamlFileError`` saying the file is not a mapping of keys."""
    if not isinstance(doc.data, dict):
        got = 'empty' if doc.data is None else f'a {type(doc.data).__name__}'
        raise YamlFileError(f'{doc.path}: is {got}, not a mapping of keys; expected a {what}')
    return doc.data

