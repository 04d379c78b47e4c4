"""Spread of top-1 across optimizers (max - min per backbone) of finished benchmarks, side by side.

    python benchmarks/spread.py bocb-results/bocb.db bocb-fashion/bocb.db

Each cell is the test top-1 of the configuration chosen on validation (as `bocb results` prints);
a wider spread leaves more room to see coupling.
"""
from __future__ import annotations

import sys

import pandas as pd

from bocb.analysis import matrix, select_cells
from bocb.store import load_frames


def spreads(store: str) -> pd.Series:
    trials, _ = load_frames(store)
    table = matrix(select_cells(trials))
    return (table.max() - table.min()).rename(trials["benchmark_name"].iloc[0])


def main() -> None:
    frame = pd.concat([spreads(store) for store in sys.argv[1:]], axis=1)
    frame.loc["mean"] = frame.mean()
    print(frame.to_string(float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main()
