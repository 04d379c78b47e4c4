"""Cheaper searches: halving whose rungs continue their runs from checkpoints, and early stopping.

The planner's decisions are checked on results filled in by a scoring rule (as in test_planner); what the
engine and the workers do with them, on real tiny trials on digits: a continued run ends bit-identical to
the same run trained straight through, a kill during a rung retrains no finished rung, and an
early-stopped configuration is recorded and never chosen.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_SPEC, bocb_main, write_spec
from test_planner import _rows, _run_all

from bocb.analysis import analyse, select_cells
from bocb.errors import SpecError
from bocb.protocol import stopped_short
from bocb.spec import TrialConfig, parse_spec
from bocb.store import Store
from bocb.sweep import plan_benchmark
from bocb.sweep.planner import count_plan, ended_runs, next_stage, stage_names
from bocb.sweep.worker import Assignment, WorkerOptions, checkpoint_path, worker_loop

HALVING = {"method": "halving", "lr_points": 3, "wd_points": 3, "rungs": [1 / 9, 1 / 3, 1.0], "keep_fraction": 1 / 3}


def _spec(**changes):
    return parse_spec({**TINY_SPEC, "backbones": ["resnet50"], "optimizers": ["adamw"], "seeds": [0], **changes})


def _configs(results: pd.DataFrame, stage: str) -> set[tuple[float, float]]:
    rows = results[results["stage"] == stage]
    return set(zip(rows["lr"], rows["weight_decay"]))


# --- planning ---------------------------------------------------------------------------------------------

def test_continued_rungs_promote_as_restarted_ones_and_train_the_start_of_the_full_run() -> None:
    val = lambda c: 1000 * c["lr"] - c["weight_decay"]  # noqa: E731 - rises with lr, falls with wd
    restart = _run_all(_spec(epochs=9, search=HALVING), val)
    spec = _spec(epochs=9, search={**HALVING, "promotion": "continue"})
    continued = _run_all(spec, val)
    for rung in ("rung0", "rung1", "rung2"):  # the same rule promotes the same configurations
        assert _configs(continued, rung) == _configs(restart, rung)
    stage = next_stage(spec, pd.DataFrame())
    first = [TrialConfig.model_validate(t.config) for t in stage.planned]
    # a rung trains the first epochs of the full-budget run: its schedule, its recipe, its run's key
    assert {(c.epochs, c.schedule_epochs, c.recipe["epochs"]) for c in first} == {(1, 9, 9)}
    full = restart[restart["stage"] == "rung2"]["trial_key"]
    last = continued[continued["stage"] == "rung2"]["trial_key"]
    assert set(last) == set(full)  # the last rung is the whole run: the same trial as a grid's
    grid = {t.key for t in next_stage(_spec(epochs=9, search={**HALVING, "method": "grid"}), pd.DataFrame()).planned}
    assert set(last) <= grid and {c.run_key() for c in first} == grid
    # each rung pays only the epochs past the one before: 9 x 1 + 3 x 2 + 1 x 6 of a grid's 81
    assert sum(sum(c.epochs) for c in count_plan(spec) if c.stage.startswith("rung")) == 21


def test_promotion_and_early_stopping_belong_to_their_methods() -> None:
    with pytest.raises(SpecError, match="search.promotion: applies to method: halving"):
        _spec(search={"promotion": "continue"})
    with pytest.raises(SpecError, match="search.early_stop: applies to method: grid"):
        _spec(search={**HALVING, "early_stop": {"at": 0.3}})
    with pytest.raises(SpecError, match="search.early_stop.at"):
        _spec(search={"early_stop": {"at": 1.0}})
    # a spec without the new options keeps its benchmark id; setting one makes another benchmark
    plain = _spec(search=HALVING)
    assert plain.benchmark_id() == _spec(search={**HALVING, "promotion": "restart"}).benchmark_id()
    assert plain.benchmark_id() != _spec(search={**HALVING, "promotion": "continue"}).benchmark_id()
    assert _spec().benchmark_id() != _spec(search={"early_stop": {}}).benchmark_id()


def test_early_stopping_continues_only_configurations_within_the_margin() -> None:
    spec = _spec(epochs=9, search={"lr_points": 3, "wd_points": 1, "early_stop": {"at": 1 / 3, "margin": 5.0}})
    assert stage_names(spec) == ["probe", "search", "seeds"]
    lrs = sorted({t.config["lr"] for t in next_stage(spec, pd.DataFrame()).planned})
    # at the probe (3 epochs) lr 0 leads with 60; lr 1 is exactly 5 below (goes on); lr 2 is 5.01 below
    probe = {lrs[0]: 60.0, lrs[1]: 55.0, lrs[2]: 54.99}
    results = _run_all(spec, val=lambda c: probe[c["lr"]] if c["epochs"] == 3 else 90.0 - c["lr"])
    assert set(results[results["stage"] == "probe"]["epochs"]) == {3}
    assert sorted(results[results["stage"] == "search"]["lr"]) == lrs[:2]
    stopped = stopped_short(results)
    assert stopped["lr"].tolist() == [lrs[2]] and stopped["stage"].tolist() == ["probe"]
    counted = {c.stage: (len(c.epochs), sum(c.epochs), c.bound) for c in count_plan(spec)}
    assert counted["probe"] == (3, 9, "exact") and counted["search"] == (3, 18, "at most")


def test_an_early_stopped_configuration_is_never_chosen_nor_scored() -> None:
    spec = _spec(epochs=4, search={"lr_points": 3, "wd_points": 1, "early_stop": {"at": 0.5, "margin": 5.0}})
    lrs = sorted({t.config["lr"] for t in next_stage(spec, pd.DataFrame()).planned})
    # the stopped configuration's probe (50) scores above every full-budget result (40): still not chosen
    val = {(2, lrs[0]): 70.0, (2, lrs[1]): 68.0, (2, lrs[2]): 50.0, (4, lrs[0]): 40.0, (4, lrs[1]): 39.0}
    results = _run_all(spec, val=lambda c: val[(c["epochs"], c["lr"])], test=lambda c: c["lr"])
    assert stopped_short(results)["lr"].tolist() == [lrs[2]]
    cells = select_cells(results)
    assert cells["lr"].tolist() == [lrs[0]] and cells["val_top1"].tolist() == [40.0]
    notes = analyse(results, n_boot=10).notes
    assert any(n.startswith("Early stopping: 1 of 3 searched configurations stopped after 2 epochs") for n in notes)


def test_a_diverged_probe_stops_its_configuration_unless_every_probe_diverged() -> None:
    spec = _spec(epochs=4, search={"lr_points": 3, "wd_points": 1, "early_stop": {"at": 0.5, "margin": 50.0}})
    probes = next_stage(spec, pd.DataFrame()).planned
    lrs = sorted(t.config["lr"] for t in probes)
    rows = _rows(probes, val=lambda c: 20.0).assign(state=lambda f: f["lr"].map(
        lambda lr: "diverged" if lr == lrs[2] else "done"))
    assert sorted(t.config["lr"] for t in next_stage(spec, rows).planned) == lrs[:2]
    every = rows.assign(state="diverged")
    assert sorted(t.config["lr"] for t in next_stage(spec, every).planned) == lrs  # nothing to compare with


def test_ended_runs_are_the_starts_no_later_stage_continues() -> None:
    spec = _spec(epochs=9, search={**HALVING, "promotion": "continue"})
    rung0 = next_stage(spec, pd.DataFrame()).planned
    frame = _rows(rung0, val=lambda c: 1000 * c["lr"] - c["weight_decay"]).assign(
        config_json=[json.dumps(t.config, sort_keys=True) for t in rung0])
    assert ended_runs(spec, frame) == set()  # rung1 not planned yet: nothing is decided
    rung1 = next_stage(spec, frame).planned
    both = pd.concat([frame, _rows(rung1, val=lambda c: 1000 * c["lr"] - c["weight_decay"]).assign(
        config_json=[json.dumps(t.config, sort_keys=True) for t in rung1])], ignore_index=True)
    promoted = {TrialConfig.model_validate(t.config).run_key() for t in rung1}
    everything = {TrialConfig.model_validate(t.config).run_key() for t in rung0}
    assert ended_runs(spec, both) == everything - promoted and len(promoted) == 3
    # the whole run finished (here, or in a grid of the same store that shares the trial): its checkpoint too
    rung2 = next_stage(spec, both).planned
    assert len(rung2) == 1 and rung2[0].key in promoted
    done = pd.concat([both, _rows(rung2, val=lambda c: 1.0).assign(config_json=json.dumps(rung2[0].config))])
    assert ended_runs(spec, done) == everything  # the two rung1 left out, and the one run through
    running = done.assign(state=done["state"].mask(done["trial_key"] == rung2[0].key, "running"))
    assert ended_runs(spec, running) == everything - {rung2[0].key}



PROBING = {"lr_points": 3, "wd_points": 1, "lr_step": 3.0, "extend_edges": 2,
           "early_stop": {"at": 0.25, "keep": 1, "probe_edges": True}}


def test_probed_edges_step_on_the_probes_and_only_the_best_probe_goes_on() -> None:
    """With probe_edges, a step past the grid's edge is a probe too (the first epochs of its full run), decided
    on the probes; then only the best ``keep`` probe of them all trains to the end."""
    spec = _spec(epochs=4, search=PROBING)
    assert stage_names(spec) == ["probe", "edges1", "edges2", "search", "seeds"]
    lrs = sorted({t.config["lr"] for t in next_stage(spec, pd.DataFrame()).planned})
    # the probes rise with lr up to 3 steps past the grid's middle: 2 steps past its top edge, then fall
    val = lambda c: 50.0 - abs(math.log(c["lr"] / lrs[1], 3) - 3) - (c["epochs"] == 1) * 10  # noqa: E731
    results = _run_all(spec, val)
    edges = results[results["stage"].str.startswith("edges")]
    configs = [TrialConfig.model_validate_json(c) for c in edges["config_json"]]
    assert [(c.epochs, c.schedule_epochs) for c in configs] == [(1, 4), (1, 4)]
    assert sorted(edges["lr"]) == pytest.approx([lrs[2] * 3, lrs[2] * 9])
    search = results[results["stage"] == "search"]
    assert list(search["epochs"]) == [4] and search["lr"].tolist() == pytest.approx([lrs[2] * 9])
    assert len(stopped_short(results)) == 4  # every other probe stopped: recorded, never scored
    counted = {c.stage: (len(c.epochs), sum(c.epochs), c.bound) for c in count_plan(spec)}
    assert counted["edges1"] == (1, 1, "at most") and counted["search"] == (1, 3, "at most")
    # a probe's checkpoint is kept while a later edge step may still make it the best, dropped once it is not
    assert ended_runs(spec, results[results["stage"].isin(["probe", "edges1"])]) == set()
    started = {TrialConfig.model_validate_json(c).run_key()
               for c in results.loc[results["stage"] != "search", "config_json"]}
    assert ended_runs(spec, results) == started  # the one continued ran to its end: its checkpoint goes too


def test_restarted_probes_are_short_runs_of_their_own_and_the_best_trains_the_grids_run_from_scratch() -> None:
    """promotion: restart — a probe anneals over its own few epochs (no checkpoint for the full run to go on
    from), the configuration that goes on trains the very trial a grid trains, and the plan counts it whole."""
    spec = _spec(epochs=4, search={**PROBING, "early_stop": {**PROBING["early_stop"], "promotion": "restart"}})
    lrs = sorted({t.config["lr"] for t in next_stage(spec, pd.DataFrame()).planned})
    val = lambda c: 50.0 - abs(math.log(c["lr"] / lrs[1], 3) - 1) - (c["epochs"] == 1) * 10  # noqa: E731
    results = _run_all(spec, val)
    probes = results[results["stage"].isin(["probe", "edges1", "edges2"])]
    assert {(c.epochs, c.schedule_epochs) for c in map(TrialConfig.model_validate_json, probes["config_json"])} \
        == {(1, None)}
    grid = _run_all(_spec(epochs=4, search={k: v for k, v in PROBING.items() if k != "early_stop"}), val)
    search = results[results["stage"] == "search"]
    assert search["lr"].tolist() == pytest.approx([lrs[2]])  # one step past the grid's middle: its top
    assert set(search["trial_key"]) <= set(grid["trial_key"])
    assert ended_runs(spec, results) == set()  # no probe is the start of a longer run
    counted = {c.stage: (len(c.epochs), sum(c.epochs), c.bound) for c in count_plan(spec)}
    assert counted["probe"] == (3, 3, "exact") and counted["search"] == (1, 4, "at most")
    continued = _spec(epochs=4, search=PROBING)
    assert spec.benchmark_id() != continued.benchmark_id()
    assert continued.benchmark_id() == _spec(epochs=4, search={
        **PROBING, "early_stop": {**PROBING["early_stop"], "promotion": "continue"}}).benchmark_id()


def test_keep_caps_the_configurations_within_the_margin_that_go_on() -> None:
    spec = _spec(epochs=4, search={"lr_points": 3, "wd_points": 1, "early_stop": {"at": 0.5, "keep": 2}})
    lrs = sorted({t.config["lr"] for t in next_stage(spec, pd.DataFrame()).planned})
    probe = {lrs[0]: 60.0, lrs[1]: 59.0, lrs[2]: 58.0}  # all within the margin of 10: the best two go on
    results = _run_all(spec, val=lambda c: probe[c["lr"]] if c["epochs"] == 2 else 90.0 - c["lr"])
    assert sorted(results[results["stage"] == "search"]["lr"]) == lrs[:2]


def test_probe_options_need_what_they_act_on_and_keep_old_ids() -> None:
    with pytest.raises(SpecError, match="search.early_stop.probe_edges: .*set search.extend_edges"):
        _spec(search={"early_stop": {"probe_edges": True}})
    with pytest.raises(SpecError, match="search.early_stop.keep"):
        _spec(search={"early_stop": {"keep": 0}})
    before = _spec(search={"early_stop": {"at": 0.5}})
    assert before.benchmark_id() == _spec(search={"early_stop": {"at": 0.5, "keep": None}}).benchmark_id()
    assert before.benchmark_id() != _spec(search={"early_stop": {"at": 0.5, "keep": 1}}).benchmark_id()


# --- real trials ------------------------------------------------------------------------------------------

CONTINUED = {**TINY_SPEC, "backbones": ["resnet50"], "optimizers": ["sgd"], "epochs": 4, "seeds": [0],
             "search": {"method": "halving", "lr_points": 3, "wd_points": 1, "rungs": [0.25, 1.0],
                        "keep_fraction": 1 / 3, "promotion": "continue"}, "keep_weights": "all"}


def _stage_rows(db: Path) -> pd.DataFrame:
    from test_sweep import _query

    return _query(db, "SELECT trials.key, trials.state, trials.finished_at, trials.attempts, trials.epochs, "
                      "trials.resumed_from_epoch, plan.stage FROM trials JOIN plan ON plan.trial_key = trials.key")


@pytest.mark.slow
def test_a_continued_run_ends_bit_identical_to_the_run_trained_straight_through(tmp_path: Path) -> None:
    spec = parse_spec(CONTINUED)
    run = plan_benchmark(spec, tmp_path / "halving")
    assert worker_loop(Assignment(run.store_url, run.benchmark_id, None, WorkerOptions(run.artifact_root))) == 4
    trials = run.store.trials_frame(run.benchmark_id)
    last = trials[trials["stage"] == "rung1"].iloc[0]
    assert last["epochs"] == 4 and last["resumed_from_epoch"] == 1  # continued after the first rung's epoch
    assert not (run.artifact_root / "checkpoints").exists() or not any((run.artifact_root / "checkpoints").iterdir())
    # the same configuration as one plain 4-epoch trial, in a store of its own
    lr, wd = last["lr"], last["weight_decay"]
    grid = plan_benchmark(parse_spec({**CONTINUED, "search": {"lr_points": 1, "wd_points": 1},
                                      "optimizers": [{"name": "sgd", "lr": [lr], "weight_decay": [wd]}]}),
                          tmp_path / "straight")
    assert worker_loop(Assignment(grid.store_url, grid.benchmark_id, None, WorkerOptions(grid.artifact_root))) == 1
    straight = grid.store.trials_frame(grid.benchmark_id).iloc[0]
    assert straight["trial_key"] == last["trial_key"] and pd.isna(straight["resumed_from_epoch"])
    for column in ("val_top1", "test_top1", "test_top5", "train_loss"):
        assert straight[column] == last[column]
    weights = f"weights/{last['trial_key']}.safetensors"
    assert (run.artifact_root / weights).read_bytes() == (grid.artifact_root / weights).read_bytes()
    # the continued trial's learning curve is whole: the epoch it continued from is recorded under it too
    # (with the test top-1 its rung measured at its end, which a run trained straight through skips)
    curve = run.store.epochs_frame(run.benchmark_id).query("trial_key == @last.trial_key")
    reference = grid.store.epochs_frame(grid.benchmark_id)
    columns = ["epoch", "train_loss", "val_top1"]
    assert curve[columns].reset_index(drop=True).equals(reference[columns].reset_index(drop=True))


@pytest.mark.slow
def test_a_kill_during_a_rung_resumes_without_retraining_finished_rungs(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path / "spec.yaml", **{k: v for k, v in CONTINUED.items() if k not in TINY_SPEC or
                                                 CONTINUED[k] != TINY_SPEC[k]})
    out, db = tmp_path / "out", tmp_path / "out" / "bocb.db"
    run = subprocess.Popen([sys.executable, "-m", "bocb", "run", str(spec), "--out", str(out), "--workers", "1",
                            "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from test_sweep import _query

    deadline = time.time() + 400
    while time.time() < deadline:  # the last rung has trained at least one epoch past the first rung
        rows = _stage_rows(db)
        keys = set(rows.loc[rows["stage"] == "rung1", "key"]) if len(rows) else set()
        epochs = _query(db, "SELECT trial_key, epoch FROM epochs")
        if keys and len(epochs) and ((epochs["trial_key"].isin(keys)) & (epochs["epoch"] >= 1)).any():
            break
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    time.sleep(1.0)  # the orphaned worker dies with its parent
    before = _stage_rows(db).set_index("key")
    first = before[before["stage"] == "rung0"]
    assert len(first) == 3 and set(first["state"]) == {"done"}
    assert before.loc[before["stage"] == "rung1", "state"].tolist() != ["done"], "the kill must land in rung1"
    code, _, err = bocb_main("run", str(spec), "--out", str(out), "--workers", "1", "--no-report", capsys=capsys)
    assert code == 0, err
    after = _stage_rows(db).set_index("key")
    assert set(after["state"]) == {"done"} and len(after) == 4
    assert (after.loc[first.index, "finished_at"] == first["finished_at"]).all()  # no finished rung re-ran
    assert after.loc[first.index, "attempts"].eq(1).all()
    last = after[after["stage"] == "rung1"].iloc[0]
    assert last["attempts"] == 2 and last["resumed_from_epoch"] >= 1  # from the rung's checkpoint or a later one
    # and it ends as the uninterrupted continued run does
    reference = plan_benchmark(parse_spec(CONTINUED), tmp_path / "reference")
    worker_loop(Assignment(reference.store_url, reference.benchmark_id, None, WorkerOptions(reference.artifact_root)))
    expected = reference.store.trials_frame(reference.benchmark_id).set_index("trial_key")
    got = Store(db).trials_frame().set_index("trial_key")
    assert got.loc[expected.index, "val_top1"].equals(expected["val_top1"])
    assert got.loc[expected.index, "test_top1"].equals(expected["test_top1"])


@pytest.mark.slow
def test_early_stopping_on_digits_records_the_stopped_configuration(tmp_path: Path, capsys) -> None:
    """A learning rate that cannot learn in one epoch stops at the probe; the others go on from their checkpoint."""
    spec = write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], epochs=4, batch_size=32,
                      recipe_overrides={"hflip": False, "crop_padding": 0},
                      optimizers=[{"name": "sgd", "lr": [0.05, 0.1, 1e-7], "weight_decay": [0.0]}],
                      search={"early_stop": {"at": 0.5, "margin": 5.0}})
    code, out, err = bocb_main("run", str(spec), "--out", str(tmp_path / "out"), "--workers", "1", "--no-report",
                               capsys=capsys)
    assert code == 0, err
    trials = Store(tmp_path / "out" / "bocb.db").trials_frame()
    probes, search = trials[trials["stage"] == "probe"], trials[trials["stage"] == "search"]
    assert len(probes) == 3 and set(probes["epochs"]) == {2} and set(probes["state"]) == {"done"}
    assert sorted(search["lr"]) == [0.05, 0.1] and set(search["resumed_from_epoch"]) == {2}
    assert stopped_short(trials)["lr"].tolist() == [1e-7]
    assert "note: Early stopping: 1 of 3 searched configurations stopped after 2 epochs" in out
    artifacts = tmp_path / "out" / "artifacts"
    assert not any(checkpoint_path(artifacts, TrialConfig.model_validate(json.loads(c)).run_key()).exists()
                   for c in trials["config_json"])  # the stopped run's checkpoint was pruned, the others used up
