"""Bad input: one line on stderr naming the field (and the choices), exit code 2, no traceback."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
from conftest import TINY_SPEC, bocb_command, bocb_main, write_spec

from bocb.errors import SpecError
from bocb.spec import parse_spec


def _assert_clean_error(code: int, stderr: str, *needles: str) -> None:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("changes, needles", [
    ({"backbones": ["resnet5"]}, ("backbones", "unknown backbone 'resnet5'", "did you mean 'resnet50'", "vgg13_bn")),
    ({"optimizers": ["adamx"]}, ("optimizers", "unknown optimizer 'adamx'", "did you mean", "adamw")),
    ({"optimizers": [{"name": "adam", "lr": [-0.1]}]}, ("optimizers.0.lr", "lr must be > 0")),
    ({"optimizers": [{"name": "adam", "lr": [0]}]}, ("optimizers.0.lr", "lr must be > 0")),
    ({"epochz": 3}, ("epochz", "unknown field")),
    ({"dataset": {"name": "cifar10", "path": "/no/such/cifar"}}, ("dataset.path",)),
    ({"dataset": {"name": "digitz"}}, ("dataset.name", "did you mean 'digits'")),
    ({"recipe": "deit3"}, ("recipe", "did you mean 'deit'")),
    ({"recipe_overrides": {"mixup_alpa": 0.2}}, ("recipe_overrides.mixup_alpa", "did you mean 'mixup_alpha'")),
])
def test_bad_spec_is_one_line_exit_2(tmp_path: Path, changes: dict, needles: tuple[str, ...], capsys) -> None:
    spec = write_spec(tmp_path / "bad.yaml", **changes)
    code, _, err = bocb_main("run", str(spec), "--out", str(tmp_path / "out"), capsys=capsys)
    _assert_clean_error(code, err, *needles)
    assert not (tmp_path / "out" / "bocb.db").exists()


def test_malformed_yaml_in_a_real_process(tmp_path: Path) -> None:
    spec = tmp_path / "broken.yaml"
    spec.write_text("dataset: {name: digits\nbackbones: [resnet50\n")
    proc = bocb_command("run", str(spec))
    _assert_clean_error(proc.returncode, proc.stderr, "spec", "malformed YAML", "line")


def test_missing_spec_file(tmp_path: Path, capsys) -> None:
    _assert_clean_error(*_code_err(bocb_main("run", str(tmp_path / "nope.yaml"), capsys=capsys)), "file not found")


def test_unknown_preset_and_store(tmp_path: Path, capsys) -> None:
    _assert_clean_error(*_code_err(bocb_main("run", "--preset", "quik", capsys=capsys)), "--preset",
                        "did you mean 'quick'")
    _assert_clean_error(*_code_err(bocb_main("results", str(tmp_path / "none.db"), capsys=capsys)), "STORE",
                        "no such store file")
    (tmp_path / "notes.db").write_text("not a database")
    _assert_clean_error(*_code_err(bocb_main("status", str(tmp_path / "notes.db"), capsys=capsys)),
                        "store: cannot open", "file is not a database")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text)")
    before = foreign.read_bytes()
    for command in (("status", str(foreign)), ("results", str(foreign)), ("report", str(foreign), "-o",
                                                                          str(tmp_path / "report"))):
        _assert_clean_error(*_code_err(bocb_main(*command, capsys=capsys)), "holds no bocb store")
    assert foreign.read_bytes() == before  # reading commands leave a database that is not theirs untouched
    _assert_clean_error(*_code_err(bocb_main("weights", "abc", "--store", str(tmp_path / "missing.db"),
                                             capsys=capsys)), "no such store file")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_is_refused_before_anything_is_stored(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path / "spec.yaml", device="cuda")
    out = tmp_path / "out"
    _assert_clean_error(*_code_err(bocb_main("run", str(spec), "--out", str(out), capsys=capsys)), "device:",
                        "no CUDA device", "valid choices here: auto, cpu")
    assert not (out / "bocb.db").exists()
    assert bocb_main("run", str(spec), "--out", str(out), "--plan-only", capsys=capsys)[0] == 0  # for GPU workers
    _assert_clean_error(*_code_err(bocb_main("worker", "--store", str(out / "bocb.db"), capsys=capsys)),
                        "device:", "no CUDA device")
    _assert_clean_error(*_code_err(bocb_main("worker", "--store", str(out / "bocb.db"), "--device", "tpu",
                                             capsys=capsys)), "--device:", "valid choices: auto, cpu, cuda")


def test_an_output_path_that_cannot_be_a_directory(tmp_path: Path, capsys) -> None:
    spec, csv = write_spec(tmp_path / "spec.yaml"), tmp_path / "results.csv"
    csv.write_text("backbone,optimizer,test_top1\nresnet50,sgd,90\n")
    _assert_clean_error(*_code_err(bocb_main("run", str(spec), "--out", str(spec), capsys=capsys)), "--out:",
                        "is a file")
    _assert_clean_error(*_code_err(bocb_main("report", str(csv), "-o", str(spec), capsys=capsys)), "--out:",
                        "is a file")
    _assert_clean_error(*_code_err(bocb_main("report", str(csv), "-o", str(spec / "sub"), capsys=capsys)),
                        str(spec / "sub"), "Not a directory")


def _code_err(result: tuple[int, str, str]) -> tuple[int, str]:
    return result[0], result[2]


def test_aliases_and_defaults() -> None:
    spec = parse_spec({**TINY_SPEC, "optimizers": ["SGD-M", "AdamW"], "backbones": ["R-50"]})
    assert [o.name for o in spec.optimizers] == ["sgd", "adamw"]
    assert spec.backbones[0].name == "resnet50"
    with pytest.raises(SpecError, match="optimizers: sgd given twice"):  # two spellings of one optimizer
        parse_spec({**TINY_SPEC, "optimizers": ["SGD-M", "sgd_m"]})
    minimal = parse_spec({"dataset": {"name": "digits", "image_size": 16}, "backbones": ["resnet50"],
                          "optimizers": ["sgd"]})
    assert minimal.size == "tiny" and minimal.seeds == [0, 1, 2] and minimal.search.lr_points == 5


def test_benchmark_id_ignores_where_it_runs() -> None:
    a = parse_spec({**TINY_SPEC, "workers": 1, "store": "x.db"})
    b = parse_spec({**TINY_SPEC, "workers": 2})
    c = parse_spec({**TINY_SPEC, "epochs": 3})
    assert a.benchmark_id() == b.benchmark_id() != c.benchmark_id()


def test_two_phase_search_is_chosen_in_the_spec_and_the_default_keeps_earlier_benchmark_ids() -> None:
    earlier = parse_spec(TINY_SPEC)  # a spec written before search.phases existed
    one = parse_spec({**TINY_SPEC, "search": {**TINY_SPEC["search"], "phases": "one"}})
    two = parse_spec({**TINY_SPEC, "search": {**TINY_SPEC["search"], "phases": "two"}})
    assert earlier.search.phases == "one" and two.search.phases == "two"
    assert earlier.benchmark_id() == one.benchmark_id() != two.benchmark_id()
    with pytest.raises(SpecError, match=r"^search\.phases: Input should be 'one' or 'two'"):
        parse_spec({**TINY_SPEC, "search": {"phases": "three"}})


def test_spec_error_names_field() -> None:
    with pytest.raises(SpecError, match=r"^seeds: "):
        parse_spec({**TINY_SPEC, "seeds": []})
