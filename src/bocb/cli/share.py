"""`bocb export` and `bocb import`: a benchmark's finished results as one file that travels, and merging
such files from several machines into one store (keys decide)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bocb.cli._app import app, benchmark_id_of, check_output_dir, kept_weights_root, missing_kept, open_store
from bocb.errors import SpecError

if TYPE_CHECKING:
    from bocb.store import Store

EXIT_CONFLICTS = 4  # the import merged what it could; the store holds other results for some trials


@app.command("export")
def export(
    store: str = typer.Argument(..., help="SQLAlchemy URL or SQLite path"),
    out: Path | None = typer.Option(None, "-o", "--out", help="the bundle file to write (a .zip)"),
    benchmark: str | None = typer.Option(None, "--benchmark", help="benchmark id; default: the latest"),
    force: bool = typer.Option(False, "--force", help="replace the file if it exists"),
    weights: bool = typer.Option(False, "--weights", help="include the kept final weights (keep_weights)"),
    artifact_root: Path | None = typer.Option(None, "--artifact-root", help="where the kept weights are; "
                                              "default: the spec's (as bocb worker)"),
    tensorboard: Path | None = typer.Option(None, "--tensorboard", help="write TensorBoard event files here: "
                                            "a run per trial (extra bocb[tensorboard])"),
    mlflow: str | None = typer.Option(None, "--mlflow", help="log a run per trial to this MLflow tracking URI, "
                                      "e.g. sqlite:///mlflow.db (extra bocb[mlflow])"),
) -> None:
    """Write a benchmark's finished trials, epochs, layer tables, spec and provenance to one bundle (-o); or
    its scored trials, curves and hyper-parameters to TensorBoard (--tensorboard) or MLflow (--mlflow)."""
    if out is None and tensorboard is None and mlflow is None:
        raise SpecError("-o", "give a bundle file (-o), a TensorBoard directory (--tensorboard) or an MLflow "
                        "tracking URI (--mlflow)")
    if weights and out is None:
        raise SpecError("--weights", "goes into a bundle: give -o FILE as well")
    if tensorboard is not None:
        check_output_dir(tensorboard, "--tensorboard")
    db = open_store(store)
    benchmark_id = benchmark_id_of(db, benchmark)
    if tensorboard is not None or mlflow is not None:
        _to_trackers(db, benchmark_id, tensorboard, mlflow)
    if out is not None:
        from bocb.bundle import export_bundle

        root = _complete_kept_weights(db, benchmark_id, artifact_root) if weights else None
        counts = export_bundle(db, benchmark_id, out, overwrite=force, weights_root=root)
        typer.echo(f"exported benchmark {benchmark_id}: {counts['trials']} finished trials, {counts['epochs']} "
                   f"epochs, {counts['layer_tables']} layer tables, {counts['weights']} kept models -> {out}")


def _complete_kept_weights(db: Store, benchmark_id: str, artifact_root: Path | None) -> Path:
    """The folder of the benchmark's kept weights, refused when any it should hold is missing: a bundle asked
    for with --weights must not travel with fewer models than the benchmark kept, silently."""
    root = kept_weights_root(db, benchmark_id, artifact_root)
    missing = missing_kept(db, benchmark_id, root, db.trials_frame(benchmark_id))
    if missing:
        raise SpecError("--weights", f"{len(missing)} kept model(s) the benchmark's keep_weights says exist are not "
                                     f"under {root} (first: {missing[0][:10]}); give --artifact-root, or export "
                                     "without --weights")
    return root


def _to_trackers(db: Store, benchmark_id: str, tensorboard: Path | None, mlflow: str | None) -> None:
    from bocb.trackers import to_mlflow, to_tensorboard, trial_runs

    trials = db.trials_frame(benchmark_id)
    runs = trial_runs(trials, db.epochs_frame(benchmark_id))
    if tensorboard is not None:
        done = to_tensorboard(runs, tensorboard / benchmark_id)
        typer.echo(f"tensorboard: {done.added} runs added, {done.present} already there -> "
                   f"{tensorboard / benchmark_id} (open: tensorboard --logdir {tensorboard})")
    if mlflow is not None:
        name = f"bocb {trials['benchmark_name'].iloc[0] if len(trials) else ''} {benchmark_id}"
        done = to_mlflow(runs, mlflow, name)
        typer.echo(f"mlflow: {done.added} runs added, {done.present} already there -> experiment '{name}' "
                   f"at {mlflow} (open: mlflow ui --backend-store-uri {mlflow})")


@app.command("import")
def import_(
    bundle: Path = typer.Argument(..., help="a bundle written by `bocb export`"),
    store: str = typer.Option(..., "--store", help="SQLAlchemy URL or SQLite path (created if missing)"),
    artifact_root: Path | None = typer.Option(None, "--artifact-root", help="where its kept weights go; "
                                              "default: the benchmark's artifact root beside the store"),
) -> None:
    """Merge a bundle into a store, keys deciding: new trials added, equal ones skipped, others listed (exit 4)."""
    from bocb.bundle import import_bundle

    merged = import_bundle(bundle, store, artifact_root)  # the store is opened only once the bundle passed
    typer.echo(f"imported {bundle}: {merged.added} trials added, {merged.present} already there, "
               f"{len(merged.conflicts)} in conflict")
    if merged.conflicts:
        keys = ", ".join(k[:10] for k in merged.conflicts[:10])
        typer.echo(f"conflicts: the store holds other results for {len(merged.conflicts)} trial(s), kept as "
                   f"stored: {keys}{' ...' if len(merged.conflicts) > 10 else ''}", err=True)
        raise typer.Exit(EXIT_CONFLICTS)
