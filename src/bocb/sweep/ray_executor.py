"""The Ray executor: worker loops as Ray tasks with the spec's resources (optional extra `bocb[ray]`).

Each task runs the worker loop every executor runs (bocb.sweep.worker.worker_loop): it claims trials
from the store and plans the next stage itself, so a trial never runs twice even beside `bocb worker`
processes. The driver only starts as many tasks as the cluster can run at once, shows progress, and
cancels them on Ctrl-C.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from bocb.errors import BocbError
from bocb.spec import BenchmarkSpec
from bocb.store import Store
from bocb.sweep.progress import RunProgress
from bocb.sweep.worker import Assignment, already_complete, worker_loop

RAY_CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail in one line, within ``timeout``, when nothing listens at a Ray address ('host:port' or
    'ray://host:port'); ray.init would otherwise retry for minutes. Called before anything is stored."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise BocbError(f"--address: '{address}' is not host:port (or ray://host:port)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BocbError(f"--address: nothing answers at {address} within {timeout:g} s ({exc.strerror or exc}); "
                        "start the cluster there (ray start --head) or leave --address out for a local one") \
            from None


@dataclass(frozen=True)
class RayExecutor:
    """``workers`` worker loops as Ray tasks with the spec's resources (default: as many as the cluster fits),
    on the cluster at ``address`` (default: a local one)."""

    address: str | None = None
    workers: int | None = None

    def check(self) -> None:
        if self.address not in (None, "auto", "local"):
            check_reachable(self.address)

    def run(self, store: Store, assignment: Assignment, console: Console | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise BocbError("executor: ray is not installed; pip install 'bocb[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        if already_complete(store, assignment):
            return
        spec = assignment.spec
        # max_retries=0, as when each task was one trial: a lost task (its node or process gone) fails the run,
        # and its trial is claimed again, by a rerun or another worker, once its heartbeat is stale
        task = ray.remote(worker_loop).options(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, max_retries=0)
        started = [task.remote(assignment) for _ in range(self.workers or _fits(ray, spec))]
        running = started
        try:
            with RunProgress(store, assignment.benchmark_id, console or Console(stderr=True)) as progress:
                while running:
                    progress.update(len(started))
                    ready, running = ray.wait(running, num_returns=1, timeout=2.0)  # at once when a task ends
                    ray.get(ready)  # a task's error (bocb's own, say a newer store schema) is the run's
                progress.update(len(started))
        except BaseException:  # Ctrl-C, or a task's error: stop the other tasks too
            for ref in running:
                ray.cancel(ref)  # raises KeyboardInterrupt in the task, which releases its trial
            if running:
                ray.wait(running, num_returns=len(running), timeout=30)
            raise


def _fits(ray: Any, spec: BenchmarkSpec) -> int:
    """How many trials with the spec's resources the cluster can run at once (at least one). Ray would queue
    more tasks than that, but each task is a loop that runs trials until none is left: a queued one would only
    start once the others end. So a cluster that grows after the run starts (an autoscaler) gains no task;
    ask for more with `--workers`."""
    have = ray.cluster_resources()
    fits = [have.get("CPU", 0.0) / spec.num_cpus] + ([have.get("GPU", 0.0) / spec.num_gpus] if spec.num_gpus else [])
    return max(1, int(min(fits)))
