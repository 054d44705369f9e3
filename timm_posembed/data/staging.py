""" Writing a prepared dataset so that nothing is ever half-written: every file of the output is named by a plan
(relative path -> source file to link or copy, or bytes to write), every name is checked before anything is
written, the tree is built in a staging folder beside the destination, checked, and renamed into place in one step.
An error or an interrupt (SIGINT, SIGTERM, SIGHUP) removes the staging folder and leaves the destination as it was;
a staging folder left by a run that was killed outright (SIGKILL) is removed by the next run. """
import contextlib
import errno
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Sequence, Tuple, Union

from .._output_files import interrupts_raise, process_alive

__all__ = [
    'DatasetLayoutError', 'PrepareResult', 'LinkMode', 'LINK_MODES', 'PathLike', 'Plan', 'check_name', 'write_tree',
    'WrittenTree',
]

PathLike = Union[str, Path]
LinkMode = Literal['auto', 'hardlink', 'symlink', 'copy']
LINK_MODES: Tuple[str, ...] = ('auto', 'hardlink', 'symlink', 'copy')

# relative path (one name per folder level) -> a source file to link / copy, or the bytes of a new file
Plan = Dict[Tuple[str, ...], Union[Path, bytes]]

_STAGING_SUFFIX = '.timm-posembed-staging'
_STAGING_MARKER = '.timm-posembed-staging'  # a file inside: says the folder is ours, and which process made it


class DatasetLayoutError(ValueError):
    """A source or destination tree is not laid out as the preparation expects; the message says what and how."""


@dataclass
class PrepareResult:
    root: Path
    num_classes: Dict[str, int]  # split -> classes written
    num_images: Dict[str, int]  # split -> images written (verified on disk)
    created: int = 0  # files created by this run (0 when re-run over a complete output)
    link_mode: str = ''  # how files were placed: hardlink, symlink, copy or png
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        splits = ', '.join(
            f'{s}: {self.num_images[s]:,} images in {self.num_classes[s]} classes' for s in self.num_images)
        lines = [f'{self.root}: {splits}; {self.created:,} files created ({self.link_mode or "nothing new"})']
        return '\n'.join(lines + [f'note: {n}' for n in self.notes])


def check_name(name: str, what: str, where: str) -> str:
    """``name`` if it is one plain file or folder name; names read from source files could otherwise place
    output anywhere (``../../x``, ``/etc/x``)."""
    if (not name or name in ('.', '..') or '/' in name or '\\' in name
            or any(ord(c) < 32 or c == '\x7f' for c in name)):
        raise DatasetLayoutError(
            f'{where}: {what} {name!r} is not a plain name (it must be non-empty, without path separators or '
            f'control characters, and not . or ..)')
    return name


@dataclass
class WrittenTree:
    """What ``write_tree`` did; the dataset modules turn it into a ``PrepareResult`` with their counts."""
    created: int
    link_mode: str
    notes: List[str]


def write_tree(plan: Plan, dst: Path, sources: Sequence[Path], link: LinkMode = 'copy') -> WrittenTree:
    """Make ``dst`` hold exactly ``plan``; a no-op when it already does (a re-run over an earlier output).

    ``dst`` must not exist, be an empty folder, or hold exactly the plan's files; anything else is refused
    untouched. ``sources`` are the folders read: ``dst`` may not lie inside one of them.
    """
    if link not in LINK_MODES:
        raise ValueError(f'link must be one of {LINK_MODES}, got {link!r}')
    for rel in plan:
        for part in rel:
            check_name(part, 'output name', f'{dst}/{"/".join(rel)}')
    dst = Path(dst)
    if dst.is_symlink():
        if not dst.resolve().is_dir():
            raise DatasetLayoutError(f'{dst} is a symbolic link to {dst.resolve()}, which is not a folder')
        dst = dst.resolve()
    for src in sources:
        src_resolved, dst_resolved = Path(src).resolve(), dst.resolve()
        if dst_resolved == src_resolved or src_resolved in dst_resolved.parents:
            raise DatasetLayoutError(f'destination {dst} must be outside the source {src}')
    if os.path.lexists(dst):
        if not dst.is_dir():
            raise DatasetLayoutError(
                f'destination {dst} is a file, not a folder; give a folder that does not exist yet (or an empty '
                f'one, or the output of an earlier run of the same command)')
        if any(dst.iterdir()):
            _check_existing(plan, dst, link)
            return WrittenTree(0, '', [])
    _remove_stale_staging(dst)
    with _staging_folder(dst) as stage:
        linker = _Linker(link)
        for rel, source in plan.items():
            linker.place(source, stage.joinpath(*rel))
        (stage / _STAGING_MARKER).unlink()
        _check_structure(plan, stage)
        try:
            os.replace(stage, dst)  # atomic; replaces dst only if it is an empty folder
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            raise DatasetLayoutError(
                f'{dst} was created or filled by something else while this run prepared it ({e.strerror}); '
                f'nothing of this run was kept: check {dst}, or run again with another destination') from None
    return WrittenTree(linker.created, linker.used_mode, linker.notes)


def _expected_folders(plan: Plan) -> Dict[Tuple[str, ...], set]:
    """folder (relative) -> names it holds, for every folder of the plan including the root ``()``."""
    folders: Dict[Tuple[str, ...], set] = {}
    for rel in plan:
        for depth in range(len(rel)):
            folders.setdefault(rel[:depth], set()).add(rel[depth])
    return folders


def _check_structure(plan: Plan, root: Path) -> None:
    """Raise unless ``root`` holds exactly the plan's folders and files, every file readable (links not dangling).
    Only the plan's folders are listed, so the check is bounded by the plan."""
    for folder, names in _expected_folders(plan).items():
        path = root.joinpath(*folder)
        found = {p.name for p in path.iterdir()}
        if found != names:
            raise DatasetLayoutError(
                f'{path}: expected {len(names)} entries, found {len(found)} (missing {sorted(names - found)[:3]}, '
                f'unexpected {sorted(found - names)[:3]})')
    unreadable = [rel for rel in plan if not root.joinpath(*rel).is_file()]
    if unreadable:
        raise DatasetLayoutError(f'{root}: {len(unreadable)} files are not readable, e.g. {unreadable[:3]}')


_EXISTING_HINT = ('use an empty destination (or the complete output of an earlier run of the same command with the '
                  'same source and options)')


def _check_existing(plan: Plan, dst: Path, link: str) -> None:
    """Raise unless the existing ``dst`` holds exactly the plan (same files, same content), naming the first
    difference; nothing in ``dst`` is changed either way."""
    files = set(plan)
    folders = _expected_folders(plan)
    listed = {}
    for folder, names in folders.items():  # first anything foreign, the surest sign of a wrong destination
        path = dst.joinpath(*folder)
        if folder and (path.is_symlink() or not path.is_dir()):
            continue
        listed[folder] = found = {p.name for p in path.iterdir()}
        foreign = sorted(found - names)
        if foreign:
            raise DatasetLayoutError(
                f'{path} holds {len(found)} entries where this preparation makes {len(names)}, with some it would '
                f'not make, e.g. {foreign[:3]}; {_EXISTING_HINT}')
    for folder, names in folders.items():
        path = dst.joinpath(*folder)
        if folder not in listed:
            raise DatasetLayoutError(f'{path} is missing or not a folder: an incomplete output; {_EXISTING_HINT}')
        missing = sorted(names - listed[folder])
        if missing:
            raise DatasetLayoutError(
                f'{path} lacks {len(missing)} of the {len(names)} entries this preparation makes, e.g. '
                f'{missing[:3]}: an incomplete output; {_EXISTING_HINT}')
        for name in names:
            if folder + (name,) in files and not path.joinpath(name).is_file():
                raise DatasetLayoutError(f'{path / name} is not a readable file; {_EXISTING_HINT}')
    for rel, source in plan.items():
        target = dst.joinpath(*rel)
        if isinstance(source, bytes):
            same = not target.is_symlink() and target.stat().st_size == len(source) and target.read_bytes() == source
        else:
            same = os.path.samefile(source, target) or (
                link == 'copy' and not target.is_symlink() and _same_bytes(source, target))
        if not same:
            raise DatasetLayoutError(f'{target} differs from what this preparation makes; {_EXISTING_HINT}')


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def _staging_name_pattern(dst: Path) -> 're.Pattern[str]':
    return re.compile(r'\.' + re.escape(dst.name) + re.escape(_STAGING_SUFFIX) + r'-(\d+)-[0-9a-f]{8}')


def _remove_stale_staging(dst: Path) -> None:
    """Remove the staging folders beside ``dst`` that an earlier, killed run left: named and marked as ours, and
    made by a process that no longer runs (a live one may be a concurrent run)."""
    if not dst.parent.is_dir():
        return
    pattern = _staging_name_pattern(dst)
    for entry in dst.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir():
            continue
        marker = entry / _STAGING_MARKER
        if marker.is_symlink() or not marker.is_file() or process_alive(int(match.group(1))):
            continue
        shutil.rmtree(entry)  # does not follow links; removing a hard link leaves its source file intact


@contextlib.contextmanager
def _staging_folder(dst: Path) -> Iterator[Path]:
    """A new folder beside ``dst`` (same file system, so it can be renamed into place), removed again unless the
    body renamed it. Parent folders made for it are removed too if the body fails."""
    made_parents = []
    parent = dst.parent
    while not parent.exists():
        made_parents.append(parent)
        parent = parent.parent
    stage = dst.parent / f'.{dst.name}{_STAGING_SUFFIX}-{os.getpid()}-{secrets.token_hex(4)}'
    with interrupts_raise():
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            stage.mkdir()
            (stage / _STAGING_MARKER).write_text(f'{os.getpid()}\n')
            yield stage
        except BaseException:
            if stage.is_dir() and not stage.is_symlink():
                shutil.rmtree(stage, ignore_errors=True)
            for made in made_parents:  # deepest first
                try:
                    made.rmdir()
                except OSError:
                    break
            raise


class _Linker:
    """Places a source file (or writes bytes) at a new path of the staging folder, by the chosen link mode.

    ``auto`` hard-links (no extra space, survives the source being moved within its file system) and falls back
    to symlinks when the destination is on another file system or hard links are not permitted.
    """

    def __init__(self, mode: LinkMode) -> None:
        self.mode = 'hardlink' if mode == 'auto' else mode
        self.auto = mode == 'auto'
        self.created = 0
        self.used: set = set()
        self.notes: List[str] = []

    @property
    def used_mode(self) -> str:
        return '+'.join(sorted(self.used))

    def place(self, source: Union[Path, bytes], target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            with open(target, 'xb') as f:
                f.write(source)
            self.created += 1
            return
        try:
            self._place_new(source, target)
        except OSError as e:
            if not (self.auto and self.mode == 'hardlink' and e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK)):
                raise
            self.notes.append(f'hard links failed ({os.strerror(e.errno)}); used symlinks instead')
            self.mode = 'symlink'
            self._place_new(source, target)
        self.created += 1
        self.used.add(self.mode)

    def _place_new(self, source: Path, target: Path) -> None:
        if self.mode == 'hardlink':
            os.link(source, target)
        elif self.mode == 'symlink':
            os.symlink(source.resolve(), target)
        else:
            shutil.copy2(source, target)
