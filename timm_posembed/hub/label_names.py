""" The class names of a published classifier, in classifier order: from a file the user gives, or from what the
train.py run recorded (its ``--class-map`` file, or the class folders of an image-folder dataset).

The recorded paths come from the checkpoint, so they are untrusted: only the expected layout is looked at
(``DATA_DIR/<train split>/<class>/`` or ``DATA_DIR/<class>/``, one level, never recursing), with a bound on the
entries read, and a class folder that is a link leading outside the training folder is not followed.
"""
import json
import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple, Union

from timm.data import get_img_extensions
from timm.utils import natural_key

from .checkpoints import PublishError

__all__ = ['resolve_label_names']

# Bounds on what is read: a class list or class map is text of at most a few MB (ImageNet-21k's ~22k names are
# ~0.3 MB); a training folder has one entry per class (ImageNet-21k: ~22k); a class folder's first image is found
# among its first entries (a folder whose first 1000 entries hold no image is not a class folder of images).
_MAX_NAMES_FILE_BYTES = 16 * 2 ** 20
_MAX_CLASS_FOLDERS = 100_000
_MAX_ENTRIES_TO_FIRST_IMAGE = 1000


def _read_names_file(path: Path, what: str) -> str:
    if not path.is_file():
        problem = 'not a regular file' if path.exists() else 'no such file'
        raise PublishError(f'{what} {path}: {problem}; expected one class name per line or a JSON list')
    size = path.stat().st_size
    if size > _MAX_NAMES_FILE_BYTES:
        raise PublishError(f'{what} {path} is {size} bytes; a list of class names is at most '
                           f'{_MAX_NAMES_FILE_BYTES} bytes (one name per line, or a JSON list)')
    try:
        return path.read_text(encoding='utf-8')
    except UnicodeDecodeError as e:
        raise PublishError(f'{what} {path} is not UTF-8 text ({e.reason} at byte {e.start}); expected one class '
                           f'name per line, or a JSON list, in UTF-8') from e


def _repeats_note(names: List[str], path: Path) -> str:
    """'' when every name is distinct; a note naming the repeated ones (ImageNet-1k's list has two: crane and
    maillot); a ``PublishError`` when all of several names are the same, which is no list of classes."""
    counts = Counter(names)
    if len(names) > 1 and len(counts) == 1:
        raise PublishError(f'--label-names {path}: all {len(names)} names are {names[0]!r}; expected the class '
                           f'names in classifier order, one per class')
    repeated = [f'{n!r} x{c}' for n, c in counts.most_common() if c > 1]
    if not repeated:
        return ''
    return (f' (note: {len(repeated)} names repeat: {", ".join(repeated[:3])}{", ..." if len(repeated) > 3 else ""}; '
            f'the model card and id2label show them as given)')


def _has_image(folder: str, extensions) -> bool:
    with os.scandir(folder) as entries:
        for n, entry in enumerate(entries):
            if n >= _MAX_ENTRIES_TO_FIRST_IMAGE:
                return False
            if os.path.splitext(entry.name)[1].lower() in extensions:
                return True
    return False


def _leads_inside(link: Path, real_root: Path) -> bool:
    try:
        return real_root in link.resolve(strict=True).parents
    except (OSError, RuntimeError):  # dangling, or a loop
        return False


def _class_folders(root: Path, num_classes: int) -> Tuple[Optional[List[str]], str]:
    """The class names of an image-folder dataset at ``root`` (its sub-folders holding images, in timm's natural
    sort order), looking one level down only."""
    real_root = root.resolve()
    extensions = set(get_img_extensions(as_set=True))
    names: List[str] = []
    outside: List[str] = []
    with os.scandir(root) as entries:
        for n, entry in enumerate(entries):
            if n >= _MAX_CLASS_FOLDERS:
                return None, f'{root} has more than {_MAX_CLASS_FOLDERS} entries; not a folder of class folders'
            if not entry.is_dir():
                continue
            if entry.is_symlink() and not _leads_inside(Path(entry.path), real_root):
                outside.append(entry.name)
                continue
            if _has_image(entry.path, extensions):
                names.append(entry.name)
    if outside:
        return None, (f'{root} has class folders that are links leading out of it or back up ('
                      f'{", ".join(sorted(outside)[:3])}); not followed')
    if len(names) != num_classes:
        return None, f'{root} has {len(names)} class folders, the model {num_classes} classes'
    return sorted(names, key=natural_key), f'class folders of {root}'


def _from_class_map(class_map: str, data_dir: str, num_classes: int) -> Tuple[Optional[List[str]], str]:
    from timm.data.readers.class_map import load_class_map  # reads .pkl maps with a globals-free unpickler
    path = Path(class_map)
    path = path if path.is_file() or not data_dir else Path(data_dir) / path
    if not path.is_file() or path.suffix not in ('.txt', '.pkl'):
        return None, f'the train.py class map {class_map} is not a .txt / .pkl file on this machine'
    if path.stat().st_size > _MAX_NAMES_FILE_BYTES:
        return None, f'the train.py class map {path} is larger than {_MAX_NAMES_FILE_BYTES} bytes; not a class map'
    try:
        mapping = load_class_map(str(path))
    except (OSError, ValueError, AssertionError, pickle.UnpicklingError, UnicodeDecodeError, EOFError):
        return None, f'the train.py class map {class_map} is not readable here'
    names = [n for n, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    if len(names) == num_classes and sorted(mapping.values()) == list(range(num_classes)):
        return [str(n) for n in names], f'class map {class_map}'
    return None, f'the class map {class_map} does not cover the {num_classes} classes'


def resolve_label_names(
        num_classes: int,
        label_file: Optional[Union[str, Path]] = None,
        train_args: Optional[Mapping[str, Any]] = None,
) -> Tuple[Optional[List[str]], str]:
    """Class names in classifier order and where they came from.

    ``label_file`` (one name per line, or a JSON list) is used when given and must have ``num_classes`` names.
    Otherwise, when the train.py run recorded them and they are on this machine, the names come the way timm's
    dataset found them: the ``--class-map`` file, or the class folders of an image-folder dataset (in timm's order).
    Returns ``(None, reason)`` when they are not known."""
    if label_file:
        path = Path(label_file)
        text = _read_names_file(path, '--label-names')
        if path.suffix == '.json':
            try:
                names = json.loads(text)
            except json.JSONDecodeError as e:
                raise PublishError(f'--label-names {path}: not valid JSON ({e}); expected a list of names') from e
            except RecursionError:  # '[[[[...' nested deeper than the parser's stack
                raise PublishError(f'--label-names {path}: JSON nested too deep; expected a flat list of names'
                                   ) from None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise PublishError(f'--label-names {path}: expected a JSON list of class names')
        else:
            # '\n' only: str.splitlines also splits at U+2028, \x0c, \x1c, ... which may sit inside a name
            names = [line.strip() for line in text.split('\n') if line.strip()]
        if len(names) != num_classes:
            raise PublishError(f'--label-names {path} has {len(names)} names but the model has {num_classes} classes')
        return names, f'--label-names {path}{_repeats_note(names, path)}'

    # recorded values of other types (a hand-made or hostile checkpoint) count as not recorded
    args = {k: v for k, v in (train_args or {}).items() if isinstance(v, str)}
    data_dir = args.get('data_dir') or args.get('data')
    class_map = args.get('class_map')
    if class_map and isinstance(class_map, str):
        return _from_class_map(class_map, str(data_dir or ''), num_classes)
    if data_dir and (args.get('dataset') or '').lower() in ('', 'folder', 'imagefolder', 'image_folder'):
        split = str(args.get('train_split') or 'train')
        if Path(split).name != split or split in ('.', '..'):
            return None, f'the recorded train split {split!r} is not a folder name'
        root = Path(data_dir) / split
        root = root if root.is_dir() else Path(data_dir)
        if not root.is_dir():
            return None, f'the training folder {root} is not on this machine'
        try:
            return _class_folders(root, num_classes)
        except OSError as e:
            return None, f'the training folder {root} is not readable here ({e.strerror})'
    return None, 'not recorded (pass --label-names FILE)'
