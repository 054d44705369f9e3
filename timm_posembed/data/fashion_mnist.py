""" Fashion-MNIST: the idx files Debian's ``dataset-fashion-mnist`` installs, decoded to PNG class folders (or
laid out for ``train.py --dataset torch/fashion_mnist``). """
import io
import struct
import zlib
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from .dataset_facts import DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES, FASHION_MNIST_IDX_FILES
from .source_tree import SourceTree
from .staging import DatasetLayoutError, PathLike, Plan, PrepareResult, write_tree

__all__ = ['prepare_fashion_mnist', 'FASHION_MNIST_LAYOUTS', 'TORCHVISION_FASHION_MNIST_RAW']

FASHION_MNIST_LAYOUTS = ('imagefolder', 'torchvision')
# torchvision.datasets.FashionMNIST(root) reads the uncompressed idx files from root/FashionMNIST/raw/.
TORCHVISION_FASHION_MNIST_RAW = Path('FashionMNIST') / 'raw'
# Fashion-MNIST's largest idx file decodes to ~47 MB; the bound stops a gzip bomb or a wrong file from filling memory.
_MAX_IDX_BYTES = 256 << 20


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
    tree = SourceTree(src, (
        f'install Debian\'s Fashion-MNIST (apt-get install dataset-fashion-mnist) or pass the folder holding '
        f'{", ".join(f for pair in FASHION_MNIST_IDX_FILES.values() for f in pair)}'))
    raw: Dict[str, bytes] = {}
    decoded = {}
    for split, (images_name, labels_name) in FASHION_MNIST_IDX_FILES.items():
        raw[images_name], raw[labels_name] = _read_idx_pair(tree, src / images_name, src / labels_name)
        decoded[split] = _decode(raw[images_name], raw[labels_name])

    if layout == 'torchvision':
        return _write_torchvision_fashion_mnist(dst, raw, decoded)

    from PIL import Image  # torchvision's dependency; imported here so the link-only preparations need nothing

    plan: Plan = {}
    num_images, num_classes = {}, {}
    for split, (pixels, labels, rows, cols) in decoded.items():
        limit = (max_per_class or {}).get(split)
        kept_per_class = [0] * len(FASHION_MNIST_CLASSES)
        for index, label in enumerate(labels):
            if limit is not None and kept_per_class[label] >= limit:
                continue
            kept_per_class[label] += 1
            buffer = io.BytesIO()
            Image.frombytes('L', (cols, rows), pixels[index * rows * cols:(index + 1) * rows * cols]).save(
                buffer, format='PNG')
            plan[(split, f'{label}_{FASHION_MNIST_CLASSES[label]}', f'{index:05d}.png')] = buffer.getvalue()
        num_images[split] = sum(kept_per_class)
        num_classes[split] = sum(k > 0 for k in kept_per_class)
    written = write_tree(plan, dst, [src])
    return PrepareResult(dst, num_classes, num_images, written.created, 'png' if written.created else '')


def _gunzip(path: Path, data: bytes) -> bytes:
    """``data`` decompressed if it is gzip (the Debian files are), else as it is; bounded, with errors naming
    ``path``."""
    if data[:2] != b'\x1f\x8b':
        return data
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, _MAX_IDX_BYTES + 1)
    except zlib.error as e:
        raise DatasetLayoutError(
            f'{path} is a corrupt gzip file ({e}); download it again or reinstall dataset-fashion-mnist') from None
    if len(out) > _MAX_IDX_BYTES:
        raise DatasetLayoutError(
            f'{path} decompresses to more than {_MAX_IDX_BYTES:,} bytes; Fashion-MNIST\'s largest idx file is '
            f'~47 MB')
    if not decompressor.eof:
        raise DatasetLayoutError(
            f'{path} is a truncated gzip file (its compressed stream ends early); download it again or reinstall '
            f'dataset-fashion-mnist')
    return out


def _read_idx_pair(tree: SourceTree, images_path: Path, labels_path: Path) -> Tuple[bytes, bytes]:
    """The decompressed bytes of an idx3 image file and its idx1 label file (gzipped or not), headers checked."""
    expected = f'the four Fashion-MNIST idx files in {images_path.parent}'
    images = _gunzip(images_path, tree.read_bytes(images_path, _MAX_IDX_BYTES, expected))
    labels = _gunzip(labels_path, tree.read_bytes(labels_path, _MAX_IDX_BYTES, expected))
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
    if max(labels[8:], default=0) >= len(FASHION_MNIST_CLASSES):
        raise DatasetLayoutError(f'{labels_path} has labels outside 0..{len(FASHION_MNIST_CLASSES) - 1}')
    return images, labels


def _decode(images: bytes, labels: bytes) -> Tuple[bytes, Sequence[int], int, int]:
    """(pixels, labels, rows, cols) of a checked idx pair."""
    _, rows, cols = struct.unpack('>III', images[4:16])
    return images[16:], labels[8:], rows, cols


def _write_torchvision_fashion_mnist(dst: Path, raw: Dict[str, bytes], decoded) -> PrepareResult:
    plan: Plan = {TORCHVISION_FASHION_MNIST_RAW.parts + (name[:-len('.gz')],): data for name, data in raw.items()}
    written = write_tree(plan, dst, [])
    num_images = {split: len(labels) for split, (_, labels, _, _) in decoded.items()}
    num_classes = {split: len(set(labels)) for split, (_, labels, _, _) in decoded.items()}
    return PrepareResult(dst, num_classes, num_images, written.created, 'idx' if written.created else '')
