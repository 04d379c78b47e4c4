"""Loading, resizing and caching in-memory datasets, and building their loaders."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from bocb.data._base import DATASETS, Loaders, RawDataset
from bocb.data._batches import Augment, EvalBatches, Normalise, TrainBatches
from bocb.data._spec import DatasetSpec
from bocb.data._splits import subset, train_val_split

_RESIZE_CHUNK = 1024  # images resized at a time: bounds the float intermediate


@lru_cache(maxsize=4)
def _raw(name: str, path: str | None, download: bool) -> tuple[RawDataset, torch.Tensor, torch.Tensor]:
    """The dataset at native size, and its per-channel mean and std over the whole training set."""
    info = DATASETS.get(name, field="dataset.name")
    raw = info.load(DatasetSpec(name=name, path=path, download=download))
    mean, std = channel_stats(raw.train_x)
    # The floor keeps a constant channel (a blank test image set) from dividing by zero.
    return raw, mean, std.clamp_min(1 / 255)


def channel_stats(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std of uint8 images (N, C, H, W) in [0, 1], from 256-bin histograms
    (one pass, no float copy of the dataset)."""
    values = np.arange(256) / 255
    counts = np.stack([np.bincount(images[:, c].ravel(), minlength=256) for c in range(images.shape[1])])
    total = counts.sum(1)
    mean = counts @ values / total
    var = counts @ values**2 / total - mean**2
    return torch.from_numpy(mean), torch.from_numpy(np.sqrt(np.maximum(var, 0) * total / (total - 1)))


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a uint8 batch (antialiased when shrinking), rounded back to uint8."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = [
        F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=size < chunk.shape[-1]).round_().clamp_(0, 255).to(torch.uint8)
        for chunk in x.split(_RESIZE_CHUNK)
    ]
    return torch.cat(out)


@lru_cache(maxsize=8)
def _split_tensor(name: str, path: str | None, download: bool, split: str, size: int,
                  device: str) -> torch.Tensor:
    """One split's images as uint8 (N, C, size, size) on ``device``, resized once per process."""
    raw = _raw(name, path, download)[0]
    images = torch.from_numpy(raw.train_x if split == "train" else raw.test_x).to(device)
    return resize_uint8(images, size)


def clear_cache() -> None:
    """Forget the loaded datasets (frees their memory)."""
    _raw.cache_clear()
    _split_tensor.cache_clear()


def build_in_memory(spec: DatasetSpec, *, image_size: int, batch_size: int, recipe: dict, seed: int,
                    device: torch.device) -> Loaders:
    key = (spec.name, spec.path, spec.download)
    raw, mean, std = _raw(*key)
    train_size = recipe.get("train_image_size") or image_size
    train_pool = _split_tensor(*key, "train", train_size, str(device))
    test_all = _split_tensor(*key, "test", image_size, str(device))

    pool = subset(raw.train_y, spec.train_subset, "dataset.train_subset")
    tr, va = train_val_split(raw.train_y[pool], spec.val_fraction, spec.split_seed)
    train_idx, val_idx = pool[tr], pool[va]
    test_idx = subset(raw.test_y, spec.test_subset, "dataset.test_subset")

    def pick(images: torch.Tensor, labels: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        return images, torch.from_numpy(idx).to(device), torch.from_numpy(labels[idx]).long().to(device)

    normalise = Normalise(mean, std, device)
    train = TrainBatches(*pick(train_pool, raw.train_y, train_idx), batch_size,
                         Augment(recipe, mean, std, device), seed, int(recipe.get("repeated_aug", 1) or 1))
    val = None
    if len(val_idx):
        # Validation images come from the training pool but are evaluated at the test size.
        val_pool = train_pool if train_size == image_size else _split_tensor(*key, "train", image_size, str(device))
        val = EvalBatches(*pick(val_pool, raw.train_y, val_idx), batch_size, normalise)
    test = EvalBatches(*pick(test_all, raw.test_y, test_idx), batch_size, normalise)
    return Loaders(
        train=train, val=val, test=test, num_classes=len(raw.class_names), class_names=list(raw.class_names),
        in_chans=raw.train_x.shape[1], train_size=len(train_idx), val_size=len(val_idx), test_size=len(test_idx),
    )
