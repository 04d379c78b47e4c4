"""Reports: a self-contained HTML page, Markdown and LaTeX tables, PNG and SVG figures."""
from __future__ import annotations

from bocb.report._compare import cell_rows, rank_rows, write_comparison
from bocb.report._tables import html_matrix, latex_table, markdown_matrix
from bocb.report._write import render_report, render_store_report, write_report

__all__ = [
    "cell_rows", "html_matrix", "latex_table", "markdown_matrix", "rank_rows", "render_report",
    "render_store_report", "write_comparison", "write_report"
]
