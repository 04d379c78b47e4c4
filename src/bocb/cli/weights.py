"""`bocb weights`: the per-layer table of a checkpoint, state-dict file or stored trial, plus plots."""
from __future__ import annotations

from pathlib import Path

import typer

from bocb.cli._app import app
from bocb.errors import SpecError


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
