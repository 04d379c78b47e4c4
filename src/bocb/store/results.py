"""One benchmark of a store with what its report or analysis reads (default: the latest)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bocb.errors import BocbError
from bocb.store.core import Store


@dataclass(frozen=True)
class StoredResults:
    """What a report needs of one benchmark: its trials, their epochs and layer tables, and its spec
    (for the rules' parameters; empty for a CSV)."""

    trials: pd.DataFrame
    epochs: pd.DataFrame | None = None
    layers: pd.DataFrame | None = None
    spec: dict[str, Any] | None = None


def load_results(url_or_path: str | os.PathLike[str], benchmark_id: str | None = None) -> StoredResults:
    """One benchmark of a store (default: the latest) with everything its report shows."""
    store = Store(url_or_path, read_only=True)
    chosen = _latest(store, benchmark_id)
    return StoredResults(store.trials_frame(chosen), store.epochs_frame(chosen), store.layers_frame(chosen),
                         store.benchmark_spec(chosen))


def _latest(store: Store, benchmark_id: str | None) -> str:
    ids = store.benchmark_ids()
    if not ids:
        raise BocbError(f"store: {store.url} holds no benchmark")
    return benchmark_id or ids[-1]


def load_frames(url_or_path: str | os.PathLike[str],
                benchmark_id: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) frames of one benchmark of a store (default: the latest), for analysis and reports."""
    store = Store(url_or_path, read_only=True)
    chosen = _latest(store, benchmark_id)
    return store.trials_frame(chosen), store.epochs_frame(chosen)
