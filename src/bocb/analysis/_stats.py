"""Failure rules (Eq. 1 and alternatives), top-k and the worst-removed summary, per backbone.

Inputs are "long" frames with columns backbone, optimizer, top1 (one row per cell); per-seed
frames add a seed column. Quartiles use linear interpolation (numpy/pandas default; the paper
does not say which).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from bocb.analysis._frame import check_choice

RULES = ("eq1", "tukey", "gap")


def iqr(values: pd.Series) -> float:
    return float(values.quantile(0.75) - values.quantile(0.25))


def failure_threshold(values: pd.Series, rule: str = "eq1", gamma: float = 3.0, gap: float = 3.0) -> float:
    """The top-1 below which a result counts as a failure, for one backbone's results.

    eq1:   max(R) - min(Q75(R) - Q25(R), gamma)   (paper Eq. 1, as printed)
    tukey: Q25(R) - 1.5 * IQR(R)                  (Tukey's lower fence)
    gap:   max(R) - gap                           (a fixed distance to the best)
    """
    check_choice("rule", rule, RULES)
    values = values.dropna()
    if rule == "eq1":
        return float(values.max() - min(iqr(values), gamma))
    if rule == "tukey":
        return float(values.quantile(0.25) - 1.5 * iqr(values))
    return float(values.max() - gap)


def failure_flags(long: pd.DataFrame, rule: str = "eq1", gamma: float = 3.0, gap: float = 3.0) -> pd.Series:
    """True where a cell's top1 is strictly below its backbone's threshold; NaN top1 counts as failed."""
    threshold = long.groupby("backbone", sort=False)["top1"].transform(
        lambda r: failure_threshold(r, rule, gamma, gap))
    return (long["top1"] < threshold) | long["top1"].isna()


def _shortfall_significant(cell: np.ndarray, best: np.ndarray, alpha: float) -> bool:
    """One-sided Welch t-test that the cell's seeds are below the best cell's seeds."""
    if len(cell) < 2 or len(best) < 2:
        return False
    if np.var(cell) == 0 and np.var(best) == 0:  # t is undefined; the data are exact
        return bool(cell.mean() < best.mean())
    with warnings.catch_warnings():  # one constant group (all seeds at chance) is exact data, not lost precision
        warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation", RuntimeWarning)
        return bool(stats.ttest_ind(cell, best, equal_var=False, alternative="less").pvalue < alpha)


def seed_aware_flags(per_seed: pd.DataFrame, gamma: float = 3.0, alpha: float = 0.05) -> pd.DataFrame:
    """Eq.-1 flags on the seed means, kept only where the shortfall to the best cell is significant.

    ``per_seed``: backbone, optimizer, seed, top1. Returns one row per cell: backbone, optimizer,
    top1 (mean), eq1, seed_aware. A cell needs >= 2 seeds (and so does the best) to be flagged.
    """
    long = per_seed.groupby(["backbone", "optimizer"], sort=False)["top1"].mean().reset_index()
    long["eq1"] = failure_flags(long, "eq1", gamma)
    best = long.loc[long.groupby("backbone", sort=False)["top1"].idxmax(), ["backbone", "optimizer"]]
    best_of = dict(zip(best.backbone, best.optimizer))
    seeds = {key: g["top1"].to_numpy(float) for key, g in per_seed.groupby(["backbone", "optimizer"], sort=False)}
    long["seed_aware"] = [
        bool(row.eq1) and _shortfall_significant(seeds[(row.backbone, row.optimizer)],
                                                 seeds[(row.backbone, best_of[row.backbone])], alpha)
        for row in long.itertuples()]
    return long


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
