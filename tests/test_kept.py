"""Kept weights: the chosen configurations' final weights survive a finished benchmark (the others are
pruned), reload bit-exactly into their backbone and reproduce the stored test top-1; all / none; a damaged
file is refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import POSTGRES_URL, _fresh_postgres_db, bocb_main, run_main, write_spec

from bocb.engine import Runtime, Trial
from bocb.errors import DataError
from bocb.kept import kept_path, load_kept, load_kept_into
from bocb.protocol import chosen_seeds
from bocb.spec import TrialConfig
from bocb.store import Store

pytestmark = pytest.mark.xdist_group("finished-tiny")  # one worker trains conftest.finished_tiny, once


@pytest.fixture
def finished(finished_tiny: Path) -> Path:
    """A finished tiny benchmark with the default keep_weights (chosen): 2 backbones x 2 optimizers x 2 lr
    (conftest.finished_tiny), read only."""
    return finished_tiny


def _kept_keys(out: Path) -> set[str]:
    return {p.stem for p in (out / "artifacts" / "weights").glob("*.safetensors")}


def test_the_chosen_configurations_weights_are_kept_and_reproduce_the_stored_test_top1(finished: Path,
                                                                                         capsys) -> None:
    trials = Store(finished / "bocb.db").trials_frame()
    chosen = set(chosen_seeds(trials)["trial_key"])
    assert len(trials) == 8 and len(chosen) == 4
    assert _kept_keys(finished) == chosen  # the 4 configurations not chosen were pruned
    for key in sorted(chosen):
        row = trials[trials["trial_key"] == key].iloc[0]
        trial = Trial(TrialConfig.model_validate(json.loads(row["config_json"])), Runtime())
        path = kept_path(finished / "artifacts", key)
        description = load_kept_into(trial.model, path)
        tensors, _ = load_kept(path)
        state = trial.model.state_dict()
        assert all(torch.equal(state[name], tensor) for name, tensor in tensors.items())  # bit-exact
        assert trial.accuracy(trial.model, trial.loaders.test)[0] == row["test_top1"] == \
            description["final"]["test_top1"]
        assert description["key"] == key and description["provenance"]["lock"]
    code, out, err = bocb_main("models", str(finished / "bocb.db"), capsys=capsys)
    assert code == 0, err
    assert "4 kept model(s)" in out and all(key[:10] in out for key in chosen)


def test_a_damaged_kept_file_is_refused(finished: Path, tmp_path: Path) -> None:
    key = sorted(_kept_keys(finished))[0]
    root = tmp_path / "artifacts"
    (root / "weights").mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        source = kept_path(finished / "artifacts", key).with_suffix(suffix)
        (root / "weights" / source.name).write_bytes(source.read_bytes())
    damaged = kept_path(root, key)
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match the SHA-256"):
        load_kept(damaged)


@pytest.mark.parametrize("policy, expected", [("all", 2), ("none", 0)])
def test_keep_all_keeps_every_finished_trial_and_none_keeps_nothing(tmp_path: Path, capsys, policy: str,
                                                                      expected: int) -> None:
    spec = write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], optimizers=["sgd"], epochs=1,
                      search={"lr_points": 2, "wd_points": 1}, keep_weights=policy)
    code, _, err = bocb_main("run", str(spec), "--out", str(tmp_path), "--workers", "1", "--no-report",
                             capsys=capsys)
    assert code == 0, err
    assert len(Store(tmp_path / "bocb.db").trials_frame()) == 2
    assert len(list((tmp_path / "artifacts").glob("weights/*.safetensors"))) == expected


@pytest.mark.postgres
def test_weights_bocb_run_kept_for_a_postgresql_store_are_found_from_anywhere(tmp_path: Path, monkeypatch,
                                                                              capsys) -> None:
    """The artifact root is decided when the benchmark is planned and stored with it: `bocb models` and
    `bocb export --weights`, run from another directory, find the weights `bocb run --out OUT` kept under
    OUT/artifacts for a PostgreSQL store (whose spec names no artifact root)."""
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL test server: set BOCB_TEST_POSTGRES_URL (bash .ci/run starts one)")
    url = _fresh_postgres_db("bocb_artifact_root")
    spec = write_spec(tmp_path / "spec.yaml", backbones=["alexnet"], optimizers=["adamw"], epochs=1)
    assert run_main("run", str(spec), "--store", url, "--out", str(tmp_path / "out"), "--no-report") == 0
    kept = _kept_keys(tmp_path / "out")
    assert len(kept) == 1
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, err = bocb_main("models", url, capsys=capsys)
    assert code == 0 and "1 kept model(s)" in out and next(iter(kept))[:10] in out, out + err
    code, out, err = bocb_main("export", url, "-o", "b.zip", "--weights", capsys=capsys)
    assert code == 0 and "1 kept models" in out, out + err
    assert not (tmp_path / "elsewhere" / "bocb-artifacts").exists()
