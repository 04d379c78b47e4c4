"""`bocb export --tensorboard/--mlflow`: a real tiny run's trials read back with each library's own reader
(TensorBoard's event accumulator, MLflow's client) and compared value for value with the store."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import bocb_main

from bocb.protocol import SCORED
from bocb.store import Store

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def stored(finished_tiny: Path) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    store = Store(finished_tiny / "bocb.db", read_only=True)
    benchmark = store.benchmark_ids()[-1]
    trials = store.trials_frame(benchmark)
    return benchmark, trials[trials["state"].isin([s.value for s in SCORED])], store.epochs_frame(benchmark)


def _curve(epochs: pd.DataFrame, key: str, column: str) -> list[tuple[int, float]]:
    rows = epochs[(epochs["trial_key"] == key) & epochs[column].notna()].sort_values("epoch")
    return [(int(e), float(v)) for e, v in zip(rows["epoch"], rows[column])]


def _tensorboard_runs(root: Path) -> dict[str, Path]:
    """{trial key: run directory}: each run is a directory whose name ends with its key's first 8 characters."""
    return {run.name.rsplit("-", 1)[1]: run for run in root.rglob("seed*-*") if run.is_dir()}


def test_tensorboard_holds_every_scored_trial_value_for_value(finished_tiny, stored, tmp_path, capsys) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    benchmark, trials, epochs = stored
    code, out, err = bocb_main("export", str(finished_tiny / "bocb.db"), "--tensorboard", str(tmp_path / "tb"),
                               capsys=capsys)
    assert code == 0, err
    assert out.startswith(f"tensorboard: {len(trials)} runs added, 0 already there")
    runs = _tensorboard_runs(tmp_path / "tb" / benchmark)
    assert sorted(runs) == sorted(k[:8] for k in trials["trial_key"])
    for _, trial in trials.iterrows():
        run = runs[trial["trial_key"][:8]]
        assert run.relative_to(tmp_path / "tb" / benchmark).parts[:2] == (trial["backbone"], trial["optimizer"])
        events = EventAccumulator(str(run))
        events.Reload()
        for column in ("train_loss", "val_top1", "test_top1", "lr"):
            expected = _curve(epochs, trial["trial_key"], column)
            assert [s.step for s in events.Scalars(column)] == [e for e, _ in expected]
            assert [s.value for s in events.Scalars(column)] == pytest.approx(  # event files hold 32-bit floats
                [v for _, v in expected], rel=1e-6)
        assert events.Scalars("final/test_top1")[0].value == pytest.approx(trial["test_top1"], rel=1e-6)
        start = plugin_data_pb2.HParamsPluginData.FromString(
            events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
        assert {k: v.string_value or v.number_value for k, v in start.hparams.items()} == {
            "backbone": trial["backbone"], "optimizer": trial["optimizer"], "lr": trial["lr"],
            "weight_decay": trial["weight_decay"], "seed": trial["seed"], "epochs": trial["epochs"],
            "stage": trial["stage"], "state": trial["state"],
            **{f"extra.{k}": v for k, v in json.loads(trial["hparams_json"]).items()}}


def test_mlflow_holds_every_scored_trial_value_for_value(finished_tiny, stored, tmp_path, capsys) -> None:
    from mlflow import MlflowClient

    benchmark, trials, epochs = stored
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, err = bocb_main("export", str(finished_tiny / "bocb.db"), "--mlflow", uri, capsys=capsys)
    assert code == 0 and f"mlflow: {len(trials)} runs added, 0 already there" in out, err
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"bocb {trials['benchmark_name'].iloc[0]} {benchmark}")
    runs = {r.data.tags["bocb.trial_key"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(trials["trial_key"])
    for _, trial in trials.iterrows():
        run = runs[trial["trial_key"]]
        assert run.data.params == {"backbone": trial["backbone"], "optimizer": trial["optimizer"],
                                   "lr": str(trial["lr"]), "weight_decay": str(trial["weight_decay"]),
                                   "seed": str(trial["seed"]), "epochs": str(trial["epochs"]),
                                   "stage": trial["stage"], "state": trial["state"],
                                   **{f"extra.{k}": str(v) for k, v in json.loads(trial["hparams_json"]).items()}}
        assert run.data.tags["bocb.stage"] == trial["stage"] and run.data.tags["bocb.state"] == trial["state"]
        assert run.data.tags["bocb.git_commit"] == trial["git_commit"]
        assert run.data.tags["bocb.optimizer_class"] == trial["optimizer_class"]
        assert run.info.status == "FINISHED"
        for column in ("train_loss", "val_top1", "test_top1", "lr"):
            history = client.get_metric_history(run.info.run_id, column)
            assert sorted((m.step, m.value) for m in history) == _curve(epochs, trial["trial_key"], column)
        finals = {k: v for k, v in run.data.metrics.items() if k.startswith("final/")}
        assert finals == {f"final/{m}": trial[m] for m in ("val_top1", "test_top1", "test_top5", "train_loss")
                          if not math.isnan(trial[m])}


def test_an_export_run_again_adds_nothing_twice(finished_tiny, stored, tmp_path, capsys) -> None:
    _, trials, _ = stored
    args = ("export", str(finished_tiny / "bocb.db"), "--tensorboard", str(tmp_path / "tb"),
            "--mlflow", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert bocb_main(*args, capsys=capsys)[0] == 0
    files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "tb").rglob("*"))
    code, out, _ = bocb_main(*args, capsys=capsys)
    assert code == 0 and out.count(f"0 runs added, {len(trials)} already there") == 2, out
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "tb").rglob("*")) == files


@pytest.mark.parametrize("args, expected", [
    ([], "-o: give a bundle file (-o), a TensorBoard directory (--tensorboard) or an MLflow tracking URI"),
    (["--tensorboard", "{file}"], "--tensorboard: {file} is a file; give a directory"),
    (["--mlflow", "nonsense://x"], "--mlflow: 'nonsense://x'"),
    (["--weights", "--tensorboard", "{dir}"], "--weights: goes into a bundle: give -o FILE as well"),
])
def test_a_bad_export_destination_is_one_line(args, expected, finished_tiny, tmp_path, capsys) -> None:
    (tmp_path / "a-file").write_text("x")
    fill = {"file": str(tmp_path / "a-file"), "dir": str(tmp_path / "tb")}
    code, out, err = bocb_main("export", str(finished_tiny / "bocb.db"), *[a.format(**fill) for a in args],
                               capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and expected.format(**fill) in err, err
    assert not (tmp_path / "tb").exists()
