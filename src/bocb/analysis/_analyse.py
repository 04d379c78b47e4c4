"""Everything the report shows, computed once from a trial frame (and optionally per-epoch curves)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from bocb.analysis._categories import category_table, optimizer_categories
from bocb.analysis._cells import matrix, missing_cells, select_cells
from bocb.analysis._curves import budget_check, curve_stats, learning_curves
from bocb.analysis._decompose import decompose, interaction_shares, performance_profiles
from bocb.analysis._frame import tidy
from bocb.analysis._ranking import ranking_components, weighted_ranking
from bocb.analysis._robustness import hp_distances
from bocb.analysis._stats import backbone_summary, flag_cells, seed_aware_flags
from bocb.analysis._tuning import tuning_cost
from bocb.analysis._verdict import verdicts
from bocb.protocol import (
    CELL,
    StageKind,
    chosen_seeds,
    late_curves,
    learned_backbones,
    rechecked_seeds,
    searched_trials,
    stage_kind,
    stopped_short,
    with_config,
)

FLAG_COLUMNS = ("eq1", "tukey", "gap", "seed_aware", "undecided")


@dataclass
class Analysis:
    trials: pd.DataFrame
    cells: pd.DataFrame          # select_cells + learned, eq1/tukey/gap/seed_aware/undecided/top4 flags
    matrix: pd.DataFrame         # optimizer x backbone test top-1 (cells without a result empty)
    verdicts: pd.DataFrame       # per backbone: the answer (see analysis._verdict)
    missing: pd.DataFrame        # cells with no result: every trial crashed
    summary: pd.DataFrame        # per backbone: flags, top-4, mean/std/range without the worst
    ranking: pd.DataFrame        # per optimizer: components, score, overall
    hp_backbone: pd.DataFrame    # distances to the per-backbone mode
    hp_optimizer: pd.DataFrame   # distances to the per-optimizer mode
    decomposition: dict | None
    shares: pd.DataFrame | None
    profiles: pd.DataFrame | None
    curves: pd.DataFrame         # per cell: area under the validation curve, epoch to 95 % of its final value
    learning: pd.DataFrame       # per cell and epoch: the chosen configuration's seed-mean top-1 and training loss
    categories: pd.DataFrame     # per backbone and optimizer category: mean rank, failures, spread
    budget: pd.DataFrame
    tuning: pd.DataFrame         # per cell and k: expected best validation (and its test) top-1 of k tries
    tuning_summary: pd.DataFrame  # per cell: grid size, mean, best, configurations needed to get within 1 point
    gamma: float = 3.0
    alpha: float = 0.05
    notes: list[str] = field(default_factory=list)

    @property
    def selected_on(self) -> str:
        return str(self.cells["selected_on"].iloc[0])

    @property
    def crashed(self) -> pd.DataFrame:
        """The crashed trials (no results), with their errors."""
        return self.trials[self.trials["crashed"]]


def analyse(frame: pd.DataFrame, epochs: pd.DataFrame | None = None, gamma: float = 3.0, gap: float = 3.0,
            k: int = 4, alpha: float = 0.05, n_boot: int = 1000, bocb_rule: str = "tukey") -> Analysis:
    """Run every statistic on a trial frame; see docs/analysis.md for each definition.

    Backbones that did not learn (bocb.protocol.did_not_learn) are shown but left out of failure flags,
    ranking, robustness and the interaction decomposition: there is nothing to compare optimizers on.
    """
    trials = tidy(frame)
    cells = select_cells(trials)
    per_seed = chosen_seeds(trials, cells)[CELL + ["seed", "top1"]]
    learned = learned_backbones(per_seed, trials)
    cells["learned"] = cells["backbone"].map(learned).astype(bool)
    judged_seeds = per_seed[per_seed["backbone"].map(learned).astype(bool)]
    cells = _with_flags(cells, judged_seeds, gamma, gap, k, alpha)
    judged = cells[cells["learned"]]
    notes = _notes(cells, learned) + _stopped_notes(trials)
    missing = missing_cells(trials, cells)
    table = matrix(cells, missing=missing)
    judged_table = matrix(judged) if len(judged) else table.iloc[0:0, 0:0]
    decomposition = shares = profiles = None
    if judged_table.shape[0] >= 2 and judged_table.shape[1] >= 2:
        decomposition = decompose(judged_table)
        shares = interaction_shares(judged_seeds, n_boot=n_boot)
        profiles = performance_profiles(judged_table)
    else:
        notes.append("The decomposition and profiles need >= 2 backbones that learned and >= 2 optimizers.")
    has_curves = epochs is not None and not epochs.empty and "trial_key" in trials
    long = judged.rename(columns={"test_top1": "top1"})
    tuning, tuning_summary = (cells[CELL].merge(part, on=CELL) for part in tuning_cost(trials))  # heat-map order
    return Analysis(
        trials=trials, cells=cells, matrix=table,
        verdicts=verdicts(per_seed, trials, learned, gamma, alpha,
                          late_curves(chosen_seeds(trials, cells), epochs) if has_curves else None,
                          rechecked_seeds(trials, cells)),
        missing=missing, summary=backbone_summary(long, gamma, gap, k) if len(long) else pd.DataFrame(),
        ranking=weighted_ranking(ranking_components(judged, bocb_rule, gamma)) if len(judged) else pd.DataFrame(),
        hp_backbone=hp_distances(judged, "backbone"), hp_optimizer=hp_distances(judged, "optimizer"),
        decomposition=decomposition, shares=shares, profiles=profiles,
        curves=curve_stats(trials, epochs, cells) if has_curves else pd.DataFrame(),
        learning=learning_curves(trials, epochs, cells) if has_curves else pd.DataFrame(),
        categories=category_table(judged, optimizer_categories(trials)),
        budget=budget_check(trials, judged, judged["eq1"], "eq1", gamma), tuning=tuning, tuning_summary=tuning_summary,
        gamma=gamma, alpha=alpha, notes=notes)


def _with_flags(cells: pd.DataFrame, judged_seeds: pd.DataFrame, gamma: float, gap: float, k: int,
                alpha: float) -> pd.DataFrame:
    """Every failure rule's flag and top-k on the cells of learned backbones; False elsewhere."""
    columns = [*FLAG_COLUMNS, f"top{k}"]
    judged = cells[cells["learned"]]
    if judged.empty:
        return cells.assign(**{c: False for c in columns})
    flagged = flag_cells(judged.rename(columns={"test_top1": "top1"}), gamma, gap, k)
    seed_flags = seed_aware_flags(judged_seeds, gamma, alpha)
    flags = flagged[CELL + ["eq1", "tukey", "gap", f"top{k}"]].merge(
        seed_flags[CELL + ["seed_aware", "undecided"]], on=CELL)
    out = cells.merge(flags, on=CELL, how="left")
    out[columns] = out[columns].fillna(False).astype(bool)
    return out


def _stopped_notes(trials: pd.DataFrame) -> list[str]:
    """What the search stopped short (recorded, never scored), and what that leaves out of the tuning cost."""
    short = stopped_short(trials)
    if short.empty:
        return []
    kinds = short["stage"].map(lambda name: stage_kind(str(name)))
    searched = with_config(searched_trials(trials))
    total = len(searched.drop_duplicates(CELL + ["config", "seed"]))
    notes = []
    probes = short[kinds == StageKind.PROBE]
    if len(probes):
        notes.append(f"Early stopping: {len(probes)} of {total} searched configurations stopped after "
                     f"{_epochs_text(probes['epochs'])} epochs, their validation top-1 too far below the best of "
                     "their pair (search.early_stop); recorded, never scored.")
    cut = short[kinds == StageKind.RUNG]
    if len(cut):
        notes.append(f"Successive halving: {len(cut)} of {total} searched configurations were cut at a rung "
                     "(recorded, never scored).")
    notes.append("Tuning cost covers the configurations trained to the full budget only.")
    return notes


def _epochs_text(epochs: pd.Series) -> str:
    values = sorted({int(e) for e in epochs})
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def _notes(cells: pd.DataFrame, learned: pd.Series) -> list[str]:
    notes = []
    if cells["selected_on"].iloc[0] != "val_top1":
        notes.append("No validation results: configurations were chosen on test top-1, which overstates "
                     "every number (selection and evaluation on the same split).")
    unlearned = [b for b, ok in learned.items() if not ok]
    if unlearned:
        notes.append(f"Did not learn at this budget (best cell within noise of chance; left out of failure "
                     f"flags, ranking and interaction): {', '.join(unlearned)}.")
    return notes
