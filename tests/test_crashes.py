"""A crash is not a result: crashed trials are never scored, the run says so and exits 3, a rerun retries
them; the folder dataset trains under `bocb run`'s local workers; reports read the stored rules."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_SPEC, bocb_main
from helpers_data import write_image_folder

FLAKY_FACTORY = '''
from pathlib import Path

import torch.nn as nn


class Flaky(nn.Sequential):
    """Builds and evaluates (the spec's check passes); crashes in training while the BROKEN flag is there."""

    def forward(self, x):
        if self.training and Path(__file__).with_name("BROKEN").exists():
            raise RuntimeError("flaky_net: BROKEN flag present")
        return super().forward(x)


def net(num_classes, img_size):
    return Flaky(nn.Flatten(), nn.Linear(3 * img_size * img_size, num_classes))
'''


def _write_spec(path, **changes):
    path.write_text(yaml.safe_dump({**TINY_SPEC, **changes}))
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working folder, its modules importable (as `python -m bocb` run there would have them)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_crashed_trials_are_counted_not_scored_and_a_rerun_retries_them(in_tmp, capsys):
    tmp_path = in_tmp
    (tmp_path / "flaky_net.py").write_text(FLAKY_FACTORY)
    (tmp_path / "BROKEN").write_text("")
    spec = _write_spec(tmp_path / "spec.yaml", backbones=["alexnet", "flaky_net:net"], epochs=1,
                       rules={"gamma": 0.5})
    # its step cannot be timed while it crashes: the cost is unknown, so over any budget until --yes
    code, out, err = bocb_main("run", str(spec), "--out", "out", "--workers", "2", capsys=capsys)
    assert code == 2 and "cannot be estimated, over the budget of 24 h; pass --yes" in err, err
    code, out, err = bocb_main("run", str(spec), "--out", "out", "--workers", "2", "--yes", capsys=capsys)
    assert code == 3, err
    assert "4 trials: 2 done, 0 diverged (scored at chance), 2 crashed (not scored; exit code 3" in out
    assert "first crash: RuntimeError: flaky_net: BROKEN flag present" in err
    assert "Traceback" not in out + err
    matrix = out.split("top-1 (test)")[1].split("verdict per backbone")[0]
    assert "flaky_net:net" in matrix and " -" in matrix and "0.00" not in matrix and "10.00" not in matrix

    (tmp_path / "BROKEN").unlink()
    code, out, err = bocb_main("run", str(spec), "--out", "out", "--workers", "2", capsys=capsys)
    assert code == 0, err
    assert "retrying 2 crashed trial(s)" in err
    assert "4 trials: 4 done, 0 diverged (scored at chance), 0 crashed" in out
    assert "verdict per backbone" in out and "report: out/report/index.html" in out
    with sqlite3.connect(tmp_path / "out" / "bocb.db") as db:
        attempts = dict(db.execute("SELECT backbone || '+' || optimizer, attempts FROM trials"))
    assert attempts == {"alexnet+sgd": 1, "alexnet+adamw": 1, "flaky_net:net+sgd": 2, "flaky_net:net+adamw": 2}

    # a report of the store reads gamma from the stored spec, not the default 3
    code, _, err = bocb_main("report", str(tmp_path / "out" / "bocb.db"), "-o", str(tmp_path / "again"),
                             capsys=capsys)
    assert code == 0, err
    assert "failures by Eq. 1 with γ = 0.5" in (tmp_path / "again" / "report.md").read_text()
    assert "failures by Eq. 1 with γ = 0.5" in (tmp_path / "out" / "report" / "report.md").read_text()


def test_image_folder_trains_under_bocb_run_with_local_workers(in_tmp, capsys):
    root = write_image_folder(in_tmp / "images")
    spec = _write_spec(in_tmp / "spec.yaml", backbones=["alexnet"], optimizers=["sgd"], epochs=1,
                       dataset={"name": "imagefolder", "path": str(root), "val_fraction": 1 / 3, "image_size": 16})
    code, out, err = bocb_main("run", str(spec), "--out", "out", "--workers", "1", "--no-report", capsys=capsys)
    assert code == 0, out + err
    assert "1 trials: 1 done, 0 diverged (scored at chance), 0 crashed" in out


def test_a_second_spec_into_the_same_out_replaces_no_results(in_tmp, capsys):
    first = _write_spec(in_tmp / "a.yaml", backbones=["alexnet"], optimizers=["sgd"], epochs=1)
    second = _write_spec(in_tmp / "b.yaml", backbones=["alexnet"], optimizers=["adamw"], epochs=1)
    for spec in (first, second):
        code, _, err = bocb_main("run", str(spec), "--out", "out", "--workers", "1", "--no-report", capsys=capsys)
        assert code == 0, err
    assert "results.csv holds the 2 benchmarks of this store" in err
    rows = pd.read_csv(in_tmp / "out" / "results.csv")
    assert rows["benchmark"].nunique() == 2 and sorted(rows["optimizer"]) == ["adamw", "sgd"]
