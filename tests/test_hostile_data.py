"""Hostile dataset files (issue 30): each is found once, before anything is planned, as one line on stderr
naming the file, exit code 2, no traceback, and no store created (or the store pointed at unchanged); the
trials' own readers stay bounded too. Every file here is real and small (a bomb declares, or decompresses
to, far more than it holds); the CLI runs in this process."""
from __future__ import annotations

import gzip
import os
import pickle
import pickletools
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_SPEC, bocb_main
from helpers_data import cifar_batch, idx_bytes, write_cifar, write_idx_set, write_image_folder
from test_hostile import fingerprint

from bocb.data import DATASETS
from bocb.errors import DataError
from bocb.spec import DatasetSpec


def _plan(dataset: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], store: Path) -> tuple[int, str, str]:
    """`bocb run SPEC --plan-only --store STORE` on TINY_SPEC with ``dataset`` and one backbone (a plan times
    each backbone's step): (exit code, stdout, stderr)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**TINY_SPEC, "backbones": ["resnet50"], "dataset": {**dataset, "image_size": 16}}))
    return bocb_main("run", str(spec), "--plan-only", "--store", str(store), "--out", str(tmp_path / "out"),
                     capsys=capsys)


def _assert_one_line(code: int, out: str, err: str, names: Path, expected: str) -> None:
    assert code == 2, out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(names) in lines[0] and expected in lines[0], err
    assert "Traceback" not in out + err


# --- CIFAR (python pickles) -----------------------------------------------------------------------------

class _Reduced:
    """Pickles as ``function(*args)`` with ``state``: how a crafted file names numpy's array reconstruction
    with arguments no numpy array would give."""

    def __init__(self, function: Callable, args: tuple, state: object) -> None:
        self.reduced = function, args, state

    def __reduce__(self) -> tuple:
        return self.reduced


def _array_declaring(shape: tuple[int, ...], dtype: str, data: bytes) -> _Reduced:
    return _Reduced(np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                    (1, shape, np.dtype(dtype), False, data))


def _labels_as_text(folder: Path) -> Path:
    entry = cifar_batch(4, 10, b"labels", seed=0)
    entry[b"labels"] = ["cat", "dog", "cat", "dog"]
    (folder / "data_batch_2").write_bytes(pickle.dumps(entry))
    return folder / "data_batch_2"


def _label_names_an_int(folder: Path) -> Path:
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": 10}))
    return folder / "batches.meta"


def _shared_reference_bomb(folder: Path) -> Path:
    # 6 kB on disk; numpy would expand it to 10**9 int64 labels (8 GB)
    entry = cifar_batch(4, 10, b"labels", seed=0)
    entry[b"labels"] = [[[0] * 1000] * 1000] * 1000
    (folder / "data_batch_3").write_bytes(pickle.dumps(entry))
    return folder / "data_batch_3"


def _hashing_bomb(folder: Path) -> Path:
    # {key: 1} where key is a tuple of 100 references to a tuple of 100 ... (5 levels): storing it hashes
    # 10**10 elements. Written as [key, 1] with its list opcodes turned into a dict's: building the dict here
    # would hash the key.
    key: tuple = (0,) * 100
    for _ in range(4):
        key = (key,) * 100
    blob = bytearray(pickle.dumps([key, 1], protocol=2))
    ops = [(op.name, at) for op, _, at in pickletools.genops(bytes(blob))]
    blob[next(at for name, at in ops if name == "EMPTY_LIST")] = ord(pickle.EMPTY_DICT)
    blob[[at for name, at in ops if name == "APPENDS"][-1]] = ord(pickle.SETITEMS)
    (folder / "data_batch_5").write_bytes(bytes(blob))
    return folder / "data_batch_5"


def _array_declaring_gigabytes(folder: Path) -> Path:
    # numpy's own reconstruction would allocate (10**6, 3072) bytes before finding 12 bytes of data
    entry = {b"data": _array_declaring((10**6, 3072), "u1", b"\0" * 12), b"labels": [0]}
    (folder / "test_batch").write_bytes(pickle.dumps(entry))
    return folder / "test_batch"


def _object_array(folder: Path) -> Path:
    entry = {b"data": _array_declaring((10**9,), "O", [0]), b"labels": [0]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(entry))
    return folder / "data_batch_1"


def _sparse_giant(folder: Path) -> Path:
    # 600 MB by its size, none of it on disk (sparse): refused by its size before it is read
    with open(folder / "data_batch_4", "r+b") as f:
        f.truncate(600 * 2**20)
    return folder / "data_batch_4"


CIFAR_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "labels that are strings": (_labels_as_text, "'labels' must be integers, found str 'cat'"),
    "label_names an int": (_label_names_an_int, "expected 'label_names' to be a list of 10 names, found int"),
    "a pickle bomb of shared references": (_shared_reference_bomb, "'labels' must be integers, found list"),
    "a dict key that takes hours to hash": (_hashing_bomb, "a dict key that is not text or a number"),
    "an array declaring gigabytes": (_array_declaring_gigabytes, "does not match the 12 bytes the file holds"),
    "an object array": (_object_array, "refusing numpy dtype 'O8'"),
    "a file far larger than CIFAR's": (_sparse_giant, "more than any CIFAR file holds"),
}


@pytest.mark.parametrize("case", sorted(CIFAR_CASES))
def test_a_hostile_cifar_file_is_one_line_before_planning(case, tmp_path, capsys):
    make, expected = CIFAR_CASES[case]
    folder = write_cifar(tmp_path / "data", "cifar10", per_file=4)
    bad = make(folder)
    code, out, err = _plan({"name": "cifar10", "path": str(folder)}, tmp_path, capsys, tmp_path / "s.db")
    _assert_one_line(code, out, err, bad, expected)
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "out").exists()


# --- Fashion-MNIST (IDX, gzipped or not) ----------------------------------------------------------------

def _header(*shape: int) -> bytes:
    return struct.pack(">HBB", 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def _dims_that_overflow(folder: Path) -> Path:
    # 2**31 * 2**31 * 4 = 2**64: numpy's int64 product wraps to 0, which an empty body would match
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_header(2**31, 2**31, 4)))
    return path


def _size_disagrees(folder: Path) -> Path:
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.unlink()
    path = path.with_suffix("")  # uncompressed: its size on disk is checked against the header
    path.write_bytes(_header(20, 28, 28) + bytes(20 * 28 * 27))
    return path


def _gzip_bomb(folder: Path) -> Path:
    # a right header and data, then 2 GB of zeros in 2 MB: 128 more gzip members of 16 MB each
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((40, 28, 28), np.uint8))) + gzip.compress(bytes(2**24)) * 128)
    return path


def _gzip_declaring_gigabytes(folder: Path) -> Path:
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_header(60000, 1000, 1000) + bytes(2**20)))
    return path


def _labels_of_another_count(folder: Path) -> Path:
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(39, np.uint8))))
    return folder / "train-images-idx3-ubyte.gz"


IDX_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "header dimensions that overflow": (_dims_that_overflow, "header says 2147483648x2147483648x4 = "
                                                             "18446744073709551616 bytes of data, more than any"),
    "header disagreeing with the file's size": (_size_disagrees, "header says 20x28x28 = 15680 bytes of data, "
                                                                 "the file has 15120"),
    "a gzip bomb past its header": (_gzip_bomb, "header says 40x28x28 = 31360 bytes of data, the file has more"),
    "a gzip declaring gigabytes": (_gzip_declaring_gigabytes, "header says 60000x1000x1000"),
    "images and labels of different counts": (_labels_of_another_count, "40 images but train-labels-idx1-ubyte.gz "
                                                                        "has 39 labels"),
}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
def test_a_hostile_idx_file_is_one_line_before_planning(case, tmp_path, capsys):
    make, expected = IDX_CASES[case]
    folder = write_idx_set(tmp_path / "fm", n_train=40, n_test=20, gz=True)
    bad = make(folder)
    code, out, err = _plan({"name": "fashion_mnist", "path": str(folder)}, tmp_path, capsys, tmp_path / "s.db")
    _assert_one_line(code, out, err, bad, expected)
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "out").exists()


def test_a_trial_reads_a_gzip_bomb_no_further_than_its_header(tmp_path):
    """The trials' reader is bounded as the check is: refused after one byte past the declared size."""
    folder = write_idx_set(tmp_path / "fm", n_train=40, n_test=20, gz=True)
    bomb = _gzip_bomb(folder)
    with pytest.raises(DataError, match=f"{bomb}: truncated or oversized: .* the file has more"):
        DATASETS.get("fashion_mnist").load(DatasetSpec(name="fashion_mnist", path=str(folder)))


# --- ImageFolder ----------------------------------------------------------------------------------------

def _text_named_png(root: Path) -> Path:
    path = root / "train" / "bee" / "3.png"
    path.write_text("not an image, whatever its name says\n")
    return path


def _empty_jpg(root: Path) -> Path:
    path = root / "val" / "ant" / "empty.jpg"
    path.touch()
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _decompression_bomb(root: Path) -> Path:
    # a 57-byte PNG whose header declares 20000 x 20000 pixels (400 M, over Pillow's limit)
    path = root / "train" / "cat" / "huge.png"
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b""))
    return path


def _three_bad(root: Path) -> Path:
    _empty_jpg(root)
    _decompression_bomb(root)
    return _text_named_png(root)  # train/bee comes first in the listing: the one named


def _symlink_loop(root: Path) -> Path:
    path = root / "train" / "cat" / "again"
    path.symlink_to(root / "train", target_is_directory=True)
    return path


FOLDER_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "a text file named .png": (_text_named_png, "not an image Pillow reads (UnidentifiedImageError"),
    "a zero-byte .jpg": (_empty_jpg, "an empty file (bad images: 1 of the 25 under"),
    "a 20000x20000 PNG": (_decompression_bomb, "DecompressionBombError: Image size (400000000 pixels) exceeds"),
    "three bad images": (_three_bad, "(bad images: 3 of the 26 under"),
    "a directory symlink loop": (_symlink_loop, "a symlinked folder that leads back to"),
}


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_a_hostile_image_folder_is_one_line_before_planning(case, tmp_path, capsys):
    make, expected = FOLDER_CASES[case]
    root = write_image_folder(tmp_path / "images", n_train=6, n_val=2)
    bad = make(root)
    code, out, err = _plan({"name": "imagefolder", "path": str(root)}, tmp_path, capsys, tmp_path / "s.db")
    _assert_one_line(code, out, err, bad, expected)
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "out").exists()


def test_the_loader_lists_a_folder_with_a_loop_never_302_images(tmp_path):
    """The trials' listing refuses the loop too (torchvision's ImageFolder follows it until the path is too
    long); without it, the folder's 24 images."""
    from bocb.data._folder_loader import _image_folder

    root = write_image_folder(tmp_path / "images", n_train=6, n_val=2)
    assert len(_image_folder(root / "train", None)) == 18
    loop = _symlink_loop(root)
    with pytest.raises(DataError, match=f"{loop}: a symlinked folder"):
        _image_folder(root / "train", None)


# --- good files plan; a file damaged after, in the same process, is verified again ------------------------

def _cifar(tmp_path: Path) -> tuple[dict, Callable[[], Path]]:
    folder = write_cifar(tmp_path / "data", "cifar10", per_file=4)
    return {"name": "cifar10", "path": str(folder)}, lambda: _label_names_an_int(folder)


def _fashion(tmp_path: Path) -> tuple[dict, Callable[[], Path]]:
    folder = write_idx_set(tmp_path / "fm", n_train=40, n_test=20, gz=True)
    return {"name": "fashion_mnist", "path": str(folder)}, lambda: _gzip_bomb(folder)


def _folder(tmp_path: Path) -> tuple[dict, Callable[[], Path]]:
    root = write_image_folder(tmp_path / "images", n_train=6, n_val=2)
    return {"name": "imagefolder", "path": str(root)}, lambda: _text_named_png(root)


@pytest.mark.parametrize("make", [_cifar, _fashion, _folder], ids=["cifar10", "fashion_mnist", "imagefolder"])
def test_good_files_plan_and_a_file_damaged_later_leaves_the_store_alone(make, tmp_path, capsys):
    dataset, damage = make(tmp_path)
    store = tmp_path / "s.db"
    code, out, err = _plan(dataset, tmp_path, capsys, store)
    assert code == 0 and "planned benchmark" in out, out + err
    before = fingerprint(store)
    bad = damage()
    os.utime(bad, ns=(1, 1))  # even with an old modification time: its size changed, so it is read again
    code, out, err = _plan(dataset, tmp_path, capsys, store)
    _assert_one_line(code, out, err, bad, "")
    assert fingerprint(store) == before
