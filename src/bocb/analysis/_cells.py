"""One result per (backbone, optimizer): the configuration chosen on validation, and the matrix of them."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from bocb.analysis._frame import check_choice, main_budget, parse_grid, selection_column, tidy
from bocb.errors import SpecError

FORMATS = ("table", "csv", "markdown", "json")
KEYS = ["backbone", "optimizer"]


def grid_position(value: float, grid: list[float]) -> float:
    """Index of ``value`` in the sorted searched ``grid`` (NaN when it is not on the grid)."""
    for i, point in enumerate(grid):
        if math.isclose(value, point, rel_tol=1e-9, abs_tol=1e-15):
            return float(i)
    return math.nan


def edge_label(position: float, points: int) -> str:
    """'low'/'high' at the first/last value of a grid of >= 3 values, else ''.

    With fewer than 3 searched values every value is an edge, which tells nothing.
    """
    if points < 3 or math.isnan(position):
        return ""
    return "low" if position == 0 else "high" if position == points - 1 else ""


def cell_grid(trials: pd.DataFrame, column: str) -> list[float]:
    """The searched values of ``column`` ('lr' or 'weight_decay') in one cell's trials.

    The stored grid string when there is one, else the distinct values tried.
    """
    grid_column = "lr_grid" if column == "lr" else "wd_grid"
    stored = [g for g in trials[grid_column] if g]
    if stored:
        return parse_grid(stored[0])
    return sorted(trials[column].dropna().unique().tolist())


def config_means(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean/std over seeds per (backbone, optimizer, config) of the main-budget trials."""
    selected_on = selection_column(trials)
    grouped = main_budget(trials).groupby(KEYS + ["config"], sort=False)
    out = grouped.agg(
        lr=("lr", "first"), weight_decay=("weight_decay", "first"),
        select_top1=(selected_on, "mean"), val_top1=("val_top1", "mean"),
        test_top1=("test_top1", "mean"), test_top1_std=("test_top1", "std"),
        n_seeds=("seed", "nunique"), n_failed=("failed", "sum"),
        time_s=("time_s", "mean"), peak_mem_mb=("peak_mem_mb", "mean"),
    ).reset_index()
    out["selected_on"] = selected_on
    return out


def select_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (backbone, optimizer): the configuration with the best mean selection top-1.

    Selection uses ``val_top1`` (test never chooses) or, when the frame has no validation results,
    ``test_top1``; the ``selected_on`` column says which. Columns: backbone, optimizer, config, lr,
    weight_decay, val_top1, test_top1 (mean over seeds), test_top1_std (sample std), n_seeds,
    n_failed, time_s, peak_mem_mb, selected_on, and per hyper-parameter (lr, wd) the chosen value's
    index in its searched grid (lr_pos, wd_pos), the grid size (lr_points, wd_points) and the
    edge label (lr_edge, wd_edge: 'low'/'high'/''); ``edge`` is True when either is at an edge.
    """
    trials = tidy(frame)
    means = config_means(trials)
    if means.empty:
        raise SpecError("results", "no finished main-budget trials to select from")
    # Best mean; among equals the one with fewer failed seeds, then the config name (deterministic).
    means["_neg_failed"] = -means["n_failed"]
    ranked = means.sort_values(["select_top1", "_neg_failed", "config"], ascending=[False, False, True],
                               kind="stable", na_position="last")
    cells = ranked.groupby(KEYS, sort=False).head(1).drop(columns=["_neg_failed", "select_top1"])
    positions = []
    for (backbone, optimizer), group in main_budget(trials).groupby(KEYS, sort=False):
        chosen = cells[(cells.backbone == backbone) & (cells.optimizer == optimizer)].iloc[0]
        row = {"backbone": backbone, "optimizer": optimizer}
        for column, short in (("lr", "lr"), ("weight_decay", "wd")):
            grid = cell_grid(group, column)
            position = grid_position(chosen[column], grid)
            row |= {f"{short}_pos": position, f"{short}_points": len(grid),
                    f"{short}_edge": edge_label(position, len(grid))}
        positions.append(row)
    cells = cells.merge(pd.DataFrame(positions), on=KEYS)
    cells["edge"] = (cells["lr_edge"] != "") | (cells["wd_edge"] != "")
    return _in_order(cells, trials).reset_index(drop=True)


def _in_order(cells: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Backbones and optimizers in the order they first appear in the input."""
    b_order = {b: i for i, b in enumerate(pd.unique(trials["backbone"]))}
    o_order = {o: i for i, o in enumerate(pd.unique(trials["optimizer"]))}
    key = cells["backbone"].map(b_order) * len(o_order) + cells["optimizer"].map(o_order)
    return cells.iloc[np.argsort(key.to_numpy(), kind="stable")]


def matrix(cells: pd.DataFrame, value: str = "test_top1") -> pd.DataFrame:
    """Optimizers as rows, backbones as columns, in the order they appear in ``cells``."""
    if value not in cells:
        raise SpecError("value", f"unknown column '{value}'; valid choices: {', '.join(map(str, cells.columns))}")
    table = cells.pivot(index="optimizer", columns="backbone", values=value)
    table = table.reindex(index=pd.unique(cells["optimizer"]), columns=pd.unique(cells["backbone"]))
    table.index.name, table.columns.name = "optimizer", None
    return table


def _cell_text(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs tabulate, which we do not depend on)."""
    shown = frame.reset_index() if index else frame
    header = [str(c) for c in shown.columns]
    rows = [[_cell_text(v) for v in row] for row in shown.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_matrix(table: pd.DataFrame, fmt: str = "table") -> str:
    """The matrix as aligned text, CSV, Markdown or JSON ({row: {column: value}}; NaN -> null)."""
    check_choice("--format", fmt, FORMATS)
    if fmt == "table":
        return table.to_string(float_format=lambda v: f"{v:.2f}", na_rep="-") + "\n"
    if fmt == "csv":
        return table.to_csv(float_format="%.6g")
    if fmt == "markdown":
        return markdown_table(table)
    records = {str(row): {str(col): (None if pd.isna(v) else v) for col, v in values.items()}
               for row, values in table.to_dict(orient="index").items()}
    return json.dumps(records, indent=2, default=_json_default) + "\n"


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
