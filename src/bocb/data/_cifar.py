"""CIFAR-10 / CIFAR-100 from the standard python archives: the extracted folder or the .tar.gz."""
from __future__ import annotations

import functools
import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bocb.data._base import DATASETS, DatasetInfo, RawDataset, data_root, known_sizes
from bocb.errors import DataError, SpecError
from bocb.spec import DatasetSpec

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarFormat:
    title: str
    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    num_classes: int
    torchvision_class: str


CIFAR10 = CifarFormat("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                      tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
                      "labels", "label_names", 10, "CIFAR10")
CIFAR100 = CifarFormat("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",), "meta",
                       "fine_labels", "fine_label_names", 100, "CIFAR100")


def locate(fmt: CifarFormat, path: str | None) -> Path | None:
    """The extracted folder or the archive: ``path`` may be either, or a folder holding either
    (torchvision's download root)."""
    root = Path(path).expanduser() if path else data_root()
    for candidate in (root, root / fmt.folder, root / fmt.archive):
        if candidate.is_dir() and (candidate / fmt.meta).is_file():
            return candidate
        if candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz", ".tar")):
            return candidate
    return None


def _check(fmt: CifarFormat, spec: DatasetSpec) -> None:
    if spec.download or locate(fmt, spec.path) is not None:
        return
    where = spec.path or str(data_root())
    raise SpecError("dataset.path", f"no {fmt.title} at {where}: give the extracted '{fmt.folder}' folder or "
                                    f"'{fmt.archive}' ({CIFAR_URL}), or set dataset.download: true")


def _read_members(fmt: CifarFormat, source: Path) -> dict[str, bytes]:
    names = (*fmt.train, *fmt.test, fmt.meta)
    if source.is_dir():
        missing = [n for n in names if not (source / n).is_file()]
        if missing:
            raise DataError(f"{source}: missing {fmt.title} file(s) {', '.join(missing)}")
        return {n: (source / n).read_bytes() for n in names}
    try:
        with tarfile.open(source) as tar:
            found = {Path(m.name).name: m for m in tar.getmembers() if m.isfile() and Path(m.name).name in names}
            missing = [n for n in names if n not in found]
            if missing:
                raise DataError(f"{source}: archive lacks {fmt.title} file(s) {', '.join(missing)}")
            return {n: tar.extractfile(m).read() for n, m in found.items()}
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{source}: not a readable {fmt.title} archive ({exc})") from None


# What CIFAR's python pickles hold besides dicts, lists, strings and numbers: numpy arrays. Nothing else is
# looked up while unpickling, so a crafted file cannot run code (pickle calls whatever find_class returns).
CIFAR_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
})


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits only the numpy types the CIFAR format holds (written by hand: the standard
    library has no allow-list unpickler, and torch's weights_only loader reads torch's zip format only)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: not a type a CIFAR file holds")
        return super().find_class(module, name)


def _unpickle(blob: bytes, where: str) -> dict[str, Any]:
    try:
        entry = _CifarUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt (or crafted) file
        raise DataError(f"{where}: not a CIFAR pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a dict, found {type(entry).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _labels(value: Any, where: str, key: str) -> np.ndarray:
    """A batch's labels: a list of integers or a 1-D integer array (what CIFAR's pickles hold), else a
    DataError; a list is checked element by element before numpy sees it."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and np.issubdtype(value.dtype, np.integer):
        return value.astype(np.int64)
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return np.asarray(value, dtype=np.int64)
    bad = next((v for v in value if not isinstance(v, int) or isinstance(v, bool)), value) \
        if isinstance(value, list) else value
    raise DataError(f"{where}: '{key}' must be integer labels; found {type(bad).__name__} {str(bad)[:40]!r}")


def _class_names(meta: dict[str, Any], fmt: CifarFormat, where: str) -> tuple[str, ...]:
    names = meta.get(fmt.names_key)
    if not isinstance(names, (list, tuple)) or len(names) != fmt.num_classes \
            or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"{where}: expected {fmt.num_classes} '{fmt.names_key}' (names), found "
                        f"{type(names).__name__} {str(names)[:40]!r}")
    return tuple(n.decode() if isinstance(n, bytes) else n for n in names)


def _batches(fmt: CifarFormat, members: dict[str, bytes], names: tuple[str, ...],
             source: Path) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        where = f"{source}/{name}"
        entry = _unpickle(members[name], where)
        if "data" not in entry or fmt.label_key not in entry:
            raise DataError(f"{where}: expected keys 'data' and '{fmt.label_key}', found {sorted(entry)}")
        data, labels = entry["data"], _labels(entry[fmt.label_key], where, fmt.label_key)
        # an array, as the format stores it, never nested lists: a pickle of shared references would expand
        # them to gigabytes in np.asarray
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
                or len(data) != len(labels):
            raise DataError(f"{where}: expected uint8 data (N, 3072) and N labels, found {found} and "
                            f"{len(labels)} labels")
        if labels.size and not 0 <= labels.min() <= labels.max() < fmt.num_classes:
            raise DataError(f"{where}: labels outside 0..{fmt.num_classes - 1}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def _download(fmt: CifarFormat, spec: DatasetSpec) -> Path:
    import torchvision.datasets

    root = Path(spec.path).expanduser() if spec.path else data_root()
    try:
        getattr(torchvision.datasets, fmt.torchvision_class)(str(root), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"downloading {fmt.title} to {root} failed ({exc}); give dataset.path "
                        f"to a local '{fmt.archive}' ({CIFAR_URL})") from None
    return root / fmt.folder


def load_cifar(fmt: CifarFormat, spec: DatasetSpec) -> RawDataset:
    source = locate(fmt, spec.path)
    if source is None:
        _check(fmt, spec)
        source = _download(fmt, spec)
    members = _read_members(fmt, source)
    class_names = _class_names(_unpickle(members[fmt.meta], f"{source}/{fmt.meta}"), fmt, f"{source}/{fmt.meta}")
    train_x, train_y = _batches(fmt, members, fmt.train, source)
    test_x, test_y = _batches(fmt, members, fmt.test, source)
    return RawDataset(train_x, train_y, test_x, test_y, class_names)


def verify(fmt: CifarFormat, spec: DatasetSpec) -> None:
    """Read the files found once, as a trial will, before anything is planned (a few seconds; once per
    process and file state): every check of load_cifar, so no trial meets a bad file."""
    source = locate(fmt, spec.path)
    if source is not None:
        _verified(fmt, source, source.stat().st_mtime_ns, source.stat().st_size)


@functools.lru_cache(maxsize=8)
def _verified(fmt: CifarFormat, source: Path, mtime_ns: int, size: int) -> None:
    load_cifar(fmt, DatasetSpec(name="cifar10", path=str(source)))


def _register(name: str, fmt: CifarFormat) -> None:
    DATASETS.register(DatasetInfo(
        name=name, description=f"{fmt.title} (50,000 train / 10,000 test, 32x32) from '{fmt.archive}'",
        num_classes=fmt.num_classes, native_size=32, in_chans=3,
        check=lambda spec: _check(fmt, spec), load=lambda spec: load_cifar(fmt, spec),
        verify=lambda spec: verify(fmt, spec),
        sizes=known_sizes(50_000, 10_000),
    ))


_register("cifar10", CIFAR10)
_register("cifar100", CIFAR100)
