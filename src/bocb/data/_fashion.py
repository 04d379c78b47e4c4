"""Fashion-MNIST from its four IDX files (gzipped or not)."""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

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


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A uint8 IDX file: magic 0x00 0x00 0x08 <ndim>, ``ndim`` big-endian int32 sizes, then the bytes."""
    blob = path.read_bytes()
    if blob[:2] == GZIP_MAGIC:
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip ({exc})") from None
    expected_magic = bytes([0, 0, 0x08, ndim])
    if blob[:4] != expected_magic:
        raise DataError(f"{path}: bad IDX magic number 0x{blob[:4].hex()}, expected 0x{expected_magic.hex()} "
                        f"(uint8, {ndim} dimension(s))")
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataError(f"{path}: truncated IDX header ({len(blob)} bytes)")
    shape = struct.unpack(f">{ndim}I", blob[4:header])
    size = int(np.prod(shape))
    if len(blob) - header != size:
        raise DataError(f"{path}: truncated or oversized: header says {'x'.join(map(str, shape))} = {size} bytes "
                        f"of data, the file has {len(blob) - header}")
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable


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
    num_classes=10, native_size=28, in_chans=1, check=_check, load=load_fashion_mnist,
    sizes=known_sizes(60_000, 10_000),
), aliases=("fashion-mnist", "fmnist"))
