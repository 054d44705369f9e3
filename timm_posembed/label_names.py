""" The class names of a published classifier, in classifier order: from a file the user gives, or from what the
train.py run recorded (its ``--class-map`` file, or the class folders of an image-folder dataset). """
import json
import pickle
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple, Union

from .checkpoints import PublishError

__all__ = ['resolve_label_names']


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
        if not path.is_file():
            raise PublishError(f'--label-names {path}: no such file; expected one class name per line or a JSON list')
        text = path.read_text(encoding='utf-8')
        if path.suffix == '.json':
            try:
                names = json.loads(text)
            except json.JSONDecodeError as e:
                raise PublishError(f'--label-names {path}: not valid JSON ({e}); expected a list of names') from e
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise PublishError(f'--label-names {path}: expected a JSON list of class names')
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
        if len(names) != num_classes:
            raise PublishError(f'--label-names {path} has {len(names)} names but the model has {num_classes} classes')
        return names, f'--label-names {path}'

    args = train_args or {}
    data_dir = args.get('data_dir') or args.get('data')
    class_map = args.get('class_map')
    if class_map:
        from timm.data.readers.class_map import load_class_map
        try:
            mapping = load_class_map(class_map, root=data_dir or '')
        except (OSError, ValueError, AssertionError, pickle.UnpicklingError):
            return None, f'the train.py class map {class_map} is not readable here'
        names = [n for n, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
        if len(names) == num_classes and sorted(mapping.values()) == list(range(num_classes)):
            return [str(n) for n in names], f'class map {class_map}'
        return None, f'the class map {class_map} does not cover the {num_classes} classes'
    if data_dir and (args.get('dataset') or '').lower() in ('', 'folder', 'imagefolder', 'image_folder'):
        split = args.get('train_split') or 'train'
        root = Path(data_dir) / split
        root = root if root.is_dir() else Path(data_dir)
        if not root.is_dir():
            return None, f'the training folder {root} is not on this machine'
        from timm.data.readers.reader_image_folder import find_images_and_targets
        _, class_to_idx = find_images_and_targets(str(root))
        if len(class_to_idx) != num_classes:
            return None, f'{root} has {len(class_to_idx)} class folders, the model {num_classes} classes'
        return [n for n, _ in sorted(class_to_idx.items(), key=lambda kv: kv[1])], f'class folders of {root}'
    return None, 'not recorded (pass --label-names FILE)'
