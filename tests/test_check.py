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
from conftest import bocb_main

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
pytestmark = pytest.mark.slow
PANEL = ["--backbones", "alexnet", "--optimizers", "sgd,adam,adamw", "--epochs", "1"]


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """A module of the user's own, importable only from its folder (on this process's path, which the local
    workers take, and on PYTHONPATH for a `bocb worker` process), and a private reference cache."""
    root = tmp_path / "user"
    root.mkdir()
    (root / "my_nets.py").write_text(FACTORY)
    (root / "my_opts.py").write_text(OPTIMIZER)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("BOCB_CACHE", str(root / "cache"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    return root, env


def _bocb(*args: str, capsys: pytest.CaptureFixture[str], cache: Path | None = None) -> tuple[int, str, str]:
    """`bocb ARGS` in this process, with BOCB_CACHE at ``cache`` when given."""
    with pytest.MonkeyPatch.context() as patch:
        if cache is not None:
            patch.setenv("BOCB_CACHE", str(cache))
        return bocb_main(*args, capsys=capsys)


def _trained(db: Path) -> tuple[int, int]:
    """(trials trained in this store, trials imported from the cache: no worker ever held them)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        trained, imported = conn.execute("SELECT SUM(worker IS NOT NULL), SUM(worker IS NULL) FROM trials").fetchone()
    return int(trained or 0), int(imported or 0)


def test_a_users_backbone_runs_the_gauntlet_and_a_second_check_reuses_the_reference(user_code, capsys) -> None:
    root, _ = user_code
    code, first, err = _bocb("check", "my_nets:small_cnn", *PANEL, "--out", str(root / "first"), "--workers", "2",
                             capsys=capsys)
    assert code == 0, err
    assert "checking the backbone my_nets:small_cnn against 3 optimizers (sgd, adam, adamw)" in first
    assert first.splitlines()[1].startswith("my_nets:small_cnn <- checked: ")  # the verdict, first
    assert "my_nets:small_cnn <- checked" in first and "Std after removing the worst" in first
    assert "orientation only (the paper's Table 1 is CIFAR-100" in first
    assert "my_nets:small_cnn &lt;- checked" in (root / "first" / "report" / "index.html").read_text()  # marked
    trained, imported = _trained(root / "first" / "bocb.db")
    assert imported == 0 and trained > 0
    cached = list((root / "cache" / "reference").glob("*.zip"))
    assert len(cached) == 1

    code, second, err = _bocb("check", "my_nets:small_cnn", *PANEL, "--out", str(root / "second"), "--no-report",
                              capsys=capsys)
    assert code == 0, err
    assert "reference cells: from the cache" in second
    trained_again, imported = _trained(root / "second" / "bocb.db")
    reference = _count(root / "first" / "bocb.db", "reference panel")
    assert imported == reference and trained_again == trained - reference  # no reference trial retrained
    assert _matrix(second) == _matrix(first)


def _count(db: Path, name: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT COUNT(*) FROM plan p JOIN benchmarks b ON b.id = p.benchmark_id "
                            "WHERE b.name LIKE ?", (f"{name}%",)).fetchone()[0]


def _matrix(printed: str) -> list[str]:
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("top-1 (test)"))
    return lines[start:start + 6]


def test_a_users_optimizer_under_bocb_worker_and_a_cache_made_by_another_version_retrained(user_code,
                                                                                          capsys) -> None:
    root, env = user_code
    cache = root / "elsewhere"
    code, _, err = _bocb("check", "my_opts:SignSGD", "--backbones", "alexnet", "--optimizers", "adamw", "--epochs",
                         "1", "--out", str(root / "made"), "--no-report", capsys=capsys, cache=cache)
    assert code == 0, err
    (bundle,) = (cache / "reference").glob("*.zip")
    _rewrite_provenance(bundle, bocb="0.0.1")  # as if an older bocb had made it (its digests made to match)
    out = root / "by-worker"
    code, planned, err = _bocb("check", "my_opts:SignSGD", "--backbones", "alexnet", "--optimizers", "adamw",
                               "--epochs", "1", "--out", str(out), "--plan-only", capsys=capsys, cache=cache)
    assert code == 0, err
    assert "the cached reference was made elsewhere (bocb 0.0.1 != " in planned
    worker = subprocess.run([sys.executable, "-m", "bocb", "worker", "--store", str(out / "bocb.db")],
                            capture_output=True, text=True, env=env, timeout=900)  # a process of its own
    assert worker.returncode == 0, worker.stderr
    code, answered, err = _bocb("check", "my_opts:SignSGD", "--backbones", "alexnet", "--optimizers", "adamw",
                                "--epochs", "1", "--out", str(out), "--no-report", capsys=capsys, cache=cache)
    assert code == 0, err
    assert "checking the optimizer my_opts:SignSGD against 1 backbones (alexnet)" in answered
    assert "my_opts:SignSGD <- checked: tied with the best optimizer on" in answered  # told apart
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
