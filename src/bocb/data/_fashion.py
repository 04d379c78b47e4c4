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
from bocb.data._spec import DatasetSpec
from bocb.data._verify import VERIFIED, files_key
from bocb.errors import DataError, SpecError

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


# The largest real file (train images: 60,000 x 28 x 28) holds 47 MB; a header declaring far more is refused
# before anything is allocated or decompressed
MAX_IDX_BYTES = 256 * 2**20
_CHUNK = 4 * 2**20  # bytes decompressed at a time when a file is only counted


def _opened(path: Path) -> BinaryIO:
    """The file's bytes as a stream, decompressed as they are read when it is gzipped (gzip reads a member
    at a time and only as far as asked: a gzip bomb is read no further than its header allows)."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115 - the caller closes it


def _idx_header(stream: BinaryIO, path: Path, ndim: int) -> tuple[int, ...]:
    """The shape an IDX header declares: magic 0x00 0x00 0x08 <ndim>, then ``ndim`` big-endian uint32 sizes."""
    head = stream.read(4 + 4 * ndim)
    expected_magic = bytes([0, 0, 0x08, ndim])
    if head[:4] != expected_magic:
        raise DataError(f"{path}: bad IDX magic number 0x{head[:4].hex()}, expected 0x{expected_magic.hex()} "
                        f"(uint8, {ndim} dimension(s))")
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({len(head)} bytes)")
    shape = struct.unpack(f">{ndim}I", head[4:])
    if math.prod(shape) > MAX_IDX_BYTES:  # math.prod: Python ints do not overflow as numpy's would
        raise DataError(f"{path}: header says {_dims(shape)} = {math.prod(shape)} bytes of data, more than any "
                        f"Fashion-MNIST file holds (at most {MAX_IDX_BYTES}); refused unread")
    return shape


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _read_body(stream: BinaryIO, path: Path, shape: tuple[int, ...], keep: bool) -> bytes:
    """Exactly the bytes the header declares (counted, not kept, unless ``keep``); more or fewer is a
    DataError. One byte past the declared size is all that is ever read of a longer file."""
    size, header = math.prod(shape), 4 + 4 * len(shape)
    if not isinstance(stream, gzip.GzipFile):
        on_disk = os.fstat(stream.fileno()).st_size - header
        if on_disk != size:
            raise DataError(f"{path}: truncated or oversized: header says {_dims(shape)} = {size} bytes of data, "
                            f"the file has {on_disk}")
    if keep:
        body = stream.read(size)
        got = len(body)
    else:
        body, got = b"", 0
        while got < size and (chunk := stream.read(min(_CHUNK, size - got))):
            got += len(chunk)
    beyond = stream.read(1)
    if got != size or beyond:
        held = f"{got}" if got != size else "more (read no further)"
        raise DataError(f"{path}: truncated or oversized: header says {_dims(shape)} = {size} bytes of data, "
                        f"the file has {held}")
    return body


def _idx(path: Path, ndim: int, keep: bool) -> tuple[tuple[int, ...], bytes]:
    """(shape, data) of an IDX file, its size checked against its header; data is empty unless ``keep``."""
    try:
        with _opened(path) as stream:
            shape = _idx_header(stream, path, ndim)
            return shape, _read_body(stream, path, shape, keep)
    except (OSError, EOFError, zlib.error) as exc:  # what gzip raises for a corrupt or truncated stream
        raise DataError(f"{path}: corrupt or truncated gzip ({exc})") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A uint8 IDX file, gzipped or not: magic 0x00 0x00 0x08 <ndim>, ``ndim`` big-endian int32 sizes, then
    the bytes; checked against its size before its data is read."""
    shape, body = _idx(path, ndim, keep=True)
    return np.frombuffer(body, dtype=np.uint8).reshape(shape).copy()  # writable


def idx_shape(path: Path, ndim: int) -> tuple[int, ...]:
    """The shape of an IDX file whose size (decompressed, when gzipped) is checked against its header, without
    holding its data."""
    return _idx(path, ndim, keep=False)[0]


def _labels(path: Path) -> np.ndarray:
    labels = read_idx(path, 1).astype(np.int64)
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{path}: labels outside 0..{len(CLASS_NAMES) - 1}")
    return labels


def _same_count(images_path: Path, n_images: int, labels_path: Path, n_labels: int) -> None:
    if n_images != n_labels:
        raise DataError(f"{images_path}: {n_images} images but {labels_path.name} has {n_labels} labels")


def _pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path, 3), _labels(labels_path)
    _same_count(images_path, len(images), labels_path, len(labels))
    return images[:, None], labels  # (N, 1, H, W): grey, one channel


def verify_fashion_mnist(spec: DatasetSpec) -> None:
    """Check the four IDX files at ``spec.path`` as a trial reads them (nothing when they are not there: the
    spec's check names how to get them): headers against sizes, decompressed within the headers' bounds,
    images against labels. The images are counted, not kept. Once per process per files."""
    files = locate(spec.path)
    if files is None or (key := files_key(files.values())) in VERIFIED:
        return
    for split in ("train", "test"):
        images_path, labels_path = files[f"{split}_x"], files[f"{split}_y"]
        n_images = idx_shape(images_path, 3)[0]
        _same_count(images_path, n_images, labels_path, len(_labels(labels_path)))
    VERIFIED.add(key)


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
    num_classes=10, native_size=28, in_chans=1, check=_check, load=load_fashion_mnist,
    verify=verify_fashion_mnist,
    sizes=known_sizes(60_000, 10_000),
), aliases=("fashion-mnist", "fmnist"))
