"""Planning and executing a benchmark: spec -> planner -> trials -> store."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bocb.spec import BenchmarkSpec
from bocb.store import Store, normalise_url
from bocb.sweep.planner import next_stage
from bocb.sweep.worker import WorkerOptions

__all__ = ["BenchmarkRun", "artifact_root_for", "plan_benchmark", "run_benchmark"]


@dataclass(frozen=True)
class BenchmarkRun:
    benchmark_id: str
    store_url: str
    out_dir: Path
    artifact_root: Path
    retried: int = 0  # crashed trials of earlier runs made pending again


def artifact_root_for(spec: BenchmarkSpec, store_url: str, out_dir: Path | None = None) -> Path:
    """The spec's artifact root; else beside an SQLite store; else OUT/artifacts or ./bocb-artifacts."""
    if spec.artifact_root:
        return Path(spec.artifact_root)
    if store_url.startswith("sqlite:///"):
        return Path(store_url.removeprefix("sqlite:///")).parent / "artifacts"
    return (out_dir or Path(".")) / ("artifacts" if out_dir else "bocb-artifacts")


def plan_benchmark(spec: BenchmarkSpec, out_dir: str | Path = "bocb-results", store: str | None = None) -> BenchmarkRun:
    """Register the benchmark in its store, make its crashed trials pending again (a crash is no result:
    rerunning the spec retries it) and plan its first stage (idempotent)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    url = normalise_url(store or spec.store or out / "bocb.db")
    benchmark_id = spec.benchmark_id()
    db = Store(url)
    retried = db.retry_crashed(benchmark_id)
    stage = next_stage(spec, db.trials_frame(benchmark_id))  # computed first: a failure here stores nothing
    db.register_benchmark(benchmark_id, spec.name, spec.model_dump(mode="json"), stage.planned if stage else ())
    return BenchmarkRun(benchmark_id, url, out, artifact_root_for(spec, url, out), retried)


def run_benchmark(spec: BenchmarkSpec, out_dir: str | Path = "bocb-results", store: str | None = None,
                  workers: int | None = None, address: str | None = None, console: Console | None = None,
                  options: WorkerOptions | None = None,
                  on_planned: Callable[[BenchmarkRun], None] | None = None) -> BenchmarkRun:
    """Plan and run a benchmark to completion with the spec's executor; finished trials are skipped and
    crashed ones retried. ``on_planned`` sees the planned run before any trial starts."""
    workers = workers or spec.workers or os.cpu_count() or 1
    if spec.executor == "local":
        from bocb.sweep.local import check_workers

        check_workers(workers)  # before anything is stored
    elif address not in (None, "auto", "local"):
        from bocb.sweep.ray_executor import check_reachable

        check_reachable(address)
    run = plan_benchmark(spec, out_dir, store)
    if on_planned:
        on_planned(run)
    options = options or WorkerOptions(artifact_root=run.artifact_root)
    if spec.executor == "ray":
        from bocb.sweep.ray_executor import run_ray

        run_ray(run.store_url, run.benchmark_id, spec, options, address=address, console=console)
    else:
        from bocb.sweep.local import run_local

        run_local(run.store_url, spec, run.benchmark_id, workers, options, console)
    return run
