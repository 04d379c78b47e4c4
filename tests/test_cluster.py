"""Many workers on one planned benchmark (PostgreSQL), a worker killed mid-trial, and the Ray executor."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import POSTGRES_URL, _fresh_postgres_db, bocb_main, write_spec

from bocb.spec import load_spec
from bocb.store import Store

needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="no PostgreSQL test server: set BOCB_TEST_POSTGRES_URL "
                                                             "(bash .ci/run starts one)")


def _start_workers(url: str, n: int, artifacts: Path, *extra: str) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-m", "bocb", "worker", "--store", url, "--artifact-root", str(artifacts),
                              "--heartbeat", "0.5", "--stale-after", "5", *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]


def _plan(tmp_path: Path, url: str, capsys, **changes) -> None:
    spec = write_spec(tmp_path / "spec.yaml", **changes)
    code, _, err = bocb_main("run", str(spec), "--store", url, "--plan-only", "--out", str(tmp_path / "out"),
                             capsys=capsys)
    assert code == 0, err


@pytest.mark.slow
@pytest.mark.postgres
@needs_postgres
def test_three_workers_run_every_trial_exactly_once(tmp_path: Path, capsys) -> None:
    url = _fresh_postgres_db("bocb_three_workers")
    _plan(tmp_path, url, capsys, backbones=["resnet50"], optimizers=["sgd", "adamw", "adam"], epochs=1,
          search={"lr_points": 2, "wd_points": 1})
    workers = _start_workers(url, 3, tmp_path / "artifacts")
    outputs = [w.communicate(timeout=900) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    ran = [int(o[0].split("worker ran ")[1].split()[0]) for o in outputs]
    trials = Store(url).trials_frame()
    assert len(trials) == 6 and trials["trial_key"].is_unique
    assert set(trials["state"]) == {"done"} and trials["attempts"].eq(1).all()
    assert sum(ran) == 6 and sum(r > 0 for r in ran) >= 2  # the work was shared


@pytest.mark.slow
@pytest.mark.postgres
@needs_postgres
def test_killed_worker_trial_is_reclaimed_and_resumed_from_checkpoint(tmp_path: Path, capsys) -> None:
    url = _fresh_postgres_db("bocb_killed_worker")
    _plan(tmp_path, url, capsys, backbones=["resnet50"], optimizers=["sgd", "adamw"], epochs=3,
          checkpoint_every=1, search={"lr_points": 1, "wd_points": 1})
    store = Store(url)
    victim = _start_workers(url, 1, tmp_path / "artifacts")[0]
    deadline = time.time() + 600
    while time.time() < deadline:  # wait until its trial has a checkpoint and an epoch stored
        epochs = store.epochs_frame()
        if len(epochs) >= 1 and any((tmp_path / "artifacts" / "checkpoints").glob("*.pt")):
            break
        time.sleep(0.3)
    running = store.trials_frame().query("state == 'running'")
    assert len(running) == 1, "the victim must be mid-trial"
    key = running["trial_key"].iloc[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    rescuers = _start_workers(url, 2, tmp_path / "artifacts")
    outputs = [w.communicate(timeout=900) for w in rescuers]
    assert all(w.returncode == 0 for w in rescuers), [o[1][-2000:] for o in outputs]
    trials = store.trials_frame().set_index("trial_key")
    assert len(trials) == 2 and set(trials["state"]) == {"done"}
    assert trials.loc[key, "attempts"] == 2 and trials.loc[key, "resumed_from_epoch"] >= 1
    assert trials.drop(index=key)["attempts"].eq(1).all()
    epochs = store.epochs_frame()
    assert epochs.groupby("trial_key")["epoch"].apply(list).map(lambda e: e == [0, 1, 2]).all()


@pytest.mark.slow
@pytest.mark.ray
def test_ray_executor_matches_local_bitwise(tmp_path: Path, capsys) -> None:
    """A halving whose last rung continues each run from its rung checkpoint: Ray tasks resume as local
    workers do, and every number matches."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    spec_path = write_spec(tmp_path / "spec.yaml", backbones=["alexnet"], optimizers=["sgd", "adamw"], epochs=2,
                           search={"method": "halving", "lr_points": 2, "wd_points": 1, "rungs": [0.5, 1.0],
                                   "keep_fraction": 0.5, "keep_ties": False, "promotion": "continue"})
    code, _, err = bocb_main("run", str(spec_path), "--out", str(tmp_path / "local"), "--workers", "2",
                             "--no-report", capsys=capsys)
    assert code == 0, err
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        code, _, err = bocb_main("run", str(spec_path), "--out", str(tmp_path / "ray"), "--executor", "ray",
                                 "--no-report", capsys=capsys)
    finally:
        ray.shutdown()
    assert code == 0, err
    local = pd.read_csv(tmp_path / "local" / "results.csv").set_index("trial_key")
    on_ray = pd.read_csv(tmp_path / "ray" / "results.csv").set_index("trial_key")
    assert len(local) == 6 and sorted(local.index) == sorted(on_ray.index)
    for column in ("val_top1", "test_top1", "train_loss", "resumed_from_epoch"):
        assert local[column].equals(on_ray.loc[local.index, column]), column
    assert on_ray.loc[on_ray["stage"] == "rung1", "resumed_from_epoch"].tolist() == [1, 1]
    assert load_spec(spec_path).executor == "local"


def test_ray_starts_as_many_worker_loops_as_the_cluster_fits() -> None:
    """Each Ray task is a whole worker loop: one per trial the cluster can run at once with the spec's
    resources (the scarcer of CPUs and GPUs decides), at least one."""
    from types import SimpleNamespace

    from bocb.sweep.ray_executor import _fits

    cluster = SimpleNamespace(cluster_resources=lambda: {"CPU": 8.0, "GPU": 2.0})
    assert _fits(cluster, SimpleNamespace(num_cpus=2.0, num_gpus=0.0)) == 4
    assert _fits(cluster, SimpleNamespace(num_cpus=1.0, num_gpus=1.0)) == 2
    assert _fits(cluster, SimpleNamespace(num_cpus=1.0, num_gpus=0.5)) == 4
    small = SimpleNamespace(cluster_resources=lambda: {"CPU": 1.0})
    assert _fits(small, SimpleNamespace(num_cpus=4.0, num_gpus=0.0)) == 1


@pytest.mark.slow
def test_a_worker_whose_claim_is_taken_over_stops_and_the_new_owner_resumes(tmp_path: Path, capsys) -> None:
    """Claims are leases: once another worker holds the trial, the first one's heartbeat is refused, it stops
    at the next epoch boundary without writing a checkpoint, and the new owner finishes from the last one."""
    import sqlalchemy as sa

    from bocb.store import trials as trials_table

    url = f"sqlite:///{tmp_path / 'store.db'}"
    _plan(tmp_path, url, capsys, backbones=["resnet50"], optimizers=["sgd"], epochs=6, checkpoint_every=1,
          search={"lr_points": 1, "wd_points": 1})
    store = Store(url)
    first = subprocess.Popen([sys.executable, "-m", "bocb", "worker", "--store", url, "--artifact-root",
                              str(tmp_path / "artifacts"), "--heartbeat", "0.1", "--max-trials", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and len(store.epochs_frame()) < 2:
        time.sleep(0.2)
    key = store.trials_frame()["trial_key"].iloc[0]
    taken = None
    for _ in range(50):  # as if its heartbeat had gone stale and another worker had claimed it; the first
        with store.engine.begin() as conn:  # worker's own heartbeat (every 0.1 s) may refresh it in between
            conn.execute(sa.update(trials_table).where(trials_table.c.key == key).values(heartbeat_at=0.0))
        taken = store.claim("remote-host:1:new-owner", stale_after=1.0)  # the store's one trial: ``key``
        if taken is not None:
            break
    assert taken is not None
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert "claim lost, another worker holds it now" in err and "Traceback" not in err
    row = store.trials_frame().iloc[0]
    assert row["state"] == "running" and row["worker"] == "remote-host:1:new-owner"  # untouched by the first
    stopped_at = int(store.epochs_frame()["epoch"].max())
    assert stopped_at < 5  # it stopped early
    assert store.release(key, "remote-host:1:new-owner")  # the new owner hands it to a real worker
    code, _, err = bocb_main("worker", "--store", url, "--artifact-root", str(tmp_path / "artifacts"), capsys=capsys)
    assert code == 0, err
    row = store.trials_frame().iloc[0]
    assert row["state"] == "done" and row["resumed_from_epoch"] >= 1 and row["attempts"] == 3
