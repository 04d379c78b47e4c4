"""`bocb compare A B`: the rule for "moved beyond seed noise" by hand, a planted move found and named as the
cause of a verdict change, a real store against itself, and bad arguments in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import bocb_main

from bocb.protocol import moved_cells, pooled_noise, relative_cells

OPTIMIZERS = ("sgd", "adam", "adamw", "lamb", "adagrad")


def _results(shift: dict[str, float], move: tuple[str, str, float] | None = None, seeds: int = 4) -> pd.DataFrame:
    """Six backbones x five optimizers with a fixed optimizer profile, seed noise of sd ~1 (the same draws on
    both sides), each backbone shifted by ``shift`` and one cell moved by ``move``."""
    rng = np.random.default_rng(7)
    profile = dict(zip(OPTIMIZERS, (-2.0, 1.0, 1.5, 0.5, -1.0)))
    rows = []
    for index, backbone in enumerate(f"b{i}" for i in range(6)):
        for optimizer, effect in profile.items():
            moved = move[2] if move and (backbone, optimizer) == move[:2] else 0.0
            for seed, noise in enumerate(rng.normal(0, 1, seeds)):
                rows.append({"backbone": backbone, "optimizer": optimizer, "seed": seed,
                             "test_top1": 60 + 5 * index + effect + shift.get(backbone, 0.0) + moved + noise})
    return pd.DataFrame(rows)


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    per_seed = frame.rename(columns={"test_top1": "top1"})
    return relative_cells(per_seed, pooled_noise(per_seed))


def test_a_shift_of_whole_backbones_moves_no_cell_and_one_moved_cell_is_found() -> None:
    before = _results({})
    shifted = _results({"b0": 12.0, "b3": -20.0})
    unchanged = moved_cells(_cells(before), _cells(shifted))
    assert not unchanged["moved"].any() and unchanged["shift"].abs().max() < 1e-9  # the same noise draws
    moved = moved_cells(_cells(before), _cells(_results({"b0": 12.0}, move=("b2", "lamb", -9.0))))
    assert moved.loc[moved["moved"], ["backbone", "optimizer"]].values.tolist() == [["b2", "lamb"]]
    row = moved.set_index(["backbone", "optimizer"]).loc[("b2", "lamb")]
    assert row["shift"] == pytest.approx(-9.0) and row["p_holm"] < 0.05  # its change minus the others' median


def test_compare_names_a_planted_move_as_the_cause_of_a_verdict_change(tmp_path, capsys) -> None:
    _results({}).to_csv(tmp_path / "a.csv", index=False)
    _results({"b1": 4.0}, move=("b0", "sgd", -15.0)).to_csv(tmp_path / "b.csv", index=False)
    code, out, err = bocb_main("compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "-o",
                               str(tmp_path / "cmp"), capsys=capsys)
    assert code == 0, err
    verdicts = pd.read_csv(tmp_path / "cmp" / "verdicts.csv").set_index("backbone")
    assert verdicts.at["b0", "A: a"] != "coupled" and verdicts.at["b0", "B: b"] == "coupled"
    assert verdicts.at["b0", "cause"].startswith("a gap appeared: sgd")
    assert not verdicts.drop("b0")["changed"].any()
    ranks = pd.read_csv(tmp_path / "cmp" / "ranks.csv").set_index("backbone")
    assert ranks.at["b1", "tau"] == pytest.approx(1.0) and ranks.at["b0", "tau"] < 0.9
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0
    assert 'id="compare-figure"' in (tmp_path / "cmp" / "compare.html").read_text()
    assert "a gap appeared: sgd" in out and "cells that moved beyond seed noise" in out


def test_a_store_against_itself_changes_nothing(finished_tiny: Path, capsys) -> None:
    store = str(finished_tiny / "bocb.db")
    code, out, err = bocb_main("compare", store, store, capsys=capsys)
    assert code == 0, err
    assert "verdicts of the 2 shared backbones: 0 changed" in out and ": 0\n" in out, out


@pytest.mark.parametrize("args, expected", [
    (["{a}", "{other}"], "error: B: shares no backbone and optimizer with A: A has backbones b0"),
    (["{a}", "{a}", "--benchmark-a", "x"], "error: --benchmark-a: selects a benchmark of a store"),
    (["{a}", "{missing}"], "error: B: no such store file"),
    (["{a}", "{a}", "--alpha", "2"], "'--alpha'"),
])
def test_bad_comparisons_are_one_line(args, expected, tmp_path, capsys) -> None:
    _results({}).to_csv(tmp_path / "a.csv", index=False)
    _results({}).assign(backbone="x", optimizer="y").to_csv(tmp_path / "other.csv", index=False)
    paths = {"a": str(tmp_path / "a.csv"), "other": str(tmp_path / "other.csv"), "missing": str(tmp_path / "no")}
    code, out, err = bocb_main("compare", *[a.format(**paths) for a in args], capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and expected in err, err
