"""The dataset registry entry, the raw in-memory dataset and the loaders bundle."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bocb.plugins import ENTRY_POINT_GROUPS, renamed_instance
from bocb.protocol import GAMMA
from bocb.registry import Registry

if TYPE_CHECKING:
    from bocb.data._batches import EvalBatches, TrainBatches
    from bocb.data._folder import FolderBatches
    from bocb.data._spec import DatasetSpec


def data_root() -> Path:
    """Where downloads go when a spec gives no path: $BOCB_DATA, else ~/.cache/bocb/data."""
    return Path(os.environ.get("BOCB_DATA", "~/.cache/bocb/data")).expanduser()


@dataclass(frozen=True)
class RawDataset:
    """A dataset that fits in memory, at its native size: uint8 images (N, C, H, W), int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...]


@dataclass
class Loaders:
    """What the engine trains and evaluates on: batches of (x float32 NCHW normalised, y int64), on device."""

    train: TrainBatches | FolderBatches
    val: EvalBatches | FolderBatches | None
    test: EvalBatches | FolderBatches
    num_classes: int
    class_names: list[str]
    in_chans: int
    train_size: int
    val_size: int
    test_size: int


def _no_check(spec: DatasetSpec) -> None:
    """Datasets bundled with a dependency (or generated) have nothing to check or verify."""


def _unknown_sizes(spec: DatasetSpec) -> None:
    return None


def known_sizes(train: int, test: int) -> Callable[[DatasetSpec], tuple[int, int]]:
    """``sizes`` of a dataset whose splits have a published size."""
    return lambda spec: (train, test)


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset.

    ``check`` is cheap (no full load) and raises ``SpecError('dataset.path', ...)`` naming how to get
    missing files. ``verify`` opens the files that are there as a trial reads them and raises a one-line
    ``DataError`` naming the first bad one (:func:`bocb.data.verify_files`: once, before anything is planned;
    missing files are ``check``'s). Datasets that need no files verify nothing. ``load`` returns the whole
    dataset in memory (the fast path); a dataset too large for memory sets ``build`` instead, a function
    with :func:`bocb.data.build_loaders`'s signature.
    ``setting`` is the paper setting the dataset follows (``bocb.protocol.SETTINGS``): which column of
    Table A3 the recipes take and Eq. 1's default gamma. Small images trained from scratch follow
    CIFAR-100's; ImageNet-1K its own. ``sizes`` gives the (train, test) image counts of the full splits
    without loading them (None when unknown), so a plan can be costed before the files are there.
    """

    name: str
    description: str
    num_classes: int
    native_size: int
    in_chans: int
    check: Callable[[DatasetSpec], None] = _no_check
    load: Callable[[DatasetSpec], RawDataset] | None = None
    build: Callable[..., Loaders] | None = None
    setting: str = "cifar100"
    sizes: Callable[[DatasetSpec], tuple[int, int] | None] = _unknown_sizes
    verify: Callable[[DatasetSpec], None] = _no_check


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def paper_setting(name: str) -> str:
    """The paper setting (``cifar100`` or ``imagenet1k``) the dataset ``name`` follows."""
    return DATASETS.get(name, field="dataset.name").setting


def default_gamma(name: str) -> float:
    """Eq. 1's gamma for the dataset ``name``: its setting's (bocb.protocol.GAMMA)."""
    return GAMMA[paper_setting(name)]
DATASETS.accept_plugins(ENTRY_POINT_GROUPS["dataset"], "dataset", renamed_instance(DatasetInfo))
