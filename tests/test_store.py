"""The store on SQLite and PostgreSQL: unique trials, atomic claims, heartbeats, reclaiming, epochs."""
from __future__ import annotations

import json
import pickle
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from bocb.errors import BocbError
from bocb.store import PlannedTrial, Store
from bocb.weights import COLUMNS, TEXT_COLUMNS


def _planned(n: int, stage: str = "search") -> list[PlannedTrial]:
    return [PlannedTrial(f"k{i:03d}", {"backbone": "resnet50", "size": "tiny", "optimizer": "sgd", "lr": 0.1 * (i + 1),
                                        "weight_decay": 0.0, "hparams": {}, "seed": 0, "epochs": 2}, stage)
            for i in range(n)]


def _layer_table(alpha: float) -> pd.DataFrame:
    """One layer's row with every column of bocb.weights' table (text columns text, the rest empty)."""
    row = {c: ("fc" if c in TEXT_COLUMNS else None) for c in COLUMNS}
    return pd.DataFrame([{**row, "alpha": alpha}])


def test_planning_is_idempotent(store_url: str) -> None:
    store = Store(store_url)
    store.register_benchmark("b1", "bench", {"x": 1})
    store.register_benchmark("b1", "bench", {"x": 1})
    assert store.add_trials("b1", _planned(5)) == 5
    assert store.add_trials("b1", _planned(5)) == 0
    store.register_benchmark("b2", "other", {"x": 2})
    assert store.add_trials("b2", _planned(2)) == 2  # the same trials shared by a second benchmark
    assert store.counts("b1") == {"pending": 5} and store.counts() == {"pending": 5}
    assert len(store.trials_frame("b1")) == 5


def test_an_assignment_crosses_to_another_process_as_plain_data_and_its_worker_claims_there(store_url: str,
                                                                                            tmp_path: Path) -> None:
    from conftest import TINY_SPEC

    from bocb.spec import parse_spec
    from bocb.sweep.worker import Assignment, WorkerOptions

    store = Store(store_url)
    store.register_benchmark("b1", "bench", {"x": 1}, _planned(2))
    assignment = Assignment(store.url, "b1", parse_spec(TINY_SPEC), WorkerOptions(tmp_path))
    sent = pickle.dumps(assignment)  # as the local executor's worker processes and Ray's tasks get it
    assert store.url.encode() in sent and b"sqlalchemy" not in sent  # the URL, no engine or connection
    there = pickle.loads(sent)
    assert there == assignment  # the spec too, as validated here
    claimed = Store.for_worker(there.store_url).claim("w-there", "b1", 60.0)
    assert claimed is not None and store.counts("b1") == {"pending": 1, "running": 1}


def test_concurrent_claims_take_each_trial_once(store_url: str) -> None:
    store = Store(store_url)
    store.register_benchmark("b", "bench", {})
    store.add_trials("b", _planned(30))
    taken: list[str] = []
    lock = threading.Lock()

    def grab(worker: str) -> None:
        mine = Store(store_url)
        while (claimed := mine.claim(worker, "b")) is not None:
            with lock:
                taken.append(claimed.key)

    threads = [threading.Thread(target=grab, args=(f"host:{i}:w",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [f"k{i:03d}" for i in range(30)]


def test_stale_heartbeat_is_reclaimed_and_late_finish_is_refused(store_url: str) -> None:
    store = Store(store_url)
    store.register_benchmark("b", "bench", {})
    store.add_trials("b", _planned(1))
    first = store.claim("remote-host:1:a", "b")
    assert first is not None and first.attempts == 1
    assert store.claim("remote-host:2:b", "b", stale_after=60) is None  # fresh heartbeat: still owned
    assert store.heartbeat(first.key, "remote-host:1:a")
    time.sleep(1.2)
    second = store.claim("remote-host:2:b", "b", stale_after=1.0)
    assert second is not None and second.key == first.key and second.attempts == 2
    assert not store.heartbeat(first.key, "remote-host:1:a")
    assert not store.finish(first.key, "remote-host:1:a", {"state": "done", "test_top1": 1.0}, None)
    assert store.finish(second.key, "remote-host:2:b", {"state": "done", "test_top1": 50.0, "val_top1": 40.0},
                        _layer_table(alpha=3.5))
    row = store.trials_frame("b").iloc[0]
    assert row["state"] == "done" and row["test_top1"] == 50.0
    assert store.layer_table(first.key)["alpha"].tolist() == [3.5]


def test_a_layer_table_the_readers_would_refuse_is_not_written(store_url: str) -> None:
    store = Store(store_url)
    store.register_benchmark("b", "bench", {})
    store.add_trials("b", _planned(1))
    claimed = store.claim("w", "b")
    partial = pd.DataFrame({"name": ["fc"], "alpha": [3.5]})  # not every column bocb.weights writes
    with pytest.raises(ValueError, match="a layer table must be a layer table"):
        store.finish(claimed.key, "w", {"state": "done", "test_top1": 50.0}, partial)
    assert store.trials_frame("b").iloc[0]["state"] == "running"
    with pytest.raises(BocbError, match="no layer table"):
        store.layer_table(claimed.key)


def test_dead_local_worker_is_reclaimed_at_once(store_url: str) -> None:
    import socket

    store = Store(store_url)
    store.register_benchmark("b", "bench", {})
    store.add_trials("b", _planned(1))
    dead = f"{socket.gethostname()}:999999:x"  # no process has this pid
    assert store.claim(dead, "b") is not None
    assert store.claim("other:1:y", "b", stale_after=3600) is not None


def test_epochs_are_recorded_once_even_when_rerun(store_url: str) -> None:
    store = Store(store_url)
    store.register_benchmark("b", "bench", {})
    store.add_trials("b", _planned(1))
    claimed = store.claim("w:1:a", "b")
    for epoch in (0, 1, 1, 2):  # epoch 1 is run again after a resume
        store.record_epoch(claimed.key, {"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "test_top1": epoch})
    epochs = store.epochs_frame("b")
    assert epochs["epoch"].tolist() == [0, 1, 2]


def test_progress_signature_moves_when_trials_are_planned_or_finish_only(store_url: str) -> None:
    store = Store(store_url)
    store.register_benchmark("b", "bench", {})
    store.add_trials("b", _planned(2))
    planned = store.progress_signature("b")
    assert planned == (2, 0, None)
    claimed = store.claim("remote-host:1:a", "b")
    store.heartbeat(claimed.key, "remote-host:1:a")
    store.record_epoch(claimed.key, {"epoch": 0, "train_loss": 1.0})
    assert store.progress_signature("b") == planned  # claims, heartbeats and epochs leave the plan alone
    store.finish(claimed.key, "remote-host:1:a", {"state": "diverged"}, None)
    finished = store.progress_signature("b")
    assert finished[:2] == (2, 1) and finished[2] == store.trials_frame("b")["finished_at"].max()
    store.add_trials("b", _planned(3))
    assert store.progress_signature("b") == (3, 1, finished[2])


DATA = Path(__file__).parent / "data"


def test_a_store_of_the_previous_release_opens_migrates_and_finishes(tmp_path: Path, capsys) -> None:
    """data/store_schema1.sqlite was written by bocb at commit d4f3cab (schema 1: no version table, keys of
    key_version 1) running data/store_schema1.yaml. Opened today, its trials take today's keys in one
    transaction, and the same spec run against it finds both finished: nothing is trained again."""
    from conftest import bocb_main

    from bocb.protocol import trial_key

    store = tmp_path / "old.sqlite"
    shutil.copy(DATA / "store_schema1.sqlite", store)
    code, out, err = bocb_main("run", str(DATA / "store_schema1.yaml"), "--store", str(store), "--out",
                               str(tmp_path / "out"), "--no-report", capsys=capsys)
    assert code == 0, err
    assert "2 trials: 2 done, 0 diverged (scored at chance), 0 crashed" in out
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT key, config_json, state, attempts FROM trials").fetchall()
        linked = db.execute("SELECT COUNT(*) FROM plan JOIN trials ON trials.key = plan.trial_key").fetchone()[0]
        epochs = db.execute("SELECT COUNT(*) FROM epochs JOIN trials ON trials.key = epochs.trial_key").fetchone()[0]
        version = db.execute("SELECT MAX(version) FROM bocb_schema").fetchone()[0]
    assert version == 2 and len(rows) == 2 and linked == 4 and epochs == 2  # both benchmarks link both trials
    assert all(key == trial_key(json.loads(config)) and state == "done" and attempts == 1
               for key, config, state, attempts in rows)


def test_trial_keys_are_pinned() -> None:
    """A trial's key must not move between releases (a moved key re-runs the trial): pinned for the
    previous release's SGD trial (its config as stored there)."""
    from bocb.protocol import trial_key

    with sqlite3.connect(DATA / "store_schema1.sqlite") as db:
        configs = {json.loads(c)["optimizer"]: json.loads(c) for (c,) in db.execute("SELECT config_json FROM trials")}
    assert trial_key(configs["sgd"]) == "cb9c7c867c50d08aa796"


def test_a_store_of_a_newer_bocb_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "new.db")
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO bocb_schema (version, migrated_at) VALUES (99, 0)"))
    with pytest.raises(BocbError, match="made by a newer bocb"):
        Store(tmp_path / "new.db")
    with pytest.raises(BocbError, match="made by a newer bocb") as refused:  # a worker, which checks no more
        Store.for_worker(store.url)
    assert "\n" not in str(refused.value)


def test_an_interrupted_upgrade_is_redone_on_the_next_open(tmp_path: Path, monkeypatch) -> None:
    """SQLite commits DDL at once: an upgrade stopped after creating the version table must not leave the
    store marked as upgraded with its trials under old keys."""
    import bocb.store.schema as store_module
    from bocb.protocol import trial_key

    path = tmp_path / "old.sqlite"
    shutil.copy(DATA / "store_schema1.sqlite", path)
    rekey = store_module._rekey_trials

    def interrupted(conn):
        rekey(conn)
        raise KeyboardInterrupt  # after the work, before the commit

    monkeypatch.setattr(store_module, "_rekey_trials", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Store(path)
    monkeypatch.setattr(store_module, "_rekey_trials", rekey)
    trials = Store(path).trials_frame()
    assert len(trials) == 2 and all(k == trial_key(json.loads(c)) for k, c in zip(trials["trial_key"],
                                                                                 trials["config_json"]))


def test_a_store_opened_read_only_refuses_every_write(store_url: str) -> None:
    """What `bocb status`, `results`, `report`, `models` and `export` open cannot write, on either database."""
    Store(store_url).register_benchmark("b1", "tiny", {"name": "tiny"})
    reader = Store(store_url, read_only=True)
    assert reader.benchmark_ids() == ["b1"]
    with pytest.raises(sa.exc.DBAPIError, match="read-only|readonly"):
        reader.register_benchmark("b2", "other", {"name": "other"})
    assert Store(store_url, read_only=True).benchmark_ids() == ["b1"]


def test_the_result_schema_is_written_once_and_a_name_it_lacks_is_refused(tmp_path: Path) -> None:
    """The epochs table's columns are protocol.EpochRecord's fields, the trials table has every outcome
    column, and a record holding a name the store has no column for (a field renamed on one side) is
    refused instead of silently dropped."""
    from bocb.protocol import EPOCH_FIELDS, OUTCOME_COLUMNS
    from bocb.store import PlannedTrial, epochs, trials

    assert [c.name for c in epochs.columns if c.name != "trial_key"] == list(EPOCH_FIELDS)
    assert set(OUTCOME_COLUMNS) <= {c.name for c in trials.columns}
    store = Store(tmp_path / "bocb.db")
    config = {"backbone": "b", "size": "tiny", "optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0, "seed": 0,
              "epochs": 1}
    store.register_benchmark("b1", "tiny", {"name": "tiny"}, [PlannedTrial("k1", config, "search")])
    claimed = store.claim("host:1:w", "b1")
    with pytest.raises(ValueError, match=r"an epoch record holds \['top1'\]"):
        store.record_epoch(claimed.key, {"epoch": 0, "train_loss": 1.0, "top1": 5.0})
    with pytest.raises(ValueError, match=r"a result holds \['accuracy'\]"):
        store.finish(claimed.key, "host:1:w", {"state": "done", "accuracy": 5.0}, None)
    assert store.finish(claimed.key, "host:1:w", {"state": "done", "test_top1": 5.0}, None)
