"""The ``imagefolder`` datasets' loaders: the slow path, a DataLoader with worker processes and timm's
transforms (create_transform), for datasets too large to hold in memory. Same Loaders interface as the
in-memory path. Imported on a folder dataset's first build (bocb.data._folder registers them without torch).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision.datasets import ImageFolder

from bocb.data._base import Loaders
from bocb.data._batches import Batch, epoch_generator, epoch_order
from bocb.data._folder import scan_split
from bocb.data._spec import DatasetSpec
from bocb.data._splits import subset, train_val_split
from bocb.errors import DataError

MAX_WORKERS = 4


class _EpochSampler(Sampler[int]):
    """This epoch's order over ``indices`` (shuffle or repeated augmentation), as the in-memory path."""

    def __init__(self, n: int, seed: int, repeats: int) -> None:
        self.n, self.seed, self.repeats, self.epoch = n, seed, repeats, 0

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.n, self.repeats, epoch_generator(self.seed, self.epoch)).tolist())

    def __len__(self) -> int:
        return self.n


class FolderBatches:
    """A DataLoader whose batches are moved to ``device``; ``set_epoch`` reseeds both the order and
    the workers' augmentation (the loader's generator seeds each worker)."""

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device, seed: int = 0,
                 repeats: int = 1, train: bool = False) -> None:
        self.dataset, self.device, self.seed = dataset, device, seed
        n = len(dataset)
        self.sampler = _EpochSampler(n, seed, repeats) if train else None
        self.loader = DataLoader(
            dataset, batch_size=min(batch_size, n), sampler=self.sampler, drop_last=train,
            num_workers=min(MAX_WORKERS, os.cpu_count() or 1), pin_memory=device.type == "cuda",
            persistent_workers=False,
        )

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.epoch = epoch
            self.loader.generator = epoch_generator(self.seed, epoch)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Batch]:
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _ScannedFolder(ImageFolder):
    """torchvision's ImageFolder over the images bocb.data._folder.scan_split lists: the same classes and
    order, without following a symlink loop (ImageFolder's own listing follows every link)."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = scan_split(directory)[0]
        return classes, {name: i for i, name in enumerate(classes)}

    @staticmethod
    def make_dataset(directory: str, *args: object, **kwargs: object) -> list[tuple[str, int]]:
        return scan_split(directory)[1]


def _image_folder(root: Path, transform) -> Dataset:  # noqa: ANN001 - a torchvision transform
    try:
        return _ScannedFolder(str(root), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{root}: {exc}") from None


def _transforms(recipe: dict, image_size: int) -> tuple:
    """timm's train and eval transforms with the recipe's ingredients and ImageNet mean/std.
    Training crops are timm's RandomResizedCrop (crop_padding does not apply); no colour jitter,
    which no recipe names."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

    stats = {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
    train = create_transform(
        recipe.get("train_image_size") or image_size, is_training=True, hflip=0.5 if recipe.get("hflip") else 0.0,
        color_jitter=0.0, auto_augment=recipe.get("randaugment"), re_prob=recipe.get("random_erasing", 0.0),
        re_mode="pixel", **stats)
    # test_crop: the centre crop's share of the resized side (Table A3: 0.875, RSB 0.95); None: timm's 0.875
    return train, create_transform(image_size, is_training=False, crop_pct=recipe.get("test_crop"), **stats)


def build_folder(spec: DatasetSpec, *, image_size: int, batch_size: int, recipe: dict, seed: int,
                 device: torch.device) -> Loaders:
    root = Path(spec.path).expanduser()
    train_tf, eval_tf = _transforms(recipe, image_size)
    train_set = _image_folder(root / "train", train_tf)
    test_set = _image_folder(root / "val", eval_tf)
    if test_set.classes != train_set.classes:
        raise DataError(f"{root}: val/ classes differ from train/ classes")
    targets = np.asarray(train_set.targets)

    pool = subset(targets, spec.train_subset, "dataset.train_subset")
    tr, va = train_val_split(targets[pool], spec.val_fraction, spec.split_seed)
    test_idx = subset(np.asarray(test_set.targets), spec.test_subset, "dataset.test_subset")
    val = None
    if len(va):
        # The validation images come from train/ but get the eval transform.
        val = FolderBatches(Subset(_image_folder(root / "train", eval_tf), pool[va].tolist()), batch_size, device)
    train = FolderBatches(Subset(train_set, pool[tr].tolist()), batch_size, device, seed,
                          int(recipe.get("repeated_aug", 1) or 1), train=True)
    return Loaders(
        train=train, val=val, test=FolderBatches(Subset(test_set, test_idx.tolist()), batch_size, device),
        num_classes=len(train_set.classes), class_names=list(train_set.classes), in_chans=3,
        train_size=len(tr), val_size=len(va), test_size=len(test_idx),
    )
