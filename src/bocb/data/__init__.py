"""Datasets and their loaders.

In-memory datasets (digits, synthetic, CIFAR, Fashion-MNIST) take the fast path: each split is held
once per process as a uint8 tensor on the training device, already resized, and batches are gathered
and augmented with batched tensor ops. ``imagefolder`` uses a DataLoader with timm transforms.
Register your own with ``DATASETS.register(DatasetInfo(...))``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bocb.data import _builtin, _cifar, _fashion, _folder  # noqa: F401  (registers the datasets)
from bocb.data._base import DATASETS, DatasetInfo, Loaders, RawDataset, default_gamma, known_sizes, paper_setting
from bocb.data._spec import DatasetSpec, split_sizes

if TYPE_CHECKING:
    import torch

# The loaders' classes import torch: each is imported on first access (PEP 562), so that the registry (a
# spec's dataset check, `bocb list datasets`) loads without it
_TORCH_SIDE = {"EvalBatches": "_batches", "TrainBatches": "_batches", "FolderBatches": "_folder_loader",
               "clear_cache": "_memory"}


def __getattr__(name: str) -> Any:
    if name not in _TORCH_SIDE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_TORCH_SIDE[name]}"), name)


__all__ = [
    "DATASETS", "DatasetInfo", "DatasetSpec", "EvalBatches", "FolderBatches", "Loaders", "RawDataset", "TrainBatches",
    "build_loaders", "clear_cache", "default_gamma", "known_sizes", "paper_setting", "split_sizes",
    "verify_files",
]


def verify_files(spec: DatasetSpec) -> None:
    """Open the dataset's files once, before anything is planned, as its trials will read them: a bad file
    (a wrong format, a header that disagrees with the file's size, a decompression or pickle bomb, an image
    Pillow cannot read, a folder symlinked into itself) is one DataError line naming it, not a crash in every
    trial. Files not there are skipped (``check`` names how to get them; planning for other machines does
    not need them). Cheap once done: a file verified in this process is not read again while its size and
    modification time stay the same."""
    DATASETS.get(spec.name, field="dataset.name").verify(spec)


def build_loaders(spec: DatasetSpec, *, image_size: int, batch_size: int, recipe: dict, seed: int,
                  device: torch.device | str = "cpu") -> Loaders:
    """Train / val / test batches for ``spec`` at ``image_size``, augmented as ``recipe`` says
    (crop_padding, crop_padding_mode, hflip, randaugment, random_erasing, repeated_aug, train_image_size;
    mixup and cutmix are the engine's). ``seed`` drives the shuffle and augmentation; ``spec.split_seed``
    the val split."""
    import torch

    from bocb.data._memory import build_in_memory

    info = DATASETS.get(spec.name, field="dataset.name")
    info.check(spec)
    device = torch.device(device)
    if info.build is not None:
        return info.build(spec, image_size=image_size, batch_size=batch_size, recipe=recipe, seed=seed,
                          device=device)
    return build_in_memory(spec, image_size=image_size, batch_size=batch_size, recipe=recipe, seed=seed,
                           device=device)
