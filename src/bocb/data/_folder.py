"""``imagefolder`` and ``imagenet``: an ImageNet-style tree (path/train/<class>/*, path/val/<class>/*) read
from disk. Registered here without torch; their loaders (bocb.data._folder_loader: a DataLoader with timm's
transforms) are imported on the first build.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bocb.data._base import DATASETS, DatasetInfo, Loaders, known_sizes
from bocb.errors import SpecError
from bocb.spec import DatasetSpec


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
    num_classes=0, native_size=224, in_chans=3, check=_check, build=_build, sizes=_counted_sizes,
))
DATASETS.register(DatasetInfo(
    name="imagenet", description="ImageNet-1K in the imagefolder layout (path/train/<wnid>/*, path/val/<wnid>/*): "
                                 "the paper's ImageNet-1K setting (Table A3's ImageNet columns, Eq. 1 gamma 1); "
                                 "its published size (ILSVRC-2012: 1,281,167 train / 50,000 val images) costs a "
                                 "plan without the files",
    num_classes=1000, native_size=224, in_chans=3, check=_check, build=_build, setting="imagenet1k",
    sizes=known_sizes(1_281_167, 50_000),
), aliases=("imagenet1k", "imagenet_1k", "in1k"))
