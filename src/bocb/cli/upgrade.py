"""`bocb upgrade`: bring a store written by an older bocb to this one's schema (the only command, with
`bocb run`, that changes a store's schema; commands that only read refuse an older store)."""
from __future__ import annotations

import typer

from bocb.cli._app import app


@app.command()
def upgrade(store: str = typer.Argument(..., help="SQLAlchemy URL or SQLite path of an existing store")) -> None:
    """Upgrade STORE in one transaction (an interrupted upgrade leaves it as it was)."""
    from bocb.cli._app import open_store
    from bocb.store import SCHEMA_VERSION

    found = open_store(store, write=True).schema_found
    if found == SCHEMA_VERSION:
        typer.echo(f"store {store}: already at schema {SCHEMA_VERSION}; nothing changed")
    else:
        typer.echo(f"store {store}: upgraded from schema {found} to {SCHEMA_VERSION}")
