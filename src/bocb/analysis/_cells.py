"""One result per (backbone, optimizer): the configuration chosen on validation, and the matrix of them."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from bocb.analysis._frame import parse_grid, tidy
from bocb.errors import SpecError, check_choice
from bocb.protocol import CELL, choose_configs, chosen_seeds, grid_edge, main_budget

FORMATS = ("table", "csv", "markdown", "json")


def grid_position(value: float, grid: list[float]) -> float:
    """Index of ``value`` in the sorted searched ``grid`` (NaN when it is not on the grid)."""
    for i, point in enumerate(grid):
        if math.isclose(value, point, rel_tol=1e-9, abs_tol=1e-15):
            return float(i)
    return math.nan


def cell_grid(trials: pd.DataFrame, column: str) -> list[float]:
    """The searched values of ``column`` ('lr' or 'weight_decay') in one cell's trials.

    The stored grid string when there is one, else the distinct values tried.
    """
    grid_column = "lr_grid" if column == "lr" else "wd_grid"
    stored = [g for g in trials[grid_column] if g]
    if stored:
        return parse_grid(stored[0])
    return sorted(trials[column].dropna().unique().tolist())


def select_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (backbone, optimizer) with a result: the configuration chosen by the protocol's rule
    (:func:`bocb.protocol.choose_configs`: validation top-1 on the seeds every configuration shares; test
    never chooses unless the frame has no validation results, which ``selected_on`` then says).

    Columns: backbone, optimizer, config, lr, weight_decay, val_top1, test_top1 (means over the chosen
    configuration's seeds), test_top1_std (sample std), n_seeds, n_diverged, time_s, peak_mem_mb,
    selected_on, and per hyper-parameter (lr, wd) the chosen value's index in its searched grid (lr_pos,
    wd_pos), the grid size (lr_points, wd_points) and the edge label (lr_edge, wd_edge: 'low'/'high'/'');
    ``edge`` is True when either is at an edge. Cells whose every trial crashed have no row
    (:func:`missing_cells` lists them).
    """
    trials = tidy(frame)
    chosen = choose_configs(trials)
    if chosen.empty:
        crashed = int(trials["crashed"].sum())
        raise SpecError("results", "no finished main-budget trials to select from"
                        + (f" ({crashed} crashed: a crash is no result)" if crashed else ""))
    per_seed = chosen_seeds(trials, chosen)
    cells = per_seed.groupby(CELL + ["config"], sort=False).agg(
        lr=("lr", "first"), weight_decay=("weight_decay", "first"), val_top1=("val_top1", "mean"),
        test_top1=("test_top1", "mean"), test_top1_std=("test_top1", "std"), n_seeds=("seed", "nunique"),
        n_diverged=("diverged", "sum"), time_s=("time_s", "mean"), peak_mem_mb=("peak_mem_mb", "mean"),
    ).reset_index().merge(chosen[CELL + ["selected_on"]], on=CELL)
    positions = []
    for (backbone, optimizer), group in main_budget(trials).groupby(CELL, sort=False):
        picked = cells[(cells.backbone == backbone) & (cells.optimizer == optimizer)]
        if picked.empty:
            continue
        row = {"backbone": backbone, "optimizer": optimizer}
        for column, short in (("lr", "lr"), ("weight_decay", "wd")):
            grid = cell_grid(group, column)
            value = picked.iloc[0][column]
            row |= {f"{short}_pos": grid_position(value, grid), f"{short}_points": len(grid),
                    f"{short}_edge": grid_edge(value, grid)}
        positions.append(row)
    cells = cells.merge(pd.DataFrame(positions), on=CELL)
    cells["edge"] = (cells["lr_edge"] != "") | (cells["wd_edge"] != "")
    return _in_order(cells, trials).reset_index(drop=True)


def missing_cells(trials: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Cells of a tidy frame that have no row in ``cells`` (select_cells: every trial crashed): backbone,
    optimizer, crashed (how many trials) and error (the first one's message)."""
    scored_cells = set(map(tuple, cells[CELL].to_numpy()))
    crashed = trials[trials["crashed"]]
    if "error" not in crashed:
        crashed = crashed.assign(error="")
    rows = [{"backbone": b, "optimizer": o, "crashed": len(g), "error": str(g["error"].fillna("").iloc[0])}
            for (b, o), g in crashed.groupby(CELL, sort=False) if (b, o) not in scored_cells]
    return pd.DataFrame(rows, columns=CELL + ["crashed", "error"])


def _in_order(cells: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Backbones and optimizers in the order they first appear in the input."""
    b_order = {b: i for i, b in enumerate(pd.unique(trials["backbone"]))}
    o_order = {o: i for i, o in enumerate(pd.unique(trials["optimizer"]))}
    key = cells["backbone"].map(b_order) * len(o_order) + cells["optimizer"].map(o_order)
    return cells.iloc[np.argsort(key.to_numpy(), kind="stable")]


def matrix(cells: pd.DataFrame, value: str = "test_top1", missing: pd.DataFrame | None = None) -> pd.DataFrame:
    """Optimizers as rows, backbones as columns, in the order they appear in ``cells``; the cells of
    ``missing`` (no result: every trial crashed) are shown empty, never as a number."""
    if value not in cells:
        raise SpecError("value", f"unknown column '{value}'; valid choices: {', '.join(map(str, cells.columns))}")
    table = cells.pivot(index="optimizer", columns="backbone", values=value)
    extra = missing if missing is not None else pd.DataFrame(columns=CELL)
    table = table.reindex(index=pd.unique(pd.concat([cells["optimizer"], extra["optimizer"]])),
                          columns=pd.unique(pd.concat([cells["backbone"], extra["backbone"]])))
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
