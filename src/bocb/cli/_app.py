"""The typer app, the one place user errors become a line on stderr and exit code 2, and what the
commands share: opening a store, choosing its benchmark, printing a table."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bocb.errors import BocbError, SpecError, resolve_prefix

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

    from bocb.store import Store

app = typer.Typer(
    name="bocb",
    help="Measure backbone-optimizer coupling bias (BOCB): run the protocol, store, analyse, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # click's usage errors come here, to be said in one line
    except BocbError as exc:
        typer.echo(f"error: {printable(str(exc))}", err=True)
        sys.exit(2)
    except OSError as exc:  # a path that cannot be written, a full disk: the user's to fix, in one line
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {printable(f'{where}{exc.strerror or exc}')}", err=True)
        sys.exit(2)
    except Exception as exc:
        if _said_as_usage(exc):
            sys.exit(2 if not _is(exc, "Abort") else 1)
        if not type(exc).__module__.startswith(DATABASE_MODULES):
            raise
        # a store damaged inside its records, a server gone mid-query: one line, not an SQL dump
        cause = getattr(exc, "orig", None) or exc
        typer.echo(f"error: store: {type(cause).__name__}: {str(cause).splitlines()[0][:300]}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


DATABASE_MODULES = ("sqlalchemy", "sqlite3", "psycopg")


def printable(text: str) -> str:
    """``text`` with control characters escaped: a message that echoes a user's value (a name holding a
    NUL byte or a newline) stays one line and shows what was there."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _is(exc: Exception, name: str) -> bool:
    """Whether ``exc`` is a click exception called ``name``: by name, because typer vendors its own click
    (typer._click) and a plain click may be installed beside it."""
    return any(kind.__name__ == name for kind in type(exc).__mro__)


def _said_as_usage(exc: Exception) -> bool:
    """Print a command-line mistake of any command as one line (a bad option value, a missing argument, an
    unknown command); `bocb` alone prints its help. False for anything else."""
    if _is(exc, "NoArgsIsHelpError"):
        typer.echo(exc.format_message(), err=True)
    elif _is(exc, "UsageError"):
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
    elif _is(exc, "Abort"):  # Ctrl-C or end of input at a prompt
        typer.echo("aborted", err=True)
    else:
        return False
    return True


def check_output_dir(path: Path, field: str) -> None:
    if path.exists() and not path.is_dir():
        raise SpecError(field, f"{path} is a file; give a directory (it is created if missing)")


def print_table(table: Table) -> None:
    from rich.console import Console

    # piped output: wide enough that rich does not truncate names to 80 columns
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def open_store(store: str, *, write: bool = False, field: str = "STORE") -> Store:
    """An existing store (a missing SQLite file is an error, not a new empty store), opened read-only
    unless the command writes to it (`bocb worker`): a command that only reads never writes."""
    from bocb.store import Store, normalise_url

    url = normalise_url(store)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise SpecError(field, f"no such store file: {store}")
    return Store(url, existing=True, read_only=not write)


def benchmark_id_of(db: Store, requested: str | None, field: str = "--benchmark") -> str:
    """The benchmark whose id starts with ``requested``; the latest one when None."""
    ids = db.benchmark_ids()
    if not ids:
        raise SpecError("STORE", "the store holds no benchmark")
    if requested is None:
        return ids[-1]
    return resolve_prefix(field, "benchmark id", requested, ids)


def kept_weights_root(db: Store, benchmark_id: str, given: Path | None) -> Path:
    """Where a stored benchmark's kept weights are: ``--artifact-root`` when given (it must be a folder),
    else the root stored with the benchmark (as its workers use it)."""
    from bocb.sweep import stored_artifact_root

    if given is not None and not given.is_dir():
        state = "a file" if given.exists() else "not there"
        raise SpecError("--artifact-root", f"{given} is {state}: give the folder that holds weights/")
    return given or stored_artifact_root(db, benchmark_id)


def missing_kept(db: Store, benchmark_id: str, root: Path, trials: pd.DataFrame) -> list[str]:
    """The trial keys (of the benchmark's ``trials``) whose kept weights its keep_weights says exist but
    ``root`` lacks. Two fields of the stored spec, read as stored: validating it would want its data files
    and run its plugins, on a machine that may only hold the store and the weights."""
    from bocb.kept import expected_kept, kept_path
    from bocb.spec import BenchmarkSpec, upgrade_stored_spec

    stored = upgrade_stored_spec(db.benchmark_spec(benchmark_id))
    keep = stored.get("keep_weights", BenchmarkSpec.model_fields["keep_weights"].default)
    sources = db.trials_frame(stored["transfer_from"]) if stored.get("transfer_from") else None
    return sorted(key for key in expected_kept(trials, keep, sources) if not kept_path(root, key).is_file())


@contextmanager
def resumable_on_interrupt() -> Iterator[None]:
    """Ctrl-C while trials run: one line saying what is kept, exit code 130, no traceback."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("interrupted: finished trials are stored and trials in flight resume from their last "
                   "checkpoint; run the same command again to go on", err=True)
        raise typer.Exit(code=130) from None


def confirm_budget(hours: float | None, what: str, budget_hours: float, yes: bool,
                   plan: Callable[[], list[str]], hint: str, where: str = "") -> bool:
    """Go on with work estimated over ``budget_hours`` only when told to: --yes, or a 'y' at the prompt of an
    interactive terminal, which shows the ``plan`` lines (stderr) with the question; elsewhere (a script, a
    scheduler) one line and exit code 2, before anything trains. A cost that cannot be estimated (None) is
    over any budget: the gate is never skipped. Returns whether it asked."""
    from bocb.estimate import duration

    if yes or (hours is not None and hours <= budget_hours):
        return False
    cost = f"is estimated at {duration(hours)}{where}" if hours is not None else "cannot be estimated"
    if not sys.stdin.isatty():
        raise SpecError("--budget-hours", f"{what} {cost}, over the budget of {budget_hours:g} h; pass --yes to "
                                          f"train it anyway ({hint})")
    typer.echo("\n".join(plan()), err=True)
    if not typer.confirm(f"over the budget of {budget_hours:g} h (--budget-hours): train it anyway?",
                         default=False, err=True):
        typer.echo("not started (--yes trains it without asking)", err=True)
        raise typer.Exit(1)
    return True
