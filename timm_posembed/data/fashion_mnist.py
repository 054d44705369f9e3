""" Fashion-MNIST: the idx files Debian's ``dataset-fashion-mnist`` installs, decoded to PNG class folders (or
laid out for ``train.py --dataset torch/fashion_mnist``). """
import gzip
import io
import struct
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from .dataset_facts import DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES, FASHION_MNIST_IDX_FILES
from .staging import DatasetLayoutError, PathLike, PrepareResult, verify_split, write_if_absent

__all__ = ['prepare_fashion_mnist', 'FASHION_MNIST_LAYOUTS', 'TORCHVISION_FASHION_MNIST_RAW']

FASHION_MNIST_LAYOUTS = ('imagefolder', 'torchvision')
# torchvision.datasets.FashionMNIST(root) reads the uncompressed idx files from root/FashionMNIST/raw/.
TORCHVISION_FASHION_MNIST_RAW = Path('FashionMNIST') / 'raw'


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
            created += write_if_absent(target, buffer.getvalue())
        num_images[split], num_classes[split] = verify_split(dst / split, expected)
    return PrepareResult(dst, num_classes, num_images, created, 'png' if created else '')


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
            created += write_if_absent(raw / name[:-len('.gz')], _open_maybe_gzip(src / name))
    num_images = {split: len(labels) for split, (_, labels, _, _) in decoded.items()}
    num_classes = {split: len(set(labels)) for split, (_, labels, _, _) in decoded.items()}
    return PrepareResult(dst, num_classes, num_images, created, 'idx' if created else '')
