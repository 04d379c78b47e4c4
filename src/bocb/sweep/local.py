"""The local executor: worker processes on this machine, with progress (bocb.sweep.progress).

Each worker is a separate process with one torch thread (two single-thread
processes beat one two-thread process for tiny models on this kind of CPU).
The parent only watches the store and draws progress; it trains nothing.
"""
from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection  # mp.connection.wait
import os
import signal
import sys
from dataclasses import dataclass

from rich.console import Console

from bocb.errors import BocbError, SpecError
from bocb.store import Store
from bocb.sweep.progress import RunProgress
from bocb.sweep.worker import Assignment, already_complete, die_with, worker_loop

# What a worker imports before its first trial (torch, timm, the engine, the data loaders, torch._dynamo that
# the first optimizer pulls in): imported once, by the fork server, and inherited by every worker forked from
# it, instead of ~10 s of imports per spawned worker. A name that fails to import is skipped by multiprocessing.
WORKER_PRELOAD = ["bocb.sweep.worker", "bocb.engine", "bocb.kept", "torch._dynamo", "sklearn.datasets",
                  "sklearn.model_selection"]


def _worker_context() -> mp.context.BaseContext:
    """Workers forked from a fork server that imported WORKER_PRELOAD (no torch/BLAS state of this process is
    forked: the server is a fresh interpreter that never ran an operator); spawn where there is no fork
    server (Windows). The server lives as long as this process, so later runs in it start workers at once."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    return ctx


def _worker_main(assignment: Assignment, run_pid: int) -> None:
    die_with(run_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent stops us
    try:
        worker_loop(assignment)
    except KeyboardInterrupt:
        pass  # stopped by the parent (SIGTERM): the trial in hand was released
    except BocbError as exc:  # this process cannot go on (a plugin its planner cannot import, say): one line
        print(f"error: worker process: {exc}", file=sys.stderr)
        sys.exit(2)


@dataclass(frozen=True)
class LocalExecutor:
    """Worker processes on this machine (at most one per CPU core), with progress."""

    workers: int

    def check(self) -> None:
        """Each local worker trains with one thread: more workers than cores only time-slice (and a typo
        such as 1000 would start a thousand processes)."""
        cores = os.cpu_count() or 1
        if self.workers > cores:
            raise SpecError("workers", f"{self.workers} local workers on {cores} CPU core(s); give at most {cores}")

    def run(self, store: Store, assignment: Assignment, console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        if already_complete(store, assignment):
            return
        ctx = _worker_context()
        # Not daemonic: a daemonic process may not start children, and a folder dataset's DataLoader starts
        # worker processes. The workers still end with us: die_with, and the finally below.
        procs = [ctx.Process(target=_worker_main, args=(assignment, os.getpid()), daemon=False)
                 for _ in range(self.workers)]
        try:
            _start_fork_server(ctx)
            for proc in procs:  # a Ctrl-C now is a KeyboardInterrupt here: the except below stops them
                proc.start()
            _watch(procs, store, assignment.benchmark_id, console)
            failed = [proc.exitcode for proc in procs if proc.exitcode]
            if failed:  # a worker that died of an error of bocb's own: no result may pass for complete
                raise BocbError(f"{len(failed)} of {len(procs)} worker process(es) failed (exit code {failed[0]}, "
                                "their error above); finished trials are stored: run again to go on")
        except BaseException:  # Ctrl-C, SIGTERM, or an error of our own: stop the workers first
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()  # each releases its trial in hand, which resumes from its checkpoint next run
            raise
        finally:  # not daemonic, so nothing may leave them running: an error here ends them too
            for proc in procs:
                if proc.pid is not None:
                    proc.join(timeout=10)
                    if proc.is_alive():
                        proc.kill()


def _start_fork_server(ctx: mp.context.BaseContext) -> None:
    """Start the fork server with SIGINT ignored, as its exec inherits it: a Ctrl-C while it imports
    WORKER_PRELOAD (seconds) is then no traceback of its, and the workers it forks ignore SIGINT too until
    they set their own (we stop them). Only for the fork and exec (milliseconds): ignored any longer, a Ctrl-C
    meant for this run would be lost and the run go on."""
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def _watch(procs: list, store: Store, benchmark_id: str, console: Console) -> None:
    with RunProgress(store, benchmark_id, console) as progress:
        while any(p.is_alive() for p in procs):
            progress.update(len(procs))
            # every 2 s, or at once when a worker ends (the last one's end is the run's end)
            mp.connection.wait([p.sentinel for p in procs if p.is_alive()], timeout=2.0)
        progress.update(len(procs))
