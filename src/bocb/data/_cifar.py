"""CIFAR-10 / CIFAR-100 from the standard python archives: the extracted folder or the .tar.gz."""
from __future__ import annotations

import io
import math
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bocb.data._base import DATASETS, DatasetInfo, RawDataset, data_root, known_sizes
from bocb.data._spec import DatasetSpec
from bocb.data._verify import VERIFIED, files_key
from bocb.errors import DataError, SpecError

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


# The largest real member is CIFAR-100's 'train' (50,000 images: 154 MB); a file far beyond it is refused
# before it is read, so a crafted archive cannot make a reader hold gigabytes
MAX_MEMBER_BYTES = 512 * 2**20


def _too_large(where: str, size: int) -> DataError:
    return DataError(f"{where}: {size} bytes, more than any CIFAR file holds (at most {MAX_MEMBER_BYTES}); refused "
                     f"unread")


def _read_members(fmt: CifarFormat, source: Path) -> dict[str, bytes]:
    names = (*fmt.train, *fmt.test, fmt.meta)
    if source.is_dir():
        missing = [n for n in names if not (source / n).is_file()]
        if missing:
            raise DataError(f"{source}: missing {fmt.title} file(s) {', '.join(missing)}")
        for n in names:
            if (size := (source / n).stat().st_size) > MAX_MEMBER_BYTES:
                raise _too_large(f"{source}/{n}", size)
        return {n: (source / n).read_bytes() for n in names}
    try:
        with tarfile.open(source) as tar:
            found = {Path(m.name).name: m for m in tar.getmembers() if m.isfile() and Path(m.name).name in names}
            missing = [n for n in names if n not in found]
            if missing:
                raise DataError(f"{source}: archive lacks {fmt.title} file(s) {', '.join(missing)}")
            for n, member in found.items():  # the size its tar header declares: extraction reads no more
                if member.size > MAX_MEMBER_BYTES:
                    raise _too_large(f"{source}/{n}", member.size)
            return {n: tar.extractfile(m).read() for n, m in found.items()}
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{source}: not a readable {fmt.title} archive ({_one_line(exc)})") from None


# The dtypes a CIFAR file's arrays may have (its data is uint8); an object dtype is refused: numpy allocates
# an object array's whole shape before it reads the (possibly short) list that fills it
ARRAY_DTYPES = frozenset("?bBhHiIlLqQ")
NUMPY_RECONSTRUCT = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")})


class _DtypeStub:
    """What unpickling ``numpy.dtype(code, ...)`` gives here: the code, checked, and the byte order its state
    names; numpy never sees the file's arguments."""

    def __init__(self, code: Any, align: Any = False, copy: Any = False) -> None:
        code = code.decode() if isinstance(code, bytes) else code
        if not isinstance(code, str) or len(code) != 2 or code[0] not in "biu" or not code[1].isdigit():
            raise pickle.UnpicklingError(f"refusing numpy dtype {code!r}: CIFAR arrays hold integers")
        self.dtype = np.dtype(code)

    def __setstate__(self, state: Any) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
        order = order.decode() if isinstance(order, bytes) else order
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


class _ArrayStub:
    """What unpickling a numpy array (``_reconstruct`` then its state) gives here: the array, built from the
    state only once its shape times its item size equals the bytes the file holds for it. numpy's own
    reconstruction allocates whatever shape a file declares before checking anything."""

    def __init__(self, *args: Any) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("numpy array state is not (version, shape, dtype, fortran, data)")
        _, shape, dtype, fortran, raw = state
        if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
            raise pickle.UnpicklingError("numpy array shape is not a tuple of sizes")  # its repr could be a bomb
        if not isinstance(dtype, _DtypeStub) or dtype.dtype.char not in ARRAY_DTYPES:
            raise pickle.UnpicklingError("numpy array of a dtype CIFAR files do not hold")
        if not isinstance(raw, bytes | bytearray) or math.prod(shape) * dtype.dtype.itemsize != len(raw):
            raise pickle.UnpicklingError(f"numpy array of shape {shape} {dtype.dtype} does not match the "
                                         f"{len(raw) if isinstance(raw, bytes | bytearray) else 'no'} bytes "
                                         f"the file holds for it")
        self.array = np.frombuffer(raw, dtype.dtype).reshape(shape, order="F" if fortran else "C")


# pickle._Unpickler is the standard library's pure-Python unpickler: its memo is a dict. The C unpickler
# preallocates its memo as a list as long as the largest index a file names (LONG_BINPUT 2**32-1: 32 GiB)
class _CifarUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """An unpickler that admits only the numpy types the CIFAR format holds, as stubs checked against the
    file's bytes (written by hand: the standard library has no allow-list unpickler, torch's weights_only
    loader reads torch's zip format only, and numpy.load refuses pickled arrays unless trusted)."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        # numpy.ndarray is only ever _reconstruct's first argument, which the stub ignores; the real class
        # would allocate any shape a file calls it with
        if (module, name) in NUMPY_RECONSTRUCT or (module, name) == ("numpy", "ndarray"):
            return _ArrayStub
        if (module, name) == ("numpy", "dtype"):
            return _DtypeStub
        raise pickle.UnpicklingError(f"refusing {module}.{name}: not a type a CIFAR file holds")

    # A dict key is hashed as it is stored, and hashing a tuple of shared tuples visits every path through
    # them (10**12 for a few kB): keys must be text or numbers, as CIFAR's are; sets, which it never holds,
    # are refused. Since a MARK starts a new stack, self.stack holds exactly the marked items.
    def _plain_keys(self, keys: list[Any]) -> None:
        if any(type(k) not in (str, bytes, int) for k in keys):
            raise pickle.UnpicklingError("a dict key that is not text or a number")

    def _setitem(self) -> None:
        self._plain_keys(self.stack[-2:-1])
        pickle._Unpickler.load_setitem(self)  # type: ignore[attr-defined]

    def _setitems(self) -> None:
        self._plain_keys(self.stack[0::2])
        pickle._Unpickler.load_setitems(self)  # type: ignore[attr-defined]

    def _dict(self) -> None:
        self._plain_keys(self.stack[0::2])
        pickle._Unpickler.load_dict(self)  # type: ignore[attr-defined]

    def _no_sets(self) -> None:
        raise pickle.UnpicklingError("a set: not a type a CIFAR file holds")

    dispatch[pickle.SETITEM[0]], dispatch[pickle.SETITEMS[0]], dispatch[pickle.DICT[0]] = _setitem, _setitems, _dict
    for _opcode in (pickle.EMPTY_SET, pickle.ADDITEMS, pickle.FROZENSET):
        dispatch[_opcode[0]] = _no_sets
    del _opcode


def _unpickle(blob: bytes, where: str) -> dict[str, Any]:
    try:
        entry = _CifarUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt (or crafted) file
        raise DataError(f"{where}: not a CIFAR pickle ({type(exc).__name__}: {_one_line(exc)})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a dict, found {type(entry).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v.array if isinstance(v, _ArrayStub) else v
            for k, v in entry.items()}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _labels(value: Any, where: str, key: str, num_classes: int) -> np.ndarray:
    """The labels as int64, each checked to be an int before numpy sees them: a pickle of shared references
    (a list of one list a million times) is small on disk and gigabytes once numpy expands it."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        labels = value.astype(np.int64)
    elif isinstance(value, list | tuple):
        odd = next((v for v in value if type(v) is not int), None)
        if odd is not None:  # a text's first characters shown; a container's repr could be the bomb itself
            shown = f" {odd[:40]!r}" if isinstance(odd, str | bytes) else ""
            raise DataError(f"{where}: '{key}' must be integers, found {type(odd).__name__}{shown}")
        labels = np.asarray(value, dtype=np.int64) if value else np.zeros(0, np.int64)
    else:
        raise DataError(f"{where}: '{key}' must be a list of integers, found {type(value).__name__}")
    if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
        raise DataError(f"{where}: labels outside 0..{num_classes - 1}")
    return labels


def _batch(fmt: CifarFormat, blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file's images (N, 3, 32, 32) uint8 and labels, checked against the format."""
    entry = _unpickle(blob, where)
    if "data" not in entry or fmt.label_key not in entry:
        keys = sorted(k for k in entry if isinstance(k, str))
        raise DataError(f"{where}: expected keys 'data' and '{fmt.label_key}', found {keys[:10]}")
    data = entry["data"]
    labels = _labels(entry[fmt.label_key], where, fmt.label_key, fmt.num_classes)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or len(data) != len(labels):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: expected uint8 data (N, 3072) and N labels, found {found} and {len(labels)} "
                        f"labels")
    return data.reshape(-1, 3, 32, 32), labels


def _batches(fmt: CifarFormat, members: dict[str, bytes], names: tuple[str, ...],
             source: Path) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(_batch(fmt, members[name], f"{source}/{name}") for name in names), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _class_names(fmt: CifarFormat, members: dict[str, bytes], source: Path) -> tuple[str, ...]:
    where = f"{source}/{fmt.meta}"
    names = _unpickle(members[fmt.meta], where).get(fmt.names_key)
    if not isinstance(names, list | tuple) or len(names) != fmt.num_classes \
            or not all(isinstance(n, bytes | str) for n in names):
        found = f"{len(names)} entries" if isinstance(names, list | tuple) else type(names).__name__
        raise DataError(f"{where}: expected '{fmt.names_key}' to be a list of {fmt.num_classes} names, "
                        f"found {found}")
    return tuple(n.decode(errors="replace") if isinstance(n, bytes) else n for n in names)


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
    class_names = _class_names(fmt, members, source)
    train_x, train_y = _batches(fmt, members, fmt.train, source)
    test_x, test_y = _batches(fmt, members, fmt.test, source)
    return RawDataset(train_x, train_y, test_x, test_y, class_names)


def verify_cifar(fmt: CifarFormat, spec: DatasetSpec) -> None:
    """Open every file of the CIFAR at ``spec.path`` as a trial reads it (nothing when none is there: the
    spec's check names how to get it); a DataError names the first bad file. Once per process per files."""
    source = locate(fmt, spec.path)
    if source is None:
        return
    paths = [source / n for n in (*fmt.train, *fmt.test, fmt.meta)] if source.is_dir() else [source]
    try:
        key = files_key(paths)
    except OSError:  # a file missing from the folder: reading it names which
        key = None
    if key in VERIFIED:
        return
    members = _read_members(fmt, source)
    _class_names(fmt, members, source)
    for name in (*fmt.train, *fmt.test):
        _batch(fmt, members.pop(name), f"{source}/{name}")  # one batch in memory at a time
    VERIFIED.add(key)


def _register(name: str, fmt: CifarFormat) -> None:
    DATASETS.register(DatasetInfo(
        name=name, description=f"{fmt.title} (50,000 train / 10,000 test, 32x32) from '{fmt.archive}'",
        num_classes=fmt.num_classes, native_size=32, in_chans=3,
        check=lambda spec: _check(fmt, spec), load=lambda spec: load_cifar(fmt, spec),
        verify=lambda spec: verify_cifar(fmt, spec),
        sizes=known_sizes(50_000, 10_000),
    ))


_register("cifar10", CIFAR10)
_register("cifar100", CIFAR100)
