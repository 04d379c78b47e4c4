"""bocb.analysis on small hand-made frames with hand-computed answers."""
from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from bocb.analysis import format_matrix, matrix, select_cells, tidy
from bocb.errors import BocbError, DataError, SpecError
from bocb.protocol import grid_edge


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


def test_an_edge_of_a_two_point_grid_is_an_edge_and_no_weight_decay_is_none():
    """bocb.protocol.grid_edge, the one rule the planner extends by and the report flags by: the lower lr of
    a 2-point grid is an edge (the optimum may lie below); wd 0 is not (nothing lies below it)."""
    frame = pd.DataFrame([_trial("a", "o", 0, 0.1, 0.0, 1, 1) | {"lr_grid": "0.1;1", "wd_grid": "0;1"}])
    cells = select_cells(frame)
    assert (cells.loc[0, "lr_edge"], cells.loc[0, "wd_edge"], bool(cells.loc[0, "edge"])) == ("low", "", True)
    assert [grid_edge(v, [0.1]) for v in (0.1,)] == [""]  # one value searched: no grid, no edge
    assert [grid_edge(v, [0.1, 0.3, 1.0]) for v in (0.1, 0.3, 1.0)] == ["low", "", "high"]


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


# --- failure rules, top-k, summaries -------------------------------------------------------------

def _long(values, backbone="a"):
    return pd.DataFrame({"backbone": backbone, "optimizer": [f"o{i}" for i in range(len(values))], "top1": values})


def test_eq1_as_printed_and_alternatives():
    from bocb.analysis import failure_flags, failure_threshold

    long = _long([10.0, 20.0, 30.0, 40.0, 50.0])  # Q25 20, Q75 40, IQR 20
    assert failure_threshold(long.top1, "eq1", gamma=3) == 47  # 50 - min(20, 3)
    assert failure_flags(long, "eq1", gamma=3).tolist() == [True, True, True, True, False]
    assert failure_flags(long, "eq1", gamma=30).tolist() == [True, True, False, False, False]  # 50 - 20
    assert failure_threshold(long.top1, "tukey") == -10  # 20 - 1.5 * 20
    assert not failure_flags(long, "tukey").any()
    assert failure_flags(long, "gap", gap=15).tolist() == [True, True, True, False, False]  # < 35
    with pytest.raises(SpecError, match="rule.*valid choices: eq1, gap, tukey"):
        failure_flags(long, "iqr")


def test_failure_thresholds_are_per_backbone():
    from bocb.analysis import failure_flags

    long = pd.concat([_long([10.0, 20.0, 30.0, 40.0, 50.0], "a"), _long([1.0, 1.0, 1.0, 1.0, 1.0], "b")])
    assert failure_flags(long, "eq1").tolist() == [True] * 4 + [False] * 6


def test_top_k_keeps_ties():
    from bocb.analysis import top_k

    assert top_k(_long([5, 5, 4, 3, 3, 1]), k=4).tolist() == [True, True, True, True, True, False]


def test_summary_without_worst():
    from bocb.analysis import summary_without_worst

    assert summary_without_worst(pd.Series([6.0, 1.0, 4.0, 2.0])) == {"mean": 4.0, "std": 2.0, "range": 4.0}


def test_seed_aware_rule_needs_a_significant_shortfall():
    from bocb.analysis import seed_aware_flags

    per_seed = pd.DataFrame({"backbone": "a", "optimizer": ["x"] * 3 + ["y"] * 3 + ["z"] * 3, "seed": [0, 1, 2] * 3,
                             "top1": [80, 81, 79, 70, 71, 69, 60, 90, 75]})
    flags = seed_aware_flags(per_seed, gamma=3).set_index("optimizer")
    # means 80 / 70 / 75: IQR 5, threshold 77 -> y and z fail Eq. 1; z's seeds spread too wide (p ~ 0.31).
    assert flags["eq1"].tolist() == [False, True, True]
    assert flags["seed_aware"].tolist() == [False, True, False]


@pytest.mark.filterwarnings("error")
def test_seed_aware_rule_takes_a_cell_whose_seeds_all_sit_at_chance_quietly():
    from bocb.analysis import seed_aware_flags

    per_seed = pd.DataFrame({"backbone": "a", "optimizer": ["x"] * 2 + ["y"] * 2, "seed": [0, 1] * 2,
                             "top1": [96.1, 97.2, 10.0, 10.0]})
    flags = seed_aware_flags(per_seed, gamma=3).set_index("optimizer")
    assert flags["seed_aware"].tolist() == [False, True]


# --- robustness, ranking ----------------------------------------------------------------------------

def test_hp_distance_to_mode():
    from bocb.analysis import hp_distances, hp_robustness, one_hot_codes

    cells = pd.DataFrame({"backbone": ["a", "b", "c"], "optimizer": "o", "lr_pos": [2.0, 2.0, 0.0],
                          "wd_pos": [1.0, 3.0, 1.0], "lr_points": 5, "wd_points": 5})
    out = hp_distances(cells, by="optimizer")
    assert out[["lr_mode", "wd_mode"]].iloc[0].tolist() == [2.0, 1.0]
    assert out["distance"].tolist() == [0.0, 2.0, 2.0]
    assert out["onehot_l1"].tolist() == [0, 2, 2]
    assert hp_robustness(cells, by="optimizer")["o"] == pytest.approx(4 / 3)
    codes = one_hot_codes(cells)
    assert codes.loc[("b", "o")].tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 1, 0]


def test_weighted_ranking_and_missing_component():
    from bocb.analysis import weighted_ranking

    components = pd.DataFrame({"performance": [1, 2, 3], "hyper_parameter": [2, 1, 1], "bocb": [0, 1, 0],
                               "computations": [1, 1, 2]}, index=["a", "b", "c"])
    ranked = weighted_ranking(components)
    assert ranked["score"].tolist() == pytest.approx([1.0, 1.4, 1.8])
    assert ranked["overall"].tolist() == [1, 2, 3]
    no_cost = weighted_ranking(components.assign(computations=np.nan))
    assert no_cost["score"].tolist() == pytest.approx([1.0, 1.5, 1.75])
    assert no_cost.attrs["components_used"] == ["performance", "hyper_parameter", "bocb"]


def test_ranking_components_from_results():
    from bocb.analysis import ranking_components

    cells = pd.DataFrame({"backbone": ["b1", "b1", "b2", "b2"], "optimizer": ["o1", "o2", "o1", "o2"],
                          "test_top1": [80.0, 70.0, 60.0, 65.0], "lr_pos": 1.0, "wd_pos": 1.0,
                          "time_s": [10.0, 30.0, 1.0, 1.0], "peak_mem_mb": [100.0, 100.0, 50.0, 150.0]})
    components = ranking_components(cells)
    # mean top-1 70 vs 67.5; relative cost (time, memory ratios to the backbone median) 0.75 vs 1.25.
    assert components.loc["o1"].tolist() == [1, 1, 0, 1]
    assert components.loc["o2"].tolist() == [2, 1, 0, 2]


# --- decomposition and profiles ---------------------------------------------------------------------

def test_two_way_decomposition_by_hand():
    from bocb.analysis import decompose

    table = pd.DataFrame([[1.0, 2.0], [3.0, 8.0]], index=["o1", "o2"], columns=["b1", "b2"])
    parts = decompose(table)
    assert parts["mean"] == 3.5
    assert parts["optimizer_effect"].tolist() == [-2.0, 2.0]
    assert parts["backbone_effect"].tolist() == [-1.5, 1.5]
    assert parts["interaction"].to_numpy().tolist() == [[1.0, -1.0], [-1.0, 1.0]]


def test_interaction_shares_with_bootstrap():
    from bocb.analysis import interaction_shares

    means = {("o1", "b1"): 1.0, ("o1", "b2"): 2.0, ("o2", "b1"): 3.0, ("o2", "b2"): 8.0}
    per_seed = pd.DataFrame([{"optimizer": o, "backbone": b, "seed": s, "top1": m + d}
                             for (o, b), m in means.items() for s, d in ((0, -0.1), (1, 0.1))])
    shares = interaction_shares(per_seed, n_boot=200).set_index(["scope", "name"])
    # SS_int 4; SS_optimizer 2 * 8 = 16; SS_backbone 2 * 4.5 = 9.
    assert shares.loc[("total", "all"), "share"] == pytest.approx(4 / 29)
    assert shares.loc[("backbone", "b1"), "share"] == pytest.approx(2 / 10)   # 2 / (2 + sum beta^2 = 8)
    assert shares.loc[("optimizer", "o1"), "share"] == pytest.approx(2 / 6.5)  # 2 / (2 + sum alpha^2 = 4.5)
    assert (shares["lo"] <= shares["share"] + 1e-12).all() and (shares["share"] <= shares["hi"] + 1e-12).all()
    assert (shares["hi"] > shares["lo"]).all()


def test_decomposition_drops_incomplete_rows():
    from bocb.analysis import decompose

    table = pd.DataFrame([[1.0, 2.0], [3.0, 8.0], [np.nan, 1.0]], index=["o1", "o2", "o3"], columns=["b1", "b2"])
    assert list(decompose(table)["interaction"].index) == ["o1", "o2"]
    with pytest.raises(DataError, match="complete matrix"):
        decompose(table[["b1"]])


def test_performance_profiles():
    from bocb.analysis import performance_profiles

    table = pd.DataFrame([[1.0, 2.0], [3.0, 8.0]], index=["o1", "o2"], columns=["b1", "b2"])
    prof = performance_profiles(table, np.array([0.0, 2.0, 6.0]))  # o1 is 2 and 6 points below the best
    assert prof["o1"].tolist() == [0.0, 0.5, 1.0] and prof["o2"].tolist() == [1.0, 1.0, 1.0]


# --- curves and budget check ------------------------------------------------------------------------

def test_curve_summary():
    from bocb.analysis import curve_summary

    auc, epoch95 = curve_summary(np.arange(1.0, 6.0), np.array([10.0, 50.0, 80.0, 90.0, 100.0]))
    assert auc == pytest.approx(275 / 4) and epoch95 == 5
    assert curve_summary(np.array([3.0, 1.0, 2.0, 4.0]), np.array([100.0, 10.0, 96.0, 100.0]))[1] == 2


def test_curve_stats_average_seeds_of_the_chosen_config(grid_frame):
    from bocb.analysis import curve_stats

    trials = tidy(grid_frame.assign(trial_key=[f"k{i}" for i in range(len(grid_frame))]))
    cells = select_cells(trials)
    epochs = pd.DataFrame({"trial_key": ["k0", "k0", "k1", "k1", "k2", "k2"], "epoch": [1, 2, 1, 2, 1, 2],
                           "val_top1": [10.0, 70.0, 30.0, 72.0, 99.0, 99.0]})
    stats = curve_stats(trials, epochs, cells).set_index(["backbone", "optimizer"])
    # r50/sgd chose lr=0.1 (k0, k1): mean curve 20 -> 71; area (20 + 71) / 2; 95 % of 71 first at epoch 2.
    assert stats.loc[("r50", "sgd"), "auc"] == pytest.approx(45.5)
    assert stats.loc[("r50", "sgd"), "epoch95"] == 2
    assert len(stats) == 1


def test_budget_check_closes_shrinks_holds():
    from bocb.analysis import analyse

    base = [dict(backbone=b, optimizer=o, seed=0, top1=v, budget=1)
            for b in ("a", "b") for o, v in (("x", 80.0), ("y", 70.0), ("z", 79.0))]
    reruns = [dict(backbone="a", optimizer="y", seed=0, top1=v, budget=k) for k, v in ((2, 74.0), (4, 78.0))]
    reruns.append(dict(backbone="b", optimizer="y", seed=0, top1=71.0, budget=2))
    result = analyse(pd.DataFrame(base + reruns), n_boot=10)
    budget = result.budget.set_index(["backbone", "budget"])
    # a: means 70/79/80 -> IQR 5, threshold 77, margin 3; gap 10 -> 6 (<= 7.5: shrinks) -> 2 (closes).
    assert budget.loc[("a", 2), "outcome"] == "shrinks"
    assert budget.loc[("a", 4), "outcome"] == "closes"
    assert budget.loc[("b", 2), "outcome"] == "holds"
    assert result.selected_on == "test_top1" and "chosen on test" in result.notes[0]


# --- tuning cost: expected best of k configurations ---------------------------------------------------

def test_expected_best_by_hand():
    from bocb.analysis import expected_best

    out = expected_best([9.0, 5.0, 2.0], paired=[1.0, 2.0, 3.0])
    # k=2: subsets {9,5} {9,2} {5,2} -> 9, 9, 5; their paired scores 1, 1, 2.
    assert out["k"].tolist() == [1, 2, 3]
    assert out["expected_best"].tolist() == pytest.approx([16 / 3, 23 / 3, 9.0])
    assert out["expected_paired"].tolist() == pytest.approx([2.0, 4 / 3, 1.0])


def test_expected_best_ties_go_to_the_first_listed():
    from bocb.analysis import expected_best

    out = expected_best([5.0, 5.0, 1.0], paired=[10.0, 20.0, 30.0])
    # k=2: {a,b} -> a, {a,c} -> a, {b,c} -> b.
    assert out["expected_best"].tolist() == pytest.approx([11 / 3, 5.0, 5.0])
    assert out["expected_paired"].tolist() == pytest.approx([20.0, 40 / 3, 10.0])


@pytest.mark.parametrize("n", range(1, 8))
def test_expected_best_equals_brute_force_over_subsets(n):
    import itertools

    from bocb.analysis import expected_best

    rng = np.random.default_rng(n)
    values = rng.integers(0, 4, n).astype(float)  # few distinct values: ties
    ranked = np.lexsort((rng.permutation(n), -values))  # best first, ties in a random order
    scores, paired = values[ranked], rng.normal(size=n)
    out = expected_best(scores, paired)
    for k in range(1, n + 1):
        winners = [min(subset) for subset in itertools.combinations(range(n), k)]  # first listed = chosen
        assert out.loc[k - 1, "expected_best"] == pytest.approx(scores[winners].mean())
        assert out.loc[k - 1, "expected_best"] == pytest.approx(np.mean([scores[list(s)].max() for s in
                                                                          itertools.combinations(range(n), k)]))
        assert out.loc[k - 1, "expected_paired"] == pytest.approx(paired[winners].mean())
    best = out["expected_best"].to_numpy()
    assert best[0] == pytest.approx(values.mean()) and best[-1] == values.max()
    assert (np.diff(best) >= -1e-12).all()


def test_choice_probabilities_are_distributions():
    from bocb.analysis._tuning import choice_probabilities

    probabilities = choice_probabilities(12)
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(12))
    assert probabilities[0] == pytest.approx(np.full(12, 1 / 12)) and probabilities[-1].tolist() == [1.0] + [0.0] * 11


def test_configs_needed_to_get_within_a_point():
    from bocb.analysis import configs_needed

    assert configs_needed([60.0, 63.9, 64.0, 65.0]) == 3
    assert configs_needed([64.5, 64.9, 65.0]) == 1
    assert configs_needed([60.0, 62.0], within=3) == 1


def test_tuning_cost_draws_what_the_protocol_compares():
    from bocb.analysis import tuning_cost
    from bocb.protocol import choose_configs

    def trial(lr, val, test, **extra):
        return _trial("a", "o", 0, lr, 0.0, val, test, **({"epochs": 4, "num_classes": 10, "train_loss": 0.4} | extra))

    trials = tidy(pd.DataFrame([
        trial(0.1, 70, 68, train_loss=0.3),
        trial(0.05, 70, 60, train_loss=0.5),    # tied on validation; the higher training loss ranks second
        trial(0.01, 50, 49),
        trial(1.0, 80, 80, state="diverged"),   # at chance (10) on both splits, ranked last
        trial(0.3, 99, 99, state="failed"),     # crashed: no result
        trial(0.2, 99, 99, epochs=2),           # a short halving rung: not at the main budget
        _trial("a", "o", 1, 0.1, 0.0, 60, 80, epochs=4, num_classes=10),  # re-seed of the choice: not shared
    ]))
    curves, summary = tuning_cost(trials)
    # ranked: val 70, 70, 50, 10 with test 68, 60, 49, 10; P(rank r wins k of 4) = C(3-r, k-1) / C(4, k).
    assert curves["n_configs"].unique().tolist() == [4]
    assert curves["expected_best"].tolist() == pytest.approx([50.0, 400 / 6, 70.0, 70.0])
    assert curves["expected_test_top1"].tolist() == pytest.approx([187 / 4, 373 / 6, 66.0, 68.0])
    row = summary.iloc[0]
    assert (row.n_configs, row.configs_needed) == (4, 3)
    assert (row.expected_at_1, row.grid_best, row.test_top1_at_needed) == pytest.approx((50.0, 70.0, 66.0))
    assert row.grid_best == choose_configs(trials).loc[0, "score"]
