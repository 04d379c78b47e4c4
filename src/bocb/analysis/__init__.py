"""Analysis of a tidy results frame: cell selection, failure rules, summaries, robustness, ranking.

Imports no training code: it runs on a CSV on a machine without torch models.
"""
from __future__ import annotations

from bocb.analysis._cells import FORMATS, format_matrix, markdown_table, matrix, select_cells
from bocb.analysis._frame import read_results, selection_column, tidy

__all__ = ["FORMATS", "format_matrix", "markdown_table", "matrix", "read_results", "select_cells",
           "selection_column", "tidy"]
