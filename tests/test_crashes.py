"""A crash is not a result: crashed trials are never scored, the run says so and exits 3, a rerun retries
them; the folder dataset trains under `bocb run`'s local workers; reports read the stored rules."""
from __future__ import annotations

import sqlite3

import pandas as pd
import yaml
from conftest import TINY_SPEC, bocb_command
from helpers_data import write_image_folder

FLAKY_FACTORY = '''
from pathlib import Path

import torch.nn as nn


def net(num_classes, img_size):
    if Path(__file__).with_name("BROKEN").exists():
        raise RuntimeError("flaky_net: BROKEN flag present")
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * img_size * img_size, num_classes))
'''


def _write_spec(path, **changes):
    path.write_text(yaml.safe_dump({**TINY_SPEC, **changes}))
    return path


def test_crashed_trials_are_counted_not_scored_and_a_rerun_retries_them(tmp_path):
    (tmp_path / "flaky_net.py").write_text(FLAKY_FACTORY)
    (tmp_path / "BROKEN").write_text("")
    spec = _write_spec(tmp_path / "spec.yaml", backbones=["resnet50", "flaky_net:net"], epochs=1,
                       rules={"gamma": 0.5})
    first = bocb_command("run", str(spec), "--out", "out", "--workers", "2", cwd=tmp_path)
    assert first.returncode == 3, first.stderr
    assert "4 trials: 2 done, 0 diverged (scored at chance), 2 crashed (not scored; exit code 3" in first.stdout
    assert "first crash: RuntimeError: flaky_net: BROKEN flag present" in first.stderr
    assert "Traceback" not in first.stdout + first.stderr
    matrix = first.stdout.split("top-1 (test)")[1].split("verdict per backbone")[0]
    assert "flaky_net:net" in matrix and " -" in matrix and "0.00" not in matrix and "10.00" not in matrix

    (tmp_path / "BROKEN").unlink()
    second = bocb_command("run", str(spec), "--out", "out", "--workers", "2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "retrying 2 crashed trial(s)" in second.stderr
    assert "4 trials: 4 done, 0 diverged (scored at chance), 0 crashed" in second.stdout
    assert "verdict per backbone" in second.stdout and "report: out/report/index.html" in second.stdout
    with sqlite3.connect(tmp_path / "out" / "bocb.db") as db:
        attempts = dict(db.execute("SELECT backbone || '+' || optimizer, attempts FROM trials"))
    assert attempts == {"resnet50+sgd": 1, "resnet50+adamw": 1, "flaky_net:net+sgd": 2, "flaky_net:net+adamw": 2}

    # a report of the store reads gamma from the stored spec, not the default 3
    report = bocb_command("report", str(tmp_path / "out" / "bocb.db"), "-o", str(tmp_path / "again"))
    assert report.returncode == 0, report.stderr
    assert "failures by Eq. 1 with γ = 0.5" in (tmp_path / "again" / "report.md").read_text()
    assert "failures by Eq. 1 with γ = 0.5" in (tmp_path / "out" / "report" / "report.md").read_text()


def test_image_folder_trains_under_bocb_run_with_local_workers(tmp_path):
    root = write_image_folder(tmp_path / "images")
    spec = _write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], optimizers=["sgd"], epochs=1,
                       dataset={"name": "imagefolder", "path": str(root), "val_fraction": 1 / 3, "image_size": 16})
    done = bocb_command("run", str(spec), "--out", "out", "--workers", "1", "--no-report", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 trials: 1 done, 0 diverged (scored at chance), 0 crashed" in done.stdout


def test_a_second_spec_into_the_same_out_replaces_no_results(tmp_path):
    first = _write_spec(tmp_path / "a.yaml", backbones=["resnet50"], optimizers=["sgd"], epochs=1)
    second = _write_spec(tmp_path / "b.yaml", backbones=["resnet50"], optimizers=["adamw"], epochs=1)
    for spec in (first, second):
        done = bocb_command("run", str(spec), "--out", "out", "--workers", "1", "--no-report", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert "results.csv holds the 2 benchmarks of this store" in done.stderr
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    assert rows["benchmark"].nunique() == 2 and sorted(rows["optimizer"]) == ["adamw", "sgd"]
