"""Fashion-MNIST from its four IDX files (gzipped or not)."""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bocb.data._base import DATASETS, DatasetInfo, RawDataset, data_root, known_sizes
from bocb.errors import DataError, SpecError
from bocb.spec import DatasetSpec

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
GZIP_MAGIC = b"\x1f\x8b"


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(path: str | None) -> dict[str, Path] | None:
    """The four files in ``path`` (or torchvision's ``path/FashionMNIST/raw``); without a path, in the
    Debian package's folder or the download root. None when any file is missing."""
    roots = [Path(path).expanduser()] if path else [DEBIAN_DIR, data_root()]
    for root in roots:
        for folder in (root, root / "FashionMNIST" / "raw"):
            found = {key: _find(folder, stem) for key, stem in FILES.items()}
            if all(found.values()):
                return found
    return None


def _check(spec: DatasetSpec) -> None:
    if spec.download or locate(spec.path) is not None:
        return
    where = spec.path or str(DEBIAN_DIR)
    raise SpecError("dataset.path", f"no Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz] ...) in {where}: "
                                    f"'apt-get install dataset-fashion-mnist' puts them in {DEBIAN_DIR}, "
                                    f"or set dataset.download: true")


MAX_IDX_BYTES = 1 << 31  # far above Fashion-MNIST's 47 MB: a header declaring more is not this dataset


def _idx_header(handle: BinaryIO, path: Path, ndim: int) -> tuple[int, ...]:
    """The dimensions an IDX header declares, checked before anything is allocated: magic 0x00 0x00 0x08
    <ndim>, then ``ndim`` big-endian int32 sizes whose product stays under MAX_IDX_BYTES."""
    expected_magic = bytes([0, 0, 0x08, ndim])
    head = handle.read(4 + 4 * ndim)
    if head[:4] != expected_magic:
        raise DataError(f"{path}: bad IDX magic number 0x{head[:4].hex()}, expected 0x{expected_magic.hex()} "
                        f"(uint8, {ndim} dimension(s))")
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(head)} bytes)")
    shape = struct.unpack(f">{ndim}I", head[4:])
    if math.prod(shape) > MAX_IDX_BYTES:
        raise DataError(f"{path}: the header declares {'x'.join(map(str, shape))} bytes of data, over "
                        f"{MAX_IDX_BYTES} (not a Fashion-MNIST file)")
    return shape


def _open_idx(path: Path) -> BinaryIO:
    """The file, decompressed as it is read when gzipped: never more than the header declares is read, so a
    gzip bomb is refused after a few bytes, not after filling memory."""
    with path.open("rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A uint8 IDX file (gzipped or not): exactly the bytes its header declares, or a DataError."""
    try:
        with _open_idx(path) as handle:
            shape = _idx_header(handle, path, ndim)
            size = math.prod(shape)
            blob = handle.read(size + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip ({exc})") from None
    if len(blob) != size:
        raise DataError(f"{path}: truncated or oversized: header says {'x'.join(map(str, shape))} = {size} bytes "
                        f"of data, the file has {'more' if len(blob) > size else len(blob)}")
    return np.frombuffer(blob, dtype=np.uint8).reshape(shape).copy()  # writable


def verify(spec: DatasetSpec) -> None:
    """The four files' headers against each other and the files' sizes, before anything is planned (cheap:
    no image is read; a gzip's recorded length stands for its content, which read_idx bounds again)."""
    files = locate(spec.path)
    if files is None:
        return  # absent: the spec's check says so, or a download brings them
    shapes = {}
    for key, path in files.items():
        ndim = 3 if key.endswith("_x") else 1
        try:
            with _open_idx(path) as handle:
                shapes[key] = _idx_header(handle, path, ndim)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip ({exc})") from None
        _check_stored_length(path, 4 + 4 * ndim + math.prod(shapes[key]))
    for split in ("train", "test"):
        images, labels = shapes[f"{split}_x"], shapes[f"{split}_y"]
        if images[0] != labels[0]:
            raise DataError(f"{files[split + '_x']}: {images[0]} images but {files[split + '_y'].name} has "
                            f"{labels[0]} labels")


def _check_stored_length(path: Path, expected: int) -> None:
    """A raw file's size, or a gzip's recorded length (ISIZE, its last 4 bytes, modulo 2**32), against what
    the header declares."""
    with path.open("rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
        if gzipped:
            raw.seek(-4, os.SEEK_END)
            stored, expected = struct.unpack("<I", raw.read(4))[0], expected % (1 << 32)
        else:
            stored = path.stat().st_size
    if stored != expected:
        raise DataError(f"{path}: holds {stored} bytes{' (gzip length)' if gzipped else ''} where its header "
                        f"declares {expected}: truncated, oversized or not an IDX file")


def _pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{labels_path}: labels outside 0..{len(CLASS_NAMES) - 1}")
    return images[:, None], labels  # (N, 1, H, W): grey, one channel


def _download(spec: DatasetSpec) -> dict[str, Path]:
    import torchvision.datasets

    root = Path(spec.path).expanduser() if spec.path else data_root()
    try:
        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"downloading Fashion-MNIST to {root} failed ({exc}); "
                        f"'apt-get install dataset-fashion-mnist' installs it in {DEBIAN_DIR}") from None
    return locate(str(root))


def load_fashion_mnist(spec: DatasetSpec) -> RawDataset:
    files = locate(spec.path)
    if files is None:
        _check(spec)
        files = _download(spec)
    train_x, train_y = _pair(files["train_x"], files["train_y"])
    test_x, test_y = _pair(files["test_x"], files["test_y"])
    return RawDataset(train_x, train_y, test_x, test_y, CLASS_NAMES)


DATASETS.register(DatasetInfo(
    name="fashion_mnist", description="Zalando's Fashion-MNIST (60,000 train / 10,000 test, 28x28 grey)",
    num_classes=10, native_size=28, in_chans=1, check=_check, load=load_fashion_mnist, verify=verify,
    sizes=known_sizes(60_000, 10_000),
), aliases=("fashion-mnist", "fmnist"))
