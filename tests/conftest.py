"""Shared fixtures: tiny real benchmarks on scikit-learn's digits, and the CLI as a user runs it (in this
process, or in a fresh one where the process boundary is what a test is about). docs/testing.md says which
fixture trains what, once."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from filelock import FileLock

torch.set_num_threads(1)

TINY_SPEC: dict[str, Any] = {
    "dataset": {"name": "digits", "image_size": 16},
    "backbones": ["resnet50", "deit_s"],
    "optimizers": ["sgd", "adamw"],
    "size": "tiny",
    "recipe": "torch",
    "epochs": 2,
    "batch_size": 64,
    "seeds": [0],
    "search": {"lr_points": 1, "wd_points": 1},
    "checkpoint_every": 1,
}


def write_spec(path: Path, **changes: Any) -> Path:
    spec = {**TINY_SPEC, **changes}
    path.write_text(yaml.safe_dump(spec))
    return path


def bocb_command(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `python -m bocb ARGS` as a user would; returns the finished process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "bocb", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def bocb_main(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the `bocb` entry point in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # what the test printed before is not the command's output
    code = run_main(*args)
    out, err = capsys.readouterr()
    return code, out, err


def run_main(*args: str) -> int:
    """Run the `bocb` entry point in this process with its output left alone; returns the exit code. Its local
    workers fork from this process's fork server, which imported torch once (bocb.sweep.local)."""
    from bocb.cli import main

    argv, sys.argv = sys.argv, ["bocb", *args]
    try:
        main()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder made once per test session by ``make`` and shared by every test (and every pytest-xdist worker)
    that asks for ``name``: the first to ask makes it under a lock, the others wait and reuse it. Tests only
    read it; one that changes a store copies it first (:func:`copy_store`)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    folder = root / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            make(folder)
            for db in folder.glob("*.db"):  # whole in its main file, so a plain copy of it is a whole store
                with sqlite3.connect(db) as conn:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (folder / ".made").touch()
    return folder


def copy_store(folder: Path, to: Path) -> Path:
    """A private copy of a shared run folder (store and artifacts), for a test that writes to it."""
    shutil.copytree(folder, to, ignore=shutil.ignore_patterns(".made"))
    return to


# The finished tiny benchmark several modules read (kept weights, bundles): 2 backbones x 2 optimizers x 2 lr,
# 2 epochs on digits, the default keep_weights (chosen), no report.
FINISHED_TINY = {"search": {"lr_points": 2, "wd_points": 1}}


@pytest.fixture(scope="session")
def finished_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of FINISHED_TINY (bocb.db, artifacts/), trained once per session by `bocb run`."""
    def make(out: Path) -> None:
        code = run_main("run", str(write_spec(out / "spec.yaml", **FINISHED_TINY)), "--out", str(out),
                        "--workers", "2", "--no-report")
        assert code == 0

    return shared_dir(tmp_path_factory, "finished-tiny", make)


def report_files(report: Path) -> dict[str, list[str]]:
    """A report directory's figures (PNG, SVG) and tables (CSV, LaTeX, Markdown) by suffix."""
    return {suffix: sorted(p.name for p in report.glob(f"*.{suffix}")) for suffix in ("png", "svg", "csv", "tex", "md")}


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "spec.yaml")


POSTGRES_URL = os.environ.get("BOCB_TEST_POSTGRES_URL")


def _fresh_postgres_db(name: str) -> str:
    """A new empty database on the test server (.ci/run starts it and sets BOCB_TEST_POSTGRES_URL)."""
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on SQLite, and on PostgreSQL when a test server is available."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bocb.db'}"
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL test server: set BOCB_TEST_POSTGRES_URL (bash .ci/run starts one)")
    return _fresh_postgres_db(f"bocb_{request.node.name.split('[')[0][-40:]}".lower())



# Resources whose tests CI must run, by marker: with CI=true a skipped test fails (a missing PostgreSQL server,
# Chromium or Fashion-MNIST is a broken CI, not fewer tests), and the summary counts what ran of each.
COUNTED = {"postgres": "PostgreSQL", "chromium": "Chromium", "ray": "Ray", "fashion": "Fashion-MNIST"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first (stable otherwise): pytest-xdist hands out work in this order, so the long ones start
    at once on both workers instead of ending the run on one."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"skipped under CI=true, where every test must run: {reason}"
    if report.when == "call" or (report.when == "setup" and not report.passed):
        report.user_properties.append(("resources", [m for m in COUNTED if item.get_closest_marker(m)]))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many PostgreSQL, Chromium, Ray and Fashion-MNIST tests passed (.ci/run prints it)."""
    passed: dict[str, int] = dict.fromkeys(COUNTED, 0)
    for report in terminalreporter.stats.get("passed", []):
        for name, value in report.user_properties:
            if name == "resources" and report.when == "call":
                for resource in value:
                    passed[resource] += 1
    terminalreporter.write_line("tests that passed with a real " + ", ".join(
        f"{label}: {passed[m]}" for m, label in COUNTED.items()))
