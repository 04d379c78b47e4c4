"""Everything the report shows, computed once from a trial frame (and optionally per-epoch curves)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from bocb.analysis._cells import matrix, select_cells
from bocb.analysis._curves import budget_check, chosen_trials, curve_stats
from bocb.analysis._decompose import decompose, interaction_shares, performance_profiles
from bocb.analysis._frame import tidy
from bocb.analysis._ranking import ranking_components, weighted_ranking
from bocb.analysis._robustness import hp_distances
from bocb.analysis._stats import backbone_summary, flag_cells, seed_aware_flags


@dataclass
class Analysis:
    trials: pd.DataFrame
    cells: pd.DataFrame          # select_cells + eq1/tukey/gap/seed_aware/top4 flags
    matrix: pd.DataFrame         # optimizer x backbone test top-1
    summary: pd.DataFrame        # per backbone: flags, top-4, mean/std/range without the worst
    ranking: pd.DataFrame        # per optimizer: components, score, overall
    hp_backbone: pd.DataFrame    # distances to the per-backbone mode
    hp_optimizer: pd.DataFrame   # distances to the per-optimizer mode
    decomposition: dict | None
    shares: pd.DataFrame | None
    profiles: pd.DataFrame | None
    curves: pd.DataFrame
    budget: pd.DataFrame
    gamma: float = 3.0
    notes: list[str] = field(default_factory=list)

    @property
    def selected_on(self) -> str:
        return str(self.cells["selected_on"].iloc[0])


def analyse(frame: pd.DataFrame, epochs: pd.DataFrame | None = None, gamma: float = 3.0, gap: float = 3.0,
            k: int = 4, alpha: float = 0.05, n_boot: int = 1000, bocb_rule: str = "tukey") -> Analysis:
    """Run every statistic on a trial frame; see docs/analysis.md for each definition."""
    trials = tidy(frame)
    cells = select_cells(trials)
    long = cells.rename(columns={"test_top1": "top1"})
    cells = flag_cells(long, gamma, gap, k).rename(columns={"top1": "test_top1"})
    per_seed = chosen_trials(trials, cells)[["backbone", "optimizer", "seed", "test_top1"]].rename(
        columns={"test_top1": "top1"})
    seed_flags = seed_aware_flags(per_seed, gamma, alpha)
    cells = cells.merge(seed_flags[["backbone", "optimizer", "seed_aware"]], on=["backbone", "optimizer"])
    notes = []
    if cells["selected_on"].iloc[0] != "val_top1":
        notes.append("No validation results: configurations were chosen on test top-1, which overstates "
                     "every number (selection and evaluation on the same split).")
    table = matrix(cells)
    decomposition = shares = profiles = None
    if table.shape[0] >= 2 and table.shape[1] >= 2:
        decomposition = decompose(table)
        shares = interaction_shares(per_seed, n_boot=n_boot)
        profiles = performance_profiles(table)
    else:
        notes.append("The decomposition and profiles need >= 2 backbones and >= 2 optimizers.")
    has_curves = epochs is not None and not epochs.empty and "trial_key" in trials
    return Analysis(
        trials=trials, cells=cells, matrix=table, summary=backbone_summary(long, gamma, gap, k),
        ranking=weighted_ranking(ranking_components(cells, bocb_rule, gamma)),
        hp_backbone=hp_distances(cells, "backbone"), hp_optimizer=hp_distances(cells, "optimizer"),
        decomposition=decomposition, shares=shares, profiles=profiles,
        curves=curve_stats(trials, epochs, cells) if has_curves else pd.DataFrame(),
        budget=budget_check(trials, cells, cells["eq1"], "eq1", gamma), gamma=gamma, notes=notes)
