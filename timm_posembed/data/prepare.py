""" Dataset preparation for the benchmarks: source trees -> the ``DST/{train,val}/<class>/<image>`` folders timm's
``ImageFolder`` (``train.py --data-dir DST``) reads.

 * Tiny-ImageNet: the release keeps training images in ``train/<wnid>/images/`` (timm would label them all
   ``images``) and validation images in one flat ``val/images/`` folder labelled by ``val/val_annotations.txt``.
 * ImageNet100: the CMC 100-class subset of ImageNet-1k (class list shipped as ``imagenet100_cmc.txt``).
 * Fashion-MNIST: the idx files Debian's ``dataset-fashion-mnist`` installs, decoded to PNGs (or laid out for
   ``train.py --dataset torch/fashion_mnist``).

Images are linked, not copied, where they already exist as files. Every preparation is idempotent (a re-run
over its own output changes nothing), refuses a destination holding files it did not make, and verifies the
class and image counts of what it wrote against the source.
"""
import errno
import gzip
import io
import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

__all__ = [
    'DatasetLayoutError', 'PrepareResult', 'LinkMode', 'IMAGENET100_CLASS_LIST', 'DEBIAN_FASHION_MNIST_DIR',
    'FASHION_MNIST_CLASSES', 'DATASET_NUM_CLASSES', 'prepare_tiny_imagenet', 'prepare_imagenet100',
    'prepare_fashion_mnist', 'read_class_list',
]

PathLike = Union[str, Path]
LinkMode = Literal['auto', 'hardlink', 'symlink', 'copy']
LINK_MODES: Tuple[str, ...] = ('auto', 'hardlink', 'symlink', 'copy')

# Output split folder names; timm's train.py finds 'val' for its default --val-split 'validation'.
TRAIN_SPLIT, VAL_SPLIT = 'train', 'val'

TINY_IMAGENET_NUM_CLASSES = 200
TINY_IMAGENET_OFFICIAL_COUNTS = {TRAIN_SPLIT: 100_000, VAL_SPLIT: 10_000}
TINY_IMAGENET_LAYOUT = """expected the extracted tiny-imagenet-200 folder:
  SRC/wnids.txt                       200 class ids (wnids), one per line
  SRC/train/<wnid>/images/*.JPEG      training images of each class
  SRC/val/images/*.JPEG               validation images
  SRC/val/val_annotations.txt         '<file>\\t<wnid>\\t<box>' per validation image"""

IMAGENET100_CLASS_LIST = Path(__file__).with_name('imagenet100_cmc.txt')
IMAGENET100_NUM_CLASSES = 100
IMAGENET_VAL_IMAGES_PER_CLASS = 50
IMAGENET_LAYOUT = """expected ImageNet-1k in class folders:
  IMAGENET_ROOT/train/<wnid>/*.JPEG
  IMAGENET_ROOT/val/<wnid>/*.JPEG     (or validation/<wnid>/; the flat ILSVRC2012 val folder must first be
                                       sorted into class folders, e.g. with ImageNet's valprep.sh)"""

# Where `dpkg -L dataset-fashion-mnist` puts the idx files.
DEBIAN_FASHION_MNIST_DIR = Path('/usr/share/datasets/fashion-mnist')
FASHION_MNIST_IDX_FILES = {
    TRAIN_SPLIT: ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    VAL_SPLIT: ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
# Label order of the dataset; folder names carry the index so ImageFolder's sorted order keeps the labels.
FASHION_MNIST_CLASSES = (
    't-shirt_top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle_boot')
FASHION_MNIST_LAYOUTS = ('imagefolder', 'torchvision')

# Classes of each benchmark dataset, by the name the CLI, the paper tables and the recipes use.
DATASET_NUM_CLASSES = {
    'tiny-imagenet': TINY_IMAGENET_NUM_CLASSES,
    'imagenet100': IMAGENET100_NUM_CLASSES,
    'fashion-mnist': len(FASHION_MNIST_CLASSES),
}
# torchvision.datasets.FashionMNIST(root) reads the uncompressed idx files from root/FashionMNIST/raw/.
TORCHVISION_FASHION_MNIST_RAW = Path('FashionMNIST') / 'raw'

_IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.png')
_WNID = re.compile(r'^n\d{8}$')


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


# A plan maps split -> class -> [(source file, destination file name)].
_Plan = Dict[str, Dict[str, List[Tuple[Path, str]]]]


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


def prepare_tiny_imagenet(src: PathLike, dst: PathLike, link: LinkMode = 'auto') -> PrepareResult:
    """Lay out the Tiny-ImageNet release ``src`` as ``dst/{train,val}/<wnid>/*.JPEG``.

    Training images move up out of ``train/<wnid>/images/``; validation images are sorted into class folders by
    ``val/val_annotations.txt``. Every image of the source appears exactly once in the output.
    """
    src, dst = Path(src), Path(dst)
    _check_source_dir(src, TINY_IMAGENET_LAYOUT)
    wnids = _read_wnids_file(src / 'wnids.txt')
    wnid_set = set(wnids)

    train_root = src / 'train'
    if not train_root.is_dir():
        raise DatasetLayoutError(f'{train_root} is missing; {TINY_IMAGENET_LAYOUT}')
    stray = sorted(p.name for p in train_root.iterdir() if p.is_dir() and p.name not in wnid_set)
    if stray:
        raise DatasetLayoutError(f'{train_root} has class folders not in wnids.txt: {stray[:5]}')
    plan: _Plan = {TRAIN_SPLIT: {}, VAL_SPLIT: {}}
    for wnid in wnids:
        image_dir = train_root / wnid / 'images'
        if not image_dir.is_dir():
            raise DatasetLayoutError(f'{image_dir} is missing (class {wnid} of wnids.txt); {TINY_IMAGENET_LAYOUT}')
        images = _list_images(image_dir)
        if not images:
            raise DatasetLayoutError(f'{image_dir} holds no .JPEG images')
        plan[TRAIN_SPLIT][wnid] = [(p, p.name) for p in images]

    val_images_dir, annotations = src / 'val' / 'images', src / 'val' / 'val_annotations.txt'
    for required in (val_images_dir, annotations):
        if not required.exists():
            raise DatasetLayoutError(f'{required} is missing; {TINY_IMAGENET_LAYOUT}')
    val_images = {p.name: p for p in _list_images(val_images_dir)}
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

    result = _materialize(plan, dst, src, link)
    for split, official in TINY_IMAGENET_OFFICIAL_COUNTS.items():
        if result.num_images[split] != official:
            result.notes.append(
                f'{split} has {result.num_images[split]:,} images; the official release has {official:,}')
    return result


def prepare_imagenet100(
        imagenet_root: PathLike,
        dst: PathLike,
        class_list: PathLike = IMAGENET100_CLASS_LIST,
        link: LinkMode = 'auto',
) -> PrepareResult:
    """Lay out the classes of ``class_list`` (default: the CMC ImageNet100 list) of an ImageNet-1k folder tree."""
    root, dst = Path(imagenet_root), Path(dst)
    _check_source_dir(root, IMAGENET_LAYOUT)
    wnids = read_class_list(class_list)
    if Path(class_list) == IMAGENET100_CLASS_LIST and len(wnids) != IMAGENET100_NUM_CLASSES:
        raise DatasetLayoutError(f'{class_list} has {len(wnids)} classes, ImageNet100 has {IMAGENET100_NUM_CLASSES}')
    plan: _Plan = {}
    for split, names in ((TRAIN_SPLIT, ('train',)), (VAL_SPLIT, ('val', 'validation'))):
        split_dir = next((root / n for n in names if (root / n).is_dir()), None)
        if split_dir is None:
            raise DatasetLayoutError(f'{root} has no {" or ".join(n + "/" for n in names)} folder; {IMAGENET_LAYOUT}')
        loose = _list_images(split_dir)
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
            images = _list_images(split_dir / wnid)
            if not images:
                raise DatasetLayoutError(f'{split_dir / wnid} holds no images')
            plan[split][wnid] = [(p, p.name) for p in images]
    result = _materialize(plan, dst, root, link)
    off = [w for w, files in plan[VAL_SPLIT].items() if len(files) != IMAGENET_VAL_IMAGES_PER_CLASS]
    if off:
        result.notes.append(
            f'{len(off)} classes do not have ImageNet\'s {IMAGENET_VAL_IMAGES_PER_CLASS} validation images, '
            f'e.g. {off[:3]}')
    return result


def prepare_fashion_mnist(
        dst: PathLike,
        src: PathLike = DEBIAN_FASHION_MNIST_DIR,
        layout: str = 'imagefolder',
        max_per_class: Optional[Dict[str, int]] = None,
) -> PrepareResult:
    """Decode the Fashion-MNIST idx files in ``src`` into ``dst``.

    Args:
        layout: ``'imagefolder'``: ``dst/{train,val}/<k>_<name>/<index>.png`` (28x28 greyscale PNGs; timm's
            train.py converts them to RGB), or ``'torchvision'``: the uncompressed idx files in
            ``dst/FashionMNIST/raw/`` for ``train.py --dataset torch/fashion_mnist --data-dir dst`` (greyscale
            images: also ``--in-chans 1 --mean 0.286 --std 0.353``).
        max_per_class: imagefolder only; split -> keep the first N images of each class (a smaller, still
            balanced set for CPU runs).
    """
    src, dst = Path(src), Path(dst)
    if layout not in FASHION_MNIST_LAYOUTS:
        raise ValueError(f'layout must be one of {FASHION_MNIST_LAYOUTS}, got {layout!r}')
    if max_per_class and layout != 'imagefolder':
        raise ValueError('max_per_class needs layout="imagefolder" (torchvision reads the whole idx files)')
    if not src.is_dir():
        raise DatasetLayoutError(
            f'{src} does not exist; install Debian\'s Fashion-MNIST (apt-get install dataset-fashion-mnist) or pass '
            f'the folder holding {", ".join(f for pair in FASHION_MNIST_IDX_FILES.values() for f in pair)}')
    decoded = {split: _read_idx_pair(src / images, src / labels)
               for split, (images, labels) in FASHION_MNIST_IDX_FILES.items()}

    if layout == 'torchvision':
        return _write_torchvision_fashion_mnist(src, dst, decoded)

    from PIL import Image  # torchvision's dependency; imported here so the link-only preparations need nothing

    dst.mkdir(parents=True, exist_ok=True)
    created, num_images, num_classes = 0, {}, {}
    for split, (pixels, labels, rows, cols) in decoded.items():
        limit = (max_per_class or {}).get(split)
        expected: Dict[str, set] = {}
        kept_per_class = [0] * len(FASHION_MNIST_CLASSES)
        for index, label in enumerate(labels):
            if limit is not None and kept_per_class[label] >= limit:
                continue
            kept_per_class[label] += 1
            class_dir = f'{label}_{FASHION_MNIST_CLASSES[label]}'
            name = f'{index:05d}.png'
            expected.setdefault(class_dir, set()).add(name)
            target = dst / split / class_dir / name
            buffer = io.BytesIO()
            Image.frombytes('L', (cols, rows), pixels[index * rows * cols:(index + 1) * rows * cols]).save(
                buffer, format='PNG')
            created += _write_if_absent(target, buffer.getvalue())
        num_images[split], num_classes[split] = _verify_split(dst / split, expected)
    return PrepareResult(dst, num_classes, num_images, created, 'png' if created else '')


def _check_source_dir(src: Path, layout: str) -> None:
    if not src.is_dir():
        raise DatasetLayoutError(f'{src} is not a directory; {layout}')


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


def _list_images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def _materialize(plan: _Plan, dst: Path, src: Path, link: LinkMode) -> PrepareResult:
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
        num_images[split], num_classes[split] = _verify_split(
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


def _verify_split(split_dir: Path, expected: Dict[str, set]) -> Tuple[int, int]:
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


def _write_if_absent(target: Path, data: bytes) -> int:
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


def _open_maybe_gzip(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b'\x1f\x8b' else data


def _read_idx_pair(images_path: Path, labels_path: Path) -> Tuple[bytes, Sequence[int], int, int]:
    """(pixels, labels, rows, cols) of an idx3 image file and its idx1 label file (gzipped or not)."""
    for p in (images_path, labels_path):
        if not p.is_file():
            raise DatasetLayoutError(f'{p} is missing; expected the four Fashion-MNIST idx files in {p.parent}')
    images, labels = _open_maybe_gzip(images_path), _open_maybe_gzip(labels_path)
    # idx header: magic (0x0803 = ubyte, 3 dims / 0x0801 = ubyte, 1 dim), then big-endian int32 sizes.
    if len(images) < 16 or struct.unpack('>I', images[:4])[0] != 0x803:
        raise DatasetLayoutError(f'{images_path} is not an idx3-ubyte image file')
    if len(labels) < 8 or struct.unpack('>I', labels[:4])[0] != 0x801:
        raise DatasetLayoutError(f'{labels_path} is not an idx1-ubyte label file')
    count, rows, cols = struct.unpack('>III', images[4:16])
    (label_count,) = struct.unpack('>I', labels[4:8])
    if count != label_count:
        raise DatasetLayoutError(f'{images_path} has {count} images but {labels_path} has {label_count} labels')
    if len(images) != 16 + count * rows * cols or len(labels) != 8 + count:
        raise DatasetLayoutError(f'{images_path} or {labels_path} is truncated (sizes disagree with their headers)')
    label_values = labels[8:]
    if max(label_values, default=0) >= len(FASHION_MNIST_CLASSES):
        raise DatasetLayoutError(f'{labels_path} has labels outside 0..{len(FASHION_MNIST_CLASSES) - 1}')
    return images[16:], label_values, rows, cols


def _write_torchvision_fashion_mnist(src: Path, dst: Path, decoded) -> PrepareResult:
    raw = dst / TORCHVISION_FASHION_MNIST_RAW
    created = 0
    for split, names in FASHION_MNIST_IDX_FILES.items():
        for name in names:
            created += _write_if_absent(raw / name[:-len('.gz')], _open_maybe_gzip(src / name))
    num_images = {split: len(labels) for split, (_, labels, _, _) in decoded.items()}
    num_classes = {split: len(set(labels)) for split, (_, labels, _, _) in decoded.items()}
    return PrepareResult(dst, num_classes, num_images, created, 'idx' if created else '')
