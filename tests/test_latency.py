"""Commands that train nothing answer without importing the training stack (torch and timm cost seconds
to import on a CPU): `bocb --help`, a bad spec's one-line error, `bocb results` and `bocb status` of a
store, `bocb list optimizers`. Each runs in a fresh process, which then reports what it imported;
benchmarks/latency.py times the same commands (no test here asserts a time)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_SPEC

from bocb.spec import parse_spec
from bocb.sweep import plan_benchmark

# What no command here may import: the libraries, bocb's models and training loop, and scipy.stats (~0.7 s)
TRAINING = ("torch", "timm", "torchvision", "bocb.engine", "bocb.backbones._zoo", "scipy.stats")
STORE_READING = ("pandas", "sqlalchemy")  # what only the commands that read a store need (~0.5 s)

# `python -m bocb ARGS`, then which of the modules $WATCHED names it imported, to $PROBE_OUT (also after an exit)
PROBE = """
import json, os, runpy, sys
sys.argv = ["bocb", *sys.argv[1:]]
try:
    runpy.run_module("bocb", run_name="__main__", alter_sys=True)
finally:
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump([name for name in json.loads(os.environ["WATCHED"]) if name in sys.modules], out)
"""


def probe(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `bocb ARGS` in a fresh process: (the finished process, which TRAINING and STORE_READING modules
    it imported)."""
    report = tmp_path / "imported.json"
    env = {**os.environ, "PROBE_OUT": str(report), "WATCHED": json.dumps(TRAINING + STORE_READING)}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    return done, set(json.loads(report.read_text()))


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose every planned trial finished (planned from the tiny spec, results written through the
    store as a worker writes them; nothing trains)."""
    out = tmp_path_factory.mktemp("finished")
    run = plan_benchmark(parse_spec(TINY_SPEC), out)
    worker = "remote-host:1:w"
    for i in range(len(run.store.trials_frame(run.benchmark_id))):
        key = run.store.claim(worker, run.benchmark_id).key
        run.store.record_epoch(key, {"epoch": 0, "train_loss": 1.0, "val_top1": 50.0 + i, "test_top1": 40.0 + i})
        assert run.store.finish(key, worker, {"state": "done", "val_top1": 50.0 + i, "test_top1": 40.0 + i,
                                              "train_loss": 1.0}, None)
    return out / "bocb.db"


def test_help_imports_no_training_code(tmp_path: Path) -> None:
    done, imported = probe(tmp_path, "--help")
    assert done.returncode == 0 and "results" in done.stdout and "status" in done.stdout
    assert imported == set()


@pytest.mark.parametrize("change, message", [
    ({"backbones": ["resnet5"]}, "error: backbones: unknown backbone 'resnet5'; did you mean 'resnet50'?"),
    # a valid optimizer first: its arguments are checked (building it: torch) only once every name is known
    ({"optimizers": ["sgd", "adamx"]}, "error: optimizers: unknown optimizer 'adamx'; did you mean 'adamax'?"),
    ({"dataset": {"name": "digitz"}}, "error: dataset.name: unknown dataset 'digitz'; did you mean 'digits'?"),
])
def test_a_bad_name_is_refused_without_importing_training_code(tmp_path: Path, change: dict, message: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**TINY_SPEC, **change}))
    done, imported = probe(tmp_path, "run", str(spec))
    assert done.returncode == 2 and done.stderr.startswith(message) and len(done.stderr.splitlines()) == 1
    assert imported == set()


def test_results_and_status_of_a_store_import_no_training_code(tmp_path: Path, finished_store: Path) -> None:
    results, imported = probe(tmp_path, "results", str(finished_store))
    assert results.returncode == 0, results.stderr
    assert "resnet50" in results.stdout and "adamw" in results.stdout
    assert imported <= set(STORE_READING)
    status, imported = probe(tmp_path, "status", str(finished_store))
    assert status.returncode == 0, status.stderr
    assert "4 of 4 trials finished" in status.stdout
    assert imported <= set(STORE_READING)


def test_list_optimizers_imports_no_training_code(tmp_path: Path) -> None:
    done, imported = probe(tmp_path, "list", "optimizers")
    assert done.returncode == 0 and "torch.optim.SGD" in done.stdout and "pytorch_optimizer" in done.stdout
    assert imported == set()
