"""`bocb weights`: the per-layer table of a checkpoint, state-dict file or stored trial, plus plots."""
from __future__ import annotations

from pathlib import Path

import typer

from bocb.cli._app import app
from bocb.errors import DataError, SpecError


def _parse_topk(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise SpecError("--topk", f"got '{text}'; expected an int >= 1 or a fraction in (0, 1]") from None


def _print_table(table, title: str) -> None:  # noqa: ANN001 - a DataFrame; pandas imported lazily
    from rich.console import Console
    from rich.table import Table

    view = Table(title=title, show_lines=False)
    for column in table.columns:
        if table[column].dtype == object:  # names and shapes: never cut short
            view.add_column(column, justify="left", min_width=int(table[column].astype(str).str.len().max()))
        else:
            view.add_column(column, justify="right")
    for row in table.itertuples(index=False):
        view.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console(width=max(160, Console().width)).print(view)


@app.command()
def weights(
    target: str = typer.Argument(..., metavar="CHECKPOINT_OR_TRIAL_KEY",
                                 help="a bocb checkpoint or state-dict file (.pt/.pth/.bin/.ckpt/.safetensors), "
                                      "or a stored trial's key (with --store)"),
    csv: Path | None = typer.Option(None, "--csv", help="also write the table as CSV, one row per layer"),
    store: str | None = typer.Option(None, "--store", help="SQLAlchemy URL or SQLite path holding the trial"),
    out: Path = typer.Option(Path("bocb-weights"), "-o", "--out", help="directory for the plots"),
    topk: str = typer.Option("5", "--topk", help="principal components in topk_energy: int, or a fraction"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="write ridge plots and the alpha bar chart"),
) -> None:
    """Print alpha (WeightWatcher 0.7.7), norms, entropies and top-k PCA energy per layer."""
    import torch

    from bocb.weights import load_layer_table

    torch.set_num_threads(1)  # per-layer SVDs are small: extra threads only contend (8x slower measured)
    table = load_layer_table(target, store_url=store, topk=_parse_topk(topk))
    _print_table(table, title=f"layers of {target}")
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        typer.echo(f"table written: {csv}")
    if plots:
        from bocb.weights.plots import write_weight_plots

        label = Path(target).stem if Path(target).is_file() else target
        written = write_weight_plots(table.assign(backbone=label, optimizer=label), out)
        typer.echo(f"{len(written)} plots written to {out}")


@app.command()
def models(
    store: str = typer.Argument(..., help="SQLAlchemy URL or SQLite path"),
    benchmark: str | None = typer.Option(None, "--benchmark", help="benchmark id; default: the latest"),
    artifact_root: Path | None = typer.Option(None, "--artifact-root", help="default: the spec's (as bocb worker)"),
) -> None:
    """List the kept final weights of a benchmark's trials (keep_weights in the spec), with their numbers."""
    from rich.table import Table

    from bocb.cli._app import benchmark_id_of, kept_weights_root, missing_kept, open_store, print_table
    from bocb.kept import kept_path, verify_kept
    from bocb.protocol import with_config

    db = open_store(store)
    benchmark_id = benchmark_id_of(db, benchmark)
    root = kept_weights_root(db, benchmark_id, artifact_root)
    table = Table("trial", "backbone", "optimizer", "configuration", "seed", "test top-1", "MB", "file",
                  title=f"kept weights of benchmark {benchmark_id} under {root}")
    kept, damaged = 0, []
    trials = db.trials_frame(benchmark_id)
    for row in with_config(trials).itertuples():
        path = kept_path(root, row.trial_key)
        if not path.is_file():
            continue
        try:  # each file checked as loading it would (digest, then format): only a loadable model is listed as one
            value = verify_kept(path)["final"].get("test_top1")
            top1 = f"{value:.2f}" if isinstance(value, (int, float)) else "—"
            kept += 1
        except DataError as exc:
            top1 = "damaged"
            damaged.append(str(exc).removeprefix("kept weights: "))
        table.add_row(row.trial_key[:10], row.backbone, row.optimizer, row.config,
                      str(row.seed), top1, f"{path.stat().st_size / 2**20:.1f}", str(path))
    print_table(table)
    typer.echo(f"{kept} kept model(s); load one with bocb.kept.load_kept_into(model, path), or inspect its layers "
               "with `bocb weights PATH`")
    missing = missing_kept(db, benchmark_id, root, trials)
    if missing:  # say so: a store imported without its weights, a folder moved or cleaned
        typer.echo(f"note: {len(missing)} kept model(s) the benchmark's keep_weights says exist are not under "
                   f"{root} (first: {missing[0][:10]})")
    if damaged:
        # A damaged model stays in the table, marked, rather than skipped: its user learns it is there but
        # unusable (re-import it from a bundle, or rerun its trial). Exit 2 with one line, as any bad file:
        # a script that reads this list must not take it for whole.
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise DataError(f"kept weights: {len(damaged)} damaged, not counted: {damaged[0]}{more}")
