"""`bocb compare A B`: two benchmarks side by side (stores, a store's benchmark, or results CSVs)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from bocb.cli._app import app, benchmark_id_of, check_output_dir, open_store, print_table
from bocb.errors import SpecError

if TYPE_CHECKING:
    import pandas as pd

    from bocb.analysis import Analysis, Comparison


@app.command()
def compare(
    a: str = typer.Argument(..., help="A: a store (.db file or SQLAlchemy URL) or a results CSV"),
    b: str = typer.Argument(..., help="B: the same kinds as A"),
    out: Path | None = typer.Option(None, "-o", "--out", help="also write compare.html, its figure and tables"),
    benchmark_a: str | None = typer.Option(None, "--benchmark-a", help="A's benchmark id (or its start)"),
    benchmark_b: str | None = typer.Option(None, "--benchmark-b", help="B's benchmark id (or its start)"),
    alpha: float = typer.Option(0.05, "--alpha", min=0.001, max=0.5, help="level of 'moved beyond seed noise'"),
    n_boot: int = typer.Option(1000, "--n-boot", min=10, help="bootstrap draws for the rank intervals"),
) -> None:
    """Verdicts side by side with each change's cause, the optimizers' rank agreement, the cells that moved
    beyond seed noise and what each side lacks; refuses two benchmarks that share no backbone and optimizer."""
    from bocb.analysis import compare as compare_analyses

    if out is not None:
        check_output_dir(out, "--out")
    sides = [_analysed(a, benchmark_a, "A"), _analysed(b, benchmark_b, "B")]
    comparison = compare_analyses(sides[0][0], sides[1][0], (sides[0][1], sides[1][1]), alpha=alpha, n_boot=n_boot)
    for letter, (result, label, _) in zip("AB", sides):
        typer.echo(f"{letter}: {label}: {len(result.trials)} trials, {result.matrix.shape[1]} backbones x "
                   f"{result.matrix.shape[0]} optimizers")
    _print(comparison)
    if out is not None:
        from bocb.report import write_comparison

        page = write_comparison(comparison, out, (sides[0][2], sides[1][2]))
        typer.echo(f"comparison written: {page}")


def _analysed(source: str, benchmark: str | None, side: str) -> tuple[Analysis, str, str]:
    """(analysis, label, where it came from) of one side, with its own rules' parameters."""
    from bocb.analysis import analyse, analyse_store, read_results
    from bocb.protocol import rule_parameters

    if source.lower().endswith(".csv"):
        if benchmark is not None:
            raise SpecError(f"--benchmark-{side.lower()}", f"selects a benchmark of a store; {source} is a CSV file")
        gamma, alpha = rule_parameters({})
        return analyse(read_results(source).trials, gamma=gamma, alpha=alpha), Path(source).stem, source
    db = open_store(source, field=side)
    chosen = benchmark_id_of(db, benchmark, f"--benchmark-{side.lower()}") if benchmark is not None else None
    analysed = analyse_store(db, chosen)
    chosen = analysed.benchmark_id
    name = db.benchmark_spec(chosen).get("name", "")
    return analysed.result, f"{name} {chosen[:8]}".strip(), f"{source}, benchmark {chosen}"


def _print(comparison: Comparison) -> None:
    from bocb.report import cell_rows, rank_rows

    a, b = comparison.labels
    verdicts = comparison.verdicts
    print_table(_table(verdicts[["backbone", "verdict_a", "verdict_b", "cause"]].rename(
        columns={"verdict_a": f"A: {a}", "verdict_b": f"B: {b}", "cause": "what changed, and why"}),
        f"verdicts of the {len(verdicts)} shared backbones: {int(verdicts['changed'].sum())} changed"))
    print_table(_table(rank_rows(comparison), "rank agreement of the optimizers: Kendall's τ, 95 % interval "
                                                  "from a parametric bootstrap over seeds"))
    moved = cell_rows(comparison, moved_only=True)
    title = (f"cells that moved beyond seed noise (standing: a cell minus its backbone's median cell; Holm over "
             f"{int(comparison.cells['p_holm'].notna().sum())} cells, α = {comparison.alpha:g}): {len(moved)}")
    if len(moved):
        print_table(_table(moved, title))
    else:
        typer.echo(title)
    typer.echo("; ".join(f"{what}: {', '.join(names) or 'none'}" for what, names in comparison.lacks.items()))


def _table(frame: pd.DataFrame, title: str) -> Table:
    table = Table(*map(str, frame.columns), title=title, title_justify="left")
    for row in frame.itertuples(index=False):
        table.add_row(*("" if v is None or v != v else str(v) for v in row))
    return table
