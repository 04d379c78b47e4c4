"""The typer app and the one place user errors become a line on stderr and exit code 2."""
from __future__ import annotations

import sys

import typer

from bocb.errors import BocbError

app = typer.Typer(
    name="bocb",
    help="Measure backbone-optimizer coupling bias (BOCB): run the protocol, store, analyse, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> typer.Exit:
    """Print a one-line error and return the Exit to raise (code 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def main() -> None:
    try:
        app()
    except BocbError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
