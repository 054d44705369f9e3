""" Plain-text tables for the commands' terminal output. """
from typing import Iterable, Sequence


def format_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """Left-aligned columns, a dashed rule under the header."""
    rows = [tuple(str(v) for v in r) for r in rows]
    widths = [max(len(r[i]) for r in rows + [tuple(header)]) for i in range(len(header))]
    lines = ['  '.join(h.ljust(w) for h, w in zip(header, widths)), '  '.join('-' * w for w in widths)]
    lines += ['  '.join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return '\n'.join(line.rstrip() for line in lines)
