""" Tiny-ImageNet: the release keeps training images in ``train/<wnid>/images/`` (timm would label them all
``images``) and validation images in one flat ``val/images/`` folder labelled by ``val/val_annotations.txt``. """
from pathlib import Path
from typing import Dict, List

from .dataset_facts import TINY_IMAGENET_NUM_CLASSES, TINY_IMAGENET_OFFICIAL_COUNTS, TRAIN_SPLIT, VAL_SPLIT
from .staging import (
    DatasetLayoutError, LinkMode, PathLike, Plan, PrepareResult, check_source_dir, list_images, materialize)

__all__ = ['prepare_tiny_imagenet', 'TINY_IMAGENET_LAYOUT']

TINY_IMAGENET_LAYOUT = """expected the extracted tiny-imagenet-200 folder:
  SRC/wnids.txt                       200 class ids (wnids), one per line
  SRC/train/<wnid>/images/*.JPEG      training images of each class
  SRC/val/images/*.JPEG               validation images
  SRC/val/val_annotations.txt         '<file>\\t<wnid>\\t<box>' per validation image"""


def prepare_tiny_imagenet(src: PathLike, dst: PathLike, link: LinkMode = 'auto') -> PrepareResult:
    """Lay out the Tiny-ImageNet release ``src`` as ``dst/{train,val}/<wnid>/*.JPEG``.

    Training images move up out of ``train/<wnid>/images/``; validation images are sorted into class folders by
    ``val/val_annotations.txt``. Every image of the source appears exactly once in the output.
    """
    src, dst = Path(src), Path(dst)
    check_source_dir(src, TINY_IMAGENET_LAYOUT)
    wnids = _read_wnids_file(src / 'wnids.txt')
    wnid_set = set(wnids)

    train_root = src / 'train'
    if not train_root.is_dir():
        raise DatasetLayoutError(f'{train_root} is missing; {TINY_IMAGENET_LAYOUT}')
    stray = sorted(p.name for p in train_root.iterdir() if p.is_dir() and p.name not in wnid_set)
    if stray:
        raise DatasetLayoutError(f'{train_root} has class folders not in wnids.txt: {stray[:5]}')
    plan: Plan = {TRAIN_SPLIT: {}, VAL_SPLIT: {}}
    for wnid in wnids:
        image_dir = train_root / wnid / 'images'
        if not image_dir.is_dir():
            raise DatasetLayoutError(f'{image_dir} is missing (class {wnid} of wnids.txt); {TINY_IMAGENET_LAYOUT}')
        images = list_images(image_dir)
        if not images:
            raise DatasetLayoutError(f'{image_dir} holds no .JPEG images')
        plan[TRAIN_SPLIT][wnid] = [(p, p.name) for p in images]

    val_images_dir, annotations = src / 'val' / 'images', src / 'val' / 'val_annotations.txt'
    for required in (val_images_dir, annotations):
        if not required.exists():
            raise DatasetLayoutError(f'{required} is missing; {TINY_IMAGENET_LAYOUT}')
    val_images = {p.name: p for p in list_images(val_images_dir)}
    labels = _read_val_annotations(annotations, wnid_set)
    unlabelled = sorted(set(val_images) - set(labels))
    if unlabelled:
        raise DatasetLayoutError(
            f'{len(unlabelled)} images in {val_images_dir} have no line in {annotations}, e.g. {unlabelled[:3]}')
    missing = sorted(set(labels) - set(val_images))
    if missing:
        raise DatasetLayoutError(
            f'{annotations} names {len(missing)} images that are not in {val_images_dir}, e.g. {missing[:3]}')
    for name in sorted(labels):
        plan[VAL_SPLIT].setdefault(labels[name], []).append((val_images[name], name))
    empty_val = [w for w in wnids if w not in plan[VAL_SPLIT]]
    if empty_val:
        raise DatasetLayoutError(f'{annotations} has no validation image for classes {empty_val[:5]}')

    result = materialize(plan, dst, src, link)
    for split, official in TINY_IMAGENET_OFFICIAL_COUNTS.items():
        if result.num_images[split] != official:
            result.notes.append(
                f'{split} has {result.num_images[split]:,} images; the official release has {official:,}')
    return result


def _read_wnids_file(path: Path) -> List[str]:
    if not path.is_file():
        raise DatasetLayoutError(f'{path} is missing; {TINY_IMAGENET_LAYOUT}')
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise DatasetLayoutError(f'{path} lists a class more than once')
    if len(wnids) != TINY_IMAGENET_NUM_CLASSES:
        raise DatasetLayoutError(
            f'{path} lists {len(wnids)} classes; Tiny-ImageNet has {TINY_IMAGENET_NUM_CLASSES}')
    return wnids


def _read_val_annotations(path: Path, wnids: set) -> Dict[str, str]:
    labels: Dict[str, str] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split('\t') if '\t' in line else line.split()
        if len(fields) < 2:
            raise DatasetLayoutError(f'{path}:{line_no}: expected "<file>\\t<wnid>\\t...", got {line!r}')
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in wnids:
            raise DatasetLayoutError(f'{path}:{line_no}: class {wnid!r} of {name} is not in wnids.txt')
        if name in labels:
            raise DatasetLayoutError(f'{path}:{line_no}: {name} is annotated twice')
        labels[name] = wnid
    if not labels:
        raise DatasetLayoutError(f'{path} has no annotations')
    return labels
