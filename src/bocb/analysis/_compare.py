"""Two benchmarks side by side (`bocb compare A B`): does the coupling found on one hold on the other — another
dataset (the paper's Tables 1 and 2), a recipe change, twice the epochs, another bocb?

For the backbones both analysed: their verdicts and recommendations, each change named with its cause;
the rank agreement of the optimizers (Kendall τ, with a bootstrap interval over seeds); the cells whose
standing within their backbone moved beyond seed noise (bocb.protocol.moved_cells); and what each side lacks.
Imports no training code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bocb.analysis._analyse import Analysis
from bocb.errors import SpecError
from bocb.protocol import CELL, DEFAULT_ALPHA, chosen_seeds, moved_cells, pooled_noise, relative_cells

BOOT_SEED = 0  # the rank intervals' draws: fixed, so a comparison prints the same numbers twice


@dataclass
class Comparison:
    labels: tuple[str, str]
    verdicts: pd.DataFrame  # backbone, verdict_a/b, recommended_a/b, changed, cause
    ranks: pd.DataFrame     # backbone, optimizers, tau, tau_low, tau_high
    cells: pd.DataFrame     # moved_cells of the shared cells, plus top1_a/b and their 95 % seed intervals
    lacks: dict[str, list[str]] = field(default_factory=dict)  # "A: backbones" -> names only B has, ...
    alpha: float = DEFAULT_ALPHA
    n_boot: int = 1000


def compare(a: Analysis, b: Analysis, labels: tuple[str, str], alpha: float = DEFAULT_ALPHA,
            n_boot: int = 1000) -> Comparison:
    """Compare two analyses on the cells they share; refuses two that share no backbone and optimizer."""
    seeds = [_learned_seeds(side) for side in (a, b)]
    shared = seeds[0][CELL].drop_duplicates().merge(seeds[1][CELL].drop_duplicates(), on=CELL)
    if shared.empty:
        raise SpecError("B", f"shares no backbone and optimizer with A: A has {_names(seeds[0])}; B has "
                             f"{_names(seeds[1])}")
    noise = [pooled_noise(s) for s in seeds]
    kept = [s.merge(shared, on=CELL) for s in seeds]
    cells = moved_cells(*(relative_cells(k, n) for k, n in zip(kept, noise)), alpha=alpha)
    cells = _with_intervals(cells)
    verdicts = _verdicts(a.verdicts, b.verdicts, cells)
    return Comparison(labels, verdicts, _ranks(cells, n_boot), cells, _lacks(a, b), alpha, n_boot)


def _learned_seeds(side: Analysis) -> pd.DataFrame:
    """Each cell's chosen configuration, one row per seed, of the backbones that learned (at chance a
    backbone's optimizers have no standing to compare)."""
    learned = side.cells.loc[side.cells["learned"], "backbone"].unique()
    per_seed = chosen_seeds(side.trials, side.cells)[CELL + ["seed", "top1"]].dropna(subset=["top1"])
    return per_seed[per_seed["backbone"].isin(learned)]


def _names(per_seed: pd.DataFrame) -> str:
    return (f"backbones {', '.join(sorted(per_seed['backbone'].unique())) or 'none that learned'} and optimizers "
            f"{', '.join(sorted(per_seed['optimizer'].unique())) or 'none'}")


def _with_intervals(cells: pd.DataFrame) -> pd.DataFrame:
    """Each side's cell mean with the half-width of its 95 % interval from the backbone's seed noise."""
    from scipy import stats

    return cells.assign(**{f"half_{side}": stats.t.ppf(0.975, cells[f"df_{side}"].where(cells[f"df_{side}"] > 0))
                           * _sd_of_mean(cells, side) for side in ("a", "b")})


def _sd_of_mean(cells: pd.DataFrame, side: str) -> pd.Series:
    """The seed noise of one cell's mean: its backbone's pooled sd over √seeds."""
    return cells[f"noise_sd_{side}"] / np.sqrt(cells[f"n_seeds_{side}"])


def _verdicts(first: pd.DataFrame, second: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    both = first.merge(second, on="backbone", suffixes=("_a", "_b"))
    rows = []
    for _, row in both.iterrows():
        changed_verdict = row["verdict_a"] != row["verdict_b"]
        changed_recommendation = _set(row["recommended_a"]) != _set(row["recommended_b"])
        cause = _cause(row, cells[cells["backbone"] == row["backbone"]], changed_verdict, changed_recommendation)
        rows.append({"backbone": row["backbone"], "verdict_a": row["verdict_a"], "verdict_b": row["verdict_b"],
                     "recommended_a": row["recommended_a"], "recommended_b": row["recommended_b"],
                     "changed": changed_verdict or changed_recommendation, "cause": cause})
    return pd.DataFrame(rows, columns=["backbone", "verdict_a", "verdict_b", "recommended_a", "recommended_b",
                                       "changed", "cause"])


def _set(names: object) -> frozenset[str]:
    return frozenset(n.strip() for n in str(names or "").split(",") if n.strip())


def _cause(row: pd.Series, cells: pd.DataFrame, verdict: bool, recommendation: bool) -> str:
    """Why a backbone's answer changed: the cells that moved beyond seed noise (a gap that appeared or
    closed), or none did; and how its largest interaction and its recommendation changed."""
    if not (verdict or recommendation):
        return ""
    parts = []
    moved = cells[cells["moved"]]
    for cell in moved.itertuples():
        kind = "a gap appeared" if abs(cell.relative_b) > abs(cell.relative_a) else "a gap closed"
        parts.append(f"{kind}: {cell.optimizer} {cell.relative_a:+.1f} → {cell.relative_b:+.1f} points against "
                     f"the backbone's median cell (Holm p {cell.p_holm:.2g})")
    if verdict and moved.empty:
        parts.append("no cell moved beyond seed noise: the change is within what the seeds allow")
    if verdict:
        parts.append(f"largest interaction {_interaction(row, 'a')} → {_interaction(row, 'b')}")
    if recommendation:
        parts.append(f"recommended {row['recommended_a'] or '-'} → {row['recommended_b'] or '-'}")
    return "; ".join(parts)


def _interaction(row: pd.Series, side: str) -> str:
    value, p = row[f"interaction_{side}"], row[f"p_coupled_{side}"]
    if not isinstance(value, float) or math.isnan(value):
        return "none"
    return f"{row[f'interaction_optimizer_{side}']} {value:+.1f}" + ("" if math.isnan(p) else f" (Holm p {p:.2g})")


def _ranks(cells: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    """Per backbone: Kendall's τ between the optimizers' mean top-1 on A and on B, and a 95 % interval from a
    parametric bootstrap over seeds (each cell's mean redrawn from its backbone's seed noise over √seeds, so
    a cell with one seed varies as much as its noise says)."""
    from scipy import stats

    rng = np.random.default_rng(BOOT_SEED)
    rows = []
    for backbone, group in cells.groupby("backbone", sort=False):
        if len(group) < 3:
            rows.append((backbone, len(group), math.nan, math.nan, math.nan))
            continue
        tau = stats.kendalltau(group["top1_a"], group["top1_b"]).statistic
        draws = [rng.normal(group[f"top1_{s}"].to_numpy(float), _sd_of_mean(group, s).fillna(0).to_numpy(float),
                            size=(n_boot, len(group))) for s in ("a", "b")]
        low, high = np.percentile(_tau_rows(*draws), [2.5, 97.5])
        rows.append((backbone, len(group), float(tau), float(low), float(high)))
    return pd.DataFrame(rows, columns=["backbone", "optimizers", "tau", "tau_low", "tau_high"])


def _tau_rows(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Kendall's τ of each row pair (continuous draws: no ties, so τ-a = τ-b), vectorised over the rows."""
    upper = np.triu_indices(first.shape[1], k=1)
    agree = np.sign(first[:, :, None] - first[:, None, :]) * np.sign(second[:, :, None] - second[:, None, :])
    return agree[:, upper[0], upper[1]].mean(axis=1)


def _lacks(a: Analysis, b: Analysis) -> dict[str, list[str]]:
    found = {side: {kind: set(result.cells[kind]) for kind in ("backbone", "optimizer")}
             for side, result in (("A", a), ("B", b))}
    return {f"{side} lacks {kind}s": sorted(found[other][kind] - found[side][kind])
            for side, other in (("A", "B"), ("B", "A")) for kind in ("backbone", "optimizer")}
