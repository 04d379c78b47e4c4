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
    ComparePaper,
    analyse_table,
    compare,
    kendall_tau,
    load_table,
    paper_comparison,
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


# Our side of a comparison: resnet50 and deit_s (in both tables), vgg13_bn (Table 1 only), a backbone and an
# optimizer of our own (in neither); each backbone's model size as given.
PAIRS = [(b, o) for b in ("resnet50", "deit_s", "vgg13_bn", "mine") for o in ("sgd", "adamw", "myopt")]


def _ours(dataset: str | None, sizes: dict[str, str | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, cells) as bocb report has them: one trial per pair with the dataset and size columns of
    results.csv (None: the column left out)."""
    trials = pd.DataFrame([{"backbone": b, "optimizer": o, "test_top1": 70.0} for b, o in PAIRS])
    if dataset is not None:
        trials["dataset"] = dataset
    if set(sizes.values()) != {None}:
        trials["size"] = trials["backbone"].map(sizes)
    return trials, trials[["backbone", "optimizer", "test_top1"]]


PAPER_SIZE = {"resnet50": "paper", "deit_s": "paper", "vgg13_bn": "paper", "mine": "tiny"}


def test_a_like_for_like_comparison_says_what_it_compares_and_what_it_leaves_out():
    # 'mine' is tiny, but it is not in the table: only the compared backbones' sizes matter
    comparison = paper_comparison(*_ours("cifar100", PAPER_SIZE), ComparePaper())
    assert comparison.comparable and comparison.table == 1
    assert comparison.title == "Beside the paper (Table 1: CIFAR-100 top-1 (%)): ours on cifar100, paper-size models"
    assert comparison.sentences == [
        "Test top-1 of our selected configurations (cifar100, paper-size models) beside Table 1's "
        "(CIFAR-100, paper-size models).", "Left out, not in Table 1: backbones mine; optimizers myopt."]
    labelled = comparison.labelled()
    assert list(labelled.columns) == ["backbone", "optimizer", "paper's column", "ours (cifar100, paper-size models)",
                                      "paper (CIFAR-100, paper-size models)", "difference"]
    assert len(labelled) == 6 and labelled.iloc[0]["paper (CIFAR-100, paper-size models)"] == 78.76  # R-50 / SGD-M


def test_the_table_is_the_one_of_the_datasets_setting():
    # an alias of the registry ('in1k') is ImageNet-1K itself: Table 2, which has R-50 and DeiT-S only
    comparison = paper_comparison(*_ours("in1k", PAPER_SIZE), ComparePaper())
    assert comparison.comparable and comparison.table == 2 and comparison.ours == "imagenet, paper-size models"
    assert set(comparison.pairs["paper_backbone"]) == {"R-50 (RSB A2 recipe 300ep)", "DeiT-S (DeiT recipe 300ep)"}
    assert comparison.left_out == "Left out, not in Table 2: backbones vgg13_bn, mine; optimizers myopt."
    # digits only follows CIFAR-100's setting (its recipes, its gamma): Table 1, and not like for like
    assert paper_comparison(*_ours("digits", PAPER_SIZE), ComparePaper(anyway=True)).table == 1


TINY = dict.fromkeys(PAPER_SIZE, "tiny")


@pytest.mark.parametrize("dataset, sizes, table, ours", [
    ("digits", TINY, None, "digits, tiny models"),
    ("cifar10", PAPER_SIZE, None, "cifar10, paper-size models"),  # follows CIFAR-100's setting, is not CIFAR-100
    ("cifar100", {**PAPER_SIZE, "deit_s": "tiny"}, None, "cifar100, paper-size models (resnet50, vgg13_bn) and "
                                                         "tiny models (deit_s)"),
    ("cifar100", PAPER_SIZE, 2, "cifar100, paper-size models"),
    ("CIFAR-100", PAPER_SIZE, None, "CIFAR-100 (not a bocb dataset name: bocb list datasets), paper-size models"),
    (None, dict.fromkeys(PAPER_SIZE), None, "an unstated dataset, unstated-size models"),
])
def test_across_datasets_or_model_sizes_is_refused_in_one_line_naming_both_sides(dataset, sizes, table, ours):
    theirs = {None: "Table 1 is CIFAR-100", 2: "Table 2 is ImageNet-1K"}[table]
    with pytest.raises(SpecError) as refused:
        paper_comparison(*_ours(dataset, sizes), ComparePaper(table))
    message = str(refused.value)
    assert message.startswith(f"--compare-paper: the results are {ours}") and "\n" not in message
    assert f"the paper's {theirs}, paper-size models: not comparable; --compare-paper-anyway" in message
    assert ("columns 'dataset' and 'size'" in message) == (dataset is None)  # how a CSV states them


def test_anyway_labels_the_comparison_not_comparable():
    comparison = paper_comparison(*_ours("digits", TINY), ComparePaper(anyway=True))
    assert not comparison.comparable and comparison.title.endswith("): not comparable")
    assert comparison.sentences[0] == ("Not comparable: digits, tiny models vs the paper's CIFAR-100, paper-size "
                                       "models — shown for orientation only.")
    assert "difference (not comparable)" in comparison.labelled().columns
    assert "ours (digits, tiny models)" in comparison.labelled().columns


def test_a_dataset_named_as_a_module_is_never_imported():
    # a CSV from someone else must not run code: 'package.module:attr' is just a name bocb does not know
    with pytest.raises(SpecError, match=r"the results are os\.path:join \(not a bocb dataset name"):
        paper_comparison(*_ours("os.path:join", PAPER_SIZE), ComparePaper())
    with pytest.raises(SpecError, match="the results are nosuchpkg:thing"):
        paper_comparison(*_ours("nosuchpkg:thing", PAPER_SIZE), ComparePaper())
    assert "nosuchpkg" not in sys.modules


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
