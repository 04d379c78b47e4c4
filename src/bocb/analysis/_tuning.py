"""Tuning cost (beyond the paper): the expected best validation top-1 after trying k configurations of a
cell's searched grid at random, and the test top-1 of the configuration that wins, for k = 1 ... grid size.

The expected-maximum estimator of Dodge et al. 2019 ("Show Your Work"), computed exactly from the stored
grid by order statistics over subsets, not by resampling. Dodge et al. draw the k configurations with
replacement from the empirical distribution; a user tries k distinct points of a finite grid, so here they
are drawn without replacement (at k = grid size the result is the grid's best, exactly). Written by hand:
no maintained library computes this form, nor the paired test score of the winning configuration.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bocb.protocol import CELL, ranked_configs

NEAR_BEST = 1.0  # top-1 points: "configurations needed to get within 1 point of the grid's best"
CURVE_COLUMNS = CELL + ["k", "n_configs", "expected_best", "expected_test_top1"]
SUMMARY_COLUMNS = CELL + ["n_configs", "expected_at_1", "grid_best", "configs_needed", "test_top1_at_needed"]


def choice_probabilities(n: int) -> np.ndarray:
    """(n x n) matrix P: P[k-1, r] = the probability that the configuration ranked r (0 = best) is the best
    of k configurations drawn at random without replacement from n, i.e. that the subset holds it and its
    other k-1 members all rank below it: C(n-1-r, k-1) / C(n, k) (exact integers, one rounding)."""
    return np.array([[math.comb(n - 1 - r, k - 1) / math.comb(n, k) for r in range(n)] for k in range(1, n + 1)])


def expected_best(ranked: Sequence[float], paired: Sequence[float] | None = None) -> pd.DataFrame:
    """The expected best of k configurations drawn at random without replacement, for k = 1 ... n.

    ``ranked``: one selection score per configuration, best first in the selection rule's order; among
    equal scores the one listed first is the one chosen (the tie rule is the caller's: the analysis lists
    them as bocb.protocol.ranked_configs breaks ties). With v_(1) <= ... <= v_(n) the same scores in
    ascending order, E[best of k] = sum_i C(i-1, k-1) / C(n, k) * v_(i). ``paired``: a second score per
    configuration (test top-1), weighted by the probability that its configuration is the subset's choice.

    Returns k, expected_best, expected_paired (NaN without ``paired``).
    """
    scores = np.asarray(ranked, float)
    second = np.full(len(scores), np.nan) if paired is None else np.asarray(paired, float)
    weights = choice_probabilities(len(scores))
    return pd.DataFrame({"k": np.arange(1, len(scores) + 1), "expected_best": weights @ scores,
                         "expected_paired": weights @ second})


def configs_needed(curve: Sequence[float], within: float = NEAR_BEST) -> int:
    """The smallest k whose expected best is within ``within`` points of the best of the whole grid (the
    curve's last value)."""
    values = np.asarray(curve, float)
    return int(np.argmax(values >= values[-1] - within - 1e-9)) + 1  # 1e-9: a sum of weights, not a new point


def tuning_cost(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell, the expected-best curve over its searched grid and its summary.

    The grid is the cell's candidate configurations as the protocol ranks them
    (bocb.protocol.ranked_configs: scored main-budget trials on the seeds every configuration shares,
    a diverged seed at chance, crashed trials never; ties to the lower training loss, then the label), so
    at k = grid size the winner is the cell's chosen configuration. A configuration with no selection
    score (a done trial with only a test number) cannot be drawn and is left out.

    Returns (curves: backbone, optimizer, k, n_configs, expected_best, expected_test_top1;
    summary: backbone, optimizer, n_configs, expected_at_1 (the grid's mean), grid_best, configs_needed
    (:func:`configs_needed`), test_top1_at_needed).
    """
    ranked = ranked_configs(trials)
    curves, summary = [], []
    for (backbone, optimizer), group in ranked.groupby(CELL, sort=False):
        metric = group["selected_on"].iloc[0]
        group = group.dropna(subset=[metric])
        if group.empty:
            continue
        curve = expected_best(group[metric], group["test_top1"])
        curves.append(curve.rename(columns={"expected_paired": "expected_test_top1"}).assign(
            backbone=backbone, optimizer=optimizer, n_configs=len(group)))
        needed = configs_needed(curve["expected_best"])
        summary.append((backbone, optimizer, len(group), curve["expected_best"].iloc[0],
                        curve["expected_best"].iloc[-1], needed, curve["expected_paired"].iloc[needed - 1]))
    return (pd.concat(curves, ignore_index=True)[CURVE_COLUMNS] if curves else pd.DataFrame(columns=CURVE_COLUMNS),
            pd.DataFrame(summary, columns=SUMMARY_COLUMNS))
