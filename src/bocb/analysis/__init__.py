"""Analysis of a tidy results frame: cell selection, failure rules, summaries, robustness, ranking.

Imports no training code: it runs on a CSV on a machine without torch models.
"""
from __future__ import annotations

from bocb.analysis._analyse import Analysis, analyse
from bocb.analysis._categories import category_table, optimizer_categories
from bocb.analysis._cells import FORMATS, format_matrix, markdown_table, matrix, missing_cells, select_cells
from bocb.analysis._compare import Comparison, compare
from bocb.analysis._curves import budget_check, curve_stats, curve_summary, learning_curves
from bocb.analysis._decompose import decompose, interaction_shares, performance_profiles
from bocb.analysis._frame import read_results, tidy
from bocb.analysis._ranking import WEIGHTS, ranking_components, weighted_ranking
from bocb.analysis._robustness import hp_distances, hp_robustness, one_hot_codes
from bocb.analysis._stats import (
    RULES,
    backbone_summary,
    failure_flags,
    failure_threshold,
    flag_cells,
    seed_aware_flags,
    summary_without_worst,
    top_k,
)
from bocb.analysis._store import StoreAnalysis, analyse_store
from bocb.analysis._transfer import (
    TransferAnalysis,
    format_transfer,
    layers_by_pre_optimizer,
    transfer_analysis,
)
from bocb.analysis._tuning import NEAR_BEST, configs_needed, expected_best, tuning_cost
from bocb.analysis._verdict import verdicts

__all__ = [
    "Analysis", "Comparison", "FORMATS", "NEAR_BEST", "RULES", "StoreAnalysis", "TransferAnalysis", "WEIGHTS",
    "analyse", "analyse_store", "backbone_summary", "budget_check", "category_table", "compare",
    "configs_needed", "curve_stats", "curve_summary", "decompose", "expected_best", "failure_flags",
    "failure_threshold", "flag_cells", "format_matrix", "format_transfer", "hp_distances", "hp_robustness",
    "interaction_shares", "layers_by_pre_optimizer", "learning_curves", "markdown_table", "matrix",
    "missing_cells", "one_hot_codes", "optimizer_categories", "performance_profiles", "ranking_components",
    "read_results", "seed_aware_flags", "select_cells", "summary_without_worst", "tidy", "top_k",
    "transfer_analysis", "tuning_cost", "verdicts", "weighted_ranking"
]
