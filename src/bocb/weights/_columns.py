"""The layer table's columns, apart from the code that computes them: a bundle's import checks stored
tables against them without importing torch."""
from __future__ import annotations

COLUMNS = (
    "layer", "name", "type", "shape", "alpha", "xmin", "D", "num_eigs", "spectral_norm",
    "l2_norm", "weight_entropy", "spectral_entropy", "topk_energy",
)
TEXT_COLUMNS = ("name", "type", "shape")
NUMERIC_COLUMNS = tuple(c for c in COLUMNS if c not in TEXT_COLUMNS)
METRIC_COLUMNS = tuple(c for c in NUMERIC_COLUMNS if c != "layer")
