"""Hostile and mistaken input: each case is one line on stderr naming the field, exit code 2, no traceback,
and the store it was pointed at byte-for-byte as it was (its content fingerprint unchanged)."""
from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_SPEC, bocb_main


def fingerprint(path: Path) -> str:
    """A hash of everything the SQLite file holds (schema and rows), independent of its page layout."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()


@pytest.fixture(scope="module")
def planned_store(tmp_path_factory) -> Path:
    """A real store with one planned benchmark (planning trains nothing)."""
    root = tmp_path_factory.mktemp("planned")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(TINY_SPEC))
    from conftest import bocb_command

    done = bocb_command("run", str(spec), "--plan-only", "--store", str(root / "bocb.db"), "--out", str(root))
    assert done.returncode == 0, done.stderr
    return root / "bocb.db"


def _spec_with(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _tiny(**changes) -> str:
    return yaml.safe_dump({**TINY_SPEC, **changes})


SPEC_CASES = {
    "override ema_decay text": (_tiny(recipe_overrides={"ema_decay": "x"}), "recipe_overrides.ema_decay: must be"),
    "override grad_clip text": (_tiny(recipe_overrides={"grad_clip": "x"}), "recipe_overrides.grad_clip: must be"),
    "override hflip maybe": (_tiny(recipe_overrides={"hflip": "maybe"}),
                             "recipe_overrides.hflip: must be of type bool"),
    "randaugment garbage": (_tiny(recipe_overrides={"randaugment": "garbage"}),
                            "recipe_overrides.randaugment: timm cannot parse"),
    "extras the optimizer does not take": (_tiny(optimizers=[{"name": "sgd", "extras": {"bogus": [1]}}]),
                                           "optimizers.sgd.extras.bogus: unknown hyper-parameter"),
    "params of the wrong type": (_tiny(optimizers=[{"name": "sgd", "params": {"momentum": "x"}}]),
                                 "optimizers.sgd.params: torch.optim.SGD refuses"),
    "extras out of range": (_tiny(optimizers=[{"name": "adamw", "extras": {"beta2": [0.99, 2.0]}}]),
                            "optimizers.adamw.extras.beta2: torch.optim.AdamW refuses {'beta2': 2.0}"),
    "epochs beyond the store": (_tiny(epochs=10**12), "epochs: Input should be less than or equal to 100000"),
    "seed beyond the store": (_tiny(seeds=[0, 2**40]), "seeds.1: Input should be less than or equal to 2147483647"),
    "budget_check names a backbone not in the spec": (_tiny(budget_check={"backbones": ["vgg13_bn"]}),
                                                      "budget_check.backbones: unknown backbone 'vgg13_bn'"),
    "misspelt field": (_tiny(epoch=3), "epoch: unknown field 'epoch'; did you mean 'epochs'?"),
    "misspelt required field": (yaml.safe_dump({k: v for k, v in TINY_SPEC.items() if k != "optimizers"}
                                               | {"optimisers": ["sgd"]}),
                                "optimisers: unknown field 'optimisers'; did you mean 'optimizers'?"),
    "a spec that is not UTF-8": (b"backbones: [resnet50]\nname: \xff\xfe\n", "is not UTF-8 text"),
    "factory module that raises at import": (_tiny(backbones=["hostile_raises:net"]),
                                             "cannot import backbone factory 'hostile_raises:net': RuntimeError"),
    "factory module with a syntax error": (_tiny(backbones=["hostile_syntax:net"]),
                                           "cannot import backbone factory 'hostile_syntax:net': SyntaxError"),
    "a backbone factory that returns an int": (_tiny(backbones=["hostile_factories:gives_int"]),
                                               "backbones.hostile_factories:gives_int: backbone factory "
                                               "'hostile_factories:gives_int' returned int, not a torch.nn.Module"),
    "a backbone factory that takes no arguments": (_tiny(backbones=["hostile_factories:no_arguments"]),
                                                   "fails when bocb builds it: TypeError"),
    "print as a backbone factory": (_tiny(backbones=["builtins:print"]), "fails when bocb builds it: TypeError"),
    "a backbone with the wrong number of logits": (_tiny(backbones=["hostile_factories:three_logits"]),
                                                   "gives (2, 3) for 2 images, not (2, 10) logits"),
    "factory module that calls sys.exit(0) at import": (_tiny(backbones=["hostile_exit:net"]),
                                                        "cannot import backbone factory 'hostile_exit:net': "
                                                        "SystemExit: 0"),
    "optimizer module that raises KeyboardInterrupt at import": (_tiny(optimizers=["hostile_interrupt:Opt"]),
                                                                 "cannot import optimizer class "
                                                                 "'hostile_interrupt:Opt': KeyboardInterrupt"),
    "optimizer module that does not import": (_tiny(optimizers=["no_such_module_xyz:Opt"]),
                                              "optimizers: cannot import optimizer class 'no_such_module_xyz:Opt': "
                                              "ModuleNotFoundError"),
    "optimizer class the module lacks": (_tiny(optimizers=[{"name": "hostile_optim:Missing", "lr": 0.1}]),
                                         "optimizers: cannot import optimizer class 'hostile_optim:Missing': "
                                         "AttributeError"),
    "optimizer that is no Optimizer": (_tiny(optimizers=["hostile_optim:NOT_AN_OPTIMIZER"]),
                                       "optimizers: 'hostile_optim:NOT_AN_OPTIMIZER' is of type int, "
                                       "not a torch.optim.Optimizer subclass"),
    "optimizer class without an lr default or a spec lr": (_tiny(optimizers=["hostile_optim:NoLr"]),
                                                           "optimizers.hostile_optim:NoLr.lr: the optimizer has no "
                                                           "default"),
    "a backbone's own recipe misspelt": (_tiny(backbones=[{"name": "deit_s", "recipe": "deitt"}]),
                                         "backbones.deit_s.recipe: unknown recipe 'deitt'; did you mean 'deit'?"),
    "a backbone's own override out of range": (_tiny(backbones=["resnet50", {"name": "deit_s", "recipe_overrides":
                                                                             {"warmup_epochs": -1}}]),
                                               "backbones.deit_s.recipe_overrides.warmup_epochs: must be a number"),
    # values that would make every trial crash, or mean what the user did not write (issue 30)
    "train_subset beyond the data": (_tiny(dataset={**TINY_SPEC["dataset"], "train_subset": 10**8}),
                                     "dataset.train_subset: 100,000,000 is more than the 1,437 training images"),
    "test_subset beyond the data": (_tiny(dataset={**TINY_SPEC["dataset"], "test_subset": 10**9}),
                                    "dataset.test_subset: 1,000,000,000 is more than the 360 test images of digits"),
    "negative split seed": (_tiny(dataset={**TINY_SPEC["dataset"], "split_seed": -1}),
                            "dataset.split_seed: Input should be greater than or equal to 0"),
    "a validation split that leaves nothing to train": (
        _tiny(dataset={**TINY_SPEC["dataset"], "train_subset": 200, "val_fraction": 0.999}),
        "dataset.val_fraction: 0.999 of 200 training images leaves 0 to train on and 200 to validate"),
    "NaN among searched extras": (_tiny(optimizers=[{"name": "sgd", "extras": {"momentum": [float("nan")]}}]),
                                  "optimizers.0.extras.momentum.0: must be a finite number, not nan"),
    "infinite lr": (_tiny(optimizers=[{"name": "sgd", "lr": float("inf")}]),
                    "optimizers.0.lr: must be a finite number, not inf"),
    "NaN weight decay": (_tiny(optimizers=[{"name": "sgd", "weight_decay": float("nan")}]),
                         "optimizers.0.weight_decay: must be a finite number, not nan"),
    "infinite gamma": (_tiny(rules={"gamma": float("inf")}), "rules.gamma: must be a finite number, not inf"),
    "an lr step that underflows the grid": (_tiny(search={"lr_points": 3, "wd_points": 1, "lr_step": 1e308}),
                                            "search.lr_step: 1e+308 over 3 points and 0 edge steps spans 10^616"),
    "epochs: true": (_tiny(epochs=True), "epochs: Input should be a valid integer"),
    "ten thousand lr points": (_tiny(search={"lr_points": 10_000, "wd_points": 1}),
                               "search.lr_points: Input should be less than or equal to 100"),
    "an optimizer twice": (_tiny(optimizers=["sgd", "sgd"]), "optimizers: sgd given twice: each may appear once"),
    "a seed twice": (_tiny(seeds=[0, 0]), "seeds: 0 given twice: each may appear once"),
    "a YAML key twice": ("epochs: 3\n" + _tiny(), "spec: 'epochs' is given twice (lines 1 and"),
    "billion laughs": (_tiny() + "recipe_overrides: {a: &a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 10)}]" for a, b in zip("abcd", "bcde")) + "}\n",
        "spec: expands to more than 100,000 values"),
    "a list nested 5,000 deep": (_tiny() + "recipe_overrides: {x: " + "[" * 5000 + "]" * 5000 + "}\n",
                                 "nests too deep to read (more than 50 levels)"),
    "a budget check at ten billion times the epochs": (_tiny(budget_check={"multipliers": [10**10]}),
                                                       "budget_check.multipliers.0: Input should be less than or "
                                                       "equal to 64"),
    "a NUL byte in artifact_root": (_tiny(artifact_root="art\x00ifacts"), "artifact_root: contains a NUL byte"),
    "a store of an unknown dialect": (_tiny(store="nosuchdb://host/db"), "store: not a database URL SQLAlchemy knows"),
    "a store whose driver is not installed": (_tiny(store="mysql+mysqldb://u@host/db"),
                                              "store: the driver of mysql+mysqldb is not installed"),
    "an empty store": (_tiny(store=""), "store: empty: give a file path or a database URL"),
    # recipe values no trial survives, and lists that would plan a trial twice (the campaign at 04d09ef)
    "an image side no trial fits": (_tiny(dataset={**TINY_SPEC["dataset"], "image_size": 10**12}),
                                    "dataset.image_size: Input should be less than or equal to 4096"),
    "a huge repeated augmentation": (_tiny(recipe_overrides={"repeated_aug": 10**12}),
                                     "recipe_overrides.repeated_aug: must be a number >= 1 and <= 16"),
    "crop padding as wide as the image": (_tiny(recipe_overrides={"crop_padding": 16}),
                                          "recipe_overrides.crop_padding: 16 is not smaller than the training "
                                          "image side 16"),
    "a huge training image ratio": (_tiny(recipe_overrides={"train_image_ratio": 1e300}),
                                    "recipe_overrides.train_image_ratio: must be > 0 and <= 4"),
    "a negative BCE target threshold": (_tiny(recipe_overrides={"loss": "bce", "bce_target_thresh": -1}),
                                        "recipe_overrides.bce_target_thresh: must be None or in [0, 1)"),
    "a RandAugment section timm would ignore": (_tiny(recipe_overrides={"randaugment": "rand-zz"}),
                                                "recipe_overrides.randaugment: section 'zz' of 'rand-zz' has no "
                                                "value"),
    "an lr twice in a grid": (_tiny(optimizers=[{"name": "sgd", "lr": [0.1, 0.1]}]),
                              "optimizers.sgd.lr: 0.1 given twice"),
    "an extras value twice": (_tiny(optimizers=[{"name": "adamw", "extras": {"beta2": [0.99, 0.99]}}]),
                              "optimizers.adamw.extras.beta2: 0.99 given twice"),
    "a budget multiplier twice": (_tiny(budget_check={"multipliers": [2, 2]}),
                                  "budget_check.multipliers: 2 given twice"),
    "a budget backbone twice": (_tiny(budget_check={"backbones": ["resnet50", "resnet50"]}),
                                "budget_check.backbones: resnet50 given twice"),
    "a transfer mode twice": (_tiny(transfer={"dataset": {"name": "digits"}, "optimizers": ["sgd"],
                                              "modes": ["finetune", "finetune"]}),
                              "transfer.modes: finetune given twice"),
    "a NUL byte in a key": (_tiny() + 'recipe_overrides: {"hf\\0lip": true}\n',
                            "spec: the key 'hf\\x00lip' at line"),
    "a raw NUL byte": (_tiny().encode() + b"name: a\x00b\n", "spec: malformed YAML: unacceptable character #x0000"),
    "factory module that calls os._exit(0) at import": (_tiny(backbones=["hostile_os_exit:net"]),
                                                        "cannot import backbone factory 'hostile_os_exit:net': it "
                                                        "called os._exit(0)"),
    "a backbone factory that calls sys.exit(0)": (_tiny(backbones=["hostile_factories:exits"]),
                                                  "fails when bocb builds it: SystemExit: 0"),
    "a backbone factory that calls os._exit(0)": (_tiny(backbones=["hostile_factories:os_exits"]),
                                                  "fails when bocb builds it: it called os._exit(0)"),
    "an optimizer whose __init__ calls sys.exit(0)": (_tiny(optimizers=["hostile_optim:InitExits"]),
                                                      "hostile_optim:InitExits refuses {}: SystemExit: 0"),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_bad_spec_is_one_line_and_leaves_the_store_alone(case, tmp_path, planned_store, capsys, monkeypatch):
    text, expected = SPEC_CASES[case]
    (tmp_path / "hostile_raises.py").write_text("raise RuntimeError('import-time failure')\n")
    (tmp_path / "hostile_syntax.py").write_text("def net(:\n")
    (tmp_path / "hostile_exit.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "hostile_os_exit.py").write_text("import os\nos._exit(0)\n")  # would end pytest itself
    (tmp_path / "hostile_factories.py").write_text(
        "import os\nimport sys\n\nimport torch\n\n\ndef gives_int(num_classes, img_size):\n    return 3\n\n\n"
        "def no_arguments():\n    return torch.nn.Linear(1, 1)\n\n\ndef three_logits(num_classes, img_size):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))\n\n\n"
        "def exits(num_classes, img_size):\n    sys.exit(0)\n\n\n"
        "def os_exits(num_classes, img_size):\n    os._exit(0)\n")
    (tmp_path / "hostile_interrupt.py").write_text("raise KeyboardInterrupt\n")
    (tmp_path / "hostile_optim.py").write_text("import sys\n\nimport torch\nNOT_AN_OPTIMIZER = 3\n\n\n"
                                              "class NoLr(torch.optim.SGD):\n"
                                              "    def __init__(self, params, lr, weight_decay=0.0):\n"
                                              "        super().__init__(params, lr=lr, weight_decay=weight_decay)\n"
                                              "\n\nclass InitExits(torch.optim.SGD):\n"
                                              "    def __init__(self, params, lr=0.1, weight_decay=0.0):\n"
                                              "        sys.exit(0)\n")
    monkeypatch.chdir(tmp_path)
    before = fingerprint(planned_store)
    code, out, err = bocb_main("run", str(_spec_with(tmp_path, text)), "--store", str(planned_store),
                               "--out", str(tmp_path / "out"), capsys=capsys)
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in out + err
    assert fingerprint(planned_store) == before


def test_too_many_workers_and_an_unreachable_ray_address_store_nothing(tmp_path, planned_store, capsys):
    spec = _spec_with(tmp_path, _tiny())
    before = fingerprint(planned_store)
    code, _, err = bocb_main("run", str(spec), "--store", str(planned_store), "--workers", "1000", capsys=capsys)
    assert code == 2 and "workers: 1000 local workers on" in err and err.count("\n") == 1
    code, _, err = bocb_main("run", str(spec), "--store", str(planned_store), "--executor", "ray",
                             "--address", "127.0.0.1:9", capsys=capsys)
    assert code == 2 and "--address: nothing answers at 127.0.0.1:9" in err and err.count("\n") == 1
    assert fingerprint(planned_store) == before


def _foreign(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.execute("INSERT INTO users VALUES ('ada')")
    return path


def _damaged(path: Path, planned_store: Path) -> Path:
    """A copy of a real store with two b-tree page headers overwritten (what a bad disk does)."""
    with sqlite3.connect(planned_store) as source, sqlite3.connect(path) as copy:
        source.backup(copy)
    with sqlite3.connect(path) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute("PRAGMA journal_mode=DELETE")
    blob = bytearray(path.read_bytes())
    for number in (3, 5):
        blob[(number - 1) * page:(number - 1) * page + 8] = b"\x0d" + b"\xff" * 7
    path.write_bytes(bytes(blob))
    return path


@pytest.mark.parametrize("command", ["run", "results", "status", "report"])
@pytest.mark.parametrize("kind", ["foreign", "damaged"])
def test_a_foreign_or_damaged_store_is_refused_without_a_write(command, kind, tmp_path, planned_store, capsys):
    path = _foreign(tmp_path / "x.db") if kind == "foreign" else _damaged(tmp_path / "x.db", planned_store)
    before = path.read_bytes()
    args = {"run": ["run", str(_spec_with(tmp_path, _tiny())), "--store", str(path), "--out", str(tmp_path / "o")],
            "results": ["results", str(path)], "status": ["status", str(path)],
            "report": ["report", str(path), "-o", str(tmp_path / "r")]}[command]
    code, out, err = bocb_main(*args, capsys=capsys)
    assert code == 2, out + err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert ("another program's database" in err or "holds no bocb store" in err) if kind == "foreign" \
        else "is damaged (SQLite quick_check" in err
    assert path.read_bytes() == before


FLAG_CASES = {
    "zero workers": (["run", "--preset", "quick", "--workers", "0"],
                     "'--workers': Input should be greater than or equal to 1"),
    "workers not a number": (["run", "--preset", "quick", "--workers", "abc"],
                             "'--workers': Input should be a valid integer"),
    "negative edge steps": (["run", "--preset", "quick", "--extend-edges", "-5"], "'--extend-edges'"),
    "a missing argument": (["results"], "Missing argument 'store'"),
    "an unknown command": (["frobnicate"], "No such command 'frobnicate'"),
    "a stale-after that is text": (["status", "x.db", "--stale-after", "abc"], "'--stale-after'"),
    "check epochs 0": (["check", "alexnet", "--epochs", "0"], "'--epochs': Input should be greater than or equal to 1"),
    "check optimizers naming nothing": (["check", "alexnet", "--optimizers", ",,,"],
                                        "--optimizers: ',,,' names nothing"),
    "an empty preset": (["run", "--preset", "", "--plan-only"], "--preset: unknown preset ''"),
    "an empty store": (["run", "--preset", "quick", "--plan-only", "--store", ""], "--store: empty"),
    "check into a store of an unknown dialect": (["check", "alexnet", "--plan-only", "--store", "nosuchdb://x/y"],
                                                 "--store: not a database URL SQLAlchemy knows"),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_a_bad_option_of_any_command_is_one_line_and_exit_2(case, capsys, tmp_path, monkeypatch) -> None:
    args, expected = FLAG_CASES[case]
    monkeypatch.chdir(tmp_path)
    code, out, err = bocb_main(*args, capsys=capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in out + err and "Usage:" not in err
    assert not list(tmp_path.iterdir())  # no default output folder, no store


def test_an_empty_benchmark_id_is_refused_not_read_as_any(planned_store, capsys) -> None:
    before = fingerprint(planned_store)
    code, out, err = bocb_main("status", str(planned_store), "--benchmark", "", capsys=capsys)
    assert code == 2 and err == "error: --benchmark: is empty: give a benchmark id or the start of one\n", err
    assert fingerprint(planned_store) == before


# -- stores: commands that only read open them read-only -----------------------------------------------------

def _copy(store: Path, to: Path) -> Path:
    with sqlite3.connect(store) as source, sqlite3.connect(to) as copy:
        source.backup(copy)
    return to


READING = {"results": lambda s, o: ["results", str(s)], "status": lambda s, o: ["status", str(s)],
           "report": lambda s, o: ["report", str(s), "-o", str(o / "report")],
           "models": lambda s, o: ["models", str(s)], "export": lambda s, o: ["export", str(s), "-o", str(o / "b.zip")]}


@pytest.mark.parametrize("command", sorted(READING))
def test_a_command_that_only_reads_creates_nothing_beside_the_store(command, finished_tiny, tmp_path, capsys):
    """No -wal or -shm file appears next to a store no process has open (so a store in a read-only
    directory or on a read-only medium is readable), and the file's bytes do not change."""
    (tmp_path / "store").mkdir()
    store = _copy(finished_tiny / "bocb.db", tmp_path / "store" / "bocb.db")
    before = store.read_bytes()
    code, out, err = bocb_main(*READING[command](store, tmp_path), capsys=capsys)
    assert code == 0, err
    assert sorted(p.name for p in store.parent.iterdir()) == ["bocb.db"] and store.read_bytes() == before


@pytest.mark.parametrize("command", ["results", "status", "report"])
def test_a_store_of_an_older_schema_is_refused_by_reading_commands_and_upgraded_by_bocb_upgrade(
        command, tmp_path, capsys):
    store = tmp_path / "old.sqlite"
    store.write_bytes((Path(__file__).parent / "data" / "store_schema1.sqlite").read_bytes())
    before = store.read_bytes()
    code, _, err = bocb_main(*READING[command](store, tmp_path), capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "is of schema 1, older than this bocb's" in err, err
    assert f"`bocb upgrade {store}`" in err and store.read_bytes() == before
    assert bocb_main("upgrade", str(store), capsys=capsys)[:2] == (0, f"store {store}: upgraded from schema 1 to 2\n")
    assert bocb_main("upgrade", str(store), capsys=capsys)[1].endswith("already at schema 2; nothing changed\n")
    assert bocb_main(*READING[command](store, tmp_path), capsys=capsys)[0] == 0


MALFORMED = {"config_json not JSON": ("config_json", "'{not json'", "column 'config_json' holds '{not json'"),
             "config_json a list": ("config_json", "'[1, 2]'", "column 'config_json' holds '[1, 2]', not a JSON"),
             "provenance_json not JSON": ("provenance_json", "'oops'", "column 'provenance_json' holds 'oops'"),
             "lr that is text": ("lr", "'fast'", "column 'lr' holds 'fast', not a number (1 such row(s)")}


@pytest.mark.parametrize("command", sorted(READING))
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_row_written_outside_bocb_is_one_line_naming_its_trial(case, command, finished_tiny, tmp_path, capsys):
    column, value, expected = MALFORMED[case]
    store = _copy(finished_tiny / "bocb.db", tmp_path / "bocb.db")
    with sqlite3.connect(store) as db:
        key = db.execute("SELECT key FROM trials WHERE state = 'done' ORDER BY key LIMIT 1").fetchone()[0]
        db.execute(f"UPDATE trials SET {column} = {value} WHERE key = ?", (key,))
    before = fingerprint(store)
    code, out, err = bocb_main(*READING[command](store, tmp_path), capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and f"store: trial {key}: {expected}" in err, err
    assert "Traceback" not in out + err and fingerprint(store) == before


@pytest.mark.parametrize("args", [["results"], ["status"], ["models"], ["upgrade"], ["worker", "--store"],
                                  ["run", "--preset", "quick", "--plan-only", "--store"],
                                  ["import", "missing.zip", "--store"]])
def test_an_unreachable_postgresql_server_is_one_line(args, tmp_path, capsys) -> None:
    """Port 9 (discard) has no PostgreSQL server: psycopg's two-line message becomes one."""
    url = "postgresql+psycopg://bocb:bocb@127.0.0.1:9/nothing"
    code, out, err = bocb_main(*args, url, capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in out + err, err
    assert "127.0.0.1" in err or "missing.zip" in err


@pytest.mark.parametrize("gamma", ["nan", "inf", "0", "-1"])
def test_a_gamma_that_is_not_a_finite_positive_number_is_refused(gamma, planned_store, tmp_path, capsys) -> None:
    code, out, err = bocb_main("report", str(planned_store), "-o", str(tmp_path / "r"), "--gamma", gamma,
                               capsys=capsys)
    assert code == 2 and err.startswith("error: --gamma: must be > 0 and finite") and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_a_plugin_raising_its_own_base_exception_at_import_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "hx_base.py").write_text("class Stop(BaseException):\n    pass\n\nraise Stop('no')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _spec_with(tmp_path, _tiny(backbones=["hx_base:net"]))
    code, out, err = bocb_main("run", str(spec), "--plan-only", "--store", str(tmp_path / "s.db"), capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot import" in err and "Stop: no" in err, err
    assert "Traceback" not in out + err and not (tmp_path / "s.db").exists()


def test_a_ctrl_c_while_a_plugin_imports_stops_bocb_and_is_not_reported_as_the_plugins_failure(tmp_path) -> None:
    """A real SIGINT (here the module sends it to its own process while bocb imports it) is the user
    stopping bocb: exit code 130, where a KeyboardInterrupt the module raises itself is its failure (one
    line, exit code 2: SPEC_CASES). A real process: the signal is what this tests."""
    (tmp_path / "hx_ctrl_c.py").write_text("import os\nimport signal\nimport time\n\n"
                                           "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n")
    spec = _spec_with(tmp_path, _tiny(backbones=["hx_ctrl_c:net"]))
    # SIGINT as a terminal leaves it: a pytest-xdist worker ignores it, and its children would inherit that
    done = subprocess.run([sys.executable, "-m", "bocb", "run", str(spec), "--plan-only", "--store",
                           str(tmp_path / "s.db")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130, done.stderr
    assert "cannot import" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "s.db").exists()
