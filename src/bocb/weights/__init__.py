"""Layer-wise parameter patterns: per-layer spectral and value metrics of any model's weights.

``layer_table(model_or_state_dict)`` is the entry point; plots live in ``bocb.weights.plots``
(imported separately so that this package needs no plotting stack).
"""
from __future__ import annotations

from bocb.weights._io import load_layer_table, load_state_dict
from bocb.weights._powerlaw import PowerLawFit, fit_power_law
from bocb.weights._table import (
    COLUMNS,
    METRIC_COLUMNS,
    NUMERIC_COLUMNS,
    layer_table,
    spectral_entropy,
    topk_energy,
    weight_entropy,
)

__all__ = [
    "COLUMNS",
    "METRIC_COLUMNS",
    "NUMERIC_COLUMNS",
    "PowerLawFit",
    "fit_power_law",
    "layer_table",
    "load_layer_table",
    "load_state_dict",
    "spectral_entropy",
    "topk_energy",
    "weight_entropy",
]
