"""Writers of tiny dataset files in the real on-disk formats, for tests (nothing is downloaded)."""
from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

CIFAR_LAYOUT = {
    # kind: (folder, train files, test files, meta file, label key, names key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                b"labels", b"label_names", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_labels", b"fine_label_names", 100),
}


def cifar_batch(n: int, num_classes: int, label_key: bytes, seed: int) -> dict[bytes, object]:
    """A CIFAR pickle entry: b'data' uint8 (n, 3072) whose pixels all equal the label, and labels."""
    labels = [(seed + i) % num_classes for i in range(n)]
    data = np.repeat(np.array(labels, dtype=np.uint8)[:, None], 3072, axis=1)
    return {b"data": data, label_key: labels, b"batch_label": b"tiny"}


def write_cifar(root: Path, kind: str, per_file: int = 20, as_tar: bool = False) -> Path:
    """Write a tiny CIFAR-10/100 in the python-pickle layout; returns the folder or the .tar.gz."""
    folder_name, train, test, meta, label_key, names_key, classes = CIFAR_LAYOUT[kind]
    folder = root / folder_name
    folder.mkdir(parents=True)
    for i, name in enumerate(train + test):
        (folder / name).write_bytes(pickle.dumps(cifar_batch(per_file, classes, label_key, seed=i)))
    names = [f"label{i}".encode() for i in range(classes)]
    (folder / meta).write_bytes(pickle.dumps({names_key: names}))
    if not as_tar:
        return folder
    archive = root / f"{folder_name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder_name)
    return archive


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (uint8): magic 0x0000 0x08 ndim, big-endian int32 dims, then the data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> Path:
    """The four Fashion-MNIST IDX files with tiny 28x28 images whose pixels equal 10 * label."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.repeat((labels * 10).astype(np.uint8)[:, None, None], 28, axis=1).repeat(28, axis=2)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte" + (".gz" if gz else "")
            blob = idx_bytes(array)
            (folder / name).write_bytes(gzip.compress(blob) if gz else blob)
    return folder


def write_image_folder(root: Path, classes: tuple[str, ...] = ("ant", "bee", "cat"), n_train: int = 6,
                       n_val: int = 2, size: int = 20) -> Path:
    """An ImageNet-style tree of PNGs: root/{train,val}/<class>/<i>.png, each class one flat colour."""
    from PIL import Image

    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                colour = (80 * c, 255 - 80 * c, 10 * i)
                Image.new("RGB", (size, size), colour).save(folder / f"{i}.png")
    return root
