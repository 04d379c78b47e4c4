"""The results store: the single source of truth of a benchmark (SQLAlchemy).

SQLite (a file, WAL mode, short transactions) serves one machine; PostgreSQL
(any SQLAlchemy URL) serves many workers on many machines. SQLite on a network
filesystem is not supported: its locking is unreliable there.

A trial is identified by its key (a hash of its TrialConfig); the primary key
makes a double insert impossible, and a worker *claims* a trial with a
conditional UPDATE, so no two workers run it at once. A claim carries a
heartbeat; a trial whose worker stopped heart-beating (or whose process on
this host is gone) is claimed again and resumes from its checkpoint.
This package imports no training code: analysis and reports read from it.

One module per concern, each importing only those above it (tests/test_imports.py keeps the graph
acyclic):

- ``schema``: the tables, the schema version, ``migrate`` (create or upgrade) and ``check_schema``
  (what a command that only reads asks); the SQL the other modules share.
- ``connection``: URLs, SQLite files checked before anything is written, read-only connections.
- ``rows``: rows written outside bocb refused in one line (read here, exported, imported).
- ``planning``, ``claims``, ``sharing``, ``reading``: what a Store does once open, one mixin each:
  benchmarks and their planned trials; claims and leases (claim, heartbeat, release, finish, whether a
  worker's process is alive); the bundle merge rules; the read models (counts and frames).
- ``core``: ``Store`` itself, which opens (checks, upgrades or refuses; ``Store.for_worker`` without the
  checks) and joins the mixins. Mixins rather than module functions behind each method: a method's body
  stays as it was, and a Store is still one object with every method.
- ``results``: one benchmark's frames and spec, as a report or analysis loads them.

Everything public is imported from here: ``from bocb.store import Store``.
"""
from __future__ import annotations

from bocb.store.claims import ClaimedTrial, new_worker_id
from bocb.store.connection import check_sqlite_file, check_url, normalise_url, one_line
from bocb.store.core import Store
from bocb.store.planning import PlannedTrial, config_columns
from bocb.store.results import StoredResults, load_frames, load_results
from bocb.store.rows import check_finished_rows, json_shape_problem
from bocb.store.schema import (
    FINISHED_VALUES,
    MACHINE_COLUMNS,
    RESULT_COLUMNS,
    SCHEMA_VERSION,
    UNFINISHED_VALUES,
    benchmarks,
    check_schema,
    epochs,
    layer_tables,
    metadata,
    migrate,
    plan,
    plan_by_trial,
    schema_version,
    stored_schema_version,
    trials,
)
from bocb.store.sharing import Merged

__all__ = [
    "FINISHED_VALUES", "MACHINE_COLUMNS", "RESULT_COLUMNS", "SCHEMA_VERSION", "UNFINISHED_VALUES", "ClaimedTrial",
    "Merged", "PlannedTrial", "Store", "StoredResults", "benchmarks", "check_finished_rows", "check_schema",
    "check_sqlite_file", "check_url", "config_columns", "epochs", "json_shape_problem", "layer_tables",
    "load_frames", "load_results", "metadata", "migrate", "new_worker_id", "normalise_url", "one_line", "plan",
    "plan_by_trial", "schema_version", "stored_schema_version", "trials",
]
