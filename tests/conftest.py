"""Shared fixtures: tiny real benchmarks on scikit-learn's digits, and the CLI as a user runs it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

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
    from bocb.cli import main

    argv, sys.argv = sys.argv, ["bocb", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


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


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on SQLite, and on PostgreSQL when a test server is available."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bocb.db'}"
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL test server: set BOCB_TEST_POSTGRES_URL (bash .ci/run starts one)")
    return _fresh_postgres_db(f"bocb_{request.node.name.split('[')[0][-40:]}".lower())

