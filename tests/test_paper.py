"""bocb.paper: the shipped tables, Eq. 1 on them, the printed summary rows, Table 4's ranking."""
from __future__ import annotations

import subprocess
import sys
from io import StringIO

import pandas as pd
import pytest

from bocb.errors import SpecError
from bocb.paper import (
    BACKBONE_NAMES,
    OPTIMIZER_NAMES,
    analyse_table,
    compare,
    kendall_tau,
    load_table,
    paper_text,
    printed_summary,
    table4_ranking,
)

CLI = "import sys, bocb.cli.report; from bocb.cli import main; sys.argv = ['bocb'] + sys.argv[1:]; main()"


def test_tables_ship_with_the_package_and_names_map():
    table1 = load_table(1)
    assert table1.shape == (20, 20) and table1.loc["SGD-M", "DeiT-S"] == 63.20
    assert set(table1.columns) <= set(BACKBONE_NAMES) and set(table1.index) <= set(OPTIMIZER_NAMES)
    assert set(load_table(4).columns) <= set(OPTIMIZER_NAMES)
    assert len(set(BACKBONE_NAMES.values())) == 20 and len(set(OPTIMIZER_NAMES.values())) == 20


def test_eq1_flags_on_table1_as_printed():
    cells, summary = analyse_table(1)
    summary = summary.set_index("backbone")
    assert summary.loc["AlexNet", "n_eq1"] == 11 and summary.loc["DeiT-S", "n_eq1"] == 16
    # AlexNet: IQR 3.86 > 3 -> threshold 67.30 - 3 = 64.30.
    assert summary.loc["AlexNet", "eq1_threshold"] == pytest.approx(64.30)
    alex = cells[cells.backbone == "AlexNet"].set_index("optimizer")
    assert alex.loc["Adan", "eq1"] and not alex.loc["AdaFactor", "top4"]
    assert alex.index[alex["top4"]].tolist() == ["SGD-M", "Adamax", "LAMB", "AdaDelta"]


def test_table1_summary_differs_from_printed_rows():
    _, summary = analyse_table(1)
    alex = summary.set_index("backbone").loc["AlexNet"]
    assert alex["mean"] == pytest.approx(1216.61 / 19)  # sum without the worst (AdaGrad 45.79) / 19
    assert alex["printed_mean"] == 63.67 and "mean +0.36" in alex["differs"]
    assert printed_summary().loc["CNX-T"].tolist() == [78.13, 8.0, 25.0]
    assert (summary["differs"] != "").all()


def test_table4_weighted_ranking_reproduces_published_overall():
    ranking = table4_ranking()
    assert kendall_tau(ranking) >= 0.99
    tied = ranking["score"].round(9).duplicated(keep=False)
    assert (ranking.loc[~tied, "overall"] == ranking.loc[~tied, "published"]).all()
    assert ranking.loc["LAMB", "overall"] == 1 and ranking.loc["LARS", "overall"] == 20


def test_compare_maps_names():
    cells = pd.DataFrame({"backbone": ["resnet50", "resnet50", "mystery"], "optimizer": ["sgd", "adamw", "sgd"],
                          "test_top1": [79.0, 75.0, 1.0]})
    joined = compare(cells, 1).set_index("optimizer")
    assert len(joined) == 2 and joined.loc["sgd", "paper"] == 78.76
    assert joined.loc["adamw", "difference"] == pytest.approx(75.0 - 75.56)


def test_paper_text_formats():
    frame = pd.read_csv(StringIO(paper_text(1, "csv")))
    assert list(frame.columns) == ["backbone", "optimizer", "top1", "flagged", "top4"] and len(frame) == 400
    assert frame.groupby("backbone")["flagged"].sum()["AlexNet"] == 11
    text = paper_text(1)
    assert "AlexNet" in text and "differs from the printed row: mean +0.36" in text
    assert "gamma = 1" in paper_text(2) and "Kendall tau" in paper_text(4)
    with pytest.raises(SpecError, match="--table"):
        paper_text(5)


def test_cli_paper_and_errors():
    ok = subprocess.run([sys.executable, "-c", CLI, "paper", "--table", "1", "--format", "csv"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == "backbone,optimizer,top1,flagged,top4"
    bad = subprocess.run([sys.executable, "-c", CLI, "paper", "--format", "xml"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "--format" in bad.stderr and "valid choices: table, csv, markdown, json" in bad.stderr
