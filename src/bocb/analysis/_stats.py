"""Per-backbone summaries: failure flags by each rule (the rules live in bocb.protocol), top-k and the
worst-removed summary.

Inputs are "long" frames with columns backbone, optimizer, top1 (one row per cell); per-seed
frames add a seed column. Quartiles use linear interpolation (numpy/pandas default; the paper
does not say which).
"""
from __future__ import annotations

import pandas as pd

from bocb.protocol import RULES, failure_flags, failure_threshold, seed_aware_flags

__all__ = ["RULES", "backbone_summary", "failure_flags", "failure_threshold", "flag_cells", "seed_aware_flags",
           "summary_without_worst", "top_k"]


def top_k(long: pd.DataFrame, k: int = 4) -> pd.Series:
    """True for each backbone's k best results (ties at the k-th place all count)."""
    rank = long.groupby("backbone", sort=False)["top1"].rank(method="min", ascending=False)
    return rank <= k


def summary_without_worst(values: pd.Series) -> dict[str, float]:
    """Mean, sample std (ddof 1) and range (max - min) after removing the single worst result."""
    values = values.dropna().sort_values()
    rest = values.iloc[1:]
    return {"mean": float(rest.mean()), "std": float(rest.std(ddof=1)), "range": float(rest.max() - rest.min())}


def flag_cells(long: pd.DataFrame, gamma: float = 3.0, gap: float = 3.0, k: int = 4) -> pd.DataFrame:
    """``long`` plus one boolean column per rule (eq1, tukey, gap) and top4 (named for k=4: top{k})."""
    out = long.copy()
    for rule in RULES:
        out[rule] = failure_flags(long, rule, gamma, gap)
    out[f"top{k}"] = top_k(long, k)
    return out


def backbone_summary(long: pd.DataFrame, gamma: float = 3.0, gap: float = 3.0, k: int = 4) -> pd.DataFrame:
    """Per backbone: Eq.-1 threshold, the flagged and top-k optimizers, Mean/Std/Range without the worst."""
    flagged = flag_cells(long, gamma, gap, k)
    rows = []
    for backbone, group in flagged.groupby("backbone", sort=False):
        rows.append({"backbone": backbone, "eq1_threshold": failure_threshold(group["top1"], "eq1", gamma),
                     "n_eq1": int(group["eq1"].sum()), "n_tukey": int(group["tukey"].sum()),
                     "n_gap": int(group["gap"].sum()),
                     "eq1_flagged": ", ".join(group.loc[group["eq1"], "optimizer"]),
                     f"top{k}": ", ".join(group.sort_values("top1", ascending=False, kind="stable")
                                          .loc[lambda g: g[f"top{k}"], "optimizer"]),
                     **summary_without_worst(group["top1"])})
    return pd.DataFrame(rows)
