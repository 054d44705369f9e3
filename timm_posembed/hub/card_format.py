""" The format of ``MODEL_CARDS.md`` (the single source of every model's text): parse it, find a model's card.

``MODEL_CARDS.md``'s header defines the format: a ``<!-- card: MODEL [MODEL ...] -->`` line, a ``## Title``, then
``###`` subsections ``Description``, ``Papers``, ``Recipe``, ``Results`` (with ``#### Paper's numbers`` and
``#### Our numbers``), ``Limitations``, ``Citation`` (```` ```bibtex ```` blocks), in that order; extra ``###``
subsections may follow ``Results``. ``parse_model_cards`` checks all of that and names the card and line of any
deviation, so a malformed card fails when it is written, not when weights are published.
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from .._resources import MODEL_CARDS, PACKAGE_DIR, package_file

__all__ = [
    'REQUIRED_SECTIONS', 'PAPERS_NUMBERS', 'OUR_NUMBERS', 'ModelCard', 'ModelCardError', 'parse_model_cards',
    'load_model_cards', 'default_cards_path', 'find_card', 'dataset_from_tag', 'shift_headings',
]

REQUIRED_SECTIONS = ('Description', 'Papers', 'Recipe', 'Results', 'Limitations', 'Citation')
PAPERS_NUMBERS = "Paper's numbers"
OUR_NUMBERS = 'Our numbers'
# Extra subsections may only follow Results, so the description / papers / recipe part reads the same in every card.
_FIRST_EXTRA_AFTER = 'Results'

_CARD_RE = re.compile(r'^<!--\s*card:\s*(?P<names>.*?)\s*-->\s*$')
_HEADING_RE = re.compile(r'^(?P<hashes>#{1,6})\s+(?P<text>.+?)\s*#*\s*$')
_FENCE_RE = re.compile(r'^\s*(```|~~~)')
_BIBTEX_RE = re.compile(r'^```bibtex\s*\n(?P<body>.*?)^```\s*$', re.MULTILINE | re.DOTALL)
_MODEL_NAME_RE = re.compile(r'^[a-z0-9_]+(\.[a-z0-9_]+)?$')
# The package's MODEL_CARDS.md is ~35 KB for a dozen models; 16 MB is room for thousands, and bounds a wrong file.
_MAX_CARDS_BYTES = 16 * 2 ** 20


class ModelCardError(ValueError):
    """MODEL_CARDS.md is malformed, or has no card for a model."""


@dataclass(frozen=True)
class ModelCard:
    models: Tuple[str, ...]  # the names on the card line (architectures, or arch.tag for a tag-specific card)
    title: str
    sections: Tuple[Tuple[str, str], ...]  # (### heading, markdown body) in file order
    source: str = 'MODEL_CARDS.md'
    line: int = 0  # 1-based line of the card marker

    def section(self, name: str) -> str:
        for heading, body in self.sections:
            if heading == name:
                return body
        raise KeyError(f'card {self.where} has no "### {name}" section')

    @property
    def where(self) -> str:
        return f'{" ".join(self.models)} ({self.source}:{self.line})'

    @property
    def extra_sections(self) -> List[Tuple[str, str]]:
        return [(h, b) for h, b in self.sections if h not in REQUIRED_SECTIONS]

    def results_part(self, name: str) -> str:
        """The body under ``#### name`` inside Results (``PAPERS_NUMBERS`` or ``OUR_NUMBERS``)."""
        return _split_headings(self.section('Results'), level=4)[1][_canonical(name)]

    def citations(self) -> List[str]:
        """The bodies of the Citation section's ```` ```bibtex ```` blocks."""
        return [m.group('body').strip() for m in _BIBTEX_RE.finditer(self.section('Citation'))]

    def paper_lines(self) -> List[str]:
        """The Papers section as one entry per list item (or per non-blank line when it is not a list)."""
        entries: List[str] = []
        for line in self.section('Papers').splitlines():
            stripped = line.strip()
            if not stripped:
                continue
            item = re.match(r'^[-*+]\s+|^\d+[.)]\s+', stripped)
            if item or not entries or not line.startswith((' ', '\t')):
                entries.append(stripped[item.end():] if item else stripped)
            else:  # an indented continuation of the previous item
                entries[-1] += ' ' + stripped
        return entries


def _canonical(heading: str) -> str:
    # Typographic apostrophes and case differences should not make "Paper’s numbers" a different heading.
    return heading.replace('\u2019', "'").strip().lower()


def _split_headings(text: str, level: int) -> Tuple[str, Dict[str, str], List[Tuple[str, int]]]:
    """Split markdown ``text`` at headings of exactly ``level`` outside code fences.

    Returns (text before the first heading, {canonical heading: body}, [(heading, line offset)] in order)."""
    lines = text.split('\n')
    preamble: List[str] = []
    bodies: Dict[str, List[str]] = {}
    order: List[Tuple[str, int]] = []
    current: Optional[List[str]] = None
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE_RE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING_RE.match(line)
        if m and len(m.group('hashes')) == level:
            heading = m.group('text')
            order.append((heading, i))
            current = bodies.setdefault(_canonical(heading), [])
            continue
        (preamble if current is None else current).append(line)
    return '\n'.join(preamble), {k: '\n'.join(v).strip('\n') for k, v in bodies.items()}, order


def parse_model_cards(text: str, source: str = 'MODEL_CARDS.md') -> Dict[str, ModelCard]:
    """Every card in ``text`` keyed by each model name on its card line; ``ModelCardError`` on a malformed card."""
    lines = text.split('\n')
    starts: List[Tuple[int, List[str]]] = []
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE_RE.match(line):
            in_fence = not in_fence
            continue
        m = None if in_fence else _CARD_RE.match(line.strip())
        if m:
            names = m.group('names').split()
            if not names:
                raise ModelCardError(
                    f'{source}:{i + 1}: card line names no model; write <!-- card: MODEL [MODEL ...] -->')
            bad = [n for n in names if not _MODEL_NAME_RE.match(n)]
            if bad:
                raise ModelCardError(
                    f'{source}:{i + 1}: {bad} are not model names; the card line lists registered model names '
                    f'(like vit_tiny_cope, or vit_tiny_cope.tiny_imagenet for one tag) separated by spaces')
            starts.append((i, names))

    cards: Dict[str, ModelCard] = {}
    for k, (start, names) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
        card = _parse_card(lines[start + 1:end], names, source, start + 1)
        for name in names:
            if name in cards:
                raise ModelCardError(
                    f'{source}:{start + 1}: {name} already has a card at line {cards[name].line}; '
                    f'a model has exactly one card')
            cards[name] = card
    return cards


def _parse_card(lines: List[str], names: List[str], source: str, marker_line: int) -> ModelCard:
    where = f'{source}:{marker_line} (card {" ".join(names)})'
    # The card runs until the next card line; a "## " heading after its title ends it too (a new top-level part).
    title = None
    body_lines: List[str] = []
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE_RE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING_RE.match(line)
        if title is None:
            if not line.strip():
                continue
            if not (m and len(m.group('hashes')) == 2):
                raise ModelCardError(f'{where}: expected a "## Title" line right after the card line, found {line!r}')
            title = m.group('text')
            continue
        if m and len(m.group('hashes')) <= 2:
            break
        body_lines.append(line)
    if title is None:
        raise ModelCardError(f'{where}: the card is empty; it needs a "## Title" and the subsections '
                             f'{", ".join(REQUIRED_SECTIONS)}')

    preamble, bodies, order = _split_headings('\n'.join(body_lines), level=3)
    if preamble.strip():
        raise ModelCardError(f'{where}: text between "## {title}" and "### Description" '
                             f'({preamble.strip()[:60]!r}...); put it under "### Description"')
    headings = [h for h, _ in order]
    canon = [_canonical(h) for h in headings]
    dupes = sorted({h for h in canon if canon.count(h) > 1})
    if dupes:
        raise ModelCardError(f'{where}: repeated subsections {dupes}; each "###" heading appears once')
    missing = [s for s in REQUIRED_SECTIONS if _canonical(s) not in canon]
    if missing:
        raise ModelCardError(f'{where}: missing subsections {missing}; a card has '
                             f'{", ".join("### " + s for s in REQUIRED_SECTIONS)} in this order')
    required_order = [h for h in canon if h in {_canonical(s) for s in REQUIRED_SECTIONS}]
    if required_order != [_canonical(s) for s in REQUIRED_SECTIONS]:
        raise ModelCardError(f'{where}: subsections are in the order {headings}; the required ones go '
                             f'{", ".join(REQUIRED_SECTIONS)} (extra ones after {_FIRST_EXTRA_AFTER})')
    first_allowed = canon.index(_canonical(_FIRST_EXTRA_AFTER))
    early_extras = [headings[i] for i, h in enumerate(canon)
                    if h not in {_canonical(s) for s in REQUIRED_SECTIONS} and i < first_allowed]
    if early_extras:
        raise ModelCardError(f'{where}: extra subsections {early_extras} come before "### {_FIRST_EXTRA_AFTER}"; '
                             f'extra subsections may only follow it')
    empty = [s for s in REQUIRED_SECTIONS if not bodies[_canonical(s)].strip()]
    if empty:
        raise ModelCardError(f'{where}: subsections {empty} are empty; write what applies, or say why nothing does')

    _, parts, part_order = _split_headings(bodies[_canonical('Results')], level=4)
    for part in (PAPERS_NUMBERS, OUR_NUMBERS):
        if _canonical(part) not in parts:
            raise ModelCardError(
                f'{where}: "### Results" has no "#### {part}" heading (it has {[h for h, _ in part_order]}); '
                f'numbers from a paper go under "#### {PAPERS_NUMBERS}", numbers we measured under '
                f'"#### {OUR_NUMBERS}" (say "none yet" there if so)')
        if not parts[_canonical(part)].strip():
            raise ModelCardError(f'{where}: "#### {part}" is empty; give the numbers, or say there are none and why')

    sections = tuple((h, bodies[_canonical(h)]) for h in headings)
    card = ModelCard(models=tuple(names), title=title, sections=sections, source=source, line=marker_line)
    if not card.citations():
        raise ModelCardError(f'{where}: "### Citation" has no ```bibtex block; give each paper\'s BibTeX entry')
    return card


def default_cards_path() -> Path:
    """The ``MODEL_CARDS.md`` this package reads: the copy an installed package carries (the build copies it in, see
    ``build_hooks.py``), else the one at the top of the source checkout it runs from (an editable install)."""
    candidates = (package_file(MODEL_CARDS), PACKAGE_DIR.parent / 'MODEL_CARDS.md')
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ModelCardError(
        f'cannot find MODEL_CARDS.md (looked at {" and ".join(map(str, candidates))}): this installation of '
        f'timm_posembed lacks its model cards; reinstall it (pip install --force-reinstall timm-posembed) or pass '
        f'the file with --cards PATH')


def load_model_cards(path: Optional[Union[str, Path]] = None) -> Dict[str, ModelCard]:
    path = Path(path) if path else default_cards_path()
    if not path.is_file():
        problem = 'is not a regular file' if path.exists() else 'does not exist'
        raise ModelCardError(f'model cards file {path} {problem}; pass the path of MODEL_CARDS.md')
    size = path.stat().st_size
    if size > _MAX_CARDS_BYTES:
        raise ModelCardError(f'model cards file {path} is {size} bytes; MODEL_CARDS.md is Markdown text of at most '
                             f'{_MAX_CARDS_BYTES} bytes: pass the path of MODEL_CARDS.md')
    try:
        text = path.read_text(encoding='utf-8')
    except UnicodeDecodeError as e:
        raise ModelCardError(f'model cards file {path} is not UTF-8 text ({e.reason} at byte {e.start}); expected '
                             f'MODEL_CARDS.md (Markdown)') from None
    if '\0' in text:
        raise ModelCardError(f'model cards file {path} holds NUL bytes, so it is not text; expected MODEL_CARDS.md '
                             f'(Markdown)')
    return parse_model_cards(text, source=str(path))


def find_card(cards: Dict[str, ModelCard], model_name: str) -> ModelCard:
    """The card for ``arch.tag`` (a tag-specific card first, then the architecture's)."""
    arch = model_name.split('.')[0]
    for key in (model_name, arch):
        if key in cards:
            return cards[key]
    raise ModelCardError(
        f'MODEL_CARDS.md has no card for {model_name}: add a section that starts with the line '
        f'"<!-- card: {arch} -->" followed by "## Title" and the subsections {", ".join(REQUIRED_SECTIONS)} '
        f'(the file\'s header describes the format). Cards exist for: {", ".join(sorted(cards)) or "no model"}.')


# timm's tag conventions for the dataset a checkpoint was trained (last) on, and the Hub dataset names timm's cards use.
_TAG_DATASETS = (
    (r'tiny_?imagenet|tinyin|tin200', 'tiny-imagenet'),
    (r'in100', 'imagenet-100'),
    (r'in1k', 'imagenet-1k'),
    (r'in12k', 'imagenet-12k'),
    (r'in21k|in22k', 'imagenet-21k'),
)


def dataset_from_tag(tag: str) -> Optional[str]:
    """The dataset a pretrained tag names by timm's convention (the last one for ``..._ft_in1k`` style tags)."""
    found: List[Tuple[int, str]] = []
    for pattern, dataset in _TAG_DATASETS:
        for m in re.finditer(rf'(?:^|_)(?:{pattern})(?=$|_)', tag):
            found.append((m.end(), dataset))
    return max(found)[1] if found else None


def shift_headings(markdown: str, by: int) -> str:
    """Move every heading outside code fences ``by`` levels up (``####`` -> ``###`` for ``by=-1``)."""
    out = []
    in_fence = False
    for line in markdown.split('\n'):
        if _FENCE_RE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING_RE.match(line)
        if m:
            level = min(6, max(1, len(m.group('hashes')) + by))
            line = '#' * level + ' ' + m.group('text')
        out.append(line)
    return '\n'.join(out)
