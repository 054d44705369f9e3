""" Reading a dataset's source folder without leaving it: every folder and file the preparations read is checked
to lie inside the source after links are resolved, text files are bounded in size and must be UTF-8, and only the
folders of the expected layout are listed (no recursive walk). """
import os
from pathlib import Path
from typing import List, Tuple

from .staging import DatasetLayoutError

__all__ = ['SourceTree', 'read_text_file', 'IMAGE_SUFFIXES']

IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.png')


def read_text_file(path: Path, max_bytes: int, expected: str) -> str:
    """The text of the regular file ``path``: at most ``max_bytes`` bytes of UTF-8, else an error saying what and
    that ``expected`` is what the file should hold."""
    if not path.is_file():  # also refuses FIFOs and devices, whose reading could block or never end
        what = 'is missing' if not os.path.lexists(path) else 'is not a regular file'
        raise DatasetLayoutError(f'{path} {what}; expected {expected}')
    size = path.stat().st_size
    if size > max_bytes:
        raise DatasetLayoutError(f'{path} is {size:,} bytes, more than the {max_bytes:,} expected of {expected}')
    data = path.read_bytes()[:max_bytes]
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise DatasetLayoutError(
            f'{path} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); expected {expected}') from None


class SourceTree:
    """A source folder whose links may point anywhere inside it, but nowhere outside it."""

    def __init__(self, root: Path, layout: str) -> None:
        self.root, self.layout = Path(root), layout
        if not self.root.is_dir():
            raise DatasetLayoutError(f'{self.root} is not a directory; {layout}')
        self.resolved = self.root.resolve()

    def inside(self, path: Path) -> Path:
        """``path`` with its links resolved; refuses a path whose links lead out of the source folder."""
        try:
            resolved = path.resolve()
        except (RuntimeError, OSError) as e:  # a link loop (RuntimeError up to Python 3.12, OSError after)
            raise DatasetLayoutError(f'{path} cannot be resolved ({e}); replace the link by the file') from None
        if resolved == self.resolved or self.resolved in resolved.parents:
            return resolved
        raise DatasetLayoutError(
            f'{self._outward_link(path)} is a symbolic link to {resolved}, outside the source folder {self.root}; '
            f'preparation reads only files inside the source: replace the link by the file it points to, or pass '
            f'the folder it points into as the source')

    def _outward_link(self, path: Path) -> Path:
        """The first link on the way from the root to ``path`` that leads out of the source folder."""
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            if current.is_symlink():
                target = current.resolve()
                if target != self.resolved and self.resolved not in target.parents:
                    return current
        return path

    def is_dir(self, path: Path) -> bool:
        """Whether ``path`` is a folder (refusing one that is a link out of the source)."""
        return path.is_dir() and self.inside(path).is_dir()

    def folder(self, path: Path, missing: str) -> Path:
        if not self.is_dir(path):
            raise DatasetLayoutError(f'{path} is missing{missing}; {self.layout}')
        return path

    def images(self, folder: Path) -> List[Tuple[Path, Path]]:
        """(path, resolved path) of the image files directly in ``folder``, sorted by name. A link to an image
        outside the source, or a link that leads nowhere, is an error rather than a silently missing image."""
        self.inside(folder)
        found = []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.is_symlink():
                resolved = self.inside(path)
                if not resolved.is_file():
                    raise DatasetLayoutError(
                        f'{path} is a symbolic link to {resolved}, which is not a file; replace it by the image '
                        f'or remove it')
                found.append((path, resolved))
            elif path.is_file():
                found.append((path, path.resolve()))
            elif not path.is_dir():  # a FIFO or device named like an image: reading it could block forever
                raise DatasetLayoutError(f'{path} is not a regular file; replace it by the image or remove it')
        return found

    def read_text(self, path: Path, max_bytes: int, expected: str) -> str:
        if os.path.lexists(path):
            self.inside(path)
        return read_text_file(path, max_bytes, expected)

    def read_bytes(self, path: Path, max_bytes: int, expected: str) -> bytes:
        if not path.is_file():
            raise DatasetLayoutError(f'{path} is missing or not a regular file; expected {expected}')
        self.inside(path)
        size = path.stat().st_size
        if size > max_bytes:
            raise DatasetLayoutError(f'{path} is {size:,} bytes, more than the {max_bytes:,} expected of {expected}')
        return path.read_bytes()[:max_bytes]
