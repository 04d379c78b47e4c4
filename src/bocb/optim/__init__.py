"""The optimizer zoo: registry, search spaces, weight-decay policy and the handle the engine drives."""
from __future__ import annotations

from typing import Any

from bocb.optim._handle import (
    GaussNewtonBartlett,
    OptimizerHandle,
    build_optimizer,
    check_hyperparameters,
    resolved_hyperparameters,
)
from bocb.optim._param_groups import WEIGHT_DECAY_POLICIES, count_decayed, weight_decay_groups
from bocb.optim._plugin import optimizer_info
from bocb.optim._registry import OPTIMIZERS, OptimizerInfo
from bocb.optim._search import FAMILIES, SearchSpace, grid_centre, log_grid, round_sig, search_space
from bocb.plugins import ENTRY_POINT_GROUPS

# A 'package.module:Class' in a spec, or an entry point of 'bocb.optimizers', found in whatever process asks.
OPTIMIZERS.accept_plugins(ENTRY_POINT_GROUPS["optimizer"], "optimizer class", optimizer_info)


def optimizer_table() -> list[dict[str, Any]]:
    """One row per registered optimizer, for ``bocb list optimizers``."""
    return [
        {
            "name": info.name, "paper_name": info.paper_name, "category": info.category, "source": info.source,
            "class": info.cls,
            "classical_lr": info.defaults["classical"]["lr"],
            "classical_wd": info.defaults["classical"]["weight_decay"],
            "modern_lr": info.defaults["modern"]["lr"],
            "modern_wd": info.defaults["modern"]["weight_decay"],
        }
        for info in OPTIMIZERS
    ]


__all__ = [
    "FAMILIES", "OPTIMIZERS", "WEIGHT_DECAY_POLICIES", "GaussNewtonBartlett", "OptimizerHandle", "OptimizerInfo",
    "SearchSpace", "build_optimizer", "check_hyperparameters", "count_decayed", "grid_centre", "log_grid",
    "optimizer_table", "resolved_hyperparameters", "round_sig", "search_space", "weight_decay_groups",
]
