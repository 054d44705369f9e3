""" Tiny-ImageNet: the release keeps training images in ``train/<wnid>/images/`` (timm would label them all
``images``) and validation images in one flat ``val/images/`` folder labelled by ``val/val_annotations.txt``. """
from pathlib import Path
from typing import Dict, List

from .dataset_facts import TINY_IMAGENET_NUM_CLASSES, TINY_IMAGENET_OFFICIAL_COUNTS, TRAIN_SPLIT, VAL_SPLIT, WNID
from .source_tree import SourceTree
from .staging import DatasetLayoutError, LinkMode, PathLike, Plan, PrepareResult, check_name, write_tree

__all__ = ['prepare_tiny_imagenet', 'TINY_IMAGENET_LAYOUT']

TINY_IMAGENET_LAYOUT = """expected the extracted tiny-imagenet-200 folder:
  SRC/wnids.txt                       200 class ids (wnids), one per line
  SRC/train/<wnid>/images/*.JPEG      training images of each class
  SRC/val/images/*.JPEG               validation images
  SRC/val/val_annotations.txt         '<file>\\t<wnid>\\t<box>' per validation image"""

# The release's files are ~2 kB (wnids.txt) and ~400 kB (val_annotations.txt); the bounds keep a wrong file
# (a disk image, a video) from being read into memory whole.
_MAX_WNIDS_BYTES = 1 << 20
_MAX_ANNOTATIONS_BYTES = 64 << 20


def prepare_tiny_imagenet(src: PathLike, dst: PathLike, link: LinkMode = 'auto') -> PrepareResult:
    """Lay out the Tiny-ImageNet release ``src`` as ``dst/{train,val}/<wnid>/*.JPEG``.

    Training images move up out of ``train/<wnid>/images/``; validation images are sorted into class folders by
    ``val/val_annotations.txt``. Every image of the source appears exactly once in the output.
    """
    src, dst = Path(src), Path(dst)
    tree = SourceTree(src, TINY_IMAGENET_LAYOUT)
    wnids = _read_wnids_file(tree, src / 'wnids.txt')
    wnid_set = set(wnids)

    train_root = tree.folder(src / 'train', '')
    stray = sorted(p.name for p in train_root.iterdir() if p.is_dir() and p.name not in wnid_set)
    if stray:
        raise DatasetLayoutError(f'{train_root} has class folders not in wnids.txt: {stray[:5]}')
    plan: Plan = {}
    for wnid in wnids:
        image_dir = tree.folder(train_root / wnid / 'images', f' (class {wnid} of wnids.txt)')
        images = tree.images(image_dir)
        if not images:
            raise DatasetLayoutError(f'{image_dir} holds no .JPEG images')
        plan.update({(TRAIN_SPLIT, wnid, p.name): resolved for p, resolved in images})

    val_images_dir = tree.folder(src / 'val' / 'images', '')
    annotations = src / 'val' / 'val_annotations.txt'
    val_images = {p.name: resolved for p, resolved in tree.images(val_images_dir)}
    labels = _read_val_annotations(tree, annotations, wnid_set)
    unlabelled = sorted(set(val_images) - set(labels))
    if unlabelled:
        raise DatasetLayoutError(
            f'{len(unlabelled)} images in {val_images_dir} have no line in {annotations}, e.g. {unlabelled[:3]}')
    missing = sorted(set(labels) - set(val_images))
    if missing:
        raise DatasetLayoutError(
            f'{annotations} names {len(missing)} images that are not in {val_images_dir}, e.g. {missing[:3]}')
    empty_val = sorted(wnid_set - set(labels.values()))
    if empty_val:
        raise DatasetLayoutError(f'{annotations} has no validation image for classes {empty_val[:5]}')
    plan.update({(VAL_SPLIT, labels[name], name): val_images[name] for name in sorted(labels)})

    written = write_tree(plan, dst, [src], link)
    num_images = {split: sum(rel[0] == split for rel in plan) for split in (TRAIN_SPLIT, VAL_SPLIT)}
    result = PrepareResult(dst, {TRAIN_SPLIT: len(wnids), VAL_SPLIT: len(wnids)}, num_images, written.created,
                           written.link_mode, written.notes)
    for split, official in TINY_IMAGENET_OFFICIAL_COUNTS.items():
        if result.num_images[split] != official:
            result.notes.append(
                f'{split} has {result.num_images[split]:,} images; the official release has {official:,}')
    return result


def _read_wnids_file(tree: SourceTree, path: Path) -> List[str]:
    expected = f'the {TINY_IMAGENET_NUM_CLASSES} class ids (wnids: n + 8 digits) of Tiny-ImageNet, one per line'
    text = tree.read_text(path, _MAX_WNIDS_BYTES, f'{expected}; {TINY_IMAGENET_LAYOUT}')
    wnids = [line.strip() for line in text.splitlines() if line.strip()]
    bad = [w for w in wnids if not WNID.fullmatch(w)]
    if bad:
        raise DatasetLayoutError(f'{path}: {bad[:3]} are not wnids; expected {expected}')
    if len(set(wnids)) != len(wnids):
        raise DatasetLayoutError(f'{path} lists a class more than once')
    if len(wnids) != TINY_IMAGENET_NUM_CLASSES:
        raise DatasetLayoutError(
            f'{path} lists {len(wnids)} classes; Tiny-ImageNet has {TINY_IMAGENET_NUM_CLASSES}')
    return wnids


def _read_val_annotations(tree: SourceTree, path: Path, wnids: set) -> Dict[str, str]:
    text = tree.read_text(path, _MAX_ANNOTATIONS_BYTES, f'one line per validation image; {TINY_IMAGENET_LAYOUT}')
    labels: Dict[str, str] = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split('\t') if '\t' in line else line.split()
        if len(fields) < 2:
            raise DatasetLayoutError(f'{path}:{line_no}: expected "<file>\\t<wnid>\\t...", got {line!r}')
        name, wnid = fields[0].strip(), fields[1].strip()
        check_name(name, 'image file name', f'{path}:{line_no}')
        if wnid not in wnids:
            raise DatasetLayoutError(f'{path}:{line_no}: class {wnid!r} of {name} is not in wnids.txt')
        if name in labels:
            raise DatasetLayoutError(f'{path}:{line_no}: {name} is annotated twice')
        labels[name] = wnid
    if not labels:
        raise DatasetLayoutError(f'{path} has no annotations')
    return labels
