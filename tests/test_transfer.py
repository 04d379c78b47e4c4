"""Transfer: fine-tuning the kept pre-trained models on a second real dataset (digits -> Fashion-MNIST),
from the right pre-training trials, under the local executor and `bocb worker`, resuming after a kill
without retraining finished pre-training; a linear probe leaves the backbone as pre-trained."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import bocb_main, report_files, run_main, write_spec
from timm.models import adapt_input_conv

from bocb.data._fashion import DEBIAN_DIR
from bocb.kept import kept_path, load_kept
from bocb.protocol import StageKind, chosen_seeds
from bocb.store import Store

pytestmark = [pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason=f"Fashion-MNIST not installed ({DEBIAN_DIR}); "
                                                                  "bash .ci/run installs dataset-fashion-mnist"),
              pytest.mark.fashion, pytest.mark.slow, pytest.mark.xdist_group("transfer")]

TRANSFER = {"dataset": {"name": "fashion_mnist", "train_subset": 500, "test_subset": 300},
            "optimizers": ["sgd", "adamw"], "recipe": "torch", "recipe_overrides": {"crop_padding": 0},
            "epochs": 1, "batch_size": 64, "search": {"lr_points": 2, "wd_points": 1, "extend_edges": 1}}


def _spec(path: Path) -> Path:
    return write_spec(path, backbones=["resnet50"], optimizers=["sgd", "adamw"], seeds=[0, 1],
                      recipe_overrides={"hflip": False, "crop_padding": 0}, transfer=TRANSFER)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("transfer")
    with pytest.MonkeyPatch.context() as patch:  # the run's own output, not the module's
        printed = io.StringIO()
        patch.setattr(sys, "stdout", printed)
        code = run_main("run", str(_spec(out / "spec.yaml")), "--out", str(out), "--workers", "2")
    assert code == 0
    return out, printed.getvalue()


def _benchmarks(store: Store) -> tuple[str, str]:
    pretraining, transfer = store.benchmark_ids()
    return pretraining, transfer


def test_a_transfer_fine_tunes_each_chosen_model_from_the_right_pretraining_trial(finished) -> None:
    out, printed = finished
    store = Store(out / "bocb.db")
    pretraining, transfer = _benchmarks(store)
    sources = chosen_seeds(store.trials_frame(pretraining)).set_index("trial_key")
    assert len(sources) == 4  # 2 optimizers x 2 seeds, each cell's chosen configuration
    tuned = store.trials_frame(transfer)
    init = tuned["config_json"].map(lambda text: json.loads(text)["init"])
    assert set(init.map(lambda i: i["trial"])) == set(sources.index)
    source_seed = init.map(lambda i: int(sources.loc[i["trial"], "seed"]))
    assert (source_seed == tuned["seed"]).all()  # a model fine-tuned at its own seed
    search, seeds = tuned["stage"] == StageKind.TRANSFER, tuned["stage"] == StageKind.TRANSFER_SEEDS
    assert search.sum() == 2 * 2 * 2 * 2  # first-seed sources x fine-tuning optimizers x modes x lr grid
    assert (tuned.loc[~seeds, "seed"] == 0).all() and (tuned.loc[seeds, "seed"] == 1).all()
    assert seeds.sum() == 2 * 2 * 2  # other-seed sources x fine-tuning optimizers x modes: chosen config
    edges = tuned[tuned["stage"] == "transfer-edges1"]  # a 2-point grid's best is at an edge: one step past it
    assert len(edges) == 2 * 2 * 2
    grid = tuned[search].assign(source=init[search].map(lambda i: (i["trial"], i["mode"])))
    for row, source in zip(edges.itertuples(), init[edges.index]):
        tried = grid.loc[(grid["source"] == (source["trial"], source["mode"])) & (grid["optimizer"] == row.optimizer),
                         "lr"]
        assert row.lr not in set(tried) and (row.lr > tried.max() or row.lr < tried.min())
    assert (tuned["state"] == "done").all()
    assert "transfer to fashion_mnist" in printed and "resnet50, linear probe:" in printed
    # 2 pre-training x 2 fine-tuning optimizers x 2 seeds: F(1, 4), one verdict per mode
    assert printed.count("the pre-training optimizer ") == printed.count("(F(1, 4)") == 2
    page = (out / "report" / "index.html").read_text()
    assert "Transfer: does the pre-training optimizer matter" in page and "interaction share" in page
    assert "Fine-tuned models: mean PL exponent α per backbone and mode, by pre-training optimizer" in page
    tests = pd.read_csv(out / "report" / "transfer_tests.csv")
    assert list(tests["mode"]) == ["finetune", "linear_probe"] and (tests["n_seeds"] == 2).all()


def test_bocb_report_of_the_store_has_the_transfer_section_bocb_run_wrote(finished, tmp_path, capsys) -> None:
    out, _ = finished
    code, _, err = bocb_main("report", str(out / "bocb.db"), "-o", str(tmp_path / "again"), capsys=capsys)
    # not the transfer part: the latest benchmark is the transfer part, and the report is about its pre-training
    assert code == 0, err
    written = report_files(out / "report")
    assert report_files(tmp_path / "again") == written and "transfer_alpha_bars.png" in written["png"]
    for table in ("transfer.csv", "transfer_tests.csv", "matrix.csv", "cells.csv"):
        assert (tmp_path / "again" / table).read_text() == (out / "report" / table).read_text(), table
    assert 'id="transfer"' in (tmp_path / "again" / "index.html").read_text()


def test_a_linear_probe_leaves_the_pretrained_backbone_unchanged(finished) -> None:
    out, _ = finished
    store = Store(out / "bocb.db")
    _, transfer = _benchmarks(store)
    tuned = store.trials_frame(transfer)
    compared = 0
    for row in tuned.itertuples():
        init = json.loads(row.config_json)["init"]
        probe = kept_path(out / "artifacts", row.trial_key)
        if init["mode"] != "linear_probe" or not probe.exists():
            continue
        after, _ = load_kept(probe)
        before, _ = load_kept(kept_path(out / "artifacts", init["trial"]))
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        assert changed == {"conv1.weight", "fc.weight", "fc.bias"}, changed  # BatchNorm statistics kept too
        grey = adapt_input_conv(1, before["conv1.weight"], base_chans=3)  # digits are RGB, Fashion-MNIST grey
        assert torch.equal(after["conv1.weight"], grey)  # the stem as timm adapts it, then frozen
        compared += 1
    assert compared == 8  # kept: each probe cell's chosen configuration (2 pre-training x 2 fine-tuning
    # optimizers) at both seeds
    finetuned = [r for r in tuned.itertuples() if json.loads(r.config_json)["init"]["mode"] == "finetune"
                 and kept_path(out / "artifacts", r.trial_key).exists()]
    after, _ = load_kept(kept_path(out / "artifacts", finetuned[0].trial_key))
    source = json.loads(finetuned[0].config_json)["init"]["trial"]
    before, _ = load_kept(kept_path(out / "artifacts", source))
    body = [name for name in before if name.endswith("conv1.weight") and name != "conv1.weight"]
    assert not any(torch.equal(before[name], after[name]) for name in body)  # fine-tuning trains the body


def _finished_transfer_trials(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM trials t JOIN plan p ON p.trial_key = t.key "
                                "JOIN benchmarks b ON b.id = p.benchmark_id "
                                "WHERE b.name LIKE '% transfer' AND t.state = 'done'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_bocb_worker_runs_the_transfer_and_resumes_after_a_kill_without_retraining(tmp_path: Path, capsys) -> None:
    spec = _spec(tmp_path / "spec.yaml")
    db = tmp_path / "bocb.db"
    code, _, err = bocb_main("run", str(spec), "--plan-only", "--store", str(db), "--out", str(tmp_path),
                             capsys=capsys)
    assert code == 0, err
    worker = subprocess.Popen([sys.executable, "-m", "bocb", "worker", "--store", str(db)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and _finished_transfer_trials(db) < 3 and worker.poll() is None:
        time.sleep(0.5)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    store = Store(db)
    pretraining, transfer = _benchmarks(store)
    before = store.trials_frame(pretraining)[["trial_key", "finished_at", "attempts"]]
    assert _finished_transfer_trials(db) >= 3 and len(before) == 4
    code, _, err = bocb_main("worker", "--store", str(db), capsys=capsys)  # the SIGKILL needed a process; this not
    assert code == 0, err
    after = store.trials_frame(pretraining)[["trial_key", "finished_at", "attempts"]]
    assert after.equals(before)  # the finished pre-training was not retrained
    tuned = store.trials_frame(transfer)
    assert len(tuned) == 16 + 8 + 8 and (tuned["state"] == "done").all()  # search, edges1, seeds
