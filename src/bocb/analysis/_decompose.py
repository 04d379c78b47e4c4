"""Beyond the paper: top-1 = mean + backbone effect + optimizer effect + interaction (the coupling).

Written by hand with numpy: it is the textbook two-way ANOVA decomposition with one value per
cell, vectorised over bootstrap replicates (statsmodels would fit one replicate at a time).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bocb.errors import DataError


def complete_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Drop the optimizer or backbone with the largest share of missing cells until none is missing."""
    while table.isna().any().any():
        rows, cols = table.isna().mean(axis=1), table.isna().mean(axis=0)
        table = table.drop(index=rows.idxmax()) if rows.max() >= cols.max() else table.drop(columns=cols.idxmax())
    if table.shape[0] < 2 or table.shape[1] < 2:
        raise DataError("results: the decomposition needs a complete matrix of >= 2 backbones x 2 optimizers")
    return table


def _effects(y: np.ndarray) -> tuple[np.ndarray, ...]:
    """y[..., optimizer, backbone] -> mean, optimizer effect, backbone effect, interaction."""
    mu = y.mean(axis=(-2, -1), keepdims=True)
    beta = y.mean(axis=-1, keepdims=True) - mu   # optimizer effect, shape (..., O, 1)
    alpha = y.mean(axis=-2, keepdims=True) - mu  # backbone effect, shape (..., 1, B)
    return mu, beta, alpha, y - mu - beta - alpha


def _shares(y: np.ndarray) -> dict[str, np.ndarray]:
    """Interaction shares: total, per backbone (..., B) and per optimizer (..., O).

    total: SS_int / (SS_backbone + SS_optimizer + SS_int). Per backbone b:
    SS_int(b) / (SS_int(b) + SS_optimizer/B), the part of b's spread across optimizers that the
    common optimizer effect does not explain; per optimizer likewise with the backbone effect.
    """
    _, beta, alpha, inter = _effects(y)
    n_opt, n_bb = y.shape[-2], y.shape[-1]
    ss_int_b = (inter ** 2).sum(axis=-2)          # (..., B)
    ss_int_o = (inter ** 2).sum(axis=-1)          # (..., O)
    ss_opt = (beta ** 2).sum(axis=(-2, -1))[..., None]   # one column of optimizer effects
    ss_bb = (alpha ** 2).sum(axis=(-2, -1))[..., None]   # one row of backbone effects
    total = ss_int_b.sum(-1) / (n_bb * ss_opt[..., 0] + n_opt * ss_bb[..., 0] + ss_int_b.sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"total": total, "backbone": ss_int_b / (ss_int_b + ss_opt), "optimizer": ss_int_o / (ss_int_o + ss_bb)}


def decompose(table: pd.DataFrame) -> dict[str, object]:
    """The decomposition of an optimizer x backbone matrix: mean, effects, interaction frame, shares."""
    table = complete_matrix(table)
    mu, beta, alpha, inter = _effects(table.to_numpy(float))
    return {"mean": float(mu.squeeze()),
            "optimizer_effect": pd.Series(beta[:, 0], index=table.index),
            "backbone_effect": pd.Series(alpha[0], index=table.columns),
            "interaction": pd.DataFrame(inter, index=table.index, columns=table.columns)}


def interaction_shares(per_seed: pd.DataFrame, n_boot: int = 1000, level: float = 0.95,
                       seed: int = 0) -> pd.DataFrame:
    """Interaction shares with percentile bootstrap CIs (seeds resampled within each cell).

    ``per_seed``: backbone, optimizer, seed, top1. Returns rows scope ('total'/'backbone'/'optimizer'),
    name, share, lo, hi. Cells with one seed contribute no resampling noise; with no cell having
    two seeds lo/hi are NaN.
    """
    means = per_seed.groupby(["optimizer", "backbone"], sort=False)["top1"].mean().unstack("backbone")
    means = complete_matrix(means.reindex(index=pd.unique(per_seed["optimizer"]),
                                          columns=pd.unique(per_seed["backbone"])))
    point = _shares(means.to_numpy(float))
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot,) + means.shape)
    groups = per_seed.groupby(["optimizer", "backbone"])["top1"]
    for i, optimizer in enumerate(means.index):
        for j, backbone in enumerate(means.columns):
            values = groups.get_group((optimizer, backbone)).to_numpy(float)
            boot[:, i, j] = rng.choice(values, size=(n_boot, len(values))).mean(axis=1)
    replicates = _shares(boot)
    resampled = bool((groups.count() > 1).any())
    tail = (1 - level) / 2 * 100
    rows = []
    for scope, names in (("total", ["all"]), ("backbone", list(means.columns)), ("optimizer", list(means.index))):
        values = np.atleast_1d(point[scope])
        reps = replicates[scope].reshape(n_boot, -1)
        lo, hi = np.nanpercentile(reps, [tail, 100 - tail], axis=0) if resampled else (values * np.nan,) * 2
        rows += [{"scope": scope, "name": n, "share": v, "lo": a, "hi": b}
                 for n, v, a, b in zip(names, values, lo, hi)]
    return pd.DataFrame(rows)


def performance_profiles(table: pd.DataFrame, taus: np.ndarray | None = None) -> pd.DataFrame:
    """Performance profiles over backbones: rho_o(tau) = share of backbones where o is within tau points of the best.

    Uses the gap in top-1 points (best - r) rather than Dolan-More's ratio, which suits accuracies.
    A missing cell never counts as within tau. Index: tau; columns: optimizers.
    """
    gaps = table.max(axis=0) - table  # per backbone (column) best minus each optimizer
    if taus is None:
        taus = np.linspace(0.0, float(np.nanmax(gaps.to_numpy())), 101)
    within = (gaps.to_numpy()[None, :, :] <= np.asarray(taus)[:, None, None]).mean(axis=2)
    return pd.DataFrame(within, index=pd.Index(taus, name="tau"), columns=table.index)
