"""The store's schema: its tables, its version, and the migration that brings an older store to it.

``migrate`` creates a new store or upgrades an older one (``bocb run``, ``bocb upgrade``); ``check_schema``
is what a command that only reads asks of a store: this bocb's schema, nothing written. ``insert_new`` and
``planned_keys`` are the SQL that the other parts of the store share.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from bocb.errors import BocbError
from bocb.protocol import FINISHED, UNFINISHED, trial_key

FINISHED_VALUES = tuple(s.value for s in FINISHED)
UNFINISHED_VALUES = tuple(s.value for s in UNFINISHED)
metadata = sa.MetaData()

benchmarks = sa.Table(
    "benchmarks", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
trials = sa.Table(
    "trials", metadata,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("config_json", sa.Text, nullable=False),
    sa.Column("backbone", sa.String(200), nullable=False),
    sa.Column("size", sa.String(20), nullable=False),
    sa.Column("optimizer", sa.String(100), nullable=False),
    sa.Column("lr", sa.Float, nullable=False),
    sa.Column("weight_decay", sa.Float, nullable=False),
    sa.Column("hparams_json", sa.Text, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("epochs", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("worker", sa.String(200)),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("val_top1", sa.Float),
    sa.Column("test_top1", sa.Float),
    sa.Column("test_top5", sa.Float),
    sa.Column("train_loss", sa.Float),
    sa.Column("time_s", sa.Float),
    sa.Column("peak_mem_mb", sa.Float),
    sa.Column("optimizer_state_mb", sa.Float),
    sa.Column("resumed_from_epoch", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("provenance_json", sa.Text),
)
plan = sa.Table(
    "plan", metadata,
    sa.Column("benchmark_id", sa.String(40), sa.ForeignKey("benchmarks.id"), primary_key=True),
    sa.Column("trial_key", sa.String(40), sa.ForeignKey("trials.key"), primary_key=True),
    sa.Column("stage", sa.String(40), nullable=False),
    sa.Column("budget", sa.Integer, nullable=False, default=1),
)
epochs = sa.Table(
    "epochs", metadata,
    sa.Column("trial_key", sa.String(40), sa.ForeignKey("trials.key"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("train_loss", sa.Float),
    sa.Column("val_top1", sa.Float),
    sa.Column("test_top1", sa.Float),
    sa.Column("test_top5", sa.Float),
    sa.Column("lr", sa.Float),
    sa.Column("time_s", sa.Float),
    sa.Column("ema_val_top1", sa.Float),
    sa.Column("ema_test_top1", sa.Float),
)
plan_by_trial = sa.Index("ix_plan_trial_key", plan.c.trial_key)  # re-keying and joins find a trial's plan rows
schema_version = sa.Table(
    "bocb_schema", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("migrated_at", sa.Float, nullable=False),
)
RESULT_COLUMNS = ("state", "val_top1", "test_top1", "test_top5", "train_loss")  # what two copies must agree on
MACHINE_COLUMNS = ("worker", "heartbeat_at")  # a claim on one machine: meaningless on another
SCHEMA_VERSION = 2  # 1: stores of bocb before this table (trial keys of key_version 1)
layer_tables = sa.Table(
    "layer_tables", metadata,
    sa.Column("trial_key", sa.String(40), sa.ForeignKey("trials.key"), primary_key=True),
    sa.Column("table_json", sa.Text, nullable=False),
)


def insert_new(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT the rows whose primary key is not stored yet (SQLite's and PostgreSQL's ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    dialect = {"sqlite": sqlite_dialect, "postgresql": postgresql_dialect}.get(conn.dialect.name)
    if dialect is None:
        raise BocbError(f"store: {conn.dialect.name} is not supported; use SQLite or PostgreSQL")
    conn.execute(dialect.insert(table).on_conflict_do_nothing(), rows)


def planned_keys(benchmark_id: str) -> sa.Select:
    """The keys of the trials a benchmark planned (a sub-select)."""
    return sa.select(plan.c.trial_key).where(plan.c.benchmark_id == benchmark_id)


def stored_schema_version(conn: sa.Connection) -> int | None:
    """The store's schema version: None for an empty database, 1 for a store of bocb before versioning."""
    tables = set(sa.inspect(conn).get_table_names())
    recorded = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() \
        if "bocb_schema" in tables else None
    # SQLite's driver commits DDL at once: an upgrade interrupted after creating the version table leaves it
    # empty, and the store is still of schema 1
    return recorded if recorded is not None else (1 if "benchmarks" in tables else None)


def _refuse_a_newer_schema(found: int | None) -> None:
    if found is not None and found > SCHEMA_VERSION:
        raise BocbError(f"store: made by a newer bocb (schema {found}; this one reads up to {SCHEMA_VERSION}); "
                        "upgrade bocb")


def check_schema(conn: sa.Connection, url: str | os.PathLike[str]) -> int | None:
    """What a command that only reads needs: a store of this bocb's schema (it upgrades nothing)."""
    found = stored_schema_version(conn)
    _refuse_a_newer_schema(found)
    if found is not None and found < SCHEMA_VERSION:
        raise BocbError(f"store: '{url}' is of schema {found}, older than this bocb's {SCHEMA_VERSION}; "
                        f"upgrade it with `bocb upgrade {url}` (or `bocb run` of its spec); nothing was written")
    return found


def migrate(conn: sa.Connection) -> int | None:
    """Create a new store, or bring an older one to SCHEMA_VERSION; refuse one made by a newer bocb.
    Returns the schema it found (None: a new store)."""
    found = stored_schema_version(conn)
    _refuse_a_newer_schema(found)
    metadata.create_all(conn)  # an older store gains the tables added since
    plan_by_trial.create(conn, checkfirst=True)  # and the index (create_all makes it for new tables only)
    if found == 1:
        _rekey_trials(conn)
    if found != SCHEMA_VERSION:
        conn.execute(schema_version.insert().values(version=SCHEMA_VERSION, migrated_at=time.time()))
    return found


def _rekey_trials(conn: sa.Connection) -> None:
    """Schema 1 -> 2: each trial takes today's key (bocb.protocol.trial_key, from its stored config), and
    its plan, epoch and layer rows follow it; so a spec rerun against the store finds its finished trials.
    Two old keys that meet in one new key (a store written before and after an ingredient was added) merge:
    the row already there stays, the other's plan, epoch and layer rows join it where they add something."""
    rows = conn.execute(sa.select(trials.c.key, trials.c.config_json)).all()
    for old, config_json in rows:
        new = trial_key(json.loads(config_json))
        if new == old:
            continue
        copied = sa.select(*[sa.literal(new).label("key") if c.name == "key" else c for c in trials.columns])
        insert_new(conn, trials, [dict(r._mapping) for r in conn.execute(copied.where(trials.c.key == old))])
        for child in (plan, epochs, layer_tables):
            moved = [{**r._mapping, "trial_key": new}
                     for r in conn.execute(sa.select(child).where(child.c.trial_key == old))]
            insert_new(conn, child, moved)
            conn.execute(child.delete().where(child.c.trial_key == old))
        conn.execute(trials.delete().where(trials.c.key == old))
