"""The Ray executor: each trial a Ray task with the spec's resources (optional extra `bocb[ray]`).

The planner stays here in the driver and works as on the local executor; each
task claims its trial in the store before running it, so a trial never runs
twice even beside `bocb worker` processes, and a task lost with its node is
claimed again once its heartbeat goes stale.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from bocb.errors import BocbError
from bocb.spec import BenchmarkSpec
from bocb.store import Store, new_worker_id
from bocb.sweep.progress import RunProgress
from bocb.sweep.worker import ClaimLost, StageWatch, WorkerOptions, execute


def run_claimed_trial(store: Store, spec: BenchmarkSpec, key: str, options: WorkerOptions) -> str | None:
    """Body of one Ray task: claim ``key`` and run it as the driver's ``spec`` says; None if someone else
    holds it."""
    worker = new_worker_id()
    claimed = store.claim_key(key, worker, options.stale_after_s)
    if claimed is None:
        return None
    try:
        return execute(store, claimed, spec, worker, options)
    except ClaimLost:  # another worker holds the trial now; the driver sees its result when it lands
        return None


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
    """Each trial a Ray task with the spec's resources, on the cluster at ``address`` (default: a local one)."""

    address: str | None = None

    def check(self) -> None:
        if self.address not in (None, "auto", "local"):
            check_reachable(self.address)

    def run(self, store: Store, benchmark_id: str, spec: BenchmarkSpec, options: WorkerOptions,
            console: Console | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise BocbError("executor: ray is not installed; pip install 'bocb[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        task = ray.remote(run_claimed_trial).options(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, max_retries=0)
        inflight: dict[str, Any] = {}
        try:
            with RunProgress(store, benchmark_id, console or Console(stderr=True)) as progress:
                _drive(ray, task, store, StageWatch(store, benchmark_id, spec, options.artifact_root), inflight,
                       options, progress)
        except KeyboardInterrupt:
            for ref in inflight.values():
                ray.cancel(ref)  # raises KeyboardInterrupt in the task, which releases its trial
            ray.wait(list(inflight.values()), num_returns=len(inflight), timeout=30)
            raise


def _drive(ray: Any, task: Any, store: Store, watch: StageWatch, inflight: dict[str, Any], options: WorkerOptions,
           progress: RunProgress) -> None:
    """Plan stages and keep one task in flight per claimable trial until the benchmark is complete."""
    benchmark_id = watch.benchmark_id
    while True:
        status = watch.advance()
        for key in store.claimable_keys(benchmark_id, options.stale_after_s):
            if key not in inflight:
                inflight[key] = task.remote(store, watch.spec, key, options)
        if not inflight:
            if status == "complete":
                break
            time.sleep(options.poll_s)
            continue
        ready, _ = ray.wait(list(inflight.values()), num_returns=1, timeout=options.poll_s * 4)
        for key in [k for k, ref in inflight.items() if ref in ready]:
            ray.get(inflight.pop(key))
        progress.update(workers=max(len(inflight), 1))
