""" Writing a prepared dataset: the plan of files each preparation makes, placing them (links or copies), and
checking that the destination holds exactly the plan. Shared by every dataset of ``timm_posembed.data``. """
import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Tuple, Union

__all__ = ['DatasetLayoutError', 'PrepareResult', 'LinkMode', 'LINK_MODES', 'PathLike', 'Plan']

PathLike = Union[str, Path]
LinkMode = Literal['auto', 'hardlink', 'symlink', 'copy']
LINK_MODES: Tuple[str, ...] = ('auto', 'hardlink', 'symlink', 'copy')

# A plan maps split -> class -> [(source file, destination file name)].
Plan = Dict[str, Dict[str, List[Tuple[Path, str]]]]


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


def check_source_dir(src: Path, layout: str) -> None:
    if not src.is_dir():
        raise DatasetLayoutError(f'{src} is not a directory; {layout}')


_IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.png')


def list_images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def materialize(plan: Plan, dst: Path, src: Path, link: LinkMode) -> PrepareResult:
    """Place every planned file under ``dst/<split>/<class>/``, then verify the tree holds exactly the plan."""
    if link not in LINK_MODES:
        raise ValueError(f'link must be one of {LINK_MODES}, got {link!r}')
    src_resolved, dst_resolved = src.resolve(), dst.resolve()
    if dst_resolved == src_resolved or src_resolved in dst_resolved.parents:
        raise DatasetLayoutError(f'destination {dst} must be outside the source {src}')
    linker = _Linker(link)
    for split, classes in plan.items():
        _refuse_foreign_entries(dst / split, {c: {n for _, n in files} for c, files in classes.items()})
        for cls, files in classes.items():
            for source, name in files:
                linker.place(source, dst / split / cls / name)
    num_images, num_classes = {}, {}
    for split, classes in plan.items():
        num_images[split], num_classes[split] = verify_split(
            dst / split, {c: {n for _, n in files} for c, files in classes.items()})
    notes = list(linker.notes)
    return PrepareResult(dst, num_classes, num_images, linker.created, linker.used_mode, notes)


def _refuse_foreign_entries(split_dir: Path, expected: Dict[str, set]) -> None:
    if not split_dir.is_dir():
        return
    for entry in split_dir.iterdir():
        if entry.name not in expected or not entry.is_dir():
            raise DatasetLayoutError(
                f'{split_dir} already holds {entry.name!r}, which this preparation would not make; '
                f'use an empty destination (or the output of an earlier run of the same command)')
        foreign = sorted(p.name for p in entry.iterdir() if p.name not in expected[entry.name])
        if foreign:
            raise DatasetLayoutError(
                f'{entry} already holds files this preparation would not make, e.g. {foreign[:3]}; '
                f'use an empty destination (or the output of an earlier run of the same command)')


def verify_split(split_dir: Path, expected: Dict[str, set]) -> Tuple[int, int]:
    """(images, classes) in ``split_dir`` after checking it holds exactly the ``expected`` files, all readable."""
    found = {p.name for p in split_dir.iterdir()} if split_dir.is_dir() else set()
    if found != set(expected):
        raise DatasetLayoutError(
            f'{split_dir}: expected {len(expected)} class folders, found {len(found)} '
            f'(missing {sorted(set(expected) - found)[:3]}, unexpected {sorted(found - set(expected))[:3]})')
    total = 0
    for cls, names in expected.items():
        on_disk = {p.name for p in (split_dir / cls).iterdir() if p.is_file()}  # is_file follows links: no dangling
        if on_disk != names:
            raise DatasetLayoutError(
                f'{split_dir / cls}: expected {len(names)} images, found {len(on_disk)} readable files')
        total += len(names)
    return total, len(expected)


class _Linker:
    """Places a source file at a destination path by the chosen link mode; a no-op when it is already there.

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

    def place(self, source: Path, target: Path) -> None:
        if os.path.lexists(target):
            if target.exists() and os.path.samefile(source, target):
                return
            if self.mode == 'copy' and target.is_file() and _same_bytes(source, target):
                return
            raise DatasetLayoutError(
                f'{target} already exists and is not {source}; use an empty destination '
                f'(or the output of an earlier run of the same command with the same source)')
        target.parent.mkdir(parents=True, exist_ok=True)
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


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def write_if_absent(target: Path, data: bytes) -> int:
    """Write ``data`` to ``target`` (1) unless it already holds exactly that (0); refuse to overwrite anything else."""
    if target.exists():
        if target.read_bytes() == data:
            return 0
        raise DatasetLayoutError(
            f'{target} already exists with other content; use an empty destination '
            f'(or the output of an earlier run of the same command)')
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return 1
