"""Hyper-parameter robustness (paper §3.1 B, App. A.3): optimal lr / wd codes, their mode, the distance to it."""
from __future__ import annotations

import pandas as pd

from bocb.errors import check_choice

GROUPINGS = ("backbone", "optimizer")


def one_hot_codes(cells: pd.DataFrame) -> pd.DataFrame:
    """Each cell's optimal lr and wd one-hot over its searched grid: columns lr_0.., wd_0..

    Uses the lr_pos / wd_pos / lr_points / wd_points columns of :func:`select_cells`.
    """
    codes = {}
    for short in ("lr", "wd"):
        points = int(cells[f"{short}_points"].max())
        for i in range(points):
            codes[f"{short}_{i}"] = (cells[f"{short}_pos"] == i).astype(int).to_numpy()
    return pd.DataFrame(codes, index=pd.MultiIndex.from_frame(cells[["backbone", "optimizer"]]))


def _mode(positions: pd.Series) -> float:
    """The most frequent grid index; among equally frequent ones the smallest (deterministic)."""
    modes = positions.dropna().mode()
    return float(modes.iloc[0]) if len(modes) else float("nan")


def hp_distances(cells: pd.DataFrame, by: str = "backbone") -> pd.DataFrame:
    """Per cell: the mode of the optimal (lr, wd) grid indices within its ``by`` group and the distances.

    ``distance`` = |lr_pos - mode| + |wd_pos - mode| in grid steps (Manhattan distance on the grid);
    ``onehot_l1`` = the literal L1 distance between the one-hot codes (2 per differing hyper-parameter),
    which the paper's wording describes but which ignores how far apart the values are.
    """
    check_choice("by", by, GROUPINGS)
    out = cells[["backbone", "optimizer", "lr_pos", "wd_pos"]].copy()
    for short in ("lr", "wd"):
        out[f"{short}_mode"] = out.groupby(by, sort=False)[f"{short}_pos"].transform(_mode)
    lr_gap = (out["lr_pos"] - out["lr_mode"]).abs()
    wd_gap = (out["wd_pos"] - out["wd_mode"]).abs()
    out["distance"] = lr_gap.fillna(0) + wd_gap.fillna(0)
    out["onehot_l1"] = 2 * ((lr_gap > 0).astype(int) + (wd_gap > 0).astype(int))
    return out


def hp_robustness(cells: pd.DataFrame, by: str = "optimizer") -> pd.Series:
    """Mean grid-step distance to the group's mode, per ``by`` group (lower = more robust)."""
    return hp_distances(cells, by).groupby(by, sort=False)["distance"].mean()
