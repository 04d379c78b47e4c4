"""Issue 10: per-epoch curve statistics and the budget check of flagged gaps."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bocb.protocol import CELL, chosen_seeds, curve_column, failure_threshold


def curve_summary(epoch: np.ndarray, value: np.ndarray) -> tuple[float, float]:
    """(area under the curve / epoch span, first epoch reaching 95 % of the final value).

    A single-epoch curve has area = its value.
    """
    order = np.argsort(epoch)
    epoch, value = epoch[order], value[order]
    span = epoch[-1] - epoch[0]
    auc = float(np.trapezoid(value, epoch) / span) if span > 0 else float(value[-1])
    reached = np.nonzero(value >= 0.95 * value[-1])[0]
    return auc, float(epoch[reached[0]])


def _chosen_epochs(trials: pd.DataFrame, epochs: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch rows of each cell's chosen configuration, at every seed it ran."""
    return chosen_seeds(trials, cells)[CELL + ["trial_key"]].merge(epochs, on="trial_key")


def curve_stats(trials: pd.DataFrame, epochs: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the seed-mean validation curve's normalised area and epoch to 95 % of its final value.

    Needs ``trial_key`` in ``trials`` and ``epochs`` (trial_key, epoch, val_top1[, test_top1]);
    falls back to the test curve when the epochs frame has no validation values.
    """
    column = curve_column(epochs)
    rows = []
    for (backbone, optimizer), group in _chosen_epochs(trials, epochs, cells).groupby(CELL, sort=False):
        curve = group.groupby("epoch")[column].mean().dropna()
        if curve.empty:
            continue
        auc, epoch95 = curve_summary(curve.index.to_numpy(float), curve.to_numpy(float))
        rows.append({"backbone": backbone, "optimizer": optimizer, "auc": auc, "epoch95": int(epoch95),
                     "curve": column})  # the store counts epochs in whole numbers
    return pd.DataFrame(rows, columns=CELL + ["auc", "epoch95", "curve"])


def learning_curves(trials: pd.DataFrame, epochs: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell and epoch, the chosen configuration's validation top-1 (test top-1 without a validation
    split: column ``curve`` names it) and training loss, each the mean over the seeds that reached the epoch."""
    column = curve_column(epochs)
    joined = _chosen_epochs(trials, epochs, cells)
    if "train_loss" not in joined:
        joined = joined.assign(train_loss=np.nan)
    means = joined.groupby(CELL + ["epoch"], sort=False).agg(top1=(column, "mean"), train_loss=("train_loss", "mean"),
                                                             n_seeds=("trial_key", "nunique")).reset_index()
    return means.assign(epoch=means["epoch"].astype(int), curve=column)


def budget_check(trials: pd.DataFrame, cells: pd.DataFrame, flags: pd.Series, rule: str = "eq1",
                 gamma: float = 3.0, shrink: float = 0.25) -> pd.DataFrame:
    """For each flagged cell re-run at a larger budget: does its gap to the best close, shrink or hold?

    gap = best - r; the best at budget k is the backbone's best cell re-run at k when it was, else its
    budget-1 value. margin = best - threshold at budget 1 (the rule's allowance). Outcome: 'closes' when
    gap_k <= margin (no longer a failure), 'shrinks' when gap_k <= (1 - shrink) * gap_1, else 'holds'.
    """
    reruns = trials[trials["budget"] > 1]
    rerun_means = reruns.groupby(CELL + ["config", "budget"])["test_top1"].mean()
    columns = CELL + ["budget", "top1_1x", "top1_kx", "gap_1x", "gap_kx", "outcome"]
    rows = []
    for backbone, group in cells.groupby("backbone", sort=False):
        best_cell = group.loc[group["test_top1"].idxmax()]
        margin = best_cell.test_top1 - failure_threshold(group["test_top1"], rule, gamma)
        for cell in group[flags.loc[group.index]].itertuples():
            for budget in sorted(reruns.loc[(reruns.backbone == backbone) & (reruns.optimizer == cell.optimizer),
                                            "budget"].unique()):
                top1_k = rerun_means.get((backbone, cell.optimizer, cell.config, budget), np.nan)
                best_k = rerun_means.get((backbone, best_cell.optimizer, best_cell.config, budget), best_cell.test_top1)
                gap_1, gap_k = best_cell.test_top1 - cell.test_top1, best_k - top1_k
                outcome = ("closes" if gap_k <= margin else "shrinks" if gap_k <= (1 - shrink) * gap_1
                           else "holds" if not np.isnan(gap_k) else "no re-run of the chosen config")
                rows.append(dict(zip(columns, (backbone, cell.optimizer, int(budget), cell.test_top1, top1_k,
                                               gap_1, gap_k, outcome))))
    return pd.DataFrame(rows, columns=columns)
