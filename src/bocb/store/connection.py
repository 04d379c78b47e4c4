"""Opening a store's database: URLs, SQLite files (checked before anything is written, read-only
connections, pragmas) and a driver's error on one line."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from bocb.errors import BocbError, SpecError


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


def check_sqlite_file(path: Path, url: str | os.PathLike[str]) -> None:
    """Refuse, without writing to it, an SQLite file that is damaged (SQLite's quick_check), not a database,
    or another program's database (tables, but not bocb's). A missing or empty file is a new store."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(read_only_sqlite(path)) as conn:
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


def read_only_sqlite(path: Path) -> sqlite3.Connection:
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


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
