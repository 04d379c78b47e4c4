"""The search protocol: grid, successive halving, grid edges, seeds and budget re-runs.

Results are filled in by a scoring rule (what a finished trial would report), so each
stage's choice can be checked by hand; selection must follow validation, never test.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from conftest import TINY_SPEC

from bocb.analysis import analyse, select_cells
from bocb.optim import round_sig
from bocb.protocol import choose_configs, config_label
from bocb.spec import parse_spec
from bocb.store import PlannedTrial
from bocb.sweep import plan_benchmark
from bocb.sweep.planner import next_stage, stage_names
from bocb.sweep.worker import StageWatch


def _spec(**changes):
    return parse_spec({**TINY_SPEC, "backbones": ["resnet50"], "optimizers": ["adamw"], **changes})


def _rows(planned: list[PlannedTrial], val, test=lambda c: 50.0, loss=lambda c: 1.0) -> pd.DataFrame:
    """Finished results for planned trials: val_top1 = val(config), test_top1 = test(config)."""
    return pd.DataFrame([{
        "trial_key": t.key, "stage": t.stage, "budget": t.budget, "state": "done", "backbone": t.config["backbone"],
        "size": t.config["size"], "optimizer": t.config["optimizer"], "lr": t.config["lr"],
        "weight_decay": t.config["weight_decay"], "hparams_json": json.dumps(t.config["hparams"]),
        "seed": t.config["seed"], "epochs": t.config["epochs"], "val_top1": val(t.config), "test_top1": test(t.config),
        "train_loss": loss(t.config), "config_json": json.dumps(t.config, sort_keys=True),
    } for t in planned])


def _run_all(spec, val, test=lambda c: 50.0, loss=lambda c: 1.0) -> pd.DataFrame:
    results = pd.DataFrame()
    while (stage := next_stage(spec, results)) is not None:
        assert not stage.waiting
        results = pd.concat([results, _rows(stage.planned, val, test, loss)], ignore_index=True)
    return results


def test_grid_is_the_papers_five_by_five_then_seeds() -> None:
    spec = _spec(recipe="deit", seeds=[0, 1, 2], search={})
    first = next_stage(spec, pd.DataFrame())
    assert first.name == "search" and len(first.planned) == 25
    lrs = sorted({t.config["lr"] for t in first.planned})
    wds = sorted({t.config["weight_decay"] for t in first.planned})
    assert 1e-3 in lrs and 0.05 in wds and len(lrs) == len(wds) == 5
    assert {t.config["seed"] for t in first.planned} == {0}
    best_lr = lrs[1]  # validation prefers an interior lr; test prefers another one
    results = _run_all(spec, val=lambda c: 90 - 100 * abs(c["lr"] - best_lr) - c["weight_decay"],
                       test=lambda c: 99 if c["lr"] == lrs[4] else 10)
    seeds = results[results["stage"] == "seeds"]
    assert len(seeds) == 2 and set(seeds["seed"]) == {1, 2}
    assert set(seeds["lr"]) == {best_lr} and set(seeds["weight_decay"]) == {wds[0]}


def test_halving_keeps_the_documented_fraction_and_ignores_test() -> None:
    spec = _spec(epochs=9, search={"method": "halving", "lr_points": 3, "wd_points": 3,
                                   "rungs": [1 / 9, 1 / 3, 1.0], "keep_fraction": 1 / 3})
    assert stage_names(spec) == ["rung0", "rung1", "rung2", "seeds"]
    # validation rises with lr and falls with wd; test says the opposite
    results = _run_all(spec, val=lambda c: 1000 * c["lr"] - c["weight_decay"],
                       test=lambda c: -1000 * c["lr"] + c["weight_decay"])
    rungs = {r: results[results["stage"] == f"rung{r}"] for r in range(3)}
    assert [len(rungs[r]) for r in range(3)] == [9, math.ceil(9 / 3), 1]
    assert [set(rungs[r]["epochs"]) for r in range(3)] == [{1}, {3}, {9}]
    top3 = rungs[0].sort_values("val_top1", ascending=False).head(3)
    assert set(zip(rungs[1]["lr"], rungs[1]["weight_decay"])) == set(zip(top3["lr"], top3["weight_decay"]))
    assert rungs[2]["lr"].iloc[0] == rungs[0]["lr"].max()
    assert rungs[2]["weight_decay"].iloc[0] == rungs[0]["weight_decay"].min()
    # epochs spent: 9x1 + 3x3 + 1x9 = 27 of a grid's 81
    spent = sum((rungs[r]["epochs"]).sum() for r in range(3))
    assert spent == 27


def test_halving_keeps_configurations_it_cannot_tell_apart() -> None:
    spec = _spec(epochs=9, search={"method": "halving", "lr_points": 3, "wd_points": 1})
    lrs = sorted({t.config["lr"] for t in next_stage(spec, pd.DataFrame()).planned})
    # After the first rung all three are at chance (the training loss differs by noise): none is cut.
    # After the second the smallest lr has learnt most, the others tie: it alone goes on, although the
    # training loss favours the largest lr.
    val = {1: lambda lr: 10.0, 3: lambda lr: 60.0 if lr == lrs[0] else 40.0, 9: lambda lr: 90.0}
    results = _run_all(spec, val=lambda c: val[c["epochs"]](c["lr"]), loss=lambda c: 1 / c["lr"])
    rungs = [results[results["stage"] == f"rung{r}"] for r in range(3)]
    assert [len(r) for r in rungs] == [3, 3, 1]
    assert rungs[2]["lr"].tolist() == [lrs[0]]
    # a strict winner goes on alone: the documented third of three
    results = _run_all(spec, val=lambda c: 10.0 if c["epochs"] == 1 and c["lr"] != lrs[1] else 20.0,
                       loss=lambda c: 1 / c["lr"])
    assert results[results["stage"] == "rung1"]["lr"].tolist() == [lrs[1]]


def test_halving_without_keep_ties_cuts_ties_by_training_loss() -> None:
    spec = _spec(epochs=9, search={"method": "halving", "lr_points": 3, "wd_points": 1, "keep_ties": False})
    # after a short rung every configuration is at chance on validation; the loss still tells them apart
    results = _run_all(spec, val=lambda c: 10.0 if c["epochs"] < 9 else 90.0, loss=lambda c: 1 / c["lr"])
    assert [len(results[results["stage"] == f"rung{r}"]) for r in range(3)] == [3, 1, 1]
    final = results[results["stage"] == "rung2"]
    assert final["lr"].tolist() == [results["lr"].max()]


def test_halving_and_the_choice_break_an_exact_tie_the_same_way() -> None:
    """One order (bocb.protocol.ranking_key): configurations equal on validation and training loss go,
    in a rung as in the choice, to the lower configuration label, whatever the grid's order (here the
    label 'lr=0.0001' comes before 'lr=1e-05', the grid's first)."""
    spec = _spec(epochs=9, optimizers=[{"name": "adamw", "lr": [1e-5, 1e-4, 1e-3]}],
                 search={"method": "halving", "lr_points": 3, "wd_points": 1, "keep_ties": False})
    results = _run_all(spec, val=lambda c: 50.0, loss=lambda c: 1.0)
    survivor = results[results["stage"] == "rung1"]
    labels = sorted(config_label(lr, wd) for lr, wd in zip(results["lr"], results["weight_decay"]))
    assert labels[0].startswith("lr=0.0001,")
    assert [config_label(lr, wd) for lr, wd in zip(survivor["lr"], survivor["weight_decay"])] == labels[:1]
    rung0 = results[results["stage"] == "rung0"]
    assert choose_configs(rung0.assign(stage="search", epochs=9))["config"].tolist() == labels[:1]


def test_on_a_two_point_grid_the_planner_extends_exactly_the_cells_the_report_flags() -> None:
    """One edge rule (bocb.protocol.grid_edge): the best lr of a 2-point grid is at its edge, so the report
    flags it and the planner steps past it; a weight decay of 0 is neither flagged nor stepped below."""
    spec = _spec(search={"lr_points": 2, "wd_points": 1, "extend_edges": 1})
    search = next_stage(spec, pd.DataFrame())
    lrs = sorted(t.config["lr"] for t in search.planned)
    results = _rows(search.planned, lambda c: 90.0 if c["lr"] == lrs[0] else 80.0)
    cells = select_cells(results.assign(lr_grid=";".join(map(str, lrs)), wd_grid=str(results["weight_decay"][0])))
    assert (cells.loc[0, "lr_edge"], cells.loc[0, "wd_edge"]) == ("low", "")
    edges1 = next_stage(spec, results)
    assert edges1.name == "edges1" and [t.config["lr"] for t in edges1.planned] == [
        round_sig(lrs[0] / spec.search.lr_step)]


def test_edge_best_is_flagged_and_extended_one_step_at_a_time() -> None:
    spec = _spec(search={"lr_points": 3, "wd_points": 1, "extend_edges": 3})
    assert stage_names(spec) == ["search", "edges1", "edges2", "edges3", "seeds"]
    search = next_stage(spec, pd.DataFrame())
    lrs = sorted(t.config["lr"] for t in search.planned)
    peak = lrs[-1] * 4  # the truth: best lr is two grid steps above the grid
    val = lambda c: 90 - abs(math.log2(c["lr"] / peak))  # noqa: E731
    results = _rows(search.planned, val)
    cells = select_cells(results.assign(lr_grid=";".join(map(str, lrs)), wd_grid=str(results["weight_decay"][0])))
    assert cells.loc[0, "lr_edge"] == "high" and bool(cells.loc[0, "edge"])
    edges1 = next_stage(spec, results)
    assert edges1.name == "edges1" and [t.config["lr"] for t in edges1.planned] == [lrs[-1] * 2]
    results = pd.concat([results, _rows(edges1.planned, val)], ignore_index=True)
    edges2 = next_stage(spec, results)
    assert [t.config["lr"] for t in edges2.planned] == [lrs[-1] * 4]
    results = pd.concat([results, _rows(edges2.planned, val)], ignore_index=True)
    edges3 = next_stage(spec, results)  # the peak is still the top: one more step, the last allowed
    assert [t.config["lr"] for t in edges3.planned] == [lrs[-1] * 8]
    results = pd.concat([results, _rows(edges3.planned, val)], ignore_index=True)
    seeds = next_stage(spec, results)  # best (the peak) is now interior; limit reached anyway
    assert seeds is None or seeds.name == "seeds"


def test_budget_check_reruns_chosen_cells_at_multiples() -> None:
    spec = _spec(seeds=[0], search={"lr_points": 2, "wd_points": 1},
                 budget_check={"multipliers": [2, 4], "optimizers": ["adamw"]})
    results = _run_all(spec, val=lambda c: c["lr"] * 1000)
    budget = results[results["stage"] == "budget"]
    assert sorted(budget["epochs"]) == [4, 8] and sorted(budget["budget"]) == [2, 4]
    assert set(budget["lr"]) == {results[results["stage"] == "search"]["lr"].max()}


def test_waiting_while_a_stage_is_unfinished() -> None:
    spec = _spec(seeds=[0, 1], search={"lr_points": 2, "wd_points": 1})
    first = next_stage(spec, pd.DataFrame())
    results = _rows(first.planned, val=lambda c: 1.0).assign(state=["done", "running"])
    stage = next_stage(spec, results)
    assert stage.name == "search" and stage.waiting and not stage.planned


def test_reseed_only_failure_candidates() -> None:
    spec = parse_spec({**TINY_SPEC, "backbones": ["resnet50"], "optimizers": ["sgd", "adam", "adamw", "lamb"],
                       "seeds": [0, 1], "search": {"lr_points": 1, "wd_points": 1},
                       "reseed": "failure_candidates", "rules": {"gamma": 3.0}})
    # Eq. 1 on test top-1: threshold = 90 - min(IQR 3.7, gamma 3) = 87; adamw and lamb flagged, sgd the best
    test = {"sgd": 90.0, "adam": 88.5, "adamw": 80.0, "lamb": 86.9}
    results = _run_all(spec, val=lambda c: 50.0, test=lambda c: test[c["optimizer"]])
    reseeded = results[results["stage"] == "seeds"]
    assert sorted(reseeded["optimizer"]) == ["adamw", "lamb", "sgd"] and set(reseeded["seed"]) == {1}


def test_reseed_candidates_are_exactly_the_cells_the_failure_rule_needs() -> None:
    """Planner and analysis read one rule: after the search, the cells planned for a second seed are
    those bocb.protocol.cells_needing_seeds names, and the analysis calls exactly their Eq.-1 flags
    undecided; after re-seeding, none is undecided."""
    from bocb.analysis import analyse
    from bocb.protocol import cells_needing_seeds

    optimizers = ["sgd", "adam", "adamw", "lamb", "adagrad"]
    spec = parse_spec({**TINY_SPEC, "backbones": ["resnet50", "deit_s"], "optimizers": optimizers,
                       "seeds": [0, 1], "search": {"lr_points": 2, "wd_points": 1}, "reseed": "failure_candidates"})
    test = {"sgd": 70.0, "adam": 88.0, "adamw": 90.0, "lamb": 60.0, "adagrad": 87.5}
    search = next_stage(spec, pd.DataFrame())

    def top1(c):  # deit_s 5 points lower; the second seed 0.2 higher
        return test[c["optimizer"]] - (5 if c["backbone"] == "deit_s" else 0) + c["seed"] * 0.2

    rows = _rows(search.planned, val=lambda c: 50 + 100 * c["lr"], test=top1).assign(num_classes=10, test_size=1000)
    seeds = next_stage(spec, rows)
    planned = sorted({(t.config["backbone"], t.config["optimizer"]) for t in seeds.planned})
    needed = cells_needing_seeds(rows, spec.rules.gamma)
    assert planned == sorted(zip(needed["backbone"], needed["optimizer"]))
    cells = analyse(rows, n_boot=10).cells
    undecided = cells[cells["undecided"]]
    assert set(zip(undecided["backbone"], undecided["optimizer"])) == set(planned) - {
        (b, "adamw") for b in ("resnet50", "deit_s")}  # the best cells are compared, not flagged
    after = pd.concat([rows, _rows(seeds.planned, val=lambda c: 50 + 100 * c["lr"], test=top1)], ignore_index=True)
    assert not analyse(after.assign(num_classes=10, test_size=1000), n_boot=10).cells["undecided"].any()


def test_reseeding_runs_in_rounds_until_the_rule_needs_no_more_seeds() -> None:
    """A second seed can move a cell's mean so that Eq. 1 flags another cell: that cell gets its seeds in
    a second round, planned only once the first round has finished."""
    spec = parse_spec({**TINY_SPEC, "backbones": ["resnet50"], "optimizers": ["sgd", "adam", "adamw", "lamb"],
                       "seeds": [0, 1], "search": {"lr_points": 1, "wd_points": 1}, "reseed": "failure_candidates"})
    first = {"sgd": 90.0, "adam": 88.0, "adamw": 80.0, "lamb": 87.5}  # threshold 87: adamw flagged, sgd best
    second = {"sgd": 96.0, "adamw": 80.0}  # sgd's mean rises to 93: the threshold to 90, which flags adam, lamb
    search = next_stage(spec, pd.DataFrame())
    rows = _rows(search.planned, val=lambda c: 50.0, test=lambda c: first[c["optimizer"]])
    round1 = next_stage(spec, rows)
    assert sorted(t.config["optimizer"] for t in round1.planned) == ["adamw", "sgd"]
    running = pd.concat([rows, _rows(round1.planned, val=lambda c: 50.0, test=lambda c: second[c["optimizer"]])
                         .assign(state=["done", "running"])], ignore_index=True)
    assert next_stage(spec, running).waiting  # no second round while the first runs
    finished = running.assign(state="done")
    round2 = next_stage(spec, finished)
    assert round2.name == "seeds" and sorted(t.config["optimizer"] for t in round2.planned) == ["adam", "lamb"]
    done = pd.concat([finished, _rows(round2.planned, val=lambda c: 50.0, test=lambda c: first[c["optimizer"]])],
                     ignore_index=True)
    assert next_stage(spec, done) is None


def test_stage_watch_waits_without_replanning_yet_never_misses_the_last_finish(tmp_path) -> None:
    spec = _spec(seeds=[0, 1], search={"lr_points": 2, "wd_points": 1})
    run = plan_benchmark(spec, tmp_path)
    store = run.store
    watch = StageWatch(store, run.benchmark_id, spec, run.artifact_root)
    first, second = (store.claim(f"remote-host:{i}:w", run.benchmark_id) for i in (1, 2))
    store.finish(first.key, "remote-host:1:w", {"state": "done", "val_top1": 50.0}, None)
    assert watch.advance() == "waiting" and watch.advance() == "waiting"
    store.finish(second.key, "remote-host:2:w", {"state": "done", "val_top1": 60.0}, None)
    assert watch.advance() == "planned"
    assert set(store.trials_frame(run.benchmark_id)["stage"]) == {"search", "seeds"}


def test_planner_and_analysis_choose_the_same_configuration() -> None:
    """Seed ties, training-loss ties, a crashed configuration and a re-seed that lowers the chosen one's mean:
    the configuration the planner re-seeds and budget-checks is the one the report shows."""
    spec = parse_spec({**TINY_SPEC, "backbones": ["resnet50", "deit_s"], "optimizers": ["sgd", "adamw"],
                       "seeds": [0, 1], "search": {"lr_points": 3, "wd_points": 1},
                       "budget_check": {"multipliers": [2]}})
    search = next_stage(spec, pd.DataFrame())
    lrs = {o: sorted({t.config["lr"] for t in search.planned if t.config["optimizer"] == o}) for o in ("sgd", "adamw")}

    def val(c):  # resnet50: every lr ties on validation; deit_s: the middle lr is best by one point
        return 80.0 if c["backbone"] == "resnet50" else 80.0 + (c["lr"] == lrs[c["optimizer"]][1])

    def loss(c):  # the training loss breaks resnet50's tie towards the largest lr
        return 1.0 - c["lr"]

    rows = _rows(search.planned, val, loss=loss)
    crashed = (rows["backbone"] == "deit_s") & (rows["optimizer"] == "sgd") & (rows["lr"] == lrs["sgd"][1])
    rows.loc[crashed, ["state", "val_top1", "test_top1"]] = ["failed", None, None]  # no result, not chance
    seeds = next_stage(spec, rows)
    assert seeds.name == "seeds"
    # the re-seed of every chosen configuration lands far lower: the mean over seeds would now prefer another
    reseeded = pd.concat([rows, _rows(seeds.planned, val=lambda c: 10.0, loss=loss)], ignore_index=True)
    budget = next_stage(spec, reseeded)
    assert budget.name == "budget"
    planner = {(t.config["backbone"], t.config["optimizer"]): t.config["lr"] for t in seeds.planned}
    assert planner == {(t.config["backbone"], t.config["optimizer"]): t.config["lr"] for t in budget.planned}
    cells = select_cells(reseeded).set_index(["backbone", "optimizer"])["lr"].to_dict()
    assert cells == planner
    assert planner[("resnet50", "sgd")] == lrs["sgd"][2] and planner[("deit_s", "adamw")] == lrs["adamw"][1]
    assert planner[("deit_s", "sgd")] != lrs["sgd"][1]  # the crashed configuration is never chosen


def _two_phase(**changes):
    return _spec(**{"optimizers": [{"name": "sgd", "extras": {"momentum": [0.8, 0.9, 0.95]}}, "adam"],
                    "seeds": [0, 1], "search": {"phases": "two", "lr_points": 3, "wd_points": 2}, **changes})


def test_two_phase_searches_lr_and_wd_first_then_extras_only_at_the_chosen_lr_and_wd() -> None:
    spec = _two_phase()
    assert stage_names(spec) == ["search", "extras", "seeds"]
    first = next_stage(spec, pd.DataFrame())
    # phase 1: 3 x 2 lr/wd per optimizer, every extra at its default (none in hparams): not 3 x 2 x 3
    assert first.name == "search" and len(first.planned) == 2 * 6
    assert all(t.config["hparams"] == {} for t in first.planned)
    lrs = {o: sorted({t.config["lr"] for t in first.planned if t.config["optimizer"] == o}) for o in ("sgd", "adam")}

    def val(c):  # the middle lr and the smaller wd win phase 1; momentum 0.95 beats the default in phase 2
        return 80 - abs(math.log(c["lr"] / lrs[c["optimizer"]][1])) - 1000 * c["weight_decay"] \
            + (5 if c["hparams"].get("momentum") == 0.95 else 0)

    search = _rows(first.planned, val)
    extras = next_stage(spec, search)
    assert extras.name == "extras"
    chosen = select_cells(search).set_index("optimizer")
    # sgd: momentum 0.8 and 0.95 at sgd's chosen lr and wd (0.9 is the default: trained in phase 1 already);
    # adam: the registry's beta2 grid (the spec names none), its default 0.999 left out
    assert sorted((t.config["optimizer"], json.dumps(t.config["hparams"])) for t in extras.planned) == [
        ("adam", '{"beta2": 0.99}'), ("sgd", '{"momentum": 0.8}'), ("sgd", '{"momentum": 0.95}')]
    for t in extras.planned:
        assert (t.config["lr"], t.config["weight_decay"]) == (
            chosen.at[t.config["optimizer"], "lr"], chosen.at[t.config["optimizer"], "weight_decay"])
        assert t.config["lr"] == lrs[t.config["optimizer"]][1]
    both = pd.concat([search, _rows(extras.planned, val)], ignore_index=True)
    seeds = next_stage(spec, both)
    reseeded = {t.config["optimizer"]: t.config["hparams"] for t in seeds.planned}
    assert reseeded == {"sgd": {"momentum": 0.95}, "adam": {}}  # adam's beta2 0.99 did not beat its default
    # the planner's choice is the analysis' choice (one rule, bocb.protocol.choose_configs)
    cells = select_cells(both).set_index("optimizer")
    assert cells.at["sgd", "config"].endswith(",momentum=0.95") and "beta2" not in cells.at["adam", "config"]
    assert cells.at["sgd", "lr"] == lrs["sgd"][1] and cells.at["adam", "lr"] == lrs["adam"][1]


def test_one_phase_stays_the_default_and_multiplies_only_the_extras_the_spec_names() -> None:
    spec = _two_phase(search={"lr_points": 3, "wd_points": 2})
    assert spec.search.phases == "one" and stage_names(spec) == ["search", "seeds"]
    first = next_stage(spec, pd.DataFrame())
    assert len(first.planned) == 6 * 3 + 6  # sgd's momentum multiplies its grid; adam searches no extras


def test_counted_plan_is_what_the_planner_plans() -> None:
    from bocb.sweep.planner import count_plan

    for spec in (_two_phase(), _two_phase(search={"lr_points": 3, "wd_points": 2}),
                 _two_phase(epochs=9, search={"phases": "two", "method": "halving", "lr_points": 3, "wd_points": 3,
                                              "keep_ties": False})):
        results = _run_all(spec, val=lambda c: 1000 * c["lr"] + c["hparams"].get("momentum", 0))
        counted = pd.DataFrame([(c.stage, len(c.epochs), sum(c.epochs)) for c in count_plan(spec)],
                               columns=["stage", "trials", "epochs"]).groupby("stage").sum()
        planned = results.groupby("stage").agg(trials=("trial_key", "size"), epochs=("epochs", "sum"))
        assert counted.loc[planned.index].equals(planned) and set(counted.index) == set(planned.index)


def test_two_phase_search_on_digits(tmp_path) -> None:
    """A real tiny run: the extras are trained only at the lr the search chose on its real results."""
    from bocb.sweep.worker import Assignment, WorkerOptions, worker_loop

    spec = _spec(optimizers=[{"name": "sgd", "extras": {"momentum": [0.8, 0.9]}}], epochs=1,
                 search={"phases": "two", "lr_points": 2, "wd_points": 1})
    run = plan_benchmark(spec, tmp_path)
    assert worker_loop(Assignment(run.store_url, run.benchmark_id, None, WorkerOptions(run.artifact_root))) == 3
    trials = run.store.trials_frame(run.benchmark_id)
    search, extras = (trials[trials["stage"] == s] for s in ("search", "extras"))
    assert len(search) == 2 and set(search["hparams_json"]) == {"{}"} and set(trials["state"]) == {"done"}
    chosen = select_cells(search).iloc[0]
    assert len(extras) == 1 and json.loads(extras["hparams_json"].iloc[0]) == {"momentum": 0.8}
    assert (extras["lr"].iloc[0], extras["weight_decay"].iloc[0]) == (chosen["lr"], chosen["weight_decay"])


def test_an_automatic_budget_check_reruns_the_climbing_cells_of_a_coupled_backbone_at_every_seed() -> None:
    """deit_s with SGD is 20 points behind on one backbone only (coupled) and still climbing at its last
    epoch; every other cell is flat over its last 3 epochs. `budget_check: auto` re-runs exactly that cell,
    at 2x the epochs and at each of its seeds; nothing else."""
    spec = _spec(backbones=["resnet50", "deit_s", "alexnet", "repvgg_a1"], optimizers=["sgd", "adamw", "lamb"],
                 seeds=[0, 1, 2], epochs=4, budget_check="auto")
    assert spec.budget_check.auto and spec.budget_check.multipliers == [2]
    effect = {"sgd": -2.0, "adamw": 0.0, "lamb": 1.0}

    def top1(c):
        drop = -20.0 if (c["backbone"], c["optimizer"]) == ("deit_s", "sgd") else 0.0
        return 60 + effect[c["optimizer"]] + drop + 0.5 * (c["seed"] - 1)

    results, curves = pd.DataFrame(), []
    while (stage := next_stage(spec, results, lambda: pd.DataFrame(curves))) is not None:
        if stage.name == "budget":
            break
        rows = _rows(stage.planned, val=top1, test=top1)
        results = pd.concat([results, rows], ignore_index=True)
        for row in rows.itertuples():  # climbing to the end for deit_s-sgd, flat over the last epochs otherwise
            climbing = (row.backbone, row.optimizer) == ("deit_s", "sgd")
            curves.extend({"trial_key": row.trial_key, "epoch": e,
                           "val_top1": row.val_top1 - ((4 - e) * 6 if climbing else (e == 1) * 10)}
                          for e in range(1, 5))
    assert stage is not None and stage.name == "budget"
    assert {(t.config["backbone"], t.config["optimizer"]) for t in stage.planned} == {("deit_s", "sgd")}
    assert sorted(t.config["seed"] for t in stage.planned) == [0, 1, 2]
    assert {t.config["epochs"] for t in stage.planned} == {8} and {t.budget for t in stage.planned} == {2}
    before = analyse(results.assign(num_classes=10), pd.DataFrame(curves), n_boot=10).verdicts.set_index("backbone")
    assert before.at["deit_s", "verdict"] == "coupled at this budget, still learning"
    caught_up = _rows(stage.planned, val=lambda c: top1(c) + 19, test=lambda c: top1(c) + 19)  # at 2x: the gap closed
    after = analyse(pd.concat([results, caught_up]).assign(num_classes=10), pd.DataFrame(curves), n_boot=10)
    assert after.verdicts.set_index("backbone").at["deit_s", "verdict"] == "slow convergence, not coupled"
    assert next_stage(spec, pd.concat([results, caught_up]), lambda: pd.DataFrame(curves)) is None


# --- planned per pair: the same trials as a run that waits for each whole stage --------------------------

PER_PAIR_SPEC = {**TINY_SPEC, "backbones": ["resnet50", "deit_s", "alexnet"], "optimizers": ["sgd", "adamw", "lamb"],
                 "epochs": 4, "seeds": [0, 1, 2], "reseed": "failure_candidates", "budget_check": "auto",
                 "search": {"lr_points": 3, "wd_points": 1, "lr_step": 3.0, "extend_edges": 2}}


def _per_pair_top1(config: dict) -> float:
    """deit_s with SGD 20 points behind (coupled, flagged by Eq. 1: re-seeded), resnet50 with SGD best past
    the grid's top lr (edges), every other cell best at an interior lr."""
    cell = config["backbone"], config["optimizer"]
    best = {("resnet50", "sgd"): 9.0}.get(cell, 1.0)  # x the grid's middle lr
    middle = {"sgd": 0.1, "adamw": 1e-3, "lamb": 3e-3}[config["optimizer"]]
    distance = abs(math.log(config["lr"] / (middle * best), 3))
    return 60 - 20 * (cell == ("deit_s", "sgd")) - 5 * distance + 0.5 * (config["seed"] - 1)


def _simulate(spec, pick) -> pd.DataFrame:
    """Plan, then finish the trials ``pick`` chooses among the unfinished, until the benchmark is complete;
    asserts on the way that planning is idempotent (what is stored is never planned again). The trials."""
    results, curves = pd.DataFrame(), []
    while (stage := next_stage(spec, results, lambda: pd.DataFrame(curves))) is not None:
        if stage.planned:
            results = pd.concat([results, _rows(stage.planned, val=lambda c: math.nan).assign(state="pending")],
                                ignore_index=True)
            again = next_stage(spec, results, lambda: pd.DataFrame(curves))
            assert again is not None and not {t.key for t in again.planned} & {t.key for t in stage.planned}
        for i in pick(results[results["state"] == "pending"]):
            config = results.loc[i, ["backbone", "optimizer", "lr", "seed"]].to_dict()
            top1 = _per_pair_top1(config) + 10 * (results.at[i, "budget"] > 1)  # at 2x the gap closes
            results.loc[i, ["state", "val_top1", "test_top1"]] = ["done", top1, top1]
            climbing = (config["backbone"], config["optimizer"]) == ("deit_s", "sgd")
            curves.extend({"trial_key": results.at[i, "trial_key"], "epoch": e,
                           "val_top1": top1 - ((4 - e) * 6 if climbing else (e == 1) * 10)} for e in range(1, 5))
    return results


def test_a_run_planned_per_pair_trains_what_a_run_waiting_for_each_stage_trains() -> None:
    """Each pair goes on to its next stage as soon as its own (or, where a rule compares cells, its backbone's
    or the benchmark's) trials are done: whatever the order trials finish in, the same trials (keys, stages,
    budgets) are planned as when a whole stage finishes before any trial of the next."""
    spec = parse_spec(PER_PAIR_SPEC)
    names = stage_names(spec)

    def whole_stage(unfinished: pd.DataFrame) -> pd.Index:
        order = unfinished["stage"].map(names.index)
        return unfinished.index[order == order.min()]

    by_stage = _simulate(spec, whole_stage)
    columns = ["trial_key", "stage", "budget"]
    expected = by_stage[columns].sort_values("trial_key").reset_index(drop=True)
    assert {"edges1", "edges2", "seeds", "budget"} <= set(expected["stage"])  # every kind of stage is exercised
    rng = np.random.default_rng(0)
    any_order = _simulate(spec, lambda unfinished: rng.choice(unfinished.index, min(len(unfinished), 3), False))
    assert any_order[columns].sort_values("trial_key").reset_index(drop=True).equals(expected)


def test_a_pair_goes_on_while_others_train_but_a_backbone_rule_waits_for_its_backbone() -> None:
    spec = parse_spec(PER_PAIR_SPEC)
    first = next_stage(spec, pd.DataFrame())
    rows = _rows(first.planned, val=_per_pair_top1, test=_per_pair_top1)
    alexnet_adamw = (rows["backbone"] == "alexnet") & (rows["optimizer"] == "adamw")
    running = rows.assign(state=rows["state"].mask(~alexnet_adamw, "running"))
    assert next_stage(spec, running).waiting  # its best lr is interior: nothing to add until its backbone is done
    edge = (rows["backbone"] == "resnet50") & (rows["optimizer"] == "sgd")
    running = rows.assign(state=rows["state"].mask(~edge, "running"))
    step = next_stage(spec, running)
    assert step.name == "edges1" and {(t.config["backbone"], t.config["optimizer"]) for t in step.planned} == {
        ("resnet50", "sgd")}
