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
from bocb.errors import DataError, SpecError
from bocb.spec import DatasetSpec


def _check(spec: DatasetSpec) -> None:
    if not spec.path:
        raise SpecError("dataset.path", "imagefolder needs path: a folder with train/<class>/* and val/<class>/*")
    missing = [s for s in ("train", "val") if not (Path(spec.path).expanduser() / s).is_dir()]
    if missing:
        raise SpecError("dataset.path", f"{spec.path} lacks {' and '.join(missing)}/ (expected "
                                        f"train/<class>/*.jpg and val/<class>/*.jpg)")


# the files torchvision's ImageFolder reads as images (torchvision.datasets.folder.IMG_EXTENSIONS)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def verify(spec: DatasetSpec) -> None:
    """Every image under train/ and val/ opened once before anything is planned: its header parsed by
    Pillow (a text file named .png, an empty .jpg, a decompression bomb over Pillow's pixel limit fail
    here, not in every trial), and no directory reached twice through symbolic links (a loop would make
    the loader read the same images over and over). One DataError names the first bad file and the count."""
    root = Path(spec.path).expanduser() if spec.path else None
    if root is None or not all((root / s).is_dir() for s in ("train", "val")):
        return
    images = [path for split in ("train", "val") for path in _image_files(root / split)]
    problems = [(path, problem) for path in images if (problem := _image_problem(path))]
    if problems:
        first, problem = problems[0]
        raise DataError(f"{first}: not a readable image ({problem}); {len(problems)} of {len(images)} images "
                        f"under {root} are not")


def _image_files(top: Path) -> list[Path]:
    """The image files under ``top`` as ImageFolder finds them (symbolic links followed), refusing a folder
    reached twice: a link to one of its own ancestors loops."""
    seen: set[str] = set()
    found = []
    for folder, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            raise DataError(f"{folder}: a symbolic link loop ({real} is reached twice); a dataset folder "
                            "must reach each image once")
        seen.add(real)
        dirs.sort()
        found += [Path(folder) / f for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES)]
    return found


def _image_problem(path: Path) -> str:
    """What stops Pillow from reading ``path``'s header ('' when nothing does). Only the header: decoding
    every pixel of a large folder would cost minutes, and a bad header is what crafted files have."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow's own limit, kept strict
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}" if str(exc) else type(exc).__name__
    return "" if width and height else "an image with no pixels"


def _build(spec: DatasetSpec, **options: Any) -> Loaders:
    """bocb.data._folder_loader.build_folder, imported here: it imports torch, torchvision and timm."""
    from bocb.data._folder_loader import build_folder

    return build_folder(spec, **options)


def _counted_sizes(spec: DatasetSpec) -> tuple[int, int] | None:
    """The files under train/ and val/ (without opening them); None when the folder is not there."""
    root = Path(spec.path).expanduser() if spec.path else None
    if root is None or not all((root / s).is_dir() for s in ("train", "val")):
        return None
    train, test = (sum(len(files) for _, _, files in os.walk(root / s)) for s in ("train", "val"))
    return train, test


DATASETS.register(DatasetInfo(
    name="imagefolder", description="an ImageNet-style folder (path/train/<class>/*, path/val/<class>/*), "
                                    "read from disk by DataLoader workers with timm transforms",
    num_classes=0, native_size=224, in_chans=3, check=_check, build=_build, sizes=_counted_sizes, verify=verify,
))
DATASETS.register(DatasetInfo(
    name="imagenet", description="ImageNet-1K in the imagefolder layout (path/train/<wnid>/*, path/val/<wnid>/*): "
                                 "the paper's ImageNet-1K setting (Table A3's ImageNet columns, Eq. 1 gamma 1); "
                                 "its published size (ILSVRC-2012: 1,281,167 train / 50,000 val images) costs a "
                                 "plan without the files",
    num_classes=1000, native_size=224, in_chans=3, check=_check, build=_build, setting="imagenet1k", verify=verify,
    sizes=known_sizes(1_281_167, 50_000),
), aliases=("imagenet1k", "imagenet_1k", "in1k"))
