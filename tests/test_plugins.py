"""Plugins reach every executor: an optimizer named 'module:Class' in a spec, entry points of installed
packages (optimizers, recipes, datasets) in fresh processes, and a backbone's own recipe in its trials."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_SPEC, bocb_command, bocb_main, write_spec

from bocb.errors import SpecError
from bocb.optim import OPTIMIZERS, build_optimizer, search_space
from bocb.spec import parse_spec

# An optimizer of the user's own: SGD with a fixed 'shrink' of each step, and no lr default.
OPTIMIZER_MODULE = '''
import torch


class ShrunkSGD(torch.optim.SGD):
    """SGD whose steps are multiplied by 'shrink'."""

    def __init__(self, params, lr, weight_decay=0.0, momentum=0.9, shrink=0.5):
        super().__init__(params, lr=lr * shrink, momentum=momentum, weight_decay=weight_decay)
        self.shrink = shrink
'''

ONE_TRIAL = {"backbones": ["resnet50"], "epochs": 1, "search": {"lr_points": 1, "wd_points": 1}}


def _module(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(text)
    return directory


def _trials(db: Path) -> list[dict]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT config_json, state, provenance_json, key FROM trials").fetchall()
    return [{"config": json.loads(c), "state": s, "provenance": json.loads(p or "{}"), "key": k}
            for c, s, p, k in rows]


def test_a_class_is_described_from_its_signature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(_module(tmp_path, "sig_opts", OPTIMIZER_MODULE)))
    info = OPTIMIZERS.get("torch.optim:ASGD")
    assert (info.name, info.category, info.defaults["classical"]) == ("torch.optim:ASGD", "user",
                                                                       {"lr": 0.01, "weight_decay": 0.0})
    assert info.fixed["lambd"] == 1e-4 and info.fixed["t0"] == 1e6  # every argument explicit
    space = search_space("torch.optim:ASGD", "modern", lr_points=3, wd_points=1)
    assert space.lr == [0.005, 0.01, 0.02] and space.weight_decay == [0.0]
    assert search_space("torch.optim:ASGD", "classical", lr_points=3, lr=0.1).lr == [0.05, 0.1, 0.2]
    assert search_space("torch.optim:ASGD", "classical", lr=[0.3], weight_decay=0.01, wd_points=1).lr == [0.3]
    shrunk = OPTIMIZERS.get("sig_opts:ShrunkSGD")
    assert shrunk.defaults["modern"]["lr"] is None and shrunk.fixed == {"momentum": 0.9, "shrink": 0.5}
    handle = build_optimizer("sig_opts:ShrunkSGD", torch.nn.Linear(2, 2), lr=0.2,
                             weight_decay=0.0, hparams={"shrink": 0.25})
    assert handle.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert handle.provenance["kwargs"] == {"lr": 0.2, "weight_decay": 0.0, "momentum": 0.9, "shrink": 0.25}
    with pytest.raises(SpecError, match=r"^optimizers\.sig_opts:ShrunkSGD\.lr: the optimizer has no default"):
        parse_spec({**TINY_SPEC, "optimizers": ["sig_opts:ShrunkSGD"]})
    spec = parse_spec({**TINY_SPEC, "optimizers": [{"name": "sig_opts:ShrunkSGD", "lr": 0.1, "weight_decay": [0.0],
                                                   "params": {"shrink": 0.5}, "extras": {"momentum": [0.8, 0.9]}}]})
    assert spec.optimizers[0].name == "sig_opts:ShrunkSGD"


@pytest.mark.slow
@pytest.mark.ray
def test_a_module_class_optimizer_trains_under_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    monkeypatch.setenv("PYTHONPATH", str(_module(tmp_path / "mine", "ray_opts", OPTIMIZER_MODULE)), prepend=os.pathsep)
    spec = write_spec(tmp_path / "spec.yaml", **ONE_TRIAL, optimizers=[{"name": "ray_opts:ShrunkSGD", "lr": 0.1}])
    done = bocb_command("run", str(spec), "--out", str(tmp_path / "out"), "--executor", "ray", "--no-report",
                        cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [trial] = _trials(tmp_path / "out" / "bocb.db")
    assert trial["state"] == "done" and trial["config"]["optimizer"] == "ray_opts:ShrunkSGD"
    assert trial["provenance"]["optimizer"]["class"] == "ray_opts.ShrunkSGD"
    assert trial["provenance"]["optimizer"]["kwargs"]["shrink"] == 0.5


def _installed_plugin(root: Path) -> Path:
    """A fake installed distribution 'xyz-bocb-plugins' publishing an optimizer, a recipe and a dataset."""
    dist = root / "xyz_bocb_plugins-0.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: xyz-bocb-plugins\nVersion: 0.3\n")
    (dist / "top_level.txt").write_text("xyz_plugins\n")
    (dist / "entry_points.txt").write_text(
        "[bocb.optimizers]\nshrunk_sgd = xyz_plugins:ShrunkSGD\n\n"
        "[bocb.recipes]\nxyz_recipe = xyz_plugins:RECIPE\n\n"
        "[bocb.datasets]\nxyz_digits = xyz_plugins:DIGITS\n")
    return _module(root, "xyz_plugins", OPTIMIZER_MODULE + '''
from dataclasses import replace

from bocb.data import DATASETS
from bocb.recipes import RECIPES

RECIPE = replace(RECIPES.get("torch"), name="xyz", description="torch with label smoothing 0.2",
                 label_smoothing=0.2)
DIGITS = replace(DATASETS.get("digits"), name="xyz", description="digits, again")
''')


@pytest.mark.slow
def test_entry_points_register_in_fresh_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(_installed_plugin(tmp_path / "site")), prepend=os.pathsep)
    listed = bocb_command("list", "optimizers")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "shrunk_sgd" in line)
    assert "ShrunkSGD" in row and "user" in row and "—" in row  # no lr default: the spec gives it
    assert "xyz_recipe" in bocb_command("list", "recipes").stdout
    spec = write_spec(tmp_path / "spec.yaml", **ONE_TRIAL, dataset={"name": "xyz_digits", "image_size": 16},
                      recipe="xyz_recipe", optimizers=[{"name": "shrunk_sgd", "lr": 0.1}])
    db = tmp_path / "bocb.db"
    planned = bocb_command("run", str(spec), "--store", str(db), "--out", str(tmp_path / "out"), "--plan-only")
    assert planned.returncode == 0, planned.stderr
    # a `bocb worker` reads the spec from the store and resolves every name by itself
    worked = bocb_command("worker", "--store", str(db), "--artifact-root", str(tmp_path / "artifacts"))
    assert worked.returncode == 0, worked.stderr[-3000:]
    [trial] = _trials(db)
    assert trial["state"] == "done"
    assert (trial["config"]["optimizer"], trial["config"]["dataset"]["name"]) == ("shrunk_sgd", "xyz_digits")
    assert trial["config"]["recipe"]["name"] == "xyz_recipe" and trial["config"]["recipe"]["label_smoothing"] == 0.2
    optimizer = trial["provenance"]["optimizer"]
    assert optimizer["class"] == "xyz_plugins.ShrunkSGD" and optimizer["library_version"] == "0.3"


@pytest.mark.slow
def test_a_backbone_with_its_own_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """deit_s gets the DeiT recipe (warm-up off); resnet50 keeps the spec's: its trial, key included, is the
    one the same spec plans without deit_s's recipe."""
    common = {"optimizers": ["adamw"], "epochs": 1, "search": {"lr_points": 1, "wd_points": 1},
              "recipe_overrides": {"label_smoothing": 0.05}}
    own = write_spec(tmp_path / "own.yaml", **common, backbones=[
        "resnet50", {"name": "deit_s", "recipe": "deit", "recipe_overrides": {"warmup_epochs": 0}}])
    plain = write_spec(tmp_path / "plain.yaml", **common)
    code, _, err = bocb_main("run", str(own), "--out", str(tmp_path / "own"), "--workers", "2", "--no-report",
                             capsys=capsys)
    assert code == 0, err
    code, _, err = bocb_main("run", str(plain), "--out", str(tmp_path / "plain"), "--plan-only", capsys=capsys)
    assert code == 0, err
    trials = {t["config"]["backbone"]: t for t in _trials(tmp_path / "own" / "bocb.db")}
    plain_keys = {t["config"]["backbone"]: t["key"] for t in _trials(tmp_path / "plain" / "bocb.db")}
    deit, resnet = trials["deit_s"]["config"]["recipe"], trials["resnet50"]["config"]["recipe"]
    assert (deit["name"], deit["warmup_epochs"], deit["mixup_alpha"], deit["label_smoothing"]) == ("deit", 0, 0.8, 0.05)
    assert (resnet["name"], resnet["warmup_epochs"], resnet["label_smoothing"]) == ("torch", 0, 0.05)
    assert trials["resnet50"]["key"] == plain_keys["resnet50"] and trials["deit_s"]["key"] != plain_keys["deit_s"]
    with sqlite3.connect(tmp_path / "own" / "bocb.db") as conn:  # the engine trained with it: EMA is DeiT's
        ema = dict(conn.execute("SELECT t.backbone, e.ema_val_top1 FROM epochs e JOIN trials t "
                                "ON t.key = e.trial_key").fetchall())
    assert ema["deit_s"] is not None and ema["resnet50"] is None
    stored = yaml.safe_load(plain.read_text())
    assert parse_spec(stored).model_dump(mode="json")["backbones"] == [{"name": "resnet50", "size": None},
                                                                       {"name": "deit_s", "size": None}]
