"""Claims and leases: a worker takes a trial with a conditional UPDATE, keeps it by heart-beating, and
records its epochs and outcome only while the claim is still its own. A claim whose heartbeat went stale,
or whose process on this host is gone, is abandoned: claimed again, the trial resumes from its checkpoint."""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from bocb.protocol import EPOCH_FIELDS, OUTCOME_COLUMNS, TrialState
from bocb.store.rows import json_shape_problem
from bocb.store.schema import UNFINISHED_VALUES, epochs, layer_tables, planned_keys, trials


@dataclass(frozen=True)
class ClaimedTrial:
    key: str
    config: dict[str, Any]
    attempts: int


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _process_gone(worker: str | None) -> bool:
    """True when ``worker`` ran on this host in a process that no longer exists."""
    if not worker or worker.count(":") < 2:
        return False
    host, pid, _ = worker.rsplit(":", 2)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _abandoned(row: Any, now: float, stale_after: float) -> bool:
    return (row.heartbeat_at or 0) < now - stale_after or _process_gone(row.worker)


def _known(record: Mapping[str, Any], names: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``names``, once ``record`` is known to hold no other: a name the schema lacks (a field renamed on one
    side) is a bug to stop at, not a value to drop. What a record leaves out is stored as NULL."""
    unknown = sorted(set(record) - set(names))
    if unknown:
        raise ValueError(f"{what} holds {unknown}, which the store has no column for (it has {list(names)})")
    return names


class Claims:
    """Store's methods that claim, heart-beat, release and finish trials."""

    engine: sa.Engine

    def _candidates(self, benchmark_id: str | None, stale_after: float) -> list[Any]:
        """Pending trials and abandoned running ones (stale heartbeat, or a dead process on this host)."""
        now = time.time()
        query = sa.select(trials.c.key, trials.c.state, trials.c.worker, trials.c.heartbeat_at).where(
            trials.c.state.in_(UNFINISHED_VALUES))
        if benchmark_id:
            query = query.where(trials.c.key.in_(planned_keys(benchmark_id)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(trials.c.created_at, trials.c.key)).all()
        return [r for r in rows if r.state == TrialState.PENDING or _abandoned(r, now, stale_after)]

    def claim(self, worker: str, benchmark_id: str | None = None, stale_after: float = 120.0) -> ClaimedTrial | None:
        """Atomically take one pending (or abandoned) trial; None when there is none."""
        for cand in self._candidates(benchmark_id, stale_after):
            claimed = self._take(cand, worker, time.time())
            if claimed:
                return claimed
        return None

    def _take(self, cand: Any, worker: str, now: float) -> ClaimedTrial | None:
        guard = sa.and_(trials.c.key == cand.key, trials.c.state == cand.state)
        if cand.state == TrialState.RUNNING:
            guard = sa.and_(guard, trials.c.worker == cand.worker, trials.c.heartbeat_at == cand.heartbeat_at)
        with self.engine.begin() as conn:
            done = conn.execute(trials.update().where(guard).values(
                state=TrialState.RUNNING.value, worker=worker, heartbeat_at=now, attempts=trials.c.attempts + 1,
                started_at=sa.func.coalesce(trials.c.started_at, now), error=None)).rowcount
            if done != 1:
                return None
            row = conn.execute(sa.select(trials.c.config_json, trials.c.attempts).where(trials.c.key == cand.key)).one()
        return ClaimedTrial(cand.key, json.loads(row.config_json), row.attempts)

    def heartbeat(self, key: str, worker: str) -> bool:
        """Refresh the claim; False when the trial is no longer this worker's."""
        with self.engine.begin() as conn:
            return conn.execute(trials.update().where(trials.c.key == key, trials.c.worker == worker,
                                                      trials.c.state == TrialState.RUNNING.value)
                                .values(heartbeat_at=time.time())).rowcount == 1

    def release(self, key: str, worker: str) -> bool:
        """Hand back a trial whose worker was stopped: pending again at once, so whoever claims it next
        resumes it from its checkpoint (instead of waiting for the heartbeat to go stale)."""
        with self.engine.begin() as conn:
            return conn.execute(trials.update().where(trials.c.key == key, trials.c.worker == worker,
                                                      trials.c.state == TrialState.RUNNING.value)
                                .values(state=TrialState.PENDING.value, worker=None, heartbeat_at=None)).rowcount == 1

    def retry_crashed(self, benchmark_id: str) -> int:
        """Make the benchmark's crashed (failed) trials pending again, so the next run retries them; a crash
        is no result. Diverged trials stay finished: divergence is an outcome. Returns how many."""
        crashed = sa.and_(trials.c.state == TrialState.FAILED.value, trials.c.key.in_(planned_keys(benchmark_id)))
        with self.engine.begin() as conn:
            return conn.execute(trials.update().where(crashed)
                                .values(state=TrialState.PENDING.value, worker=None, heartbeat_at=None)).rowcount

    def record_epoch(self, key: str, record: Mapping[str, Any]) -> None:
        """Store one epoch's metrics; a resumed trial's re-run epoch replaces the earlier row."""
        values = {name: record.get(name) for name in _known(record, EPOCH_FIELDS, "an epoch record")}
        with self.engine.begin() as conn:
            conn.execute(epochs.delete().where(epochs.c.trial_key == key, epochs.c.epoch == values["epoch"]))
            conn.execute(epochs.insert().values(trial_key=key, **values))

    def finish(self, key: str, worker: str, result: Mapping[str, Any], layer_table: pd.DataFrame | None) -> bool:
        """Record a trial's outcome; False (nothing written) if another worker has taken it over."""
        values = {name: result.get(name) for name in _known(result, OUTCOME_COLUMNS + ("provenance",), "a result")}
        del values["provenance"]
        values["provenance_json"] = json.dumps(result.get("provenance", {}), sort_keys=True, default=str)
        table_json = None if layer_table is None else _layer_table_json(layer_table)
        with self.engine.begin() as conn:
            updated = conn.execute(trials.update().where(trials.c.key == key, trials.c.worker == worker,
                                                         trials.c.state == TrialState.RUNNING.value)
                                   .values(finished_at=time.time(), **values)).rowcount
            if updated != 1:
                return False
            last = conn.execute(sa.select(sa.func.max(epochs.c.epoch)).where(epochs.c.trial_key == key)).scalar()
            if last is not None and result.get("state") == TrialState.DONE:
                # epochs beyond the final one (from an older, longer attempt) cannot exist: keep rows tidy
                conn.execute(epochs.delete().where(epochs.c.trial_key == key, epochs.c.epoch > last))
            if table_json is not None:
                conn.execute(layer_tables.delete().where(layer_tables.c.trial_key == key))
                conn.execute(layer_tables.insert().values(trial_key=key, table_json=table_json))
        return True


def _layer_table_json(table: pd.DataFrame) -> str:
    """The layer table as stored; one the store's readers would refuse is refused before it is written."""
    text = table.to_json(orient="records", double_precision=15)
    problem = json_shape_problem("table_json", json.loads(text))
    if problem:
        raise ValueError(f"a layer table must be {problem}; columns given: {list(table.columns)}")
    return text
