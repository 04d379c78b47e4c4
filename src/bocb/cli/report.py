"""`bocb report` (HTML/Markdown/LaTeX report of a store or CSV) and `bocb paper` (the paper's tables)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bocb.cli._app import app, benchmark_id_of, check_output_dir, open_store
from bocb.errors import SpecError

if TYPE_CHECKING:
    from bocb.paper import ComparePaper


@app.command()
def report(
    source: str = typer.Argument(..., help="results CSV, a store's .db file, or an SQLAlchemy URL"),
    out: Path = typer.Option(..., "-o", "--out", help="output directory"),
    gamma: float | None = typer.Option(None, help="Eq. 1 gamma: 3 for CIFAR-100 and COCO, 1 for ImageNet; "
                                                  "default: the store's benchmark's, 3 for a CSV"),
    compare_paper: bool = typer.Option(False, "--compare-paper",
                                       help="put the paper's numbers beside ours; refused (exit code 2) unless "
                                            "ours are the table's dataset with paper-size models"),
    compare_anyway: bool = typer.Option(False, "--compare-paper-anyway",
                                        help="--compare-paper even across datasets or model sizes, labelled "
                                             "'not comparable' (for orientation only)"),
    paper_table: int | None = typer.Option(None, help="the paper table to compare with: 1 (CIFAR-100) or 2 "
                                                      "(ImageNet-1K); default: the one of the setting the "
                                                      "results' dataset follows"),
    n_boot: int = typer.Option(1000, help="bootstrap replicates for the interaction shares' CIs"),
    benchmark: str | None = typer.Option(None, "--benchmark", help="a store's benchmark id (or its start); default: "
                                                                   "the latest that is not a transfer part"),
) -> None:
    """Analyse results and write index.html, report.md, heatmap.tex, CSVs and PNG/SVG figures into OUT: for a
    store, the report `bocb run` writes (its transfer part included)."""
    from bocb.report import write_report

    if gamma is not None and not 0 < gamma < math.inf:  # NaN fails both comparisons
        raise SpecError("--gamma", f"must be > 0 and finite, got {gamma:g}")
    if n_boot < 1:
        raise SpecError("--n-boot", f"must be >= 1, got {n_boot}")
    check_output_dir(out, "--out")
    comparison = _paper_request(compare_paper, compare_anyway, paper_table)
    chosen = None
    if benchmark is not None:
        if source.lower().endswith(".csv"):
            raise SpecError("--benchmark", "selects a benchmark of a store; SOURCE is a CSV file")
        chosen = benchmark_id_of(open_store(source), benchmark)
    page = write_report(source, out, gamma=gamma, compare_paper=comparison, n_boot=n_boot, benchmark_id=chosen)
    typer.echo(f"report written: {page}")


def _paper_request(compare: bool, anyway: bool, table: int | None) -> ComparePaper | None:
    """What the comparison options ask for (None: no comparison); a table alone is a mistake, not ignored."""
    from bocb.paper import COMPARED_TABLES, ComparePaper, check_table

    if not (compare or anyway):
        if table is not None:
            raise SpecError("--paper-table", "chooses the table of --compare-paper; give --compare-paper (or "
                                             "--compare-paper-anyway) too")
        return None
    return ComparePaper(None if table is None else check_table(table, COMPARED_TABLES, "--paper-table"), anyway)


@app.command()
def paper(
    table: int = typer.Option(1, "--table", help="1 CIFAR-100, 2 ImageNet-1K, 3 COCO, 4 rankings"),
    fmt: str = typer.Option("table", "--format", help="table, csv, markdown or json"),
) -> None:
    """Run our analysis on the paper's published tables (Eq. 1 failures, top-4, summaries, ranking)."""
    from bocb.paper import paper_text

    typer.echo(paper_text(table, fmt), nl=False)
