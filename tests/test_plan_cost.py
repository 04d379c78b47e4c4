"""What a plan costs, printed before anything trains: trials, epochs, seeds and a wall time from timed
steps; the budget gate; the paper-scale presets, planned on a CPU without their datasets."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bocb_main, write_spec

from bocb.backbones import PAPER_ORDER
from bocb.paper import BACKBONE_NAMES, OPTIMIZER_NAMES, load_table
from bocb.spec import load_preset, load_spec
from bocb.store import Store
from bocb.sweep.planner import count_plan, pairs

HEADLINE = re.compile(r"^plan: (?:at most |at least |about )?(\d+) trials, (?:\S+ )*?(\d+) GPU-epochs .*?, "
                      r"(\d+) seeds?, (\d+) backbones x (\d+) optimizers$", re.MULTILINE)


def _counted(spec) -> tuple[int, int]:
    counts = count_plan(spec)
    return sum(len(c.epochs) for c in counts), sum(sum(c.epochs) for c in counts)


def test_plan_only_prints_trials_epochs_seeds_each_backbones_step_and_an_estimate(tmp_path: Path, capsys) -> None:
    path = write_spec(tmp_path / "spec.yaml", seeds=[0, 1], optimizers=[
        {"name": "sgd", "extras": {"momentum": [0.8, 0.9]}}, "adamw"], search={"phases": "two", "lr_points": 2})
    code, out, err = bocb_main("run", str(path), "--plan-only", "--out", str(tmp_path / "out"), capsys=capsys)
    assert code == 0, err
    trials, epochs, seeds, backbones, optimizers = map(int, HEADLINE.search(out).groups())
    assert (trials, epochs) == _counted(load_spec(path)) and (seeds, backbones, optimizers) == (2, 2, 2)
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  ") and "trials" in line] == [
        "search", "extras", "seeds"]
    assert re.search(r"^  resnet50 .* s/step", out, re.MULTILINE) and re.search(r"^  deit_s .* s/step", out, re.M)
    assert re.search(r"^estimated wall time: \d", out, re.MULTILINE)
    planned = Store(tmp_path / "out" / "bocb.db").trials_frame()
    assert set(planned["stage"]) == {"search"} and set(planned["state"]) == {"pending"}  # planned, not trained


def test_a_plan_over_the_budget_fails_in_one_line_unless_told_yes(tmp_path: Path, capsys) -> None:
    path = write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], optimizers=["sgd"], epochs=1)
    out = tmp_path / "out"
    code, _, err = bocb_main("run", str(path), "--out", str(out), "--budget-hours", "0", capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: --budget-hours: the plan (1 trials, 1 GPU-epochs) is estimated at ")
    assert "over the budget of 0 h; pass --yes" in err
    assert not (out / "bocb.db").exists()  # refused before anything is stored
    code, stdout, err = bocb_main("run", str(path), "--out", str(out), "--budget-hours", "0", "--yes",
                                  "--no-report", capsys=capsys)
    assert code == 0, err
    assert "plan: 1 trials" in err and "1 trials: 1 done" in stdout  # the plan on stderr, the results on stdout


def test_a_plan_over_the_budget_asks_at_a_terminal(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], optimizers=["sgd"], epochs=1)
    terminal, user = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "bocb", "run", str(path), "--out", str(tmp_path / "out"),
                                "--budget-hours", "0"], stdin=user, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    os.write(terminal, b"n\n")
    _, err = process.communicate(timeout=300)
    os.close(terminal)
    os.close(user)
    assert process.returncode == 1 and "train it anyway? [y/N]" in err and "not started" in err, err
    assert "Traceback" not in err and not (tmp_path / "out" / "bocb.db").exists()


def test_paper_presets_express_the_papers_full_protocol() -> None:
    cifar, imagenet = (load_preset(name, check_data=False) for name in ("paper_cifar100", "paper_imagenet"))
    table1_optimizers = [OPTIMIZER_NAMES[o] for o in load_table(1).index]
    assert [b.name for b in cifar.backbones] == list(PAPER_ORDER) == [BACKBONE_NAMES[c] for c in load_table(1)]
    assert [b.name for b in imagenet.backbones] == [BACKBONE_NAMES[c] for c in load_table(2)]
    for spec, epochs, gamma in ((cifar, 200, 3.0), (imagenet, 300, 1.0)):
        assert [o.name for o in spec.optimizers] == table1_optimizers and len(table1_optimizers) == 20
        assert (spec.size, spec.recipe, spec.seeds, spec.reseed) == ("paper", "paper", [0, 1, 2], "all")
        assert (spec.search.method, spec.search.phases, spec.search.lr_points, spec.search.wd_points) == (
            "grid", "two", 5, 5)
        assert spec.epochs == epochs and spec.rules.gamma == gamma
        counts = count_plan(spec)
        stage = {s: [c for c in counts if c.stage == s] for s in ("search", "extras", "seeds")}
        n_pairs = len(pairs(spec))
        assert sum(len(c.epochs) for c in stage["search"]) == n_pairs * 25  # 5 x 5, extras at their defaults
        assert sum(len(c.epochs) for c in stage["seeds"]) == n_pairs * 2
        tuned = {c.pair.optimizer.name for c in stage["extras"] if c.epochs}
        assert {"sgd", "adam", "adamw", "adabelief", "adabound"} <= tuned  # momentum, beta2, eps, final lr
        assert set().union(*(c.epochs for c in counts)) == {epochs}


@pytest.mark.slow
def test_paper_imagenet_plans_on_a_cpu_without_its_images(tmp_path: Path, capsys) -> None:
    code, out, err = bocb_main("run", "--preset", "paper_imagenet", "--plan-only", "--out", str(tmp_path),
                               capsys=capsys)
    assert code == 0, err
    trials, epochs, seeds, backbones, optimizers = map(int, HEADLINE.search(out).groups())
    assert (trials, epochs) == _counted(load_preset("paper_imagenet", check_data=False))
    assert (seeds, backbones, optimizers) == (3, 2, 20)
    assert re.search(r"^estimated wall time: [\d,.]+ h .* on cpu", out, re.MULTILINE)
    assert "note: dataset.path: imagefolder needs path" in out and "note: over the budget of 24 h" in out


def test_the_split_sizes_a_plan_is_costed_with_are_those_a_trial_trains_on() -> None:
    from bocb.data import build_loaders, split_sizes
    from bocb.recipes import resolve_recipe
    from bocb.spec import DatasetSpec

    for spec in (DatasetSpec(name="digits", image_size=8), DatasetSpec(name="synthetic", val_fraction=0.25),
                 DatasetSpec(name="digits", image_size=8, train_subset=500, test_subset=100, val_fraction=0.1)):
        loaders = build_loaders(spec, image_size=8, batch_size=32, recipe=resolve_recipe("torch"), seed=0)
        assert split_sizes(spec) == (loaders.train_size, loaders.val_size, loaders.test_size)
