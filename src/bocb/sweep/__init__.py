"""Planning and executing a benchmark: spec -> planner -> trials -> store."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rich.console import Console

from bocb.errors import SpecError
from bocb.spec import BenchmarkSpec
from bocb.store import Store, check_url, normalise_url
from bocb.sweep.planner import next_stage
from bocb.sweep.worker import Assignment, WorkerOptions

__all__ = ["BenchmarkRun", "Executor", "artifact_root_for", "executor_for", "plan_benchmark", "run_benchmark",
           "store_url_for", "stored_artifact_root", "train_planned", "verify_data"]


@dataclass(frozen=True)
class BenchmarkRun:
    benchmark_id: str
    store: Store
    out_dir: Path
    artifact_root: Path
    retried: int = 0  # crashed trials of earlier runs made pending again
    transfer_id: str | None = None  # the transfer part's benchmark (a spec with a ``transfer`` section)

    @property
    def store_url(self) -> str:
        return self.store.url


class Executor(Protocol):
    """What every executor is to `bocb run`: it checks its own arguments before anything is stored, then
    runs a planned benchmark to completion. It only starts and stops workers: each runs
    `bocb.sweep.worker.worker_loop` with the ``assignment`` (one benchmark, the run's spec), so they share
    the claims, leases, checkpoints and results. ``store`` is the driver's own, opened checked: for planning
    before any worker starts and for progress."""

    def check(self) -> None: ...

    def run(self, store: Store, assignment: Assignment, console: Console | None) -> None: ...


def executor_for(spec: BenchmarkSpec, workers: int | None = None, address: str | None = None) -> Executor:
    """The spec's executor: local worker processes (default one per core) or Ray tasks (at ``address``;
    default as many as the cluster fits)."""
    if spec.executor == "ray":
        from bocb.sweep.ray_executor import RayExecutor

        return RayExecutor(address, workers or spec.workers)
    from bocb.sweep.local import LocalExecutor

    return LocalExecutor(workers or spec.workers or os.cpu_count() or 1)


def artifact_root_for(spec: BenchmarkSpec, store_url: str, out_dir: Path | None = None) -> Path:
    """The spec's artifact root; else beside an SQLite store; else OUT/artifacts or ./bocb-artifacts. Planning
    decides with it and stores what it chose; later readers take that (stored_artifact_root)."""
    if spec.artifact_root:
        return Path(spec.artifact_root)
    beside = _beside_sqlite_store(store_url)
    if beside is not None:
        return beside
    return (out_dir or Path(".")) / ("artifacts" if out_dir else "bocb-artifacts")


def stored_artifact_root(store: Store, benchmark_id: str) -> Path:
    """The artifact root of a stored benchmark, as its workers use it (checkpoints, kept weights): the one
    planning stored with it (a store planned before bocb stored it: the same rule, without the run's OUT)."""
    from bocb.sweep.worker import load_benchmark

    return artifact_root_for(load_benchmark(store, benchmark_id), store.url)


def verify_data(spec: BenchmarkSpec) -> None:
    """The dataset files of the benchmark and of its transfer part, opened once as their trials will read
    them (bocb.data.verify_files): a bad file is one DataError line before anything is planned or stored."""
    from bocb.data import verify_files

    verify_files(spec.dataset)
    if spec.transfer is not None:
        verify_files(spec.transfer.dataset)


def store_url_for(spec: BenchmarkSpec, out_dir: str | Path, store: str | None = None) -> str:
    """The URL of the store a run of ``spec`` plans into: ``--store``, else the spec's, else OUT/bocb.db;
    checked (a known dialect with its driver) before anything is created."""
    if store is not None and not store.strip():  # '' would otherwise mean the default store, silently
        raise SpecError("--store", "empty: give a file path or a database URL, or leave it out for the default")
    url = normalise_url(store or spec.store or Path(out_dir) / "bocb.db")
    check_url(url, "--store" if store else "store")
    return url


def plan_benchmark(spec: BenchmarkSpec, out_dir: str | Path = "bocb-results", store: str | None = None) -> BenchmarkRun:
    """Verify the benchmark's dataset files (:func:`verify_data`: every command that plans comes here), then
    register the benchmark in its store, make its crashed trials pending again (a crash is no result:
    rerunning the spec retries it) and plan its first stage (idempotent)."""
    out = Path(out_dir)
    url = store_url_for(spec, out, store)
    verify_data(spec)  # before anything is created: a bad file or URL creates no folder and no store
    out.mkdir(parents=True, exist_ok=True)
    benchmark_id = spec.benchmark_id()
    db = Store(url)
    retried = db.retry_crashed(benchmark_id)
    # computed first: a failure here stores nothing
    stage = next_stage(spec, db.trials_frame(benchmark_id), lambda: db.epochs_frame(benchmark_id))
    # the artifact root is decided here, once, and stored with the benchmark (it does not change its id):
    # `bocb worker`, `models`, `export` and `check` then find the weights where this run wrote them, whatever
    # their working directory, a PostgreSQL store included
    root = artifact_root_for(spec, url, out).resolve()
    db.register_benchmark(benchmark_id, spec.name, _with_root(spec, root, url), stage.planned if stage else ())
    transfer_id = None
    if spec.transfer is not None:  # its own benchmark: the pre-training one's results stay as they are
        part = spec.transfer_part()
        transfer_id = part.benchmark_id()
        retried += db.retry_crashed(transfer_id)
        db.register_benchmark(transfer_id, f"{spec.name} transfer", _with_root(part, root, url))
    return BenchmarkRun(benchmark_id, db, out, root, retried, transfer_id)


def _with_root(spec: BenchmarkSpec, root: Path, url: str) -> dict:
    """The spec as stored: with the artifact root this run chose, unless it is the one beside an SQLite store
    (left unset, so a run folder copied or moved elsewhere still finds its weights beside its store)."""
    return spec.model_copy(update={"artifact_root": stored_root(root, url)}).model_dump(mode="json")


def stored_root(root: Path, url: str) -> str | None:
    """What a benchmark's stored spec says of its artifact root ``root``: nothing when it is the default beside
    an SQLite store (the store's folder decides, wherever it goes), else the absolute path."""
    beside = _beside_sqlite_store(url)
    return None if beside is not None and root.resolve() == beside.resolve() else str(root.resolve())


def _beside_sqlite_store(url: str) -> Path | None:
    """The artifacts/ folder beside an SQLite store's file (None for another database)."""
    return Path(url.removeprefix("sqlite:///")).parent / "artifacts" if url.startswith("sqlite:///") else None


def run_benchmark(spec: BenchmarkSpec, out_dir: str | Path = "bocb-results", store: str | None = None,
                  workers: int | None = None, address: str | None = None, console: Console | None = None,
                  options: WorkerOptions | None = None,
                  on_planned: Callable[[BenchmarkRun], None] | None = None) -> BenchmarkRun:
    """Plan and run a benchmark to completion with the spec's executor; finished trials are skipped and
    crashed ones retried. ``on_planned`` sees the planned run before any trial starts."""
    executor = executor_for(spec, workers, address)
    executor.check()  # before anything is stored
    run = plan_benchmark(spec, out_dir, store)
    if on_planned:
        on_planned(run)
    options = options or WorkerOptions(artifact_root=run.artifact_root)
    train_planned(executor, run.store, run.benchmark_id, spec, options, console)
    if run.transfer_id is not None:  # fine-tunes the kept models of the benchmark just completed
        train_planned(executor, run.store, run.transfer_id, spec.transfer_part(), options, console)
    return run


def train_planned(executor: Executor, store: Store, benchmark_id: str, spec: BenchmarkSpec,
                  options: WorkerOptions | None = None, console: Console | None = None) -> None:
    """Train a planned benchmark to completion with ``executor``: the one run loop of `bocb run` (each of its
    parts) and `bocb check` (each of its). Options default to the benchmark's stored artifact root."""
    options = options or WorkerOptions(artifact_root=stored_artifact_root(store, benchmark_id))
    executor.run(store, Assignment(store.url, benchmark_id, spec, options), console)
