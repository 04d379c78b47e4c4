"""Benchmarks and their planned trials: registering a benchmark, adding the trials its planner plans."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bocb.errors import BocbError, DataError
from bocb.protocol import TrialState
from bocb.store.schema import benchmarks, insert_new, plan, trials


@dataclass(frozen=True)
class PlannedTrial:
    key: str
    config: dict[str, Any]
    stage: str
    budget: int = 1


def _insert_planned(conn: sa.Connection, benchmark_id: str, planned: list[PlannedTrial]) -> int:
    count = sa.select(sa.func.count()).select_from(plan).where(plan.c.benchmark_id == benchmark_id)
    before = conn.execute(count).scalar()
    now = time.time()  # created_at keeps the planned order, which claims follow
    insert_new(conn, trials, [_trial_row(item, now + i * 1e-6) for i, item in enumerate(planned)])
    insert_new(conn, plan, [{"benchmark_id": benchmark_id, "trial_key": item.key, "stage": item.stage,
                              "budget": item.budget} for item in planned])
    return conn.execute(count).scalar() - before


def _trial_row(item: PlannedTrial, now: float) -> dict[str, Any]:
    return {"key": item.key, **config_columns(item.config), "created_at": now, "state": TrialState.PENDING.value,
            "attempts": 0}


def config_columns(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's columns that its configuration decides (the flat ones are what queries and analyses read)."""
    return {"config_json": json.dumps(cfg, sort_keys=True), "backbone": cfg["backbone"], "size": cfg["size"],
            "optimizer": cfg["optimizer"], "lr": cfg["lr"], "weight_decay": cfg["weight_decay"],
            "hparams_json": json.dumps(cfg.get("hparams", {}), sort_keys=True), "seed": cfg["seed"],
            "epochs": cfg["epochs"]}


class Planning:
    """Store's methods that register benchmarks and plan their trials."""

    engine: sa.Engine
    url: str

    def register_benchmark(self, benchmark_id: str, name: str, spec: Mapping[str, Any],
                           planned: Iterable[PlannedTrial] = ()) -> int:
        """Add the benchmark with the trials of its first stage, in one transaction (a failure leaves
        nothing behind); or, if it is stored, keep the spec of this latest registration (the two can differ
        only in execution fields: device, workers, ...; `bocb worker` should follow the latest) and add
        ``planned``. Returns how many trials were new to the benchmark."""
        row = {"id": benchmark_id, "name": name, "spec_json": json.dumps(spec, sort_keys=True),
               "created_at": time.time()}
        with self.engine.begin() as conn:
            insert_new(conn, benchmarks, [row])  # registered concurrently by another process: kept
            conn.execute(benchmarks.update().where(benchmarks.c.id == benchmark_id).values(spec_json=row["spec_json"]))
            return _insert_planned(conn, benchmark_id, list(planned))

    def benchmark_spec(self, benchmark_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(benchmarks.c.spec_json).where(benchmarks.c.id == benchmark_id)).scalar()
        if text is None:
            raise BocbError(f"store: no benchmark '{benchmark_id}' in {self.url}")
        try:
            spec = json.loads(text)
        except ValueError:
            spec = None
        if not isinstance(spec, dict):
            raise DataError(f"store: benchmark {benchmark_id}: its spec_json holds {text!r:.60}, not a JSON object "
                            "(written outside bocb); restore the store from a copy")
        return spec

    def benchmark_ids(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(benchmarks.c.id).order_by(benchmarks.c.created_at)).scalars())

    def add_trials(self, benchmark_id: str, planned: Iterable[PlannedTrial]) -> int:
        """Insert planned trials that are not stored yet, in one transaction; returns how many were new to
        this benchmark (another process may plan the same ones at the same time: keys decide)."""
        with self.engine.begin() as conn:
            return _insert_planned(conn, benchmark_id, list(planned))
