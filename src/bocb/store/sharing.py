"""Sharing finished trials between stores (bocb.bundle): the rows to write out, and the rule that merges
rows in (keys decide; a trial finished here with another result is a conflict, kept as stored)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bocb.store.rows import check_finished_rows, is_nan
from bocb.store.schema import (
    FINISHED_VALUES,
    MACHINE_COLUMNS,
    RESULT_COLUMNS,
    benchmarks,
    epochs,
    insert_new,
    layer_tables,
    plan,
    planned_keys,
    trials,
)


@dataclass(frozen=True)
class Merged:
    added: int  # trials new to the store, or unfinished there, that took the merged result
    present: int  # trials the store held with the same result
    conflicts: list[str]  # keys the store holds with another result: kept as stored


def _same_result(stored: Any, given: Mapping[str, Any]) -> bool:
    return all(getattr(stored, c) == given.get(c) or (is_nan(getattr(stored, c)) and is_nan(given.get(c)))
               for c in RESULT_COLUMNS)


class Sharing:
    """Store's methods that give and take finished trials (``bocb export``, ``bocb import``)."""

    engine: sa.Engine

    def finished_rows(self, benchmark_id: str) -> dict[str, list[dict[str, Any]]]:
        """The benchmark's row and its finished trials' rows of every table, as stored (claims left out)."""
        keys = sa.select(trials.c.key).where(trials.c.state.in_(FINISHED_VALUES),
                                             trials.c.key.in_(planned_keys(benchmark_id)))
        queries = {
            "benchmarks": sa.select(benchmarks).where(benchmarks.c.id == benchmark_id),
            "trials": sa.select(*[c for c in trials.columns if c.name not in MACHINE_COLUMNS])
            .where(trials.c.key.in_(keys)).order_by(trials.c.created_at, trials.c.key),
            "plan": sa.select(plan).where(plan.c.benchmark_id == benchmark_id, plan.c.trial_key.in_(keys))
            .order_by(plan.c.trial_key),
            "epochs": sa.select(epochs).where(epochs.c.trial_key.in_(keys))
            .order_by(epochs.c.trial_key, epochs.c.epoch),
            "layer_tables": sa.select(layer_tables).where(layer_tables.c.trial_key.in_(keys))
            .order_by(layer_tables.c.trial_key),
        }
        with self.engine.connect() as conn:
            rows = {name: [dict(row._mapping) for row in conn.execute(query)] for name, query in queries.items()}
        self.benchmark_spec(benchmark_id)  # what leaves the store is what bocb wrote: checked as when read here
        check_finished_rows(rows)
        return rows

    def merge_finished(self, rows: Mapping[str, list[dict[str, Any]]]) -> Merged:
        """Merge finished trials (rows as :meth:`finished_rows` gives them) in one transaction; keys decide.
        A trial new here, or unfinished here, takes the given rows; one finished here with the same result
        is left alone; one finished here with another result is a conflict, kept as stored and reported."""
        given = {row["key"]: row for row in rows["trials"]}
        with self.engine.begin() as conn:
            insert_new(conn, benchmarks, rows["benchmarks"])
            stored = sa.select(trials.c.key, *[trials.c[c] for c in RESULT_COLUMNS])  # all: no IN list to overflow
            here = {r.key: r for r in conn.execute(stored) if r.key in given}
            finished_here = {k for k, r in here.items() if r.state in FINISHED_VALUES}
            same = {k for k in finished_here if _same_result(here[k], given[k])}
            taken = {k for k in given if k not in finished_here}
            replaced = [{"k": k} for k in taken if k in here]  # unfinished here: a crash, an interrupted run
            insert_new(conn, trials, [row for k, row in given.items() if k in taken and k not in here])
            if replaced:
                by_key = trials.update().where(trials.c.key == sa.bindparam("k"))
                conn.execute(by_key.values(worker=None, heartbeat_at=None),
                             [{**given[r["k"]], "k": r["k"]} for r in replaced])
                for child in (epochs, layer_tables):  # a partial run's rows give way to the merged ones
                    conn.execute(child.delete().where(child.c.trial_key == sa.bindparam("k")), replaced)
            for child in (epochs, layer_tables):
                insert_new(conn, child, [r for r in rows[child.name] if r["trial_key"] in taken])
            insert_new(conn, plan, rows["plan"])
        return Merged(added=len(taken), present=len(same), conflicts=sorted(finished_here - same))
