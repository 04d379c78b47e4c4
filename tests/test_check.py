"""`bocb check`: a user's backbone (a factory in a module of a temporary directory) through the gauntlet of
a reduced panel, under the local executor and `bocb worker`; the reference cells cached and reused (no
reference trial retrained); a cache made elsewhere (another bocb version in its provenance) retrained."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

FACTORY = '''
from torch import nn


def small_cnn(num_classes: int, img_size: int, in_chans: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_chans, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
'''
OPTIMIZER = '''
import torch


class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, weight_decay=0.0, momentum=0.9):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(p.grad, alpha=1 - group["momentum"])
                    p.mul_(1 - group["lr"] * group["weight_decay"]).add_(buf.sign(), alpha=-group["lr"])
'''
PANEL = ["--backbones", "resnet50", "--optimizers", "sgd,adam,adamw", "--epochs", "1"]


@pytest.fixture(scope="module")
def user_code(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A module of the user's own, importable only through PYTHONPATH, and a private reference cache."""
    root = tmp_path_factory.mktemp("user")
    (root / "my_nets.py").write_text(FACTORY)
    (root / "my_opts.py").write_text(OPTIMIZER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "BOCB_CACHE": str(root / "cache"), "PYTHONUNBUFFERED": "1"}
    return root, env


def _bocb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bocb", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def _trained(db: Path) -> tuple[int, int]:
    """(trials trained in this store, trials imported from the cache: no worker ever held them)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        trained, imported = conn.execute("SELECT SUM(worker IS NOT NULL), SUM(worker IS NULL) FROM trials").fetchone()
    return int(trained or 0), int(imported or 0)


def test_a_users_backbone_runs_the_gauntlet_and_a_second_check_reuses_the_reference(user_code) -> None:
    root, env = user_code
    first = _bocb(env, "check", "my_nets:small_cnn", *PANEL, "--out", str(root / "first"), "--workers", "2")
    assert first.returncode == 0, first.stderr
    assert "checking the backbone my_nets:small_cnn against 3 optimizers (sgd, adam, adamw)" in first.stdout
    assert first.stdout.splitlines()[1].startswith("my_nets:small_cnn <- checked: ")  # the verdict, first
    assert "my_nets:small_cnn <- checked" in first.stdout and "Std after removing the worst" in first.stdout
    assert "orientation only (the paper's Table 1 is CIFAR-100" in first.stdout
    assert "my_nets:small_cnn &lt;- checked" in (root / "first" / "report" / "index.html").read_text()  # marked
    trained, imported = _trained(root / "first" / "bocb.db")
    assert imported == 0 and trained > 0
    cached = list((root / "cache" / "reference").glob("*.zip"))
    assert len(cached) == 1

    second = _bocb(env, "check", "my_nets:small_cnn", *PANEL, "--out", str(root / "second"), "--no-report")
    assert second.returncode == 0, second.stderr
    assert "reference cells: from the cache" in second.stdout
    trained_again, imported = _trained(root / "second" / "bocb.db")
    reference = _count(root / "first" / "bocb.db", "reference panel")
    assert imported == reference and trained_again == trained - reference  # no reference trial retrained
    assert _matrix(second.stdout) == _matrix(first.stdout)


def _count(db: Path, name: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT COUNT(*) FROM plan p JOIN benchmarks b ON b.id = p.benchmark_id "
                            "WHERE b.name LIKE ?", (f"{name}%",)).fetchone()[0]


def _matrix(printed: str) -> list[str]:
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("top-1 (test)"))
    return lines[start:start + 6]


def test_a_users_optimizer_under_bocb_worker_and_a_cache_made_by_another_version_retrained(user_code) -> None:
    root, env = user_code
    cache = root / "elsewhere"
    made = _bocb({**env, "BOCB_CACHE": str(cache)}, "check", "my_opts:SignSGD", "--backbones", "resnet50",
                 "--optimizers", "adamw", "--epochs", "1", "--out", str(root / "made"), "--no-report")
    assert made.returncode == 0, made.stderr
    (bundle,) = (cache / "reference").glob("*.zip")
    _rewrite_provenance(bundle, bocb="0.0.1")  # as if an older bocb had made it (its digests made to match)
    out = root / "by-worker"
    planned = _bocb({**env, "BOCB_CACHE": str(cache)}, "check", "my_opts:SignSGD", "--backbones", "resnet50",
                    "--optimizers", "adamw", "--epochs", "1", "--out", str(out), "--plan-only")
    assert planned.returncode == 0, planned.stderr
    assert "the cached reference was made elsewhere (bocb 0.0.1 != " in planned.stdout
    worker = _bocb(env, "worker", "--store", str(out / "bocb.db"))
    assert worker.returncode == 0, worker.stderr
    answered = _bocb({**env, "BOCB_CACHE": str(cache)}, "check", "my_opts:SignSGD", "--backbones", "resnet50",
                     "--optimizers", "adamw", "--epochs", "1", "--out", str(out), "--no-report")
    assert answered.returncode == 0, answered.stderr
    assert "checking the optimizer my_opts:SignSGD against 1 backbones (resnet50)" in answered.stdout
    assert "my_opts:SignSGD <- checked: tied with the best optimizer on" in answered.stdout  # told apart
    trained, imported = _trained(out / "bocb.db")
    assert imported == 0 and trained == _count(out / "bocb.db", "")  # every trial retrained, by the worker


def _rewrite_provenance(bundle: Path, **changes: str) -> None:
    with zipfile.ZipFile(bundle) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    rows = [json.loads(line) for line in files["trials.jsonl"].splitlines()]
    for row in rows:
        row["provenance_json"] = json.dumps({**json.loads(row["provenance_json"]), **changes}, sort_keys=True)
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["trials.jsonl"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    files |= {"trials.jsonl": data, "manifest.json": json.dumps(manifest).encode()}
    with zipfile.ZipFile(bundle, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
