"""`bocb export` and `bocb import`: a benchmark's finished results as one file that travels, and merging
such files from several machines into one store (keys decide)."""
from __future__ import annotations

from pathlib import Path

import typer

from bocb.cli._app import app, benchmark_id_of, open_store

EXIT_CONFLICTS = 4  # the import merged what it could; the store holds other results for some trials


@app.command("export")
def export(
    store: str = typer.Argument(..., help="SQLAlchemy URL or SQLite path"),
    out: Path = typer.Option(..., "-o", "--out", help="the bundle file to write (a .zip)"),
    benchmark: str | None = typer.Option(None, "--benchmark", help="benchmark id; default: the latest"),
    force: bool = typer.Option(False, "--force", help="replace the file if it exists"),
) -> None:
    """Write a benchmark's finished trials, epochs, layer tables, spec and provenance to one bundle."""
    from bocb.bundle import export_bundle

    db = open_store(store)
    benchmark_id = benchmark_id_of(db, benchmark)
    counts = export_bundle(db, benchmark_id, out, overwrite=force)
    typer.echo(f"exported benchmark {benchmark_id}: {counts['trials']} finished trials, {counts['epochs']} "
               f"epochs, {counts['layer_tables']} layer tables -> {out}")


@app.command("import")
def import_(
    bundle: Path = typer.Argument(..., help="a bundle written by `bocb export`"),
    store: str = typer.Option(..., "--store", help="SQLAlchemy URL or SQLite path (created if missing)"),
) -> None:
    """Merge a bundle into a store, keys deciding: new trials added, equal ones skipped, others listed (exit 4)."""
    from bocb.bundle import import_bundle
    from bocb.store import Store

    merged = import_bundle(bundle, Store(store))
    typer.echo(f"imported {bundle}: {merged.added} trials added, {merged.present} already there, "
               f"{len(merged.conflicts)} in conflict")
    if merged.conflicts:
        keys = ", ".join(k[:10] for k in merged.conflicts[:10])
        typer.echo(f"conflicts: the store holds other results for {len(merged.conflicts)} trial(s), kept as "
                   f"stored: {keys}{' ...' if len(merged.conflicts) > 10 else ''}", err=True)
        raise typer.Exit(EXIT_CONFLICTS)
