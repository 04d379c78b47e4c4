"""The optimizer ranking of App. C.5 / Table 4: a weighted sum of component ranks, ranked ascending."""
from __future__ import annotations

import pandas as pd

from bocb.analysis._robustness import hp_robustness
from bocb.analysis._stats import failure_flags

WEIGHTS = {"performance": 0.4, "hyper_parameter": 0.2, "bocb": 0.2, "computations": 0.2}


def weighted_ranking(components: pd.DataFrame, weights: dict[str, float] | None = None) -> pd.DataFrame:
    """``components`` (one row per optimizer, lower = better in every column) plus score and overall rank.

    score = sum of weight x component; a component that is all-NaN (e.g. no cost measured) is left
    out and the remaining weights are rescaled to sum to 1. overall = rank of score, ties share the
    lower rank.
    """
    weights = dict(weights or WEIGHTS)
    present = {name: w for name, w in weights.items() if name in components and components[name].notna().any()}
    total = sum(present.values())
    out = components.copy()
    out["score"] = sum(components[name] * (w / total) for name, w in present.items())
    out["overall"] = out["score"].round(9).rank(method="min").astype(int)  # 0.4*2+0.2*3 != 0.4*1+0.2*5 in floats
    out.attrs["components_used"] = list(present)
    return out


def _cost(cells: pd.DataFrame) -> pd.Series:
    """Mean over backbones of (time / backbone median + memory / backbone median) / 2, per optimizer."""
    ratios = []
    for column in ("time_s", "peak_mem_mb"):
        if cells[column].notna().any():
            median = cells.groupby("backbone", sort=False)[column].transform("median")
            ratios.append(cells[column] / median)
    if not ratios:
        return pd.Series(float("nan"), index=pd.unique(cells["optimizer"]))
    ratio = sum(ratios) / len(ratios)
    return ratio.groupby(cells["optimizer"], sort=False).mean()


def ranking_components(cells: pd.DataFrame, bocb_rule: str = "tukey", gamma: float = 3.0) -> pd.DataFrame:
    """Table 4's components measured on our results (one row per optimizer, lower = better).

    performance: rank of the mean test top-1 over backbones (1 = best); hyper_parameter: dense rank
    of the mean grid-step distance of the optimal (lr, wd) to the optimizer's mode over backbones;
    bocb: 1 when ``bocb_rule`` flags the optimizer on any backbone, else 0; computations: dense rank
    of the relative time and peak-memory cost (NaN when neither was measured).
    """
    long = cells.rename(columns={"test_top1": "top1"})
    flagged = failure_flags(long, bocb_rule, gamma)
    by_opt = cells.groupby("optimizer", sort=False)
    out = pd.DataFrame(index=pd.Index(pd.unique(cells["optimizer"]), name="optimizer"))
    out["performance"] = by_opt["test_top1"].mean().rank(ascending=False, method="min")
    out["hyper_parameter"] = hp_robustness(cells, by="optimizer").round(6).rank(method="dense")
    out["bocb"] = flagged.groupby(cells["optimizer"], sort=False).any().astype(int)
    out["computations"] = _cost(cells).round(6).rank(method="dense")
    return out
