"""Planning and executing a benchmark: spec -> planner -> trials -> store."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bocb.spec import BenchmarkSpec
from bocb.store import Store, normalise_url
from bocb.sweep.worker import WorkerOptions, advance

__all__ = ["BenchmarkRun", "artifact_root_for", "plan_benchmark", "run_benchmark"]


@dataclass(frozen=True)
class BenchmarkRun:
    benchmark_id: str
    store_url: str
    out_dir: Path
    artifact_root: Path


def artifact_root_for(spec: BenchmarkSpec, store_url: str, out_dir: Path | None = None) -> Path:
    """The spec's artifact root; else beside an SQLite store; else OUT/artifacts or ./bocb-artifacts."""
    if spec.artifact_root:
        return Path(spec.artifact_root)
    if store_url.startswith("sqlite:///"):
        return Path(store_url.removeprefix("sqlite:///")).parent / "artifacts"
    return (out_dir or Path(".")) / ("artifacts" if out_dir else "bocb-artifacts")


def plan_benchmark(spec: BenchmarkSpec, out_dir: str | Path = "bocb-results", store: str | None = None) -> BenchmarkRun:
    """Register the benchmark in its store and plan its first stage (idempotent)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    url = normalise_url(store or spec.store or out / "bocb.db")
    run = BenchmarkRun(spec.benchmark_id(), url, out, artifact_root_for(spec, url, out))
    db = Store(url)
    db.register_benchmark(run.benchmark_id, spec.name, spec.model_dump(mode="json"))
    advance(db, run.benchmark_id, spec)
    return run


def run_benchmark(spec: BenchmarkSpec, out_dir: str | Path = "bocb-results", store: str | None = None,
                  workers: int | None = None, address: str | None = None, console: Console | None = None,
                  options: WorkerOptions | None = None) -> BenchmarkRun:
    """Plan and run a benchmark to completion with the spec's executor; finished trials are skipped."""
    run = plan_benchmark(spec, out_dir, store)
    options = options or WorkerOptions(artifact_root=run.artifact_root)
    if spec.executor == "ray":
        from bocb.sweep.ray_executor import run_ray

        run_ray(run.store_url, run.benchmark_id, spec, options, address=address, console=console)
    else:
        from bocb.sweep.local import run_local

        run_local(run.store_url, spec, run.benchmark_id, workers or spec.workers or os.cpu_count() or 1, options,
                  console)
    return run
