"""`bocb check TARGET`: a backbone or an optimizer of your own through the gauntlet, in one command."""
from __future__ import annotations

from pathlib import Path

import typer

from bocb.cli._app import app, check_output_dir, resumable_on_interrupt
from bocb.errors import SpecError


def _names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


@app.command()
def check(
    target: str = typer.Argument(..., help="a backbone or an optimizer: a registry name, package.module:factory "
                                           "(a backbone), package.module:Class (a torch.optim.Optimizer)"),
    backbone: bool = typer.Option(False, "--backbone", help="TARGET is a backbone (when a name is both)"),
    optimizer: bool = typer.Option(False, "--optimizer", help="TARGET is an optimizer (when a name is both)"),
    preset: str = typer.Option("quick", "--preset", help="the panel and its protocol: quick (default), fashion"),
    optimizers: str | None = typer.Option(None, "--optimizers", help="the panel's optimizers, comma-separated, "
                                                                      "or 'paper' for the paper's 20"),
    backbones: str | None = typer.Option(None, "--backbones", help="the panel's backbones, comma-separated"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="default: the preset's"),
    out: Path = typer.Option(Path("bocb-check"), "--out", "-o", help="bocb.db, report/"),
    store: str | None = typer.Option(None, "--store", help="SQLAlchemy URL or SQLite path; default OUT/bocb.db"),
    workers: int | None = typer.Option(None, "--workers", min=1, help="local worker processes; default one per core"),
    plan_only: bool = typer.Option(False, "--plan-only", help="plan; run nothing (for `bocb worker`)"),
    report: bool = typer.Option(True, "--report/--no-report", help="write OUT/report"),
) -> None:
    """Train TARGET against a reference panel and say whether it is coupled (a backbone) or where it fails
    (an optimizer), and where it falls among the panel on the paper's statistics."""
    from bocb.check import gauntlet, paper_optimizers, plan_check

    if backbone and optimizer:
        raise SpecError("--backbone", "give --backbone or --optimizer, not both")
    check_output_dir(out, "--out")
    panel_optimizers = paper_optimizers() if optimizers == "paper" else _names(optimizers)
    g = gauntlet(target, "backbone" if backbone else "optimizer" if optimizer else None, preset,
                 _names(backbones), panel_optimizers, epochs)
    run = plan_check(g, out, store)
    typer.echo(f"checking the {g.kind} {g.target} against {len(g.panel)} "
               f"{'optimizers' if g.kind == 'backbone' else 'backbones'} ({', '.join(g.panel)}) by the {preset} "
               f"protocol; reference cells: {run.reference_from}")
    if plan_only:
        typer.echo(f"planned in {run.store.url}; start workers with: bocb worker --store {run.store.url}, then "
                   "run this command again for the answer")
        return
    with resumable_on_interrupt():
        _train(run, out, workers)
    code = _print_and_write(run, out, report)
    if code:
        raise typer.Exit(code)


def _train(run, out: Path, workers: int | None) -> None:  # noqa: ANN001 - a bocb.check.CheckRun
    from bocb.check import _unfinished
    from bocb.devices import check_device
    from bocb.sweep import artifact_root_for, executor_for
    from bocb.sweep.worker import WorkerOptions, stop_on_sigterm

    g = run.gauntlet
    check_device(g.candidate.device)
    with stop_on_sigterm():
        for spec, benchmark_id, what in ((g.reference, run.reference_id, "reference cells"),
                                         (g.candidate, run.candidate_id, f"cells of {g.target}")):
            if not _unfinished(run.store, benchmark_id):
                continue
            executor = executor_for(spec, workers)
            executor.check()
            typer.echo(f"training the {what} ...", err=True)
            options = WorkerOptions(artifact_root=artifact_root_for(spec, run.store.url, out))
            executor.run(run.store, benchmark_id, spec, options, None)


def _print_and_write(run, out: Path, report: bool) -> int:  # noqa: ANN001 - a bocb.check.CheckRun
    import pandas as pd

    from bocb.analysis import analyse, format_matrix
    from bocb.check import cache_reference, paper_orientation, placement, verdict_lines
    from bocb.cli.run import EXIT_CRASHED, count_line

    g = run.gauntlet
    trials = pd.concat([run.store.trials_frame(run.reference_id), run.store.trials_frame(run.candidate_id)],
                       ignore_index=True)
    if cache_reference(run):
        typer.echo(f"reference cells kept for the next check: {run.cached}", err=True)
    result = analyse(trials, run.store.epochs_frame(), gamma=g.reference.rules.gamma, alpha=g.reference.rules.alpha)
    typer.echo("\n".join(verdict_lines(result, g)))
    marked = f"{g.target} <- checked"
    matrix = result.matrix.rename(columns={g.target: marked}, index={g.target: marked})
    typer.echo(f"\ntop-1 (test) of the configuration with the best {result.selected_on}:")
    typer.echo(format_matrix(matrix, "table"))
    where = placement(result, g)
    if not where.empty:
        typer.echo(f"where {g.target} falls among the {where['of'].iloc[0]} "
                   f"{'backbones' if g.kind == 'backbone' else 'optimizers'} of this check (rank 1 = lowest):")
        for row in where.itertuples():
            typer.echo(f"  {row.statistic}: {row.value:.{0 if float(row.value).is_integer() else 2}f} "
                       f"(rank {row.rank} of {row.of})")
    orientation = paper_orientation(result, g)
    if orientation:
        typer.echo(orientation)
    counts = trials["state"].value_counts()
    typer.echo(count_line(counts))
    if report:
        from bocb.report import render_report

        typer.echo("writing the report ...", err=True)
        page = render_report(result, out / "report", layers=run.store.layers_frame(),
                             title=f"bocb check: the {g.kind} {g.target} against the {len(g.panel)}-entry panel")
        typer.echo(f"report: {page}")
    return EXIT_CRASHED if counts.get("failed", 0) else 0
