"""``imagefolder`` and ``imagenet``: an ImageNet-style tree (path/train/<class>/*, path/val/<class>/*) read
from disk. Registered here without torch; their loaders (bocb.data._folder_loader: a DataLoader with timm's
transforms) are imported on the first build.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from bocb.data._base import DATASETS, DatasetInfo, Loaders, known_sizes
from bocb.data._spec import DatasetSpec
from bocb.data._verify import VERIFIED, files_key
from bocb.errors import DataError, SpecError

# torchvision.datasets.folder.IMG_EXTENSIONS, copied: this module registers the datasets without torch
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _check(spec: DatasetSpec) -> None:
    if not spec.path:
        raise SpecError("dataset.path", "imagefolder needs path: a folder with train/<class>/* and val/<class>/*")
    missing = [s for s in ("train", "val") if not (Path(spec.path).expanduser() / s).is_dir()]
    if missing:
        raise SpecError("dataset.path", f"{spec.path} lacks {' and '.join(missing)}/ (expected "
                                        f"train/<class>/*.jpg and val/<class>/*.jpg)")


def _build(spec: DatasetSpec, **options: Any) -> Loaders:
    """bocb.data._folder_loader.build_folder, imported here: it imports torch, torchvision and timm."""
    from bocb.data._folder_loader import build_folder

    return build_folder(spec, **options)


def _walk(folder: str, inside: frozenset[str]) -> list[tuple[str, list[str]]]:
    """(folder, file names) of ``folder`` and every folder under it, symlinked ones followed, as
    ``os.walk(followlinks=True)`` lists them; a symlink that leads back to a folder it is inside is a
    DataError (os.walk would follow the loop until the path is too long: 302 images from a folder of 14).
    Written by hand: os.walk either follows every link, loops included, or none, dropping linked class
    folders."""
    real = os.path.realpath(folder)
    if real in inside:
        raise DataError(f"{folder}: a symlinked folder that leads back to {real}, a folder it is inside (a "
                        f"loop; bocb does not follow it): remove the link")
    inside = inside | {real}
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    walked = [(folder, [e.name for e in entries if not e.is_dir()])]
    for entry in entries:
        if entry.is_dir():
            walked += _walk(entry.path, inside)
    return walked


def scan_split(folder: str | Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, (image path, class index) samples) of an ImageFolder split, in torchvision's
    ImageFolder order (its find_classes and make_dataset) but refusing symlink loops (:func:`_walk`)."""
    folder = os.fspath(folder)
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    inside = frozenset({os.path.realpath(folder)})
    samples = [(os.path.join(root, name), index)
               for index, cls in enumerate(classes)
               for root, names in sorted(_walk(os.path.join(folder, cls), inside))
               for name in sorted(names) if name.lower().endswith(IMG_EXTENSIONS)]
    return classes, samples


def _counted_sizes(spec: DatasetSpec) -> tuple[int, int] | None:
    """The images under train/ and val/ (without opening them); None when the folder is not there."""
    root = Path(spec.path).expanduser() if spec.path else None
    if root is None or not all((root / s).is_dir() for s in ("train", "val")):
        return None
    train, test = (len(scan_split(root / s)[1]) for s in ("train", "val"))
    return train, test


def _bad_image(path: str) -> str | None:
    """Why Pillow cannot read the image at ``path``, in a few words; None when it can. Pillow checks the
    header and the file's structure (verify: no pixels decoded) and refuses an image over its pixel limit
    (Image.MAX_IMAGE_PIXELS, kept as it is: a decompression bomb); its warning below twice the limit is made an
    error here too."""
    from PIL import Image

    if os.path.getsize(path) == 0:
        return "an empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.verify()
    except Exception as exc:  # noqa: BLE001 - whatever Pillow raises, the file is not an image it reads
        return f"not an image Pillow reads ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
    return None


def _verify(spec: DatasetSpec) -> None:
    """Every image of train/ and val/ opened by Pillow and verified (once per process per file), train/ and
    val/ with the same classes, no symlink loop; one DataError names the first bad image and how many."""
    root = Path(spec.path).expanduser() if spec.path else None
    if root is None or not all((root / s).is_dir() for s in ("train", "val")):
        return  # check's to name
    (train_classes, train), (val_classes, val) = scan_split(root / "train"), scan_split(root / "val")
    if val_classes != train_classes:
        raise DataError(f"{root}: val/ classes differ from train/ classes")
    for split, samples, classes in (("train", train, train_classes), ("val", val, val_classes)):
        empty = sorted(set(classes) - {classes[i] for _, i in samples})
        if not classes or empty:
            where = root / split / empty[0] if empty else root / split
            raise DataError(f"{where}: no image files ({', '.join(IMG_EXTENSIONS)})")
    bad = []
    for path, _ in (*train, *val):
        key = files_key([path])
        if key in VERIFIED:
            continue
        reason = _bad_image(path)
        if reason is None:
            VERIFIED.add(key)
        else:
            bad.append((path, reason))
    if bad:
        raise DataError(f"{bad[0][0]}: {bad[0][1]} (bad images: {len(bad)} of the {len(train) + len(val)} under "
                        f"{root}; remove or replace them)")


DATASETS.register(DatasetInfo(
    name="imagefolder", description="an ImageNet-style folder (path/train/<class>/*, path/val/<class>/*), "
                                    "read from disk by DataLoader workers with timm transforms",
    num_classes=0, native_size=224, in_chans=3, check=_check, build=_build, sizes=_counted_sizes,
    verify=_verify,
))
DATASETS.register(DatasetInfo(
    name="imagenet", description="ImageNet-1K in the imagefolder layout (path/train/<wnid>/*, path/val/<wnid>/*): "
                                 "the paper's ImageNet-1K setting (Table A3's ImageNet columns, Eq. 1 gamma 1); "
                                 "its published size (ILSVRC-2012: 1,281,167 train / 50,000 val images) costs a "
                                 "plan without the files",
    num_classes=1000, native_size=224, in_chans=3, check=_check, build=_build, setting="imagenet1k",
    sizes=known_sizes(1_281_167, 50_000), verify=_verify,
), aliases=("imagenet1k", "imagenet_1k", "in1k"))
