"""Turn a results frame (from the store or a user CSV) into the tidy trial frame the analysis uses.

Tidy columns: backbone, optimizer, seed, config, lr, weight_decay, val_top1, test_top1, state,
diverged, crashed, budget, epochs, time_s, peak_mem_mb, lr_grid, wd_grid (and trial_key when known).
Crashed trials stay in the frame (the report lists them) but are never scored: bocb.protocol.scored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bocb.errors import DataError
from bocb.protocol import FINISHED, UNFINISHED, TrialState, at_chance_if_diverged, with_config
from bocb.store import StoredResults

REQUIRED = ("backbone", "optimizer")
QUEUED = "queued"  # a state some schedulers write into exported CSVs: not a result yet, like pending
# Aliases a user CSV may use for our column names.
ALIASES = {"top1": "test_top1", "wd": "weight_decay", "time": "time_s", "memory": "peak_mem_mb",
           "mem": "peak_mem_mb", "peak_mem": "peak_mem_mb"}


def read_results(path: str | Path) -> StoredResults:
    """The trials (and, from a store, epochs, layer tables and spec) of a CSV file or a store (a .db path
    or an SQLAlchemy URL)."""
    text = str(path)
    if text.lower().endswith(".csv"):
        if not Path(text).is_file():
            raise DataError(f"results: file not found: {text}")
        try:
            return StoredResults(pd.read_csv(text))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"results: cannot read CSV {text}: {str(exc).splitlines()[0]}") from None
    if "://" not in text and not Path(text).exists():
        raise DataError(f"results: no such CSV file or store: {text}")
    from bocb.store import load_results

    return load_results(text if "://" in text else f"sqlite:///{Path(text).resolve()}")


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate and normalise a trial frame; raises DataError naming the bad column."""
    frame = frame.rename(columns={k: v for k, v in ALIASES.items() if k in frame and v not in frame}).copy()
    missing = [c for c in REQUIRED if c not in frame]
    if missing:
        raise DataError(f"results: missing column '{missing[0]}'; need backbone, optimizer and top1 "
                        f"(or test_top1); got: {', '.join(map(str, frame.columns))}")
    if "test_top1" not in frame:
        raise DataError(f"results: missing column 'top1' (or 'test_top1'); got: {', '.join(map(str, frame.columns))}")
    defaults = {"seed": 0, "lr": np.nan, "weight_decay": np.nan, "val_top1": np.nan, "state": TrialState.DONE.value,
                "budget": 1, "epochs": np.nan, "time_s": np.nan, "peak_mem_mb": np.nan,
                "lr_grid": "", "wd_grid": "", "stage": ""}
    for column, value in defaults.items():
        if column not in frame:
            frame[column] = value
    for column in ("lr", "weight_decay", "val_top1", "test_top1", "epochs", "time_s", "peak_mem_mb", "budget"):
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().sum() > frame[column].isna().sum():
            bad = frame.loc[values.isna() & frame[column].notna(), column].iloc[0]
            raise DataError(f"results: column '{column}' must be numeric; found {bad!r}")
        frame[column] = values
    frame["backbone"] = frame["backbone"].astype(str)
    frame["optimizer"] = frame["optimizer"].astype(str)
    frame["state"] = frame["state"].fillna(TrialState.DONE.value).astype(str)
    frame = frame[~frame["state"].isin([*(s.value for s in UNFINISHED), QUEUED])].copy()
    unknown = sorted(set(frame["state"]) - {s.value for s in FINISHED})
    if unknown:
        raise DataError(f"results: unknown state '{unknown[0]}' in column 'state'; valid choices: "
                        f"{', '.join(s.value for s in (*FINISHED, *UNFINISHED))}, {QUEUED}")
    for column in ("lr_grid", "wd_grid", "stage"):
        frame[column] = frame[column].fillna("").astype(str)
    # The budget re-runs may be marked by stage ('budget_2x') instead of a budget column.
    staged = pd.to_numeric(frame["stage"].astype(str).str.extract(r"^budget_(\d+)x$")[0], errors="coerce")
    frame["budget"] = staged.fillna(frame["budget"]).fillna(1)
    frame = with_config(frame)
    frame["diverged"] = frame["state"] == TrialState.DIVERGED
    frame["crashed"] = frame["state"] == TrialState.FAILED
    return at_chance_if_diverged(frame).reset_index(drop=True)


def parse_grid(text: str) -> list[float]:
    """'0.001;0.002' -> [0.001, 0.002]; a bad value is a DataError naming it."""
    try:
        return sorted(float(v) for v in str(text).split(";") if v.strip())
    except ValueError:
        raise DataError(f"results: grid {text!r} must be ';'-joined numbers") from None
