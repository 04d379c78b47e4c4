"""bocb.analysis on small hand-made frames with hand-computed answers."""
from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from bocb.analysis import format_matrix, matrix, select_cells, tidy
from bocb.errors import BocbError, DataError, SpecError


def _trial(backbone, optimizer, seed, lr, wd, val, test, state="done", **extra):
    return dict(backbone=backbone, optimizer=optimizer, seed=seed, lr=lr, weight_decay=wd, val_top1=val,
                test_top1=test, state=state, lr_grid="0.01;0.1;1", wd_grid="0;0.05;0.1", **extra)


@pytest.fixture
def grid_frame() -> pd.DataFrame:
    """r50/sgd: lr 0.1 wins on val (70, 72 -> 71) although lr 1 has the better test (90)."""
    return pd.DataFrame([
        _trial("r50", "sgd", 0, 0.1, 0.05, 70, 60),
        _trial("r50", "sgd", 1, 0.1, 0.05, 72, 64),
        _trial("r50", "sgd", 0, 1.0, 0.05, 69, 90),
        _trial("r50", "sgd", 1, 1.0, 0.05, 70, 90),
        _trial("r50", "adamw", 0, 0.01, 0.1, 50, 51),
        _trial("r50", "adamw", 1, 0.01, 0.1, 52, 53),
        _trial("r50", "adamw", 0, 0.1, 0.0, 80, 10, state="diverged"),
        _trial("r50", "adamw", 1, 0.1, 0.0, 80, 79),
        _trial("vit", "sgd", 0, 0.1, 0.0, 40, 41),
        _trial("vit", "adamw", 0, 0.01, 0.05, 45, 44),
    ])


def test_select_cells_chooses_on_validation_only(grid_frame):
    cells = select_cells(grid_frame).set_index(["backbone", "optimizer"])
    sgd = cells.loc[("r50", "sgd")]
    assert sgd.config == "lr=0.1,wd=0.05"
    assert sgd.val_top1 == 71 and sgd.test_top1 == 62
    assert sgd.test_top1_std == pytest.approx(np.std([60, 64], ddof=1))
    assert sgd.n_seeds == 2 and sgd.selected_on == "val_top1"
    assert (sgd.lr_edge, sgd.wd_edge, sgd.edge) == ("", "", False)


def test_failed_trial_scores_chance_and_loses_selection(grid_frame):
    cells = select_cells(grid_frame).set_index(["backbone", "optimizer"])
    adamw = cells.loc[("r50", "adamw")]
    # lr=0.1 config: diverged seed scores 0 -> mean val (0 + 80) / 2 = 40 < 51.
    assert adamw.config == "lr=0.01,wd=0.1"
    assert adamw.test_top1 == 52
    assert (adamw.lr_edge, adamw.wd_edge, adamw.edge) == ("low", "high", True)


def test_chance_level_from_num_classes(grid_frame):
    trials = tidy(grid_frame.assign(num_classes=100))
    assert trials.loc[trials.state == "diverged", ["val_top1", "test_top1"]].to_numpy().tolist() == [[1.0, 1.0]]


def test_unfinished_trials_are_not_results(grid_frame):
    frame = pd.concat([grid_frame, pd.DataFrame([_trial("r50", "sgd", 0, 0.01, 0.0, 99, 99, state="running")])])
    assert select_cells(frame).set_index(["backbone", "optimizer"]).loc[("r50", "sgd")].config == "lr=0.1,wd=0.05"


def test_edge_needs_three_grid_values():
    frame = pd.DataFrame([_trial("a", "o", 0, 0.1, 0.0, 1, 1) | {"lr_grid": "0.1;1", "wd_grid": "0;1"}])
    cells = select_cells(frame)
    assert cells.loc[0, "lr_edge"] == "" and not cells.loc[0, "edge"]


def test_grid_inferred_from_trials_when_absent():
    frame = pd.DataFrame([dict(backbone="a", optimizer="o", seed=0, lr=lr, val_top1=lr, top1=1.0)
                          for lr in (1, 2, 3)])
    cells = select_cells(frame)
    assert cells.loc[0, "lr"] == 3 and cells.loc[0, "lr_edge"] == "high"


def test_user_csv_with_top1_only_selects_on_test(tmp_path):
    frame = pd.DataFrame({"backbone": ["a", "a", "b"], "optimizer": ["x", "y", "x"], "seed": [0, 0, 0],
                          "top1": [1.0, 2.0, 3.0]})
    cells = select_cells(frame)
    assert set(cells.selected_on) == {"test_top1"}
    assert cells.test_top1.tolist() == [1.0, 2.0, 3.0]
    assert set(cells.config) == {"default"}


def test_budget_rows_do_not_compete(grid_frame):
    rerun = _trial("vit", "sgd", 0, 0.1, 0.0, 99, 99, budget=4)
    frame = pd.concat([grid_frame.assign(budget=1), pd.DataFrame([rerun])])
    cells = select_cells(frame).set_index(["backbone", "optimizer"])
    assert cells.loc[("vit", "sgd")].test_top1 == 41


def test_halving_rungs_do_not_compete():
    frame = pd.DataFrame([_trial("a", "o", 0, 0.1, 0.0, 90, 90, epochs=3),
                          _trial("a", "o", 0, 1.0, 0.0, 60, 61, epochs=9)])
    assert select_cells(frame).loc[0, "test_top1"] == 61


def test_matrix_orders_as_input_and_formats(grid_frame):
    table = matrix(select_cells(grid_frame))
    assert list(table.columns) == ["r50", "vit"] and list(table.index) == ["sgd", "adamw"]
    assert table.loc["adamw", "vit"] == 44
    assert format_matrix(table, "csv").splitlines() == ["optimizer,r50,vit", "sgd,62,41", "adamw,52,44"]
    assert json.loads(format_matrix(table, "json"))["sgd"] == {"r50": 62.0, "vit": 41.0}
    markdown = format_matrix(table, "markdown").splitlines()
    assert markdown[0] == "| optimizer | r50 | vit |" and markdown[2] == "| sgd | 62.00 | 41.00 |"
    assert "62.00" in format_matrix(table, "table")


def test_bad_inputs_are_one_line_errors(grid_frame):
    with pytest.raises(SpecError, match="--format.*valid choices: table, csv, markdown, json"):
        format_matrix(matrix(select_cells(grid_frame)), "xml")
    with pytest.raises(DataError, match="missing column 'optimizer'"):
        select_cells(pd.DataFrame({"backbone": ["a"], "top1": [1.0]}))
    with pytest.raises(DataError, match="'test_top1' must be numeric; found 'abc'"):
        select_cells(pd.DataFrame({"backbone": ["a"], "optimizer": ["o"], "top1": ["abc"]}))
    with pytest.raises(BocbError, match="unknown column 'nope'"):
        matrix(select_cells(grid_frame), value="nope")


def test_analysis_imports_no_training_code():
    import subprocess

    code = ("import sys, bocb.analysis, bocb.report, bocb.paper; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'timm') or "
            "m.startswith(('bocb.engine', 'bocb.backbones', 'bocb.optim', 'bocb.data'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
