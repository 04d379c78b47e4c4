"""The report's tables in LaTeX (booktabs), Markdown and HTML: the heat map (top-4 bold, Eq.-1 failures grey) and
the tuning cost."""
from __future__ import annotations

import html

import matplotlib
import numpy as np
import pandas as pd

from bocb.analysis import Analysis
from bocb.report._contrast import text_colour
from bocb.report._figures import heatmap_colours

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: object) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def _flags(result: Analysis, column: str) -> pd.DataFrame:
    return result.cells.pivot(index="optimizer", columns="backbone", values=column).reindex_like(result.matrix).eq(True)


def _styled(value: float, top: bool, failed: bool, bold: str, grey: str) -> str:
    if np.isnan(value):
        return "--"
    text = f"{value:.2f}"
    text = bold.format(text) if top else text
    return grey.format(text) if failed else text


def _booktabs(header: list[str], rows: list[list[str]]) -> str:
    """A booktabs tabular: the first column left-aligned, the others right-aligned; cells already LaTeX."""
    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule", " & ".join(header) + r" \\",
             r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def latex_table(result: Analysis) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs,xcolor}): optimizers x backbones."""
    top, failed = _flags(result, "top4"), _flags(result, "eq1")
    rows = [[latex_escape(optimizer)] + [_styled(row[b], top.loc[optimizer, b], failed.loc[optimizer, b],
                                                 r"\textbf{{{}}}", r"\textcolor{{gray}}{{{}}}")
                                         for b in result.matrix.columns]
            for optimizer, row in result.matrix.iterrows()]
    return _booktabs(["Optimizer"] + [latex_escape(c) for c in result.matrix.columns], rows)


def tuning_table(result: Analysis) -> pd.DataFrame:
    """Per cell, 'k/n': the configurations needed to get within NEAR_BEST points of the best of the n searched
    (analysis.tuning_cost); optimizers x backbones in the heat map's order, '-' where a cell has no result."""
    summary = result.tuning_summary
    text = summary.assign(needed=summary["configs_needed"].astype(str) + "/" + summary["n_configs"].astype(str))
    table = text.pivot(index="optimizer", columns="backbone", values="needed")
    # object first: a table with no result at all is float NaN, and pandas will refuse "-" in a float column
    return table.reindex(index=result.matrix.index, columns=result.matrix.columns).astype(object).fillna("-")


def latex_tuning(result: Analysis) -> str:
    """:func:`tuning_table` as a booktabs tabular (needs \\usepackage{booktabs})."""
    table = tuning_table(result)
    rows = [[latex_escape(optimizer)] + [latex_escape(v) if v != "-" else "--" for v in row]
            for optimizer, row in table.iterrows()]
    return _booktabs(["Optimizer"] + [latex_escape(c) for c in table.columns], rows)


def markdown_matrix(result: Analysis) -> str:
    """Markdown heat-map table: top-4 **bold**, Eq.-1 failures in _italics_ (Markdown has no grey), '†' where a
    seed of the chosen configuration diverged."""
    top, failed, diverged = _flags(result, "top4"), _flags(result, "eq1"), _diverged(result)
    header = ["optimizer"] + [str(c) for c in result.matrix.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for optimizer, row in result.matrix.iterrows():
        cells = [_styled(row[b], top.loc[optimizer, b], failed.loc[optimizer, b], "**{}**", "_{}_")
                 + ("†" if diverged.loc[optimizer, b] else "") for b in result.matrix.columns]
        lines.append("| " + " | ".join([str(optimizer)] + cells) + " |")
    return "\n".join(lines) + "\n"


def _diverged(result: Analysis) -> pd.DataFrame:
    return result.cells.pivot(index="optimizer", columns="backbone", values="n_diverged") \
        .reindex_like(result.matrix).fillna(0).gt(0)


def html_matrix(result: Analysis) -> str:
    """The heat map as an HTML table: each cell's background the figure's colour (viridis over the matrix
    range), its text black or white by WCAG contrast, top-4 bold, Eq.-1 failures italic in a dashed box."""
    cmap, norm = heatmap_colours(result)
    top, failed, diverged = _flags(result, "top4"), _flags(result, "eq1"), _diverged(result)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in result.matrix.columns)
    rows = []
    for optimizer, row in result.matrix.iterrows():
        tds = []
        for b in result.matrix.columns:
            value = row[b]
            if np.isnan(value):
                tds.append('<td class="missing">n/a</td>')
                continue
            background = matplotlib.colors.to_hex(cmap(norm(value)))
            classes = " ".join(c for c, on in (("top4", top.loc[optimizer, b]),
                                               ("failure", failed.loc[optimizer, b])) if on)
            mark = "†" if diverged.loc[optimizer, b] else ""
            tds.append(f'<td class="{classes}" style="background:{background};color:{text_colour(background)}">'
                       f"{value:.2f}{mark}</td>")
        rows.append(f"<tr><th>{html.escape(str(optimizer))}</th>{''.join(tds)}</tr>")
    return (f'<table id="heatmap-table" class="heatmap"><thead><tr><th>optimizer</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def top_and_failed(result: Analysis) -> str:
    """Why a cell can be top-4 and an Eq.-1 failure at once, naming the cells where it happens ('' if none)."""
    both = result.cells[result.cells["top4"] & result.cells["eq1"]]
    if both.empty:
        return ""
    names = ", ".join(f"{r.backbone} + {r.optimizer}" for r in both.itertuples())
    return (f"{len(both)} cell(s) are both top-4 and Eq.-1 failures ({names}): top-4 counts places (the 4 best of "
            "the backbone's optimizers), while Eq. 1 flags every result more than min(IQR, γ) points below the "
            "backbone's best, however it ranks. With few optimizers, or one well ahead of the rest, the top 4 "
            "include results below that line.")
