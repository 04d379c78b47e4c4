"""Stratified subsets and the validation split (index arithmetic only, no images)."""
from __future__ import annotations

import numpy as np

from bocb.errors import SpecError

# Subsets use a fixed seed so every split_seed (and every trial) sees the same subset.
SUBSET_SEED = 0


def stratified_take(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` items whose class counts are proportional to ``labels``'.

    Counts are rounded by largest remainder so they sum to exactly ``n``. Written here rather than
    sklearn's StratifiedShuffleSplit because that refuses a split smaller than the number of classes,
    which tiny test and smoke runs need.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    take = np.floor(exact).astype(int)
    short = n - take.sum()
    # Ties broken at random so no class is always favoured.
    order = np.lexsort((rng.random(len(classes)), -(exact - take)))
    take[order[:short]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def subset(labels: np.ndarray, n: int | None, field: str) -> np.ndarray:
    """Indices of a stratified subset of ``n`` items (fixed seed), or all of them when ``n`` is None."""
    if n is None:
        return np.arange(len(labels))
    if n > len(labels):
        raise SpecError(field, f"{n} is more than the {len(labels)} images available")
    return stratified_take(labels, n, SUBSET_SEED)


def train_val_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions into ``labels``: ``val_fraction`` carved off, stratified, seeded by ``seed``."""
    n_val = int(round(val_fraction * len(labels)))
    if val_fraction > 0 and not 0 < n_val < len(labels):
        raise SpecError("dataset.val_fraction", f"{val_fraction} of {len(labels)} images leaves an empty split")
    val = stratified_take(labels, n_val, seed) if n_val else np.zeros(0, dtype=int)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val
