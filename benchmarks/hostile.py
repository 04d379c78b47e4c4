"""Issue #30's hostile-input campaign, reproducible: hundreds of bad inputs, each run as a user runs bocb.

    python benchmarks/hostile.py [--classes specs,stores] [--workdir DIR] [--markdown FILE]

bocb promises that bad input gets ONE line on stderr starting with ``error: `` that names the field (the
closest valid name and the choices where a name is wrong), exit code 2, no traceback, and nothing stored
changed: the store's content fingerprint (its ``iterdump``, hashed) is as it was, no file appears beside it,
and a store path that did not exist still does not. Input that is legitimately valid runs correctly (exit 0).

Each case is a real subprocess, ``python -m bocb ARGV`` in a folder of its own holding the files it needs
(120 s timeout, two at a time: the machine has two cores). A case VIOLATES when its outcome differs from the
one expected. The campaign prints a table per class, a total line, then every violating case with its argv,
what differed and the first two lines of its stderr.

Nothing here trains more than a few seconds: spec cases stop at ``--plan-only`` or earlier; the one finished
store the store, bundle and weights cases read is trained once (``bocb run`` of the tests' TINY_SPEC with
2 learning rates, a few tens of seconds) and cached under ``--workdir``.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import os
import pickle
import random
import resource
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import FINISHED_TINY, TINY_SPEC  # noqa: E402 - the tests' tiny valid spec, one source of truth

TIMEOUT_S = 120
PARALLEL = 2
MEMORY_LIMIT = 6 << 30  # a case that tries to allocate an absurd tensor fails alone, not the shared machine
Content = str | bytes | Callable[[Path], None]  # a file's text or bytes, or what makes it at the given path
Expect = Literal["refused", "accepted", "interrupted"]


@dataclass
class Case:
    name: str
    cls: str
    argv: list[str]
    files: dict[str, Content] = field(default_factory=dict)  # relative to the case's folder (its cwd)
    expect: Expect = "refused"
    text: str | tuple[str, ...] | None = None  # what the error line must contain (any one of a tuple)
    store: str | None = None  # a store path whose content and folder must stay as they were when refused
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards (a payload's marker)
    signal_after: float | None = None  # send SIGINT to the process group after this many seconds


@dataclass
class Result:
    case: Case
    code: int | None
    seconds: float
    problems: list[str]
    stderr: str


@dataclass
class Context:
    """What the cases are built from: the finished store (with its artifacts), its bundle, the plugins."""

    finished: Path  # a folder: bocb.db, artifacts/weights/*.safetensors
    bundle: Path
    plugins: Path

    @property
    def kept(self) -> list[Path]:
        return sorted((self.finished / "artifacts" / "weights").glob("*.safetensors"))


# -- files a case needs ----------------------------------------------------------------------------------

def copy_of(source: Path) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
    return make


def random_bytes(size: int, seed: int = 30) -> bytes:
    return random.Random(seed).randbytes(size)


def foreign_db(target: Path) -> None:
    with sqlite3.connect(target) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.execute("INSERT INTO users VALUES ('ada')")
    db.close()


def damaged_db(source: Path) -> Callable[[Path], None]:
    """A copy of a real store with two b-tree page headers overwritten (what a bad disk does)."""
    def make(target: Path) -> None:
        shutil.copyfile(source, target)
        with sqlite3.connect(target) as db:
            page = db.execute("PRAGMA page_size").fetchone()[0]
        db.close()
        blob = bytearray(target.read_bytes())
        for number in (3, 5):
            blob[(number - 1) * page:(number - 1) * page + 8] = b"\x0d" + b"\xff" * 7
        target.write_bytes(bytes(blob))
    return make


def edited_db(source: Path, sql: str) -> Callable[[Path], None]:
    """A copy of a real store with one row written outside bocb (``{key}``: the first done trial's key)."""
    def make(target: Path) -> None:
        shutil.copyfile(source, target)
        with sqlite3.connect(target) as db:
            key = db.execute("SELECT key FROM trials WHERE state = 'done' ORDER BY key LIMIT 1").fetchone()[0]
            db.execute(sql.format(key=key))
        db.close()
    return make


class Payload:
    """Unpickled, it creates the file PWNED in the working directory: proof that a crafted file ran code."""

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, ("PWNED", "w")


def torch_file(obj: Any) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        import torch

        torch.save(obj, target)
    return make


def zip_of(members: dict[str, bytes]) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    return make


def rezipped(source: Path, change: Callable[[str, bytes], bytes | None]) -> Callable[[Path], None]:
    """A copy of a zip with each member passed through ``change`` (None drops it)."""
    def make(target: Path) -> None:
        with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
            for info in old.infolist():
                data = change(info.filename, old.read(info))
                if data is not None:
                    new.writestr(info.filename, data)
    return make


def truncated(source: Path, share: float = 0.5) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        blob = source.read_bytes()
        target.write_bytes(blob[:int(len(blob) * share)])
    return make


def make_file(target: Path, content: Content) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if callable(content):
        content(target)
    elif isinstance(content, bytes):
        target.write_bytes(content)
    elif content == "DIR/":  # a folder where a file is expected
        target.mkdir()
    else:
        target.write_text(content)


# -- the store's fingerprint -----------------------------------------------------------------------------

def fingerprint(path: Path) -> str:
    """What the store at ``path`` holds: its SQLite dump hashed (independent of page layout; immutable=1
    opens it without a lock file or -shm beside it), else its bytes or a folder's listing hashed."""
    if not path.exists():
        return "absent"
    if path.is_dir():
        return "dir:" + ",".join(sorted(str(p.relative_to(path)) for p in path.rglob("*")))
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            return "dump:" + hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
        finally:
            db.close()
    except sqlite3.Error:
        return "bytes:" + hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(store: Path) -> tuple[str, list[str]]:
    beside = sorted(p.name for p in store.parent.iterdir()) if store.parent.is_dir() else []
    return fingerprint(store), beside


# -- the spec class --------------------------------------------------------------------------------------

def spec_text(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, sort_keys=False)


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def with_value(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``spec`` with the dotted ``path`` (list indices as numbers) set to ``value``."""
    out = copy.deepcopy(spec)
    node: Any = out
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
        if isinstance(part, str) and part not in node:
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return out


NAN, INF = float("nan"), float("inf")
# The values tried in every numeric field; "huge" is 10^12 in an integer field, 1e300 in a float one.
VALUES: dict[str, Any] = {"NaN": NAN, "inf": INF, "-1": -1, "0": 0, "true": True, "huge": None, "string": "abc",
                          "null": None, "list": [1, 2]}
HALVING = {"search": {"method": "halving"}}
EARLY_STOP = {"search": {"early_stop": {"at": 0.5}}}
OPTIMIZER_ENTRY = {"optimizers": [{"name": "sgd"}, "adamw"]}
TRANSFER = {"transfer": {"dataset": {"name": "digits", "image_size": 16}, "optimizers": ["sgd"],
                         "modes": ["finetune"], "epochs": 1}}
# (field, int or float, what else the field needs to apply, the values that are legitimately valid there).
# "huge" counts as valid only where a large number is harmless (a threshold, a ratio, a spacing that one grid
# point never uses, a recipe epochs the spec's own epochs replace); where it makes every trial impossible
# (an image side, repeated augmentation, padding) it must be refused, as epochs and batch_size are.
NUMERIC: list[tuple[str, str, dict[str, Any], set[str]]] = [
    ("dataset.image_size", "int", {}, {"null"}),
    ("dataset.val_fraction", "float", {}, {"0"}),
    ("dataset.train_subset", "int", {}, {"null"}),
    ("dataset.test_subset", "int", {}, {"null"}),
    ("dataset.split_seed", "int", {}, {"0"}),
    ("search.lr_points", "int", {}, set()),
    ("search.wd_points", "int", {}, set()),
    ("search.lr_step", "float", {}, {"huge"}),  # TINY_SPEC searches one lr: the step spans nothing
    ("search.wd_step", "float", {}, {"huge"}),
    ("search.rungs.0", "float", merged(HALVING, {"search": {"rungs": [0.5, 1.0]}}), set()),
    ("search.keep_fraction", "float", HALVING, set()),
    ("search.early_stop.at", "float", EARLY_STOP, set()),
    ("search.early_stop.margin", "float", EARLY_STOP, {"huge"}),
    ("search.extend_edges", "int", {}, {"0"}),
    ("seeds.0", "int", {}, {"0"}),
    ("epochs", "int", {}, {"null"}),
    ("batch_size", "int", {}, {"null"}),
    ("rules.gamma", "float", {}, {"huge", "null"}),  # null: the dataset's gamma
    ("rules.alpha", "float", {}, set()),
    ("budget_check.multipliers.0", "int", {"budget_check": {"multipliers": [2]}}, set()),
    ("grad_clip", "float", {}, {"huge", "null"}),
    ("workers", "int", {}, {"null", "huge"}),  # --plan-only starts no worker; `bocb run` refuses more than cores
    ("num_cpus", "float", {}, {"huge"}),
    ("num_gpus", "float", {}, {"0", "huge"}),
    ("checkpoint_every", "int", {}, {"0", "huge"}),
    ("optimizers.0.lr", "float", OPTIMIZER_ENTRY, {"huge", "null", "list"}),
    ("optimizers.0.weight_decay", "float", OPTIMIZER_ENTRY, {"0", "huge", "null", "list"}),
    ("transfer.epochs", "int", TRANSFER, {"null"}),
    ("transfer.batch_size", "int", TRANSFER, {"null"}),
    ("recipe_overrides.epochs", "int", {}, {"huge"}),  # the spec's epochs: 2 replace the recipe's
    ("recipe_overrides.batch_size", "int", {}, {"huge"}),
    ("recipe_overrides.warmup_epochs", "int", {}, {"0", "huge"}),
    ("recipe_overrides.warmup_lr_ratio", "float", {}, {"0"}),
    ("recipe_overrides.min_lr_ratio", "float", {}, {"0"}),
    ("recipe_overrides.label_smoothing", "float", {}, {"0"}),
    ("recipe_overrides.drop_path_rate", "float", {}, {"0"}),
    ("recipe_overrides.repeated_aug", "int", {}, set()),
    ("recipe_overrides.mixup_alpha", "float", {}, {"0", "huge"}),
    ("recipe_overrides.cutmix_alpha", "float", {}, {"0", "huge"}),
    ("recipe_overrides.mixup_switch_prob", "float", {}, {"0"}),
    ("recipe_overrides.random_erasing", "float", {}, {"0"}),
    ("recipe_overrides.crop_padding", "int", {}, {"0"}),
    ("recipe_overrides.ema_decay", "float", {}, {"null"}),
    ("recipe_overrides.grad_clip", "float", {}, {"huge", "null"}),
    ("recipe_overrides.train_image_ratio", "float", {}, set()),
    ("recipe_overrides.bce_target_thresh", "float", {"recipe_overrides": {"loss": "bce"}}, {"null", "0"}),
    ("recipe_overrides.test_crop", "float", {}, {"null"}),  # digits has no test crop: any number is refused
]

# (where, the misspelling, its value, the field it should have been)
MISSPELT = [("", "epoch", 2, "epochs"), ("", "optimisers", ["sgd"], "optimizers"), ("", "seed", [0], "seeds"),
            ("", "backbone", ["resnet50"], "backbones"),
            ("", "rule", {"gamma": 3.0}, "rules"), ("", "weight_decay_polcy", "decay_all", "weight_decay_policy"),
            ("", "keep_weight", "all", "keep_weights"), ("", "recipe_override", {}, "recipe_overrides"),
            ("", "budget_chek", "auto", "budget_check"), ("dataset", "image_sise", 16, "image_size"),
            ("search", "lr_point", 1, "lr_points"), ("gpu", "channel_last", True, "channels_last"),
            ("optimizers.0", "weightdecay", 0.1, "weight_decay"), ("rules", "gama", 3.0, "gamma"),
            ("recipe_overrides", "label_smooting", 0.1, "label_smoothing")]
UNKNOWN_FIELD_AT = ["", "dataset", "search", "rules", "gpu", "optimizers.0", "backbones.0", "search.early_stop",
                    "budget_check", "transfer"]
# (field, a wrong name, what the error must contain)
UNKNOWN_NAMES: list[tuple[str, Any, str]] = [
    ("backbones", ["resnet5"], "did you mean 'resnet50'"), ("optimizers", ["adamx"], "did you mean 'adam"),
    ("dataset.name", "cifar1000", "did you mean 'cifar100'"), ("recipe", "deitt", "did you mean 'deit'"),
    ("backbones", [{"name": "deit_s", "recipe": "convnxt"}], "did you mean 'convnext'"),
    ("transfer", merged(TRANSFER["transfer"], {"recipe": "torh"}), "did you mean 'torch'"),
    ("transfer", merged(TRANSFER["transfer"], {"dataset": {"name": "digit"}}), "did you mean 'digits'"),
    ("transfer", merged(TRANSFER["transfer"], {"optimizers": ["adamww"]}), "did you mean 'adamw'"),
    ("budget_check", {"optimizers": ["adam"]}, "budget_check.optimizers"),
    ("size", "huge", "size"), ("executor", "slurm", "executor"), ("device", "tpu", "device"),
    ("reseed", "some", "reseed"), ("keep_weights", "best", "keep_weights"),
    ("weight_decay_policy", "decay_none", "weight_decay_policy"), ("gpu.amp", "fp16", "amp"),
    ("search.method", "random", "method"), ("search.phases", "three", "phases"),
    ("search", {"method": "halving", "promotion": "jump"}, "promotion"),
    ("transfer", merged(TRANSFER["transfer"], {"modes": ["full"]}), "modes"),
    ("backbones", [{"name": "resnet50", "size": "medium"}], "size"), ("backbones", [""], "backbones"),
    ("optimizers", [""], "optimizers"), ("backbones", [3], "backbones"), ("backbones", [], "backbones"),
    ("optimizers", {"sgd": 1}, "optimizers"), ("backbones", "resnet50", "backbones"),
    ("recipe_overrides.loss", "hinge", "loss"), ("recipe_overrides.randaugment", "rand-zz", "randaugment"),
]
DUPLICATES: list[tuple[str, Any, str]] = [
    ("optimizers", ["sgd", "sgd"], "given twice"), ("backbones", ["resnet50", "resnet50"], "given twice"),
    ("backbones", ["resnet50", "R-50"], "given twice"),  # the paper's name of the same backbone
    ("optimizers", ["sgd", "sgd-m"], "given twice"), ("seeds", [0, 0], "given twice"),
    ("transfer", merged(TRANSFER["transfer"], {"optimizers": ["sgd", "sgd"]}), "given twice"),
    ("transfer", merged(TRANSFER["transfer"], {"modes": ["finetune", "finetune"]}), "modes"),
    ("budget_check", {"multipliers": [2, 2]}, "multipliers"),
    ("budget_check", {"backbones": ["resnet50", "resnet50"]}, "budget_check.backbones"),
    ("optimizers", [{"name": "sgd", "lr": [0.1, 0.1]}, "adamw"], "lr"),
    ("optimizers", [{"name": "adamw", "extras": {"beta2": [0.99, 0.99]}}, "sgd"], "beta2"),
    ("search", {"method": "halving", "rungs": [0.5, 0.5, 1.0]}, "rungs"),
]
STORE_URLS: list[tuple[str, str]] = [
    ("nosuchdb://host/db", "SQLAlchemy knows"), ("mysql+mysqldb://u@host/db", "driver"),
    ("postgresql+psycopg://bocb:bocb@127.0.0.1:9/nothing", "127.0.0.1"), ("", "store"),
    ("http://example.com/bocb.db", "store"), ("sqlite:///store", "store"),  # a folder (the copied store's)
]
BAD_FILES: list[tuple[str, bytes | str]] = [
    ("empty", b""), ("a YAML list", "- resnet50\n- sgd\n"), ("a scalar", "42\n"),
    ("YAML syntax error", "backbones: [resnet50\noptimizers: sgd\n"),
    ("not UTF-8", b"backbones: [resnet50]\nname: \xff\xfe\n"), ("random bytes", random_bytes(4096)),
    ("a raw NUL byte", spec_text(TINY_SPEC).encode() + b"name: a\x00b\n"),
    ("an integer key", spec_text(TINY_SPEC) + "1: x\n"),
    ("a python tag that runs code",
     spec_text(TINY_SPEC) + 'name: !!python/object/apply:builtins.open ["PWNED", "w"]\n'),
    ("a tab indent", spec_text(TINY_SPEC) + "rules:\n\tgamma: 3\n"),
]
LAUGHS = "{a: &a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 10)}]" for a, b in zip("abcdefg", "bcdefgh")) + "}"


def spec_case(name: str, spec: dict[str, Any] | str | bytes, *, expect: Expect = "refused",
              text: str | tuple[str, ...] | None = None, cls: str = "specs", absent: tuple[str, ...] = ()) -> Case:
    body = spec_text(spec) if isinstance(spec, dict) else spec
    return make_case(name, cls, ["run", "spec.yaml", "--plan-only", "--store", "STORE", "--out", "out"],
                     expect=expect, text=text, files={"spec.yaml": body}, absent=absent)


def spec_cases(ctx: Context) -> list[Case]:
    cases = []
    for path, kind, context, valid in NUMERIC:
        base = merged(TINY_SPEC, context)
        for label, value in VALUES.items():
            if label == "huge":
                value = 10**12 if kind == "int" else 1e300
            expect: Expect = "accepted" if label in valid else "refused"
            last = [p for p in path.split(".") if not p.isdigit()][-1]
            cases.append(spec_case(f"{path} = {label}", with_value(base, path, value), expect=expect,
                                   text=last if expect == "refused" else None))
    for where, wrong, value, right in MISSPELT:
        spec = with_value(merged(TINY_SPEC, OPTIMIZER_ENTRY), f"{where}.{wrong}".lstrip("."), value)
        if where == "" and right in spec:
            del spec[right]
        cases.append(spec_case(f"misspelt {where}.{wrong}".replace(" .", " "), spec, text=f"did you mean '{right}'"))
    for where in UNKNOWN_FIELD_AT:
        context = merged(merged(merged(TINY_SPEC, OPTIMIZER_ENTRY), EARLY_STOP),
                         {"budget_check": {"multipliers": [2]}, **TRANSFER})
        context["backbones"] = [{"name": "resnet50"}, "deit_s"]
        cases.append(spec_case(f"unknown field in {where or 'the spec'}",
                               with_value(context, f"{where}.colour".lstrip("."), "red"),
                               text="unknown field 'colour'"))
    for path, value, text in UNKNOWN_NAMES:
        shown = value if isinstance(value, str | list) else "{...}"
        cases.append(spec_case(f"{path} = {shown}", with_value(TINY_SPEC, path, value), text=text))
    for path, value, text in DUPLICATES:
        cases.append(spec_case(f"twice in {path}: {value if isinstance(value, list) else '{...}'}",
                               with_value(TINY_SPEC, path, value), text=text))
    tiny = spec_text(TINY_SPEC)
    for name, text in [("a top-level key twice", "epochs: 3\n" + tiny),
                       ("a key twice in dataset", tiny.replace("dataset:\n", "dataset:\n  name: digits\n", 1)),
                       ("a key twice in a flow mapping", tiny + "rules: {gamma: 1.0, gamma: 2.0}\n"),
                       ("a key twice in recipe_overrides",
                        tiny + "recipe_overrides:\n  hflip: true\n  hflip: false\n")]:
        cases.append(spec_case(name, text, text="given twice"))
    for name, text in [("billion laughs in recipe_overrides", tiny + f"recipe_overrides: {LAUGHS}\n"),
                       ("billion laughs as the optimizer list", f"x: {LAUGHS}\n" + tiny),
                       ("one alias of 1,000 values used 1,000 times", tiny + "recipe_overrides: {a: &a ["
                        + ", ".join(["1"] * 1000) + "], b: [" + ", ".join(["*a"] * 1000) + "]}\n")]:
        cases.append(spec_case(name, text, text="expands"))
    for depth in (60, 5000):
        cases.append(spec_case(f"a list nested {depth} deep", tiny + "recipe_overrides: {x: " + "[" * depth
                               + "]" * depth + "}\n", text=("nests too deep", "nested deeper")))
        cases.append(spec_case(f"a mapping nested {depth} deep", tiny + "recipe_overrides: " + "{a: " * depth
                               + "1" + "}" * depth + "\n", text=("nests too deep", "nested deeper")))
    for path in ["name", "artifact_root", "dataset.path", "recipe", "backbones.0", "optimizers.0", "store"]:
        cases.append(spec_case(f"a NUL byte in {path}", with_value(TINY_SPEC, path, "re\x00snet50"), text="NUL"))
    cases.append(spec_case("a NUL byte in a key", with_value(TINY_SPEC, "recipe_overrides", {"hf\x00lip": True}),
                           text="NUL"))
    for url, text in STORE_URLS:
        case = spec_case(f"store: {url or 'empty'}", with_value(TINY_SPEC, "store", url), text=text)
        case.argv = ["run", "spec.yaml", "--plan-only", "--out", "out"]  # the spec's store, not --store
        case.absent = ("out/bocb.db",)
        cases.append(case)
    for name, body in BAD_FILES:
        cases.append(spec_case(f"spec file: {name}", body, absent=("PWNED",)))
    cases.append(make_case("spec file missing", "specs", ["run", "nothing.yaml", "--plan-only", "--store", "STORE"],
                           text="nothing.yaml"))
    cases.append(make_case("spec file is a folder", "specs", ["run", "dir", "--plan-only", "--store", "STORE"],
                           files={"dir/x": ""}, text="dir"))
    cases.append(spec_case("the tiny spec itself", TINY_SPEC, expect="accepted"))
    cases.append(spec_case("a UTF-8 byte-order mark", b"\xef\xbb\xbf" + tiny.encode(), expect="accepted"))
    cases.append(spec_case("the paper's backbone names", with_value(TINY_SPEC, "backbones", ["R-50", "DeiT-S"]),
                           expect="accepted"))
    return cases


# -- plugins and bocb check ------------------------------------------------------------------------------

PLUGINS = {
    "hx_raises.py": "raise RuntimeError('import-time failure')\n",
    "hx_syntax.py": "def net(:\n",
    "hx_exit0.py": "import sys\nsys.exit(0)\n",
    "hx_exit3.py": "import sys\nsys.exit(3)\n",
    "hx_exit_text.py": "import sys\nsys.exit('bye\\nsecond line')\n",
    "hx_os_exit.py": "import os\nos._exit(0)\n",
    "hx_interrupt.py": "raise KeyboardInterrupt\n",
    "hx_base.py": "class Boom(BaseException):\n    pass\n\n\nraise Boom('a BaseException')\n",
    "hx_memory.py": "raise MemoryError\n",
    "hx_recursion.py": "def f():\n    return f()\n\n\nf()\n",
    "hx_dependency.py": "import no_such_dependency_xyz\n",
    "hx_factories.py": """import sys
import torch

NUMBER = 3


def good(num_classes, img_size):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))


def gives_int(num_classes, img_size):
    return 3


def gives_none(num_classes, img_size):
    return None


def gives_class(num_classes, img_size):
    return torch.nn.Linear


def no_arguments():
    return torch.nn.Linear(1, 1)


def raises(num_classes, img_size):
    raise ValueError('no such model')


def exits(num_classes, img_size):
    sys.exit(0)


def three_logits(num_classes, img_size):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))


class _Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError('forward failed')


def forward_raises(num_classes, img_size):
    return _Broken()


def no_parameters(num_classes, img_size):
    return torch.nn.Identity()
""",
    "hx_optim.py": """import sys
import torch

NOT_AN_OPTIMIZER = 3


class Good(torch.optim.SGD):
    def __init__(self, params, lr=0.1, weight_decay=0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay)


class NoLr(torch.optim.SGD):
    def __init__(self, params, lr, weight_decay=0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay)


class InitRaises(torch.optim.SGD):
    def __init__(self, params, lr=0.1, weight_decay=0.0):
        raise ValueError('refuses to start')


class InitExits(torch.optim.SGD):
    def __init__(self, params, lr=0.1, weight_decay=0.0):
        sys.exit(0)


class NotAnOptimizer:
    def __init__(self, params, lr=0.1, weight_decay=0.0):
        pass


def make(params, lr=0.1, weight_decay=0.0):
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
""",
}
IMPORT_FAILURES = ["hx_raises", "hx_syntax", "hx_exit0", "hx_exit3", "hx_exit_text", "hx_os_exit", "hx_interrupt",
                   "hx_base", "hx_memory", "hx_recursion", "hx_dependency", "no_such_module_xyz"]
BACKBONE_TARGETS = ["hx_factories:missing", "hx_factories:NUMBER", "hx_factories:gives_int", "hx_factories:gives_none",
                    "hx_factories:gives_class", "hx_factories:no_arguments", "hx_factories:raises",
                    "hx_factories:exits", "hx_factories:three_logits", "hx_factories:forward_raises",
                    "hx_factories:no_parameters", "hx_factories:", ":net", "hx_factories:good:x",
                    "hx_factories:good.x", "os:path", "builtins:print", "builtins:dict", "torch.nn:Linear",
                    ".hx_factories:good"]
OPTIMIZER_TARGETS = ["hx_optim:Missing", "hx_optim:NOT_AN_OPTIMIZER", "hx_optim:NoLr", "hx_optim:InitRaises",
                     "hx_optim:InitExits", "hx_optim:NotAnOptimizer", "hx_optim:make", "torch.optim:Optimizer",
                     "builtins:dict", "hx_optim:"]


def plugin_cases(ctx: Context) -> list[Case]:
    cases = []
    for module in IMPORT_FAILURES:
        for kind, object_ in (("backbones", "net"), ("optimizers", "Opt")):
            target = f"{module}:{object_}"
            cases.append(spec_case(f"{kind[:-1]} {target}", with_value(TINY_SPEC, kind, [target]),
                                   cls="plugins", text=target))
    for target in BACKBONE_TARGETS:
        cases.append(spec_case(f"backbone {target}", with_value(TINY_SPEC, "backbones", [target]), cls="plugins",
                               text="backbones"))
    for target in OPTIMIZER_TARGETS:
        cases.append(spec_case(f"optimizer {target}", with_value(TINY_SPEC, "optimizers", [target]), cls="plugins",
                               text="optimizers"))
    cases.append(spec_case("backbone hx_factories:good", with_value(TINY_SPEC, "backbones", ["hx_factories:good"]),
                           cls="plugins", expect="accepted"))
    cases.append(spec_case("optimizer hx_optim:Good", with_value(TINY_SPEC, "optimizers", ["hx_optim:Good"]),
                           cls="plugins", expect="accepted"))
    return cases


CHECK_TARGETS = [("resnet5", "did you mean 'resnet50'"), ("adamx", "did you mean 'adam"), ("", "TARGET"),
                 ("no_such_module_xyz:Net", "no_such_module_xyz"), ("hx_raises:net", "hx_raises"),
                 ("hx_exit0:net", "hx_exit0"), ("hx_os_exit:net", "hx_os_exit"), ("hx_interrupt:Opt", "hx_interrupt"),
                 ("hx_factories:gives_int", "gives_int"), ("hx_optim:NOT_AN_OPTIMIZER", "NOT_AN_OPTIMIZER"),
                 ("hx_optim:InitRaises", "InitRaises")]
CHECK_OPTIONS: list[tuple[list[str], str]] = [
    (["sgd", "--backbone"], "backbone"), (["resnet50", "--optimizer"], "optimizer"),
    (["resnet50", "--backbone", "--optimizer"], "--backbone"), (["resnet50", "--optimizers", "adamx"], "adamx"),
    (["resnet50", "--optimizers", ",,,"], "--optimizers"), (["resnet50", "--optimizers", "sgd,sgd"], "sgd"),
    (["resnet50", "--optimizers", ""], "--optimizers"), (["sgd", "--backbones", "resnet5"], "resnet5"),
    (["sgd", "--backbones", ",,"], "--backbones"), (["sgd", "--backbones", "resnet50,resnet50"], "resnet50"),
    (["sgd", "--backbones", ""], "--backbones"), (["resnet50", "--epochs", "0"], "--epochs"),
    (["resnet50", "--epochs", "-1"], "--epochs"), (["resnet50", "--epochs", "abc"], "--epochs"),
    (["resnet50", "--epochs", ""], "--epochs"), (["resnet50", "--epochs", str(10**12)], "epochs"),
    (["resnet50", "--preset", "nope"], "--preset"), (["resnet50", "--preset", ""], "--preset"),
    (["resnet50", "--preset", "paper_imagenet"], "--preset"), (["resnet50", "--workers", "0"], "--workers"),
    (["resnet50", "--budget-hours", "-1"], "--budget-hours"), (["resnet50", "--budget-hours", "abc"],
                                                                "--budget-hours"),
    (["resnet50", "--out", "spec.yaml"], "--out"), (["resnet50", "--store", "nosuchdb://x/y"], "nosuchdb"),
]


def check_cases(ctx: Context) -> list[Case]:
    cases = [make_case(f"check {target or 'empty'}", "check", ["check", target, "--plan-only", "--store", "NEWSTORE",
                                                                "--out", "out"], text=text)
             for target, text in CHECK_TARGETS]
    for args, text in CHECK_OPTIONS:
        where = [] if {"--out", "--store"} & set(args) else ["--store", "NEWSTORE", "--out", "out"]
        cases.append(make_case("check " + " ".join(args), "check", ["check", *args, "--plan-only", *where],
                               text=text, files={"spec.yaml": "x"}, absent=("bocb-check",)))
    cases.append(make_case("check alexnet, a small panel", "check",
                           ["check", "alexnet", "--optimizers", "sgd,adamw", "--epochs", "1",
                            "--plan-only", "--store", "NEWSTORE", "--out", "out"], expect="accepted"))
    return cases


# -- files from others: datasets -------------------------------------------------------------------------

def cifar_pickle(data_shape: tuple[int, int], label_key: str = "labels") -> bytes:
    import numpy as np

    return pickle.dumps({b"data": np.zeros(data_shape, dtype=np.uint8), label_key.encode(): [0] * data_shape[0]})


CIFAR10_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
FASHION_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"]


def data_cases(ctx: Context) -> list[Case]:
    """Real runs (not --plan-only, which needs no data files): a bad path must be refused before anything is
    planned; a crafted file inside a good-looking layout is read only when trials start."""
    evil = pickle.dumps(Payload())
    layouts: list[tuple[str, dict[str, Any], dict[str, Content], str]] = [
        ("cifar10 path missing", {"name": "cifar10", "path": "nowhere"}, {}, "dataset.path"),
        ("cifar10 path an empty folder", {"name": "cifar10", "path": "data"}, {"data/.keep": ""}, "dataset.path"),
        ("cifar10 path a text file", {"name": "cifar10", "path": "data.txt"}, {"data.txt": "hello"}, "dataset.path"),
        ("cifar10 archive empty", {"name": "cifar10", "path": "cifar-10-python.tar.gz"},
         {"cifar-10-python.tar.gz": b""}, "cifar-10-python.tar.gz"),
        ("cifar10 archive random bytes", {"name": "cifar10", "path": "cifar-10-python.tar.gz"},
         {"cifar-10-python.tar.gz": random_bytes(1 << 14)}, "cifar-10-python.tar.gz"),
        ("cifar10 folder with only batches.meta", {"name": "cifar10", "path": "c"},
         {"c/batches.meta": cifar_pickle((1, 3072))}, "data_batch"),
        ("cifar10 pickles that run code", {"name": "cifar10", "path": "c"}, {f"c/{n}": evil for n in CIFAR10_FILES},
         "c/"),
        ("cifar10 pickles of the wrong shape", {"name": "cifar10", "path": "c"},
         {**{f"c/{n}": cifar_pickle((4, 5)) for n in CIFAR10_FILES},
          "c/batches.meta": pickle.dumps({b"label_names": [b"x"] * 10})}, "3072"),
        ("cifar100 folder of empty files", {"name": "cifar100", "path": "c"},
         {f"c/{n}": b"" for n in ("train", "test", "meta")}, "c/"),
        ("fashion_mnist path missing", {"name": "fashion_mnist", "path": "nowhere"}, {}, "dataset.path"),
        ("fashion_mnist path an empty folder", {"name": "fashion_mnist", "path": "f"}, {"f/.keep": ""}, "dataset.path"),
        ("fashion_mnist empty IDX files", {"name": "fashion_mnist", "path": "f"},
         {f"f/{n}": b"" for n in FASHION_FILES}, "idx"),
        ("fashion_mnist IDX files with a bad magic", {"name": "fashion_mnist", "path": "f"},
         {f"f/{n}": random_bytes(64) for n in FASHION_FILES}, "magic"),
        ("fashion_mnist truncated gzip", {"name": "fashion_mnist", "path": "f"},
         {f"f/{n}.gz": b"\x1f\x8b\x08\x00" + random_bytes(20) for n in FASHION_FILES}, "gzip"),
        ("imagefolder without a path", {"name": "imagefolder"}, {}, "dataset.path"),
        ("imagefolder path missing", {"name": "imagefolder", "path": "nowhere"}, {}, "dataset.path"),
        ("imagefolder path a file", {"name": "imagefolder", "path": "img"}, {"img": "x"}, "dataset.path"),
        ("imagefolder without val/", {"name": "imagefolder", "path": "img"}, {"img/train/a/x.png": b""},
         "dataset.path"),
        ("imagefolder with no classes", {"name": "imagefolder", "path": "img"},
         {"img/train/.keep": "", "img/val/.keep": ""}, "img"),
        ("imagefolder images that are text", {"name": "imagefolder", "path": "img"},
         {f"img/{split}/{c}/{i}.png": "not a png" for split in ("train", "val") for c in "ab" for i in range(2)},
         "img"),
    ]
    cases = []
    for name, dataset, files, text in layouts:
        spec = with_value(TINY_SPEC, "dataset", {**dataset, "image_size": 16})
        cases.append(make_case(name, "files", ["run", "spec.yaml", "--store", "STORE", "--out", "out", "--workers", "1",
                                               "--no-report"], text=text, absent=("PWNED",),
                               files={"spec.yaml": spec_text(spec), **files}))
    return cases


# -- stores ----------------------------------------------------------------------------------------------

def store_kinds(ctx: Context) -> dict[str, tuple[Content | None, str | tuple[str, ...]]]:
    """A store file as it may be found, and what its error must contain (None: no file there at all)."""
    db = ctx.finished / "bocb.db"
    return {
        "missing": (None, "no such store"), "a folder": ("DIR/", "bocb.db"),
        "foreign": (foreign_db, ("another program", "no bocb store")),
        "damaged": (damaged_db(db), "damaged"), "zero bytes": (b"", "holds no bocb store"),
        "text": ("not a database\n" * 50, "not a database"), "random bytes": (random_bytes(8192), "not a database"),
        "schema 1": (copy_of(ROOT / "tests" / "data" / "store_schema1.sqlite"), "bocb upgrade"),
        "config_json not JSON": (edited_db(db, "UPDATE trials SET config_json = '{{not json' WHERE key = '{key}'"),
                                 "config_json"),
        "provenance_json not JSON": (edited_db(db, "UPDATE trials SET provenance_json = 'oops' WHERE key = '{key}'"),
                                     "provenance_json"),
        "lr that is text": (edited_db(db, "UPDATE trials SET lr = 'fast' WHERE key = '{key}'"), "'lr'"),
        "spec_json not JSON": (edited_db(db, "UPDATE benchmarks SET spec_json = 'nope'"), "spec_json"),
    }


READERS: dict[str, list[str]] = {"results": ["results", "STORE"], "status": ["status", "STORE"],
                                 "report": ["report", "STORE", "-o", "report"], "models": ["models", "STORE"],
                                 "export": ["export", "STORE", "-o", "b.zip"]}
WRITERS: dict[str, list[str]] = {"upgrade": ["upgrade", "STORE"], "worker": ["worker", "--store", "STORE"],
                                 "run": ["run", "SPEC", "--plan-only", "--store", "STORE", "--out", "out"],
                                 "import": ["import", "BUNDLE", "--store", "STORE"]}
POSTGRES = "postgresql+psycopg://bocb:bocb@127.0.0.1:9/nothing"


def store_cases(ctx: Context) -> list[Case]:
    cases = []
    kinds = store_kinds(ctx)
    for kind, (content, text) in kinds.items():
        for command, argv in READERS.items():
            # results and status never read a benchmark's spec: a broken one is not theirs to refuse
            expect: Expect = "accepted" if kind == "spec_json not JSON" and command in ("results", "status") \
                else "refused"
            cases.append(on_store(f"{command} of a {kind} store", argv, content, text, ("b.zip", "report"), expect))
    # the commands that write refuse what is no store of theirs (a missing file is a new store for them)
    for kind in ("a folder", "foreign", "damaged", "text", "random bytes"):
        content, text = kinds[kind]
        for command, argv in WRITERS.items():
            cases.append(on_store(f"{command} of a {kind} store", argv, content, text, ()))
    for command in ("upgrade", "worker"):
        cases.append(on_store(f"{command} of a missing store", WRITERS[command], None, "no such store", ()))
    cases.append(on_store("upgrade of a schema-1 store", WRITERS["upgrade"], kinds["schema 1"][0], None, (),
                          expect="accepted"))
    for command, argv in {**READERS, **WRITERS}.items():
        for url, text in ((POSTGRES, "127.0.0.1"), ("nosuchdb://host/db", "nosuchdb")):
            cases.append(make_case(f"{command} of {url.split(':')[0]}", "stores",
                                   [url if a == "STORE" else a for a in argv], text=text,
                                   absent=("b.zip", "report", "out/bocb.db")))
    cases.append(make_case("results of an empty URL", "stores", ["results", ""], text="store"))
    for command, argv in READERS.items():
        cases.append(make_case(f"{command} of the finished store", "stores", argv, expect="accepted"))
    return cases


def on_store(name: str, argv: list[str], content: Content | None, text: str | tuple[str, ...] | None,
             absent: tuple[str, ...],
             expect: Expect = "refused") -> Case:
    case = make_case(name, "stores", [a.replace("STORE", "store/bocb.db") for a in argv], expect=expect, text=text,
                     absent=absent)
    case.files = {**{k: v for k, v in case.files.items() if k != "store/bocb.db"}, "store/.keep": ""}
    if content is not None:
        case.files["store/bocb.db"] = content
    case.store = "store/bocb.db"
    return case


# -- checkpoints and weights, bundles --------------------------------------------------------------------

def weights_cases(ctx: Context) -> list[Case]:
    import torch

    kept = ctx.kept[0]
    key = kept.stem
    files: list[tuple[str, str, Content, str]] = [
        ("a missing file", "missing.pt", None, "missing.pt"), ("a folder", "w.pt", "DIR/", "w.pt"),
        ("a text file", "w.pt", "not weights\n", "w.pt"), ("random bytes", "w.pt", random_bytes(4096), "w.pt"),
        ("an empty file", "w.pt", b"", "w.pt"),
        ("a torch file that runs code", "w.pt", torch_file({"model": {"w": Payload()}}), "w.pt"),
        ("a plain pickle that runs code", "w.pth", pickle.dumps({"w": Payload()}), "w.pth"),
        ("a torch file of one tensor", "w.pt", torch_file(torch.zeros(3, 3)), "state dict"),
        ("a torch file of strings", "w.pt", torch_file({"w": "text"}), "state dict"),
        ("a torch file cut in half", "w.pt", truncated_torch(), "w.pt"),
        ("safetensors text", "w.safetensors", "not safetensors", "w.safetensors"),
        ("safetensors random bytes", "w.safetensors", random_bytes(4096), "w.safetensors"),
        ("safetensors empty", "w.safetensors", b"", "w.safetensors"),
        ("safetensors header of 2^62 bytes", "w.safetensors", (1 << 62).to_bytes(8, "little") + b"{}",
         "w.safetensors"),
        ("safetensors header not JSON", "w.safetensors", (8).to_bytes(8, "little") + b"not json", "w.safetensors"),
        ("a kept file cut in half", "w.safetensors", truncated(kept), "w.safetensors"),
        ("a .txt suffix", "w.txt", "x", "suffix"),
    ]
    cases = []
    for name, path, content, text in files:
        cases.append(make_case(f"weights: {name}", "weights", ["weights", path, "--no-plots"], text=text,
                               files={} if content is None else {path: content}, absent=("PWNED", "bocb-weights")))
    for name, argv, text in [
        ("a trial key without --store", ["weights", key, "--no-plots"], "--store"),
        ("an unknown trial key", ["weights", "0" * 20, "--store", "STORE", "--no-plots"], "0" * 20),
        ("a trial key in a missing store", ["weights", key, "--store", "NEWSTORE", "--no-plots"], "store"),
        *((f"--topk {v}", ["weights", "KEPT", "--topk", v, "--no-plots"], "topk")
          for v in ("0", "-1", "abc", "", "2.5", "nan", "inf"))]:  # "topk" names --topk well enough
        cases.append(make_case(f"weights: {name}", "weights", argv, text=text))
    cases.append(make_case("weights: a kept file", "weights", ["weights", "KEPT", "--no-plots"], expect="accepted"))
    cases.append(make_case("weights: a stored trial", "weights", ["weights", key, "--store", "STORE", "--no-plots"],
                           expect="accepted"))
    # a kept file replaced behind the store's back: listed or exported as if it were the trial's weights?
    other = ctx.kept[1]
    replaced: list[tuple[str, str, Content | None]] = [
        ("text", ".safetensors", "not weights"), ("random bytes", ".safetensors", random_bytes(4096)),
        ("another trial's weights", ".safetensors", copy_of(other)), ("deleted", ".safetensors", None),
        ("its description deleted", ".json", None), ("its description not JSON", ".json", "{nope"),
        ("its description of another format", ".json", '{"format": "other"}'),
    ]
    for what, suffix, content in replaced:
        target = f"run/artifacts/weights/{key}{suffix}"
        for command, argv in (("models", ["models", "RUN"]), ("export --weights", ["export", "RUN", "-o", "b.zip",
                                                                                   "--weights"])):
            if command == "models" and what == "deleted":
                continue  # a list of the kept files that are there may leave out one that is not
            case = make_case(f"{command}: a kept file's {what}" if suffix == ".json" else
                             f"{command}: a kept file replaced by {what}", "weights", argv, text=key[:10],
                             absent=("b.zip",))
            case.files[target] = remove if content is None else overwrite(content)
            cases.append(case)
    return cases


def truncated_torch() -> Callable[[Path], None]:
    def make(target: Path) -> None:
        torch_file({"w": __import__("torch").zeros(64, 64)})(target)
        target.write_bytes(target.read_bytes()[:1000])
    return make


def remove(target: Path) -> None:
    target.unlink()


def overwrite(content: Content) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        target.unlink()
        make_file(target, content)
    return make


def bundle_cases(ctx: Context) -> list[Case]:
    bundle = ctx.bundle

    def tamper(name: str, data: bytes) -> bytes:
        return data.replace(b"0", b"1", 1) if name.startswith("trials") else data

    kinds: list[tuple[str, Content | None, str]] = [
        ("a missing file", None, "b.zip"), ("a folder", "DIR/", "b.zip"), ("a text file", "not a zip\n", "b.zip"),
        ("zero bytes", b"", "b.zip"), ("random bytes", random_bytes(4096), "b.zip"),
        ("an empty zip", zip_of({}), "b.zip"), ("a zip without manifest", zip_of({"hello.txt": b"hi"}), "b.zip"),
        ("a truncated bundle", truncated(bundle), "b.zip"),
        ("a truncated bundle (95 %)", truncated(bundle, 0.95), "b.zip"),
        ("a bundle with a member altered", rezipped(bundle, tamper), "b.zip"),
        ("a bundle without its manifest", rezipped(bundle, lambda n, d: None if n == "manifest.json" else d), "b.zip"),
        ("a manifest that is not JSON", rezipped(bundle, lambda n, d: b"{nope" if n == "manifest.json" else d),
         "manifest"),
        ("a manifest of version 99", rezipped(bundle, lambda n, d: d.replace(b'"version": 1', b'"version": 99')
                                              if n == "manifest.json" else d), "b.zip"),
        ("a manifest bomb", zip_of({"manifest.json": b" " * (8 << 20)}), "manifest"),
        ("a member named ../evil", zip_with_traversal(bundle), "b.zip"),
    ]
    cases = []
    for name, content, text in kinds:
        for target in ("NEWSTORE", "STORE"):
            case = make_case(f"import {name} into a {'new' if target == 'NEWSTORE' else 'finished'} store", "bundles",
                             ["import", "b.zip", "--store", target], text=text, absent=("evil", "store/evil"))
            if content is not None:
                case.files["b.zip"] = content
            cases.append(case)
    cases.append(make_case("import the bundle into a new store", "bundles", ["import", "BUNDLE", "--store", "NEWSTORE"],
                           expect="accepted"))
    cases.append(make_case("import the bundle into its own store", "bundles", ["import", "BUNDLE", "--store", "STORE"],
                           expect="accepted"))
    for name, argv, text in [
        ("export to an existing file", ["export", "STORE", "-o", "BUNDLE"], "exists"),
        ("export to a folder", ["export", "STORE", "-o", "out"], "out"),
        ("export of an unknown benchmark", ["export", "STORE", "-o", "x.zip", "--benchmark", "zzz"], "--benchmark"),
        ("export of an empty benchmark id", ["export", "STORE", "-o", "x.zip", "--benchmark", ""], "--benchmark"),
        ("export --weights from a missing artifact root", ["export", "STORE", "-o", "x.zip", "--weights",
                                                           "--artifact-root", "nowhere"], "--artifact-root")]:
        case = make_case(name, "bundles", argv, text=text, absent=("x.zip",))
        case.files.setdefault("out/.keep", "")
        cases.append(case)
    return cases


def zip_with_traversal(source: Path) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        rezipped(source, lambda n, d: d)(target)
        with zipfile.ZipFile(target, "a") as archive:
            archive.writestr("../evil", b"escaped")
    return make


# -- flags -----------------------------------------------------------------------------------------------

FLAGS: list[tuple[list[str], str | None]] = [
    (["frobnicate"], "frobnicate"), (["--frobnicate"], "--frobnicate"), (["results"], "store"),
    (["report", "STORE"], "--out"), (["export", "STORE"], "-o"), (["import", "BUNDLE"], "--store"),
    (["worker"], "--store"), (["weights"], "CHECKPOINT"), (["check"], "target"), (["upgrade"], "store"),
    (["upgrade", "STORE", "extra"], "extra"), (["list", "nothing"], "nothing"),
    (["results", "STORE", "--frobnicate"], "--frobnicate"),
    *((["run", "SPEC", "--plan-only", "--workers", v], "--workers") for v in ("0", "-1", "abc", "")),
    (["run", "SPEC", "--plan-only", "--executor", "slurm"], "executor"),
    (["run", "SPEC", "--plan-only", "--executor", ""], "executor"),
    *((["run", "SPEC", "--plan-only", "--extend-edges", v], "extend") for v in ("-1", "abc", "1000")),
    *((["run", "SPEC", "--plan-only", "--budget-hours", v], "--budget-hours") for v in ("-1", "abc", "nan")),
    (["run", "--preset", "nope", "--plan-only"], "--preset"), (["run", "--preset", "", "--plan-only"], "--preset"),
    (["run", "SPEC", "--preset", "quick", "--plan-only"], "preset"),
    (["run", "SPEC", "--plan-only", "--out", "SPEC"], "--out"),
    (["run", "SPEC", "--plan-only", "--store", ""], "store"),
    (["run", "SPEC", "--executor", "ray", "--address", "127.0.0.1:9"], "--address"),
    (["run", "SPEC", "--workers", "1000"], "workers"),
    *((["results", "STORE", "--format", v], "--format") for v in ("xml", "")),
    (["results", "STORE", "--value", "nope"], "value"), (["results", "STORE", "--benchmark", ""], "--benchmark"),
    (["results", "STORE", "--benchmark", "zzz"], "--benchmark"),
    *((["status", "STORE", "--stale-after", v], "--stale-after") for v in ("0", "-1", "abc", "nan")),
    (["status", "STORE", "--benchmark", ""], "--benchmark"),
    *((["worker", "--store", "STORE", "--threads", v], "--threads") for v in ("0", "abc")),
    (["worker", "--store", "STORE", "--device", "tpu"], "--device"),
    (["worker", "--store", "STORE", "--device", "cuda:99"], "cuda"),
    *((["worker", "--store", "STORE", "--stale-after", v], "--stale-after") for v in ("0", "abc")),
    *((["worker", "--store", "STORE", "--heartbeat", v], "--heartbeat") for v in ("0", "-1")),
    (["worker", "--store", "STORE", "--max-trials", "0"], "--max-trials"),
    (["worker", "--store", "STORE", "--benchmark", "zzz"], "--benchmark"),
    *((["report", "STORE", "-o", "r", "--gamma", v], "--gamma") for v in ("-1", "0", "nan", "abc", "inf")),
    *((["report", "STORE", "-o", "r", "--n-boot", v], "--n-boot") for v in ("0", "-1", "abc")),
    *((["report", "STORE", "-o", "r", "--paper-table", v], "--paper-table") for v in ("7", "0", "abc")),
    (["report", "STORE", "-o", "r", "--benchmark", "zzz"], "--benchmark"), (["report", "STORE", "-o", "SPEC"], "--out"),
    (["report", "missing.csv", "-o", "r"], "missing.csv"), (["report", "SPEC", "-o", "r"], "spec.yaml"),
    (["report", "STORE", "-o", "r", "--compare-paper"], None),
    *((["paper", "--table", v], "--table") for v in ("0", "5", "abc")), (["paper", "--format", "xml"], "--format"),
    (["models", "STORE", "--benchmark", "zzz"], "--benchmark"), (["models", "STORE", "--benchmark", ""], "--benchmark"),
    (["models", "STORE", "--artifact-root", "SPEC"], "--artifact-root"),
    (["status", "STORE", "--benchmark", "zzz"], "--benchmark"),
]
ACCEPTED_FLAGS = [["--help"], ["list", "backbones"], ["list", "optimizers"], ["paper", "--table", "1"],
                  ["run", "--help"], ["results", "STORE", "--format", "json"]]


def flag_cases(ctx: Context) -> list[Case]:
    cases = [make_case(" ".join(argv) or "nothing", "flags", argv, text=text, absent=("r", "out/bocb.db"))
             for argv, text in FLAGS]
    return cases + [make_case(" ".join(argv), "flags", argv, expect="accepted") for argv in ACCEPTED_FLAGS]


def signal_cases(ctx: Context) -> list[Case]:
    """Ctrl-C while trials train (a spec of 200 epochs, so they still do when it comes): a line, exit code
    130, no traceback. (A plan is made in under 3 s here: Ctrl-C then met a finished command.)"""
    long_run = {"spec.yaml": spec_text({**TINY_SPEC, "epochs": 200})}
    return [make_case(f"SIGINT after {after:g} s of a run", "signals",
                      ["run", "SPEC", "--store", "NEWSTORE", "--out", "out", "--workers", "1", "--no-report"],
                      expect="interrupted", files=long_run, signal_after=after) for after in (8.0, 15.0)]


CLASSES: dict[str, Callable[[Context], list[Case]]] = {
    "specs": spec_cases, "plugins": plugin_cases, "check": check_cases, "files": data_cases, "stores": store_cases,
    "weights": weights_cases, "bundles": bundle_cases, "flags": flag_cases, "signals": signal_cases}


# -- building a case from its argv -----------------------------------------------------------------------

_CTX: Context | None = None  # set once the finished store exists: the placeholders below copy from it


def make_case(name: str, cls: str, argv: list[str], *, expect: Expect = "refused",
              text: str | tuple[str, ...] | None = None,
              files: dict[str, Content] | None = None, absent: tuple[str, ...] = (),
              signal_after: float | None = None) -> Case:
    """A case whose argv may name placeholders, replaced by the files they stand for: SPEC (the tiny spec),
    STORE (a copy of the finished store, which must stay as it was), NEWSTORE (a path with no file, which
    must stay so), RUN (the finished store with its artifacts), BUNDLE (its exported bundle), KEPT (a kept
    weights file)."""
    assert _CTX is not None
    files = dict(files or {})
    store = None
    out = []
    for arg in argv:
        if arg == "SPEC":
            files.setdefault("spec.yaml", spec_text(TINY_SPEC))
            arg = "spec.yaml"
        elif arg == "STORE":
            files["store/bocb.db"] = copy_of(_CTX.finished / "bocb.db")
            arg = store = "store/bocb.db"
        elif arg == "NEWSTORE":
            files["store/.keep"] = ""
            arg = store = "store/new.db"
        elif arg == "RUN":
            files["run"] = copy_of(_CTX.finished)
            arg = store = "run/bocb.db"
        elif arg == "BUNDLE":
            files["bundle.zip"] = copy_of(_CTX.bundle)
            arg = "bundle.zip"
        elif arg == "KEPT":
            files["kept.safetensors"] = copy_of(_CTX.kept[0])
            arg = "kept.safetensors"
        out.append(arg)
    return Case(name, cls, out, files, expect, text, store, absent, signal_after)


# -- running ---------------------------------------------------------------------------------------------

def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_case(case: Case, folder: Path, env: dict[str, str]) -> Result:
    folder.mkdir(parents=True)
    # the run/ copy first: a case's files may replace one of its kept files
    for rel, content in sorted(case.files.items(), key=lambda item: item[0] != "run"):
        make_file(folder / rel, content)
    before = snapshot(folder / case.store) if case.store else None
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bocb", *case.argv], cwd=folder, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=limit_memory)
    try:
        if case.signal_after is not None:
            try:
                proc.communicate(timeout=case.signal_after)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        out, err = proc.communicate(timeout=TIMEOUT_S)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    seconds = time.monotonic() - start
    return Result(case, code, seconds, judge(case, code, out or "", err or "", folder, before), err or "")


def judge(case: Case, code: int | None, out: str, err: str, folder: Path,
          before: tuple[str, list[str]] | None) -> list[str]:
    wanted = {"refused": 2, "accepted": 0, "interrupted": 130}[case.expect]
    problems = [f"timed out after {TIMEOUT_S} s" if code is None else f"exit {code}, expected {wanted}"] \
        if code != wanted else []
    if "Traceback" in out + err:
        problems.append("a traceback")
    if case.expect == "refused":
        lines = err.splitlines()
        if len(lines) != 1:
            problems.append(f"{len(lines)} stderr lines, expected 1")
        elif not lines[0].startswith("error: "):
            problems.append("stderr does not start with 'error: '")
        texts = (case.text,) if isinstance(case.text, str) else case.text or ()
        if texts and not any(text in err for text in texts):
            problems.append(f"the error does not contain {' or '.join(map(repr, texts))}")
        if before is not None and case.store is not None:
            after = snapshot(folder / case.store)
            if after[0] != before[0]:
                problems.append("the store changed" if before[0] != "absent" else f"{case.store} was created")
            new = sorted(set(after[1]) - set(before[1]))
            if new:
                problems.append(f"new beside the store: {', '.join(new)}")
    problems += [f"{path} exists afterwards" for path in case.absent if (folder / path).exists()
                 and (case.expect == "refused" or path == "PWNED")]
    return problems


# -- the finished store, made once -----------------------------------------------------------------------

def prepare(workdir: Path, env: dict[str, str]) -> Context:
    """The finished tiny benchmark (TINY_SPEC with 2 lr, as the tests' ``finished_tiny``), its bundle with
    the kept weights, and the plugin modules, under ``workdir`` (reused when there)."""
    finished, bundle, plugins = workdir / "finished", workdir / "finished.zip", workdir / "plugins"
    if not (workdir / ".made").exists():
        shutil.rmtree(finished, ignore_errors=True)
        finished.mkdir(parents=True)
        spec = finished.parent / "finished.yaml"
        spec.write_text(spec_text({**TINY_SPEC, **FINISHED_TINY}))
        print(f"training the finished store once into {finished} ...", file=sys.stderr)
        for argv in (["run", str(spec), "--out", str(finished), "--workers", "2", "--no-report"],
                     ["export", str(finished / "bocb.db"), "-o", str(bundle), "--weights", "--force"]):
            done = subprocess.run([sys.executable, "-m", "bocb", *argv], env=env, capture_output=True, text=True,
                                  timeout=900)
            if done.returncode != 0:
                sys.exit(f"preparing the finished store failed: bocb {shlex.join(argv)}\n{done.stderr}")
        with sqlite3.connect(finished / "bocb.db") as db:  # whole in its main file: a plain copy is a whole store
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        (workdir / ".made").touch()
    plugins.mkdir(exist_ok=True)
    for name, text in PLUGINS.items():
        (plugins / name).write_text(text)
    return Context(finished, bundle, plugins)


# -- the report ------------------------------------------------------------------------------------------

def summary(results: list[Result], classes: Iterable[str]) -> list[str]:
    rows = ["| class | cases | clean | violating |", "|---|---:|---:|---:|"]
    for cls in classes:
        mine = [r for r in results if r.case.cls == cls]
        bad = sum(1 for r in mine if r.problems)
        rows.append(f"| {cls} | {len(mine)} | {len(mine) - bad} | {bad} |")
    bad = sum(1 for r in results if r.problems)
    rows.append(f"\ncases={len(results)} clean={len(results) - bad} violating={bad}")
    return rows


def violations(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        if r.problems:
            head = " / ".join(r.stderr.strip().splitlines()[:2]) or "(nothing on stderr)"
            lines += [f"- [{r.case.cls}] {r.case.name} (expected {r.case.expect}): {'; '.join(r.problems)}",
                      f"    argv: bocb {shlex.join(r.case.argv)}", f"    stderr: {head[:400]}"]
    return lines


def main() -> None:
    global _CTX
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default=",".join(CLASSES), help=f"comma-separated subset of {', '.join(CLASSES)}")
    parser.add_argument("--workdir", type=Path, default=None, help="where the finished store is cached and the cases "
                                                                   "run; default: a temporary folder")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table and violations here")
    args = parser.parse_args()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        parser.error(f"unknown class(es) {', '.join(unknown)}; valid: {', '.join(CLASSES)}")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="bocb-hostile-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(workdir / "plugins")]),
           "PYTHONUNBUFFERED": "1", "BOCB_CACHE": str(workdir / "cache"), "BOCB_DATA": str(workdir / "no-data"),
           "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    _CTX = prepare(workdir, env)
    cases = [case for cls in classes for case in CLASSES[cls](_CTX)]
    cases_dir = workdir / "cases"
    shutil.rmtree(cases_dir, ignore_errors=True)
    print(f"{len(cases)} cases in {cases_dir}", file=sys.stderr)
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda item: run_case(item[1], cases_dir / f"{item[0]:04d}", env), enumerate(cases)))
    wall = time.monotonic() - started
    table, bad = summary(results, classes), violations(results)
    print("\n".join(table))
    print(f"wall time {wall:.0f} s (finished store included when it was made)")
    if bad:
        print("\nviolating cases:\n" + "\n".join(bad))
    if args.markdown:
        args.markdown.write_text("\n".join([*table, f"\nwall time {wall:.0f} s", "", "## Violating cases", "",
                                            *bad]) + "\n")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
