"""Layer-wise parameter patterns: per-layer spectral and value metrics of any model's weights.

``layer_table(model_or_state_dict)`` is the entry point; plots live in ``bocb.weights.plots``.
Names load lazily (PEP 562) so that ``bocb.weights.plots``, which reports use, imports no torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_layer_table": "_io", "load_state_dict": "_io",
    "PowerLawFit": "_powerlaw", "fit_power_law": "_powerlaw",
    "COLUMNS": "_columns", "METRIC_COLUMNS": "_columns", "NUMERIC_COLUMNS": "_columns", "TEXT_COLUMNS": "_columns",
    "layer_table": "_table", "spectral_entropy": "_table", "topk_energy": "_table", "weight_entropy": "_table",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bocb.weights' has no attribute '{name}'")
    return getattr(importlib.import_module(f"bocb.weights.{_EXPORTS[name]}"), name)
