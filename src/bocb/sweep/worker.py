"""Running claimed trials: the loop every executor shares.

A worker claims a trial from the store, runs it with the engine (which knows
nothing of the store), streams each epoch into the store, heart-beats while it
runs, and records the outcome. When nothing is left to claim it asks the
planner for the next stage; any worker may do so, since planning is idempotent.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bocb.protocol import TrialState, run_key
from bocb.spec import BenchmarkSpec, TrialConfig, parse_spec, upgrade_stored_spec
from bocb.store import ClaimedTrial, Store, new_worker_id
from bocb.sweep.planner import ended_runs, next_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    artifact_root: Path
    threads: int = 1
    device: str | None = None  # None: the spec's device
    stale_after_s: float = 120.0
    heartbeat_s: float = 10.0
    poll_s: float = 0.5
    max_trials: int | None = None


@dataclass(frozen=True)
class Assignment:
    """What a worker is given, whoever starts it (a local worker process, a Ray task, `bocb worker`): plain data
    that pickles as it is, so the one loop (:func:`worker_loop`) runs on the far side of any process boundary.

    ``spec`` is the validated model, not its JSON: it pickles field by field and unpickling runs no
    validator, so no worker re-checks the dataset files, and each trains from exactly the spec the run
    gave (its execution fields, such as the device, may differ from those stored, which do not change the
    benchmark). None: the stored spec of each benchmark. The artifact root is ``options.artifact_root``: one
    field, not two that could disagree."""

    store_url: str
    benchmark_id: str | None  # None: every benchmark in the store, in the order they were registered
    spec: BenchmarkSpec | None
    options: WorkerOptions

    def __post_init__(self) -> None:
        if self.spec is not None and self.benchmark_id is None:
            raise ValueError("an assignment's spec is one benchmark's: give its benchmark id too")


def advance(store: Store, benchmark_id: str, spec: BenchmarkSpec, artifact_root: Path | None = None) -> str:
    """Plan the next stage if its turn has come: 'planned', 'waiting' or 'complete'.

    Under ``keep_weights: chosen`` it also deletes the kept weights of finished configurations that are not
    their cell's choice: one beaten now stays beaten (its score is compared with the same seeds' scores), so
    pruning as the benchmark goes keeps the disk to the chosen models and those in training."""
    trials = store.trials_frame(benchmark_id)
    sources = store.trials_frame(spec.transfer_from) if spec.transfer_from else None  # a transfer's pre-training
    if artifact_root is not None and spec.keep_weights == "chosen" and not trials.empty:
        from bocb.kept import prune_kept, unchosen

        prune_kept(artifact_root, unchosen(trials, sources))
    if sources is None:
        stage = next_stage(spec, trials, lambda: store.epochs_frame(benchmark_id))
    else:
        from bocb.sweep.transfer import next_transfer_stage

        stage = next_transfer_stage(spec, sources, trials, lambda: store.epochs_frame(spec.transfer_from))
    if artifact_root is not None and sources is None:  # checkpoints no stage will continue from
        continuing = {run_key(t.config) for t in stage.planned} if stage else set()  # a retried start promoted now
        prune_checkpoints(artifact_root, ended_runs(spec, trials) - continuing)
    if stage is None:
        return "complete"
    if stage.planned:
        store.add_trials(benchmark_id, stage.planned)
        return "planned"
    return "waiting"


def already_complete(store: Store, assignment: Assignment) -> bool:
    """What an executor does before it starts any worker: plan the assigned benchmark's next stage if its turn
    has come; True when the benchmark is complete (nothing to claim nor to plan: no worker to start)."""
    if assignment.benchmark_id is None or assignment.spec is None:
        raise ValueError("an executor's assignment names one benchmark and the run's spec of it")
    return advance(store, assignment.benchmark_id, assignment.spec, assignment.options.artifact_root) == "complete"


class StageWatch:
    """Calls the planner only when the benchmark's trials changed since it last said 'waiting'.

    Planning reads every trial of the benchmark; a worker waiting for the stragglers of a stage
    would otherwise do so every poll, which at tens of thousands of trials and many workers is the
    store's heaviest load. The signature is read before planning, so a trial finishing meanwhile
    only costs one extra plan, never a missed one.
    """

    def __init__(self, store: Store, benchmark_id: str, spec: BenchmarkSpec, artifact_root: Path) -> None:
        self.store, self.benchmark_id, self.spec, self.artifact_root = store, benchmark_id, spec, artifact_root
        self._waiting_at: tuple[int | float | None, ...] | None = None

    def advance(self) -> str:
        """As :func:`advance`, but 'waiting' without planning while nothing has changed."""
        signature = self.store.progress_signature(self.benchmark_id)
        if self.spec.transfer_from is not None:  # a transfer waits for its pre-training benchmark too
            signature += self.store.progress_signature(self.spec.transfer_from)
        if signature == self._waiting_at:
            return "waiting"
        status = advance(self.store, self.benchmark_id, self.spec, self.artifact_root)
        self._waiting_at = signature if status == "waiting" else None
        return status


class ClaimLost(BaseException):
    """Raised at an epoch boundary when this worker no longer holds its trial. A BaseException, so it passes
    the engine's handling of a crashing trial: losing a claim is no outcome of the trial."""

    def __init__(self, message: str, store_failed: bool = False) -> None:
        super().__init__(message)
        self.store_failed = store_failed


STORE_RETRIES = 3  # attempts at a store call before a worker gives its trial up


def _taken_over(key: str) -> ClaimLost:
    return ClaimLost(f"trial {key[:10]}: claim lost, another worker holds it now; stopped at an epoch boundary, "
                     "its checkpoint left to the new owner")


class _Heartbeat:
    """Refreshes a claim (a lease) in the background while the trial trains, and keeps, as ``lost``, the
    ClaimLost that stops the trial at its next epoch boundary: the store refused a heartbeat (another worker
    took the trial over), or failed STORE_RETRIES times (the worker cannot know whether it still holds it)."""

    def __init__(self, store: Store, key: str, worker: str, interval: float) -> None:
        self.lost: ClaimLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(store, key, worker, interval), daemon=True)

    def _beat(self, store: Store, key: str, worker: str, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if not _with_retries(lambda: store.heartbeat(key, worker), key):
                    self.lost = _taken_over(key)
                    return
            except ClaimLost as lost:
                self.lost = lost
                return

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def checkpoint_path(artifact_root: Path, run: str) -> Path:
    """The checkpoint of a run (bocb.protocol.run_key): every trial of the run resumes from and writes it,
    so a rung continues where the rung before it stopped. Relative to the artifact root, so a shared
    filesystem mounted anywhere works."""
    return artifact_root / "checkpoints" / f"{run}.pt"


def prune_checkpoints(artifact_root: Path, runs: set[str]) -> None:
    """Delete the checkpoints of ``runs`` (idempotent: any number of workers may prune at once)."""
    for run in runs:
        checkpoint_path(artifact_root, run).unlink(missing_ok=True)


def execute(store: Store, claimed: ClaimedTrial, spec: BenchmarkSpec, worker: str, options: WorkerOptions) -> str:
    """Run one claimed trial to its end and record it; returns its final state."""
    from bocb.engine import Runtime, run_trial  # training code loads only where trials run
    from bocb.kept import kept_path

    config = TrialConfig.model_validate(claimed.config)
    ckpt = checkpoint_path(options.artifact_root, config.run_key())
    start = config.schedule_epochs is not None  # the start of a longer run: a search step, not a model to keep
    runtime = Runtime(
        device=options.device or spec.device, threads=options.threads, checkpoint_path=ckpt,
        checkpoint_every=spec.checkpoint_every, channels_last=spec.gpu.channels_last, compile=spec.gpu.compile,
        non_blocking=spec.gpu.non_blocking, layer_table=not start,
        weights_path=None if spec.keep_weights == "none" or start else kept_path(options.artifact_root, claimed.key),
        init_weights_path=kept_path(options.artifact_root, config.init.trial) if config.init else None,
    )
    try:
        with _Heartbeat(store, claimed.key, worker, options.heartbeat_s) as beat:
            outcome = run_trial(config, runtime,
                                on_epoch=lambda record: _epoch_ended(store, claimed.key, worker, beat, record))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (see stop_on_sigterm)
        store.release(claimed.key, worker)
        raise
    # A trial that continued its run from another trial's checkpoint holds that trial's epochs too (a resumed
    # one, its own earlier epochs again): recorded under its key, its learning curve is whole.
    for record in outcome.epochs[:outcome.resumed_from_epoch or 0]:
        _with_retries(lambda r=record: store.record_epoch(claimed.key, asdict(r)), claimed.key)
    if not store.finish(claimed.key, worker, _result(outcome), outcome.layer_table):
        raise ClaimLost(f"trial {claimed.key[:10]}: the store refused its result (another worker holds it now); "
                        "its checkpoint is left to that worker")
    # A crashed trial keeps its checkpoint for the retry; the start of a run, for the trial that continues it.
    if outcome.state != TrialState.FAILED and not start:
        ckpt.unlink(missing_ok=True)
    return outcome.state


def _epoch_ended(store: Store, key: str, worker: str, beat: _Heartbeat, record: Any) -> None:
    """At each epoch boundary, before the checkpoint is written: renew the lease synchronously (the
    background heartbeat's news may be seconds old) and stream the epoch into the store; a lost lease stops
    the trial here, a store that keeps failing stops the worker (ClaimLost, not a crash of the trial)."""
    beat.check()
    if not _with_retries(lambda: store.heartbeat(key, worker), key):
        raise _taken_over(key)
    _with_retries(lambda: store.record_epoch(key, asdict(record)), key)


def _with_retries(action: Callable[[], Any], key: str) -> Any:
    for attempt in range(STORE_RETRIES):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - a database error of any kind: retry, then give the trial up
            if attempt == STORE_RETRIES - 1:
                raise ClaimLost(f"trial {key[:10]}: the store failed {STORE_RETRIES} times ({exc!s:.200}); "
                                "stopped, its checkpoint kept for whoever claims it next", store_failed=True) \
                    from None
            time.sleep(1.0 * (attempt + 1))
    return None


def _result(outcome: Any) -> dict[str, Any]:
    last = outcome.last
    return {
        "state": outcome.state, "val_top1": last.val_top1 if last and outcome.state == TrialState.DONE else None,
        "test_top1": last.test_top1 if last and outcome.state == TrialState.DONE else None,
        "test_top5": last.test_top5 if last and outcome.state == TrialState.DONE else None,
        "train_loss": last.train_loss if last else None, "time_s": outcome.time_s,
        "peak_mem_mb": outcome.peak_mem_mb, "optimizer_state_mb": outcome.optimizer_state_mb,
        "resumed_from_epoch": outcome.resumed_from_epoch, "error": outcome.error, "provenance": outcome.provenance,
    }


def load_benchmark(store: Store, benchmark_id: str) -> BenchmarkSpec:
    return parse_spec(upgrade_stored_spec(store.benchmark_spec(benchmark_id)))


def worker_loop(assignment: Assignment) -> int:
    """Claim and run trials until the assigned benchmark(s) are complete; returns how many this worker ran.
    Every executor runs this loop and only starts and stops it; the store is opened unchecked
    (:meth:`Store.for_worker`): whoever made the assignment opened it checked."""
    store = Store.for_worker(assignment.store_url)
    try:
        return _claim_and_run(store, assignment)
    finally:  # a process that outlives the loop (a Ray worker, reused for the next task; a test) keeps no connection
        store.engine.dispose()


def _claim_and_run(store: Store, assignment: Assignment) -> int:
    options, worker, ran = assignment.options, new_worker_id(), 0
    pending = [assignment.benchmark_id] if assignment.benchmark_id else store.benchmark_ids()
    watches = {b: StageWatch(store, b, load_benchmark(store, b) if assignment.spec is None else assignment.spec,
                             options.artifact_root) for b in pending}
    with stop_on_sigterm():
        while pending and (options.max_trials is None or ran < options.max_trials):
            current = pending[0]
            claimed = store.claim(worker, current, options.stale_after_s)
            if claimed is not None:
                try:
                    execute(store, claimed, watches[current].spec, worker, options)
                except ClaimLost as lost:
                    log.warning("%s", lost)
                    if lost.store_failed:  # the store is unreachable: stop cleanly, the trial resumes elsewhere
                        return ran
                ran += 1
                continue
            status = watches[current].advance()
            if status == "complete":
                pending.pop(0)
            elif status == "waiting":
                time.sleep(options.poll_s)
    return ran


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within: SIGTERM (a scheduler's preemption, the local executor stopping its workers) stops this
    process as Ctrl-C does, so the trial in hand is released, not left to go stale."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with(run_pid: int) -> None:
    """Make this worker process die, as if SIGKILLed, when the run that started it ends (a SIGKILLed run leaves
    no orphans). A fork server stands between the two, so the kernel's parent-death signal would watch the
    server: the run is watched through a pidfd (readable once it has exited), or polled where there is none."""
    try:
        handle = os.pidfd_open(run_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (not Linux, or an old kernel): look once a second
        def watch() -> None:
            while _alive(run_pid):
                time.sleep(1.0)
            os._exit(1)
    else:
        def watch() -> None:
            select.select([handle], [], [])
            os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
