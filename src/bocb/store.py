"""The results store: the single source of truth of a benchmark (SQLAlchemy).

SQLite (a file, WAL mode, short transactions) serves one machine; PostgreSQL
(any SQLAlchemy URL) serves many workers on many machines. SQLite on a network
filesystem is not supported: its locking is unreliable there.

A trial is identified by its key (a hash of its TrialConfig); the primary key
makes a double insert impossible, and a worker *claims* a trial with a
conditional UPDATE, so no two workers run it at once. A claim carries a
heartbeat; a trial whose worker stopped heart-beating (or whose process on
this host is gone) is claimed again and resumes from its checkpoint.
This module imports no training code: analysis and reports read from it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from bocb.errors import BocbError, DataError, SpecError, resolve_prefix
from bocb.protocol import (
    EPOCH_FIELDS,
    FINISHED,
    OUTCOME_COLUMNS,
    UNFINISHED,
    TrialState,
    searched_trials,
    trial_key,
    with_config,
)

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


@dataclass(frozen=True)
class PlannedTrial:
    key: str
    config: dict[str, Any]
    stage: str
    budget: int = 1


@dataclass(frozen=True)
class ClaimedTrial:
    key: str
    config: dict[str, Any]
    attempts: int


def normalise_url(url_or_path: str | os.PathLike[str]) -> str:
    """An SQLAlchemy URL; a plain path means an SQLite file."""
    text = str(url_or_path)
    return text if "://" in text else f"sqlite:///{Path(text).expanduser().resolve()}"


def check_url(url_or_path: str | os.PathLike[str], field: str = "store") -> None:
    """A one-line SpecError unless ``url_or_path`` names a database SQLAlchemy can open here: a known
    dialect whose driver is installed (checked when the spec is loaded, not when the first trial is stored)."""
    from sqlalchemy.engine import make_url

    text = normalise_url(url_or_path)
    try:
        make_url(text).get_dialect().import_dbapi()
    except ImportError as exc:  # the dialect is known, its driver is not installed
        raise SpecError(field, f"the driver of {text.split('://')[0]} is not installed ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's errors for a URL it cannot parse or a dialect it lacks
        raise SpecError(field, f"not a database URL SQLAlchemy knows: {exc}") from None


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


def _insert_new(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT the rows whose primary key is not stored yet (SQLite's and PostgreSQL's ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    dialect = {"sqlite": sqlite_dialect, "postgresql": postgresql_dialect}.get(conn.dialect.name)
    if dialect is None:
        raise BocbError(f"store: {conn.dialect.name} is not supported; use SQLite or PostgreSQL")
    conn.execute(dialect.insert(table).on_conflict_do_nothing(), rows)


def _insert_planned(conn: sa.Connection, benchmark_id: str, planned: list[PlannedTrial]) -> int:
    count = sa.select(sa.func.count()).select_from(plan).where(plan.c.benchmark_id == benchmark_id)
    before = conn.execute(count).scalar()
    now = time.time()  # created_at keeps the planned order, which claims follow
    _insert_new(conn, trials, [_trial_row(item, now + i * 1e-6) for i, item in enumerate(planned)])
    _insert_new(conn, plan, [{"benchmark_id": benchmark_id, "trial_key": item.key, "stage": item.stage,
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
        _insert_new(conn, trials, [dict(r._mapping) for r in conn.execute(copied.where(trials.c.key == old))])
        for child in (plan, epochs, layer_tables):
            moved = [{**r._mapping, "trial_key": new}
                     for r in conn.execute(sa.select(child).where(child.c.trial_key == old))]
            _insert_new(conn, child, moved)
            conn.execute(child.delete().where(child.c.trial_key == old))
        conn.execute(trials.delete().where(trials.c.key == old))


def check_sqlite_file(path: Path, url: str | os.PathLike[str]) -> None:
    """Refuse, without writing to it, an SQLite file that is damaged (SQLite's quick_check), not a database,
    or another program's database (tables, but not bocb's). A missing or empty file is a new store."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(_read_only_sqlite(path)) as conn:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise BocbError(f"store: '{url}' is not a readable SQLite database ({exc}); nothing was written") from None
    if problems != ["ok"]:
        found = "; ".join(line for p in problems for line in p.splitlines() if not line.startswith("***"))
        raise BocbError(f"store: '{url}' is damaged (SQLite quick_check: {found[:300]}); restore it from a copy "
                        "or export what it holds with the sqlite3 shell's .recover; nothing was written")
    if tables and not {"benchmarks", "trials"} <= tables:
        raise BocbError(f"store: '{url}' is another program's database (tables {', '.join(sorted(tables)[:5])}, "
                        "none of bocb's); give a new file or a bocb store; nothing was written")


def _read_only_sqlite(path: Path) -> sqlite3.Connection:
    """A connection that cannot write to ``path`` nor create anything beside it. A WAL store that no process
    has open (no ``-wal`` file) is read as immutable: SQLite would otherwise create ``-wal`` and ``-shm``
    files even for a read-only connection, and cannot at all in a read-only directory. A writer that starts
    during such a read is seen as of its last checkpoint (reads here are a few queries long). A store being
    written has its ``-wal`` and ``-shm`` already, and is read through them as usual."""
    live = Path(f"{path}-wal").exists()
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro" + ("" if live else "&immutable=1")
    return sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)


def one_line(error: BaseException) -> str:
    """A driver's message on one line (psycopg's "connection refused" spans two, with a tab)."""
    return "; ".join(part.strip() for part in str(error).splitlines() if part.strip())


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _known(record: Mapping[str, Any], names: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``names``, once ``record`` is known to hold no other: a name the schema lacks (a field renamed on one
    side) is a bug to stop at, not a value to drop. What a record leaves out is stored as NULL."""
    unknown = sorted(set(record) - set(names))
    if unknown:
        raise ValueError(f"{what} holds {unknown}, which the store has no column for (it has {list(names)})")
    return names


class Store:
    def __init__(self, url: str | os.PathLike[str], existing: bool = False, read_only: bool = False) -> None:
        """Open (creating it unless ``existing``) the store at ``url``, bringing an older one to this bocb's
        schema; ``existing`` refuses a database that holds no bocb store, and leaves it untouched.
        ``read_only`` (commands that only read) writes nothing, creates nothing beside an SQLite file and
        upgrades nothing: an older store is refused with the command that upgrades it."""
        self._connect(url, read_only)
        try:
            if existing or read_only:
                self._require_a_store(url)
            if self.engine.dialect.name == "sqlite":
                self._check_sqlite_path(url)
            with self.engine.begin() as conn:  # one transaction: an interrupted upgrade leaves the store as it was
                self.schema_found = check_schema(conn, self.sqlite_path() or url) if read_only else migrate(conn)
        except sa.exc.DatabaseError as exc:  # unreachable server, bad credentials, a file that is no database
            raise BocbError(f"store: cannot open '{url}': {one_line(exc.orig)}") from None

    @classmethod
    def for_worker(cls, url: str) -> Store:
        """The store as a worker opens it from its assignment's URL (bocb.sweep.worker.Assignment): without
        the open-time checks and upgrade, which whoever assigned the work (`bocb run`, `bocb worker`) did on
        this store just before; N workers repeating SQLite's quick_check or the upgrade at once would only
        contend for the store. A schema newer than this bocb's still stops it in one line: a newer bocb may
        have upgraded a shared store since."""
        store = cls.__new__(cls)
        store._connect(url)
        store._set_pragmas_on_connect()
        try:
            with store.engine.connect() as conn:
                _refuse_a_newer_schema(stored_schema_version(conn))
        except sa.exc.DatabaseError as exc:
            raise BocbError(f"store: cannot open '{url}': {one_line(exc.orig)}") from None
        return store

    def _connect(self, url: str | os.PathLike[str], read_only: bool = False) -> None:
        self.url = normalise_url(url)
        self.read_only = read_only
        try:
            self.engine = sa.create_engine(self.url, future=True, pool_pre_ping=True)
            path = self.sqlite_path()
            if read_only and path is not None:
                self.engine = sa.create_engine("sqlite://", creator=lambda: _read_only_sqlite(path),
                                               poolclass=sa.pool.NullPool)
            elif read_only and self.engine.dialect.name == "postgresql":
                self.engine = self.engine.execution_options(postgresql_readonly=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise BocbError(f"store: cannot open '{url}': {exc}") from None

    def sqlite_path(self) -> Path | None:
        """The file of an SQLite store (None: another database, or SQLite in memory)."""
        url = sa.engine.make_url(self.url)
        return Path(url.database) if url.get_backend_name() == "sqlite" and url.database not in (None, "",
                                                                                                ":memory:") else None

    def _check_sqlite_path(self, url: str | os.PathLike[str]) -> None:
        path = self.sqlite_path()
        if path is not None:
            check_sqlite_file(path, url)
            if not self.read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
        if not self.read_only:
            self._set_pragmas_on_connect()  # only now: checking a foreign file must not turn on its WAL

    def _set_pragmas_on_connect(self) -> None:
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    def _require_a_store(self, url: str | os.PathLike[str]) -> None:
        path = self.sqlite_path()
        if path is not None and not path.is_file():  # connecting would create the file
            raise BocbError(f"store: no such store file: {url}")
        found = sa.inspect(self.engine).has_table("benchmarks")
        self.engine.dispose()  # later connections get the SQLite pragmas, set on connect
        if not found:
            raise BocbError(f"store: '{url}' holds no bocb store (no 'benchmarks' table)")

    # -- planning -----------------------------------------------------------------------------------------
    def register_benchmark(self, benchmark_id: str, name: str, spec: Mapping[str, Any],
                           planned: Iterable[PlannedTrial] = ()) -> int:
        """Add the benchmark with the trials of its first stage, in one transaction (a failure leaves
        nothing behind); or, if it is stored, keep the spec of this latest registration (the two can differ
        only in execution fields: device, workers, ...; `bocb worker` should follow the latest) and add
        ``planned``. Returns how many trials were new to the benchmark."""
        row = {"id": benchmark_id, "name": name, "spec_json": json.dumps(spec, sort_keys=True),
               "created_at": time.time()}
        with self.engine.begin() as conn:
            _insert_new(conn, benchmarks, [row])  # registered concurrently by another process: kept
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

    # -- claiming and running -----------------------------------------------------------------------------
    def _candidates(self, benchmark_id: str | None, stale_after: float) -> list[Any]:
        """Pending trials and abandoned running ones (stale heartbeat, or a dead process on this host)."""
        now = time.time()
        query = sa.select(trials.c.key, trials.c.state, trials.c.worker, trials.c.heartbeat_at).where(
            trials.c.state.in_(UNFINISHED_VALUES))
        if benchmark_id:
            query = query.where(trials.c.key.in_(_planned_keys(benchmark_id)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(trials.c.created_at, trials.c.key)).all()
        return [r for r in rows if r.state == TrialState.PENDING or _abandoned(r, now, stale_after)]

    def claimable_keys(self, benchmark_id: str | None = None, stale_after: float = 120.0) -> list[str]:
        return [r.key for r in self._candidates(benchmark_id, stale_after)]

    def claim(self, worker: str, benchmark_id: str | None = None, stale_after: float = 120.0) -> ClaimedTrial | None:
        """Atomically take one pending (or abandoned) trial; None when there is none."""
        for cand in self._candidates(benchmark_id, stale_after):
            claimed = self._take(cand, worker, time.time())
            if claimed:
                return claimed
        return None

    def claim_key(self, key: str, worker: str, stale_after: float = 120.0) -> ClaimedTrial | None:
        """Claim one given trial; None if it is taken or finished."""
        with self.engine.connect() as conn:
            cand = conn.execute(sa.select(trials.c.key, trials.c.state, trials.c.worker, trials.c.heartbeat_at)
                                .where(trials.c.key == key)).first()
        if cand is None or cand.state in FINISHED_VALUES or (
                cand.state == TrialState.RUNNING and not _abandoned(cand, time.time(), stale_after)):
            return None
        return self._take(cand, worker, time.time())

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
        crashed = sa.and_(trials.c.state == TrialState.FAILED.value, trials.c.key.in_(_planned_keys(benchmark_id)))
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
            if layer_table is not None:
                conn.execute(layer_tables.delete().where(layer_tables.c.trial_key == key))
                table_json = layer_table.to_json(orient="records", double_precision=15)
                conn.execute(layer_tables.insert().values(trial_key=key, table_json=table_json))
        return True

    # -- sharing (bocb.bundle) ---------------------------------------------------------------------------
    def finished_rows(self, benchmark_id: str) -> dict[str, list[dict[str, Any]]]:
        """The benchmark's row and its finished trials' rows of every table, as stored (claims left out)."""
        keys = sa.select(trials.c.key).where(trials.c.state.in_(FINISHED_VALUES),
                                             trials.c.key.in_(_planned_keys(benchmark_id)))
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
            _insert_new(conn, benchmarks, rows["benchmarks"])
            stored = sa.select(trials.c.key, *[trials.c[c] for c in RESULT_COLUMNS])  # all: no IN list to overflow
            here = {r.key: r for r in conn.execute(stored) if r.key in given}
            finished_here = {k for k, r in here.items() if r.state in FINISHED_VALUES}
            same = {k for k in finished_here if _same_result(here[k], given[k])}
            taken = {k for k in given if k not in finished_here}
            replaced = [{"k": k} for k in taken if k in here]  # unfinished here: a crash, an interrupted run
            _insert_new(conn, trials, [row for k, row in given.items() if k in taken and k not in here])
            if replaced:
                by_key = trials.update().where(trials.c.key == sa.bindparam("k"))
                conn.execute(by_key.values(worker=None, heartbeat_at=None),
                             [{**given[r["k"]], "k": r["k"]} for r in replaced])
                for child in (epochs, layer_tables):  # a partial run's rows give way to the merged ones
                    conn.execute(child.delete().where(child.c.trial_key == sa.bindparam("k")), replaced)
            for child in (epochs, layer_tables):
                _insert_new(conn, child, [r for r in rows[child.name] if r["trial_key"] in taken])
            _insert_new(conn, plan, rows["plan"])
        return Merged(added=len(taken), present=len(same), conflicts=sorted(finished_here - same))

    # -- reading -----------------------------------------------------------------------------------------
    def counts(self, benchmark_id: str | None = None) -> dict[str, int]:
        query = sa.select(trials.c.state, sa.func.count()).group_by(trials.c.state)
        if benchmark_id:
            query = query.join(plan, plan.c.trial_key == trials.c.key).where(plan.c.benchmark_id == benchmark_id)
        with self.engine.connect() as conn:
            return {state: n for state, n in conn.execute(query)}

    def stage_progress(self, benchmark_id: str) -> pd.DataFrame:
        """Per stage (in planned order) and state: the number of trials and their mean time (for progress
        displays: which stage runs, and how long its trials take)."""
        query = sa.select(plan.c.stage, trials.c.state, sa.func.count().label("n"),
                          sa.func.avg(trials.c.time_s).label("time_s"), sa.func.min(trials.c.created_at).label("at")) \
            .join(plan, plan.c.trial_key == trials.c.key).where(plan.c.benchmark_id == benchmark_id) \
            .group_by(plan.c.stage, trials.c.state)
        with self.engine.connect() as conn:
            frame = pd.read_sql(query, conn)
        return frame.sort_values("at", kind="stable").drop(columns="at").reset_index(drop=True)

    def progress_signature(self, benchmark_id: str) -> tuple[int, int, float | None]:
        """(trials planned, trials finished, last finish time): changes exactly when the planner's view of
        the benchmark can have changed (a claim or a heartbeat leaves it alone), at the cost of one
        aggregate query instead of reading every trial."""
        finished = trials.c.state.in_(FINISHED_VALUES)
        query = sa.select(sa.func.count(), sa.func.count().filter(finished),
                          sa.func.max(trials.c.finished_at).filter(finished)) \
            .join(plan, plan.c.trial_key == trials.c.key).where(plan.c.benchmark_id == benchmark_id)
        with self.engine.connect() as conn:
            planned, done, last = conn.execute(query).one()
        return planned, done, last

    def best_trial(self, benchmark_id: str, metric: str = "val_top1") -> dict[str, Any] | None:
        """The finished trial with the highest ``metric`` (cheap: for progress displays)."""
        column = trials.c[metric]
        query = sa.select(trials.c.backbone, trials.c.optimizer, column).join(plan, plan.c.trial_key == trials.c.key) \
            .where(plan.c.benchmark_id == benchmark_id, trials.c.state == TrialState.DONE.value, column.is_not(None)) \
            .order_by(column.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return dict(row._mapping) if row else None

    def trials_frame(self, benchmark_id: str | None = None) -> pd.DataFrame:
        """One row per (benchmark, trial), with flattened provenance."""
        query = sa.select(plan.c.benchmark_id.label("benchmark"), plan.c.stage, plan.c.budget,
                          benchmarks.c.name.label("benchmark_name"), trials) \
            .join(trials, trials.c.key == plan.c.trial_key).join(benchmarks, benchmarks.c.id == plan.c.benchmark_id)
        if benchmark_id:
            query = query.where(plan.c.benchmark_id == benchmark_id)
        with self.engine.connect() as conn:
            frame = pd.read_sql(query.order_by(trials.c.created_at, trials.c.key), conn)
        return _tidy_trials(frame.rename(columns={"key": "trial_key"}))

    def epochs_frame(self, benchmark_id: str | None = None) -> pd.DataFrame:
        query = sa.select(epochs).order_by(epochs.c.trial_key, epochs.c.epoch)
        if benchmark_id:
            query = query.where(epochs.c.trial_key.in_(
                sa.select(plan.c.trial_key).where(plan.c.benchmark_id == benchmark_id)))
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    def layer_table(self, key: str) -> pd.DataFrame:
        """The stored layer table of the trial ``key`` (or of the one trial whose key starts with it)."""
        with self.engine.connect() as conn:
            starting = layer_tables.c.trial_key.startswith(key, autoescape=True)  # '%' or '_' match only themselves
            keys = conn.execute(sa.select(layer_tables.c.trial_key).where(starting)).scalars().all()
            if not keys:
                raise BocbError(f"store: no layer table for trial '{key}' in {self.url}")
            chosen = resolve_prefix("trial key", "trial key", key, keys)
            query = sa.select(layer_tables.c.table_json).where(layer_tables.c.trial_key == chosen)
            text = conn.execute(query).scalar()
        return _layer_rows(chosen, text)

    def layers_frame(self, benchmark_id: str | None = None) -> pd.DataFrame:
        """All stored layer tables with backbone, optimizer, seed and stage columns (for ridge plots)."""
        query = sa.select(trials.c.key, trials.c.backbone, trials.c.optimizer, trials.c.seed,
                          layer_tables.c.table_json).join(layer_tables, layer_tables.c.trial_key == trials.c.key)
        if benchmark_id:
            query = query.where(trials.c.key.in_(_planned_keys(benchmark_id)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        parts = [_layer_rows(r.key, r.table_json).assign(
            trial_key=r.key, backbone=r.backbone, optimizer=r.optimizer, seed=r.seed) for r in rows]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def check_finished_rows(rows: Mapping[str, list[dict[str, Any]]]) -> None:
    """Refuse, in one line naming the trial, trial and layer-table rows that the store's readers could not
    read (text in a number column, a JSON column holding no object, a layer table that is no JSON records):
    what `bocb export` writes out and `bocb import` merges in is checked as the store reads it."""
    _check_trial_rows(pd.DataFrame(rows["trials"], columns=[c.name for c in trials.columns
                                                            if c.name not in MACHINE_COLUMNS])
                      .rename(columns={"key": "trial_key"}))
    for row in rows["layer_tables"]:
        _layer_rows(row["trial_key"], row["table_json"])


def _layer_rows(key: str, text: str) -> pd.DataFrame:
    """A trial's stored layer table; one that is not a JSON list of records was written outside bocb."""
    try:
        table = pd.read_json(StringIO(text), orient="records")
    except ValueError:
        table = None
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"store: trial {key}: its layer table holds {text!r:.60}, not JSON records (written "
                        "outside bocb); restore the store from a copy")
    return table


def _json_objects(frame: pd.DataFrame, column: str) -> pd.Series:
    """Each row's JSON object in ``column`` (a missing one is empty); a row holding anything else was written
    outside bocb, and is refused in one line naming its trial."""
    def parsed(key: str, text: Any) -> dict[str, Any]:
        if text is None or _is_nan(text):
            return {}
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, dict):
            raise DataError(f"store: trial {key}: column '{column}' holds {str(text)!r:.60}, not a JSON object "
                            "(written outside bocb); restore the store from a copy")
        return value

    return pd.Series([parsed(k, t) for k, t in zip(frame["trial_key"], frame[column])], index=frame.index,
                     dtype=object)


def _check_numbers(frame: pd.DataFrame) -> None:
    """SQLite keeps whatever a row was given: a number column holding text was written outside bocb."""
    for column in (c.name for c in trials.columns if isinstance(c.type, (sa.Float, sa.Integer))):
        if column in frame and frame[column].dtype == object:
            bad = frame[column].notna() & pd.to_numeric(frame[column], errors="coerce").isna()
            if bad.any():
                first = frame.loc[bad.idxmax()]
                raise DataError(f"store: trial {first['trial_key']}: column '{column}' holds "
                                f"{str(first[column])!r:.60}, not a number ({int(bad.sum())} such row(s), written "
                                "outside bocb); restore the store from a copy")


def _check_trial_rows(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Refuse rows written outside bocb (text in a number column, a JSON column that holds no object);
    returns the parsed configurations and provenances."""
    _check_numbers(frame)
    _json_objects(frame, "hparams_json")
    return _json_objects(frame, "config_json"), _json_objects(frame, "provenance_json")


def _tidy_trials(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    configs, prov = _check_trial_rows(frame)
    opt = prov.map(lambda p: p.get("optimizer", {}) if isinstance(p.get("optimizer"), dict) else {})
    frame = with_config(frame).assign(
        # the dataset the trial trained on, so results.csv states it (`bocb report --compare-paper` reads it)
        dataset=configs.map(lambda c: (c.get("dataset") or {}).get("name")),
        optimizer_library=opt.map(lambda o: o.get("library")),
        optimizer_class=opt.map(lambda o: o.get("class")),
        optimizer_category=opt.map(lambda o: o.get("category")),  # a-d, new (None: a trial run before bocb kept it)
        device=prov.map(lambda p: p.get("device")),
        git_commit=prov.map(lambda p: p.get("git_commit")),
        bocb_version=prov.map(lambda p: p.get("bocb")),
        lock=prov.map(lambda p: p.get("lock")),  # the requirements.lock the trial ran under (None: no lock)
        torch_version=prov.map(lambda p: p.get("torch")),
        timm_version=prov.map(lambda p: p.get("timm")),
        num_classes=prov.map(lambda p: p.get("num_classes")),  # a diverged trial scores chance in analyses
        test_size=prov.map(lambda p: p.get("test_size")),  # how far from chance is noise (protocol.did_not_learn)
    )
    return _with_grids(frame)


def _with_grids(frame: pd.DataFrame) -> pd.DataFrame:
    """lr_grid / wd_grid: the values searched at full budget per (benchmark, backbone, optimizer)."""
    grids = searched_trials(frame).groupby(["benchmark", "backbone", "optimizer"]).agg(
        lr_grid=("lr", lambda s: ";".join(f"{v:g}" for v in sorted(set(s)))),
        wd_grid=("weight_decay", lambda s: ";".join(f"{v:g}" for v in sorted(set(s)))),
    ).reset_index()
    return frame.merge(grids, on=["benchmark", "backbone", "optimizer"], how="left")


@dataclass(frozen=True)
class Merged:
    added: int  # trials new to the store, or unfinished there, that took the merged result
    present: int  # trials the store held with the same result
    conflicts: list[str]  # keys the store holds with another result: kept as stored


def _same_result(stored: Any, given: Mapping[str, Any]) -> bool:
    return all(getattr(stored, c) == given.get(c) or (_is_nan(getattr(stored, c)) and _is_nan(given.get(c)))
               for c in RESULT_COLUMNS)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _planned_keys(benchmark_id: str) -> sa.Select:
    """The keys of the trials a benchmark planned (a sub-select)."""
    return sa.select(plan.c.trial_key).where(plan.c.benchmark_id == benchmark_id)


@dataclass(frozen=True)
class StoredResults:
    """What a report needs of one benchmark: its trials, their epochs and layer tables, and its spec
    (for the rules' parameters; empty for a CSV)."""

    trials: pd.DataFrame
    epochs: pd.DataFrame | None = None
    layers: pd.DataFrame | None = None
    spec: dict[str, Any] | None = None


def load_results(url_or_path: str | os.PathLike[str], benchmark_id: str | None = None) -> StoredResults:
    """One benchmark of a store (default: the latest) with everything its report shows."""
    store = Store(url_or_path, read_only=True)
    chosen = _latest(store, benchmark_id)
    return StoredResults(store.trials_frame(chosen), store.epochs_frame(chosen), store.layers_frame(chosen),
                         store.benchmark_spec(chosen))


def _latest(store: Store, benchmark_id: str | None) -> str:
    ids = store.benchmark_ids()
    if not ids:
        raise BocbError(f"store: {store.url} holds no benchmark")
    return benchmark_id or ids[-1]


def load_frames(url_or_path: str | os.PathLike[str],
                benchmark_id: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) frames of one benchmark of a store (default: the latest), for analysis and reports."""
    store = Store(url_or_path, read_only=True)
    chosen = _latest(store, benchmark_id)
    return store.trials_frame(chosen), store.epochs_frame(chosen)
