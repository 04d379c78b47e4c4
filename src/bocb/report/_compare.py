"""`bocb compare A B -o DIR`: the comparison page (compare.html, self-contained, in the report's style), its
figure (compare.png/svg) and tables (verdicts.csv, ranks.csv, cells.csv)."""
from __future__ import annotations

import math
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt
import pandas as pd

from bocb.analysis import Comparison
from bocb.colours import optimizer_colours
from bocb.report._figures import Drawn, save

CELL_COLUMNS = {"backbone": "backbone", "optimizer": "optimizer", "top1_a": "A top-1", "half_a": "A ±95 %",
                "top1_b": "B top-1", "half_b": "B ±95 %", "relative_a": "A standing",
                "relative_b": "B standing", "shift": "shift", "p_holm": "Holm p", "moved": "moved"}


def verdict_rows(comparison: Comparison) -> pd.DataFrame:
    a, b = comparison.labels
    return comparison.verdicts.rename(columns={"verdict_a": f"A: {a}", "verdict_b": f"B: {b}",
                                               "recommended_a": "A recommends", "recommended_b": "B recommends"})


def rank_rows(comparison: Comparison) -> pd.DataFrame:
    return comparison.ranks.rename(columns={"tau": "Kendall τ", "tau_low": "95 % low", "tau_high": "95 % high"}) \
        .round(2)


def cell_rows(comparison: Comparison, moved_only: bool = False) -> pd.DataFrame:
    cells = comparison.cells[comparison.cells["moved"]] if moved_only else comparison.cells
    return cells[list(CELL_COLUMNS)].rename(columns=CELL_COLUMNS).round(2)


def figure(comparison: Comparison) -> plt.Figure:
    """One panel per backbone: each optimizer's top-1 on A against B with their 95 % seed intervals; a
    ring marks a cell that moved beyond seed noise; on the dashed line a cell keeps its standing (B is A
    plus the backbone's median shift)."""
    cells = comparison.cells
    backbones = list(dict.fromkeys(cells["backbone"]))
    colours = optimizer_colours(cells["optimizer"])
    cols = min(3, len(backbones))
    rows = math.ceil(len(backbones) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.6, 3.8 * rows), squeeze=False)
    for ax, backbone in zip(axes.flat, backbones):
        _panel(ax, cells[cells["backbone"] == backbone], colours)
        ax.set_title(backbone, fontsize=10)
    for ax in list(axes.flat)[len(backbones):]:
        ax.set_visible(False)
    a, b = comparison.labels
    for ax in axes[:, 0]:
        ax.set_ylabel(f"B: {b} — test top-1 (%)", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel(f"A: {a} — test top-1 (%)", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colour, label=name)
               for name, colour in colours.items()]
    fig.legend(handles=handles, title="optimizer", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.suptitle(f"Each optimizer's top-1 on A ({a}) against B ({b}), 95 % seed intervals", fontsize=10)
    fig.tight_layout()
    return fig


def _panel(ax: plt.Axes, cells: pd.DataFrame, colours: dict) -> None:
    for cell in cells.itertuples():
        ax.errorbar(cell.top1_a, cell.top1_b, xerr=_finite(cell.half_a), yerr=_finite(cell.half_b), fmt="o",
                    color=colours[cell.optimizer], capsize=2, markersize=5, gid=f"optimizer-{cell.optimizer}")
        if cell.moved:
            ax.plot(cell.top1_a, cell.top1_b, "o", markersize=12, markerfacecolor="none", color="black")
    # the same standing on both sides: B = A + the backbone's median change (what moved_cells tests against)
    shift = float((cells["top1_b"] - cells["top1_a"]).median())
    low, high = cells["top1_a"].min() - 2, cells["top1_a"].max() + 2
    ax.plot([low, high], [low + shift, high + shift], linestyle="--", color="grey", linewidth=0.8)
    ax.text(0.02, 0.96, f"median shift {shift:+.1f}", transform=ax.transAxes, fontsize=7, va="top")


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def write_comparison(comparison: Comparison, out_dir: Path, sources: tuple[str, str]) -> Path:
    """Write compare.html (figure embedded), compare.png/svg and the three tables as CSV; returns the page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = Drawn("compare", "Each optimizer's mean test top-1 on A (x) against B (y), with 95 % intervals from "
                  "each backbone's pooled seed noise; a black ring marks a cell that moved beyond seed noise "
                  "(against its backbone's other cells); on the dashed line a cell keeps its standing: B = A plus the "
                  "backbone's median shift.",
                  save(figure(comparison), out_dir / "compare"))
    verdict_rows(comparison).to_csv(out_dir / "verdicts.csv", index=False)
    comparison.ranks.to_csv(out_dir / "ranks.csv", index=False)
    comparison.cells.to_csv(out_dir / "cells.csv", index=False)
    env = jinja2.Environment(loader=jinja2.PackageLoader("bocb.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    page = out_dir / "compare.html"
    page.write_text(env.get_template("compare.html.j2").render(
        labels=comparison.labels, sources=sources, alpha=f"{comparison.alpha:g}", n_boot=comparison.n_boot,
        verdict_table=_html(verdict_rows(comparison)), rank_table=_html(rank_rows(comparison)),
        moved_table=_html(cell_rows(comparison, moved_only=True)), cell_table=_html(cell_rows(comparison)),
        n_cells=len(comparison.cells), n_testable=int(comparison.cells["p_holm"].notna().sum()),
        lacks=comparison.lacks, figure=drawn))
    return page


def _html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, na_rep="", border=0) if len(frame) else ""
