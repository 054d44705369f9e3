""" ImageNet100: the classes of a class list (default: the CMC 100-class subset shipped as
``imagenet100_cmc.txt``) of an ImageNet-1k tree already sorted into class folders. """
import re
from pathlib import Path
from typing import List

from .dataset_facts import (
    IMAGENET100_CLASS_LIST, IMAGENET100_NUM_CLASSES, IMAGENET_VAL_IMAGES_PER_CLASS, TRAIN_SPLIT, VAL_SPLIT)
from .staging import (
    DatasetLayoutError, LinkMode, PathLike, Plan, PrepareResult, check_source_dir, list_images, materialize)

__all__ = ['prepare_imagenet100', 'read_class_list', 'IMAGENET_LAYOUT']

IMAGENET_LAYOUT = """expected ImageNet-1k in class folders:
  IMAGENET_ROOT/train/<wnid>/*.JPEG
  IMAGENET_ROOT/val/<wnid>/*.JPEG     (or validation/<wnid>/; the flat ILSVRC2012 val folder must first be
                                       sorted into class folders, e.g. with ImageNet's valprep.sh)"""

_WNID = re.compile(r'^n\d{8}$')


def read_class_list(path: PathLike = IMAGENET100_CLASS_LIST) -> List[str]:
    """The wnids in a class list file (one per line, blank lines ignored); rejects duplicates and non-wnids."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f'class list {path} does not exist')
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [w for w in wnids if not _WNID.match(w)]
    if bad:
        raise DatasetLayoutError(f'class list {path}: {bad[:3]} are not ImageNet wnids (n + 8 digits, one per line)')
    dupes = sorted({w for w in wnids if wnids.count(w) > 1})
    if dupes:
        raise DatasetLayoutError(f'class list {path} repeats {dupes[:3]}')
    return wnids


def prepare_imagenet100(
        imagenet_root: PathLike,
        dst: PathLike,
        class_list: PathLike = IMAGENET100_CLASS_LIST,
        link: LinkMode = 'auto',
) -> PrepareResult:
    """Lay out the classes of ``class_list`` (default: the CMC ImageNet100 list) of an ImageNet-1k folder tree."""
    root, dst = Path(imagenet_root), Path(dst)
    check_source_dir(root, IMAGENET_LAYOUT)
    wnids = read_class_list(class_list)
    if Path(class_list) == IMAGENET100_CLASS_LIST and len(wnids) != IMAGENET100_NUM_CLASSES:
        raise DatasetLayoutError(f'{class_list} has {len(wnids)} classes, ImageNet100 has {IMAGENET100_NUM_CLASSES}')
    plan: Plan = {}
    for split, names in ((TRAIN_SPLIT, ('train',)), (VAL_SPLIT, ('val', 'validation'))):
        split_dir = next((root / n for n in names if (root / n).is_dir()), None)
        if split_dir is None:
            raise DatasetLayoutError(f'{root} has no {" or ".join(n + "/" for n in names)} folder; {IMAGENET_LAYOUT}')
        loose = list_images(split_dir)
        if loose:
            raise DatasetLayoutError(
                f'{split_dir} holds {len(loose):,} images directly instead of in <wnid>/ class folders; '
                f'{IMAGENET_LAYOUT}')
        missing = [w for w in wnids if not (split_dir / w).is_dir()]
        if missing:
            raise DatasetLayoutError(
                f'{split_dir} lacks {len(missing)} of the {len(wnids)} classes, e.g. {missing[:3]}; {IMAGENET_LAYOUT}')
        plan[split] = {}
        for wnid in wnids:
            images = list_images(split_dir / wnid)
            if not images:
                raise DatasetLayoutError(f'{split_dir / wnid} holds no images')
            plan[split][wnid] = [(p, p.name) for p in images]
    result = materialize(plan, dst, root, link)
    off = [w for w, files in plan[VAL_SPLIT].items() if len(files) != IMAGENET_VAL_IMAGES_PER_CLASS]
    if off:
        result.notes.append(
            f'{len(off)} classes do not have ImageNet\'s {IMAGENET_VAL_IMAGES_PER_CLASS} validation images, '
            f'e.g. {off[:3]}')
    return result
