""" ImageNet100: the classes of a class list (default: the CMC 100-class subset shipped as
``imagenet100_cmc.txt``) of an ImageNet-1k tree already sorted into class folders. """
from pathlib import Path
from typing import List

from .dataset_facts import (
    IMAGENET100_CLASS_LIST, IMAGENET100_NUM_CLASSES, IMAGENET_VAL_IMAGES_PER_CLASS, TRAIN_SPLIT, VAL_SPLIT, WNID)
from .source_tree import SourceTree, read_text_file
from .staging import DatasetLayoutError, LinkMode, PathLike, Plan, PrepareResult, write_tree

__all__ = ['prepare_imagenet100', 'read_class_list', 'IMAGENET_LAYOUT']

IMAGENET_LAYOUT = """expected ImageNet-1k in class folders:
  IMAGENET_ROOT/train/<wnid>/*.JPEG
  IMAGENET_ROOT/val/<wnid>/*.JPEG     (or validation/<wnid>/; the flat ILSVRC2012 val folder must first be
                                       sorted into class folders, e.g. with ImageNet's valprep.sh)"""

# A list of all 21k ImageNet classes is ~220 kB; the bound keeps a wrong file from being read whole.
_MAX_CLASS_LIST_BYTES = 1 << 20
_CLASS_LIST_EXPECTED = 'ImageNet class ids (wnids: n + 8 digits, e.g. n01440764), one per line'


def read_class_list(path: PathLike = IMAGENET100_CLASS_LIST) -> List[str]:
    """The wnids in a class list file (one per line, blank lines ignored); rejects duplicates and non-wnids."""
    path = Path(path)
    text = read_text_file(path, _MAX_CLASS_LIST_BYTES, f'a class list: {_CLASS_LIST_EXPECTED}')
    wnids = [line.strip() for line in text.splitlines() if line.strip()]
    if not wnids:
        raise DatasetLayoutError(f'class list {path} is empty; expected {_CLASS_LIST_EXPECTED}')
    bad = [w for w in wnids if not WNID.fullmatch(w)]
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
    tree = SourceTree(root, IMAGENET_LAYOUT)
    wnids = read_class_list(class_list)
    if Path(class_list) == IMAGENET100_CLASS_LIST and len(wnids) != IMAGENET100_NUM_CLASSES:
        raise DatasetLayoutError(f'{class_list} has {len(wnids)} classes, ImageNet100 has {IMAGENET100_NUM_CLASSES}')
    plan: Plan = {}
    val_counts = {}
    for split, names in ((TRAIN_SPLIT, ('train',)), (VAL_SPLIT, ('val', 'validation'))):
        split_dir = next((root / n for n in names if tree.is_dir(root / n)), None)
        if split_dir is None:
            raise DatasetLayoutError(f'{root} has no {" or ".join(n + "/" for n in names)} folder; {IMAGENET_LAYOUT}')
        loose = tree.images(split_dir)
        if loose:
            raise DatasetLayoutError(
                f'{split_dir} holds {len(loose):,} images directly instead of in <wnid>/ class folders; '
                f'{IMAGENET_LAYOUT}')
        missing = [w for w in wnids if not tree.is_dir(split_dir / w)]
        if missing:
            raise DatasetLayoutError(
                f'{split_dir} lacks {len(missing)} of the {len(wnids)} classes, e.g. {missing[:3]}; {IMAGENET_LAYOUT}')
        for wnid in wnids:
            images = tree.images(split_dir / wnid)
            if not images:
                raise DatasetLayoutError(f'{split_dir / wnid} holds no images')
            plan.update({(split, wnid, p.name): resolved for p, resolved in images})
            if split == VAL_SPLIT:
                val_counts[wnid] = len(images)
    written = write_tree(plan, dst, [root], link)
    num_images = {split: sum(rel[0] == split for rel in plan) for split in (TRAIN_SPLIT, VAL_SPLIT)}
    result = PrepareResult(dst, {TRAIN_SPLIT: len(wnids), VAL_SPLIT: len(wnids)}, num_images, written.created,
                           written.link_mode, written.notes)
    off = [w for w, n in val_counts.items() if n != IMAGENET_VAL_IMAGES_PER_CLASS]
    if off:
        result.notes.append(
            f'{len(off)} classes do not have ImageNet\'s {IMAGENET_VAL_IMAGES_PER_CLASS} validation images, '
            f'e.g. {off[:3]}')
    return result
