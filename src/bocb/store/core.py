"""The Store: opening a store (checks, read-only connections, the upgrade; a worker's unchecked open) and
what it does once open, from its mixins, one module per concern."""
from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from bocb.errors import BocbError
from bocb.store.claims import Claims
from bocb.store.connection import check_sqlite_file, normalise_url, one_line, read_only_sqlite, sqlite_pragmas
from bocb.store.planning import Planning
from bocb.store.reading import Reading
from bocb.store.schema import _refuse_a_newer_schema, check_schema, migrate, stored_schema_version
from bocb.store.sharing import Sharing


class Store(Planning, Claims, Sharing, Reading):
    """An open store: it plans, claims and finishes, shares and reads trials through its mixins."""

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
                self.engine = sa.create_engine("sqlite://", creator=lambda: read_only_sqlite(path),
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
            sa.event.listen(self.engine, "connect", sqlite_pragmas)

    def _require_a_store(self, url: str | os.PathLike[str]) -> None:
        path = self.sqlite_path()
        if path is not None and not path.is_file():  # connecting would create the file
            raise BocbError(f"store: no such store file: {url}")
        found = sa.inspect(self.engine).has_table("benchmarks")
        self.engine.dispose()  # later connections get the SQLite pragmas, set on connect
        if not found:
            raise BocbError(f"store: '{url}' holds no bocb store (no 'benchmarks' table)")
