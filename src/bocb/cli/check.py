"""`bocb check TARGET`: a backbone or an optimizer of your own through the gauntlet, in one command."""
from __future__ import annotations

from pathlib import Path

import typer

from bocb.cli._app import app, check_output_dir, confirm_budget, resumable_on_interrupt
from bocb.cli.run import DEFAULT_BUDGET_HOURS
from bocb.errors import SpecError


def _names(text: str | None, field: str) -> list[str] | None:
    """A comma-separated list of names; None when not given. Given but naming nothing (',,,'): refused, not
    read as "the preset's"."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise SpecError(field, f"'{text}' names nothing: give comma-separated names, or leave {field} out")
    return names


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
    budget_hours: float = typer.Option(DEFAULT_BUDGET_HOURS, "--budget-hours", min=0.0,
                                       help="a check estimated to take longer asks for --yes before training"),
    yes: bool = typer.Option(False, "--yes", "-y", help="train a check over --budget-hours without asking"),
    report: bool = typer.Option(True, "--report/--no-report", help="write OUT/report"),
) -> None:
    """Train TARGET against a reference panel and say whether it is coupled (a backbone) or where it fails
    (an optimizer), and where it falls among the panel on the paper's statistics."""
    from bocb.check import gauntlet, paper_optimizers, plan_check

    if backbone and optimizer:
        raise SpecError("--backbone", "give --backbone or --optimizer, not both")
    check_output_dir(out, "--out")
    panel_optimizers = paper_optimizers() if optimizers == "paper" else _names(optimizers, "--optimizers")
    g = gauntlet(target, "backbone" if backbone else "optimizer" if optimizer else None, preset,
                 _names(backbones, "--backbones"), panel_optimizers, epochs)
    run = plan_check(g, out, store)
    typer.echo(f"checking the {g.kind} {g.target} against {len(g.panel)} "
               f"{'optimizers' if g.kind == 'backbone' else 'backbones'} ({', '.join(g.panel)}) by the {preset} "
               f"protocol; reference cells: {run.reference_from}")
    cost = _say_cost(run, workers)
    if plan_only:
        typer.echo(f"planned in {run.store.url}; start workers with: bocb worker --store {run.store.url}, then "
                   "run this command again for the answer")
        return
    confirm_budget(cost, f"this check ({_to_train(run)})", budget_hours, yes, lambda: [],
                   "`bocb check --plan-only` prints the estimate")
    with resumable_on_interrupt():
        _train(run, out, workers)
    code = _print_check_and_write(run, out, report)
    if code:
        raise typer.Exit(code)


def _parts(run) -> list[tuple]:  # noqa: ANN001 - a bocb.check.CheckRun
    """(spec, benchmark id, what) of the check's benchmarks that have trials to train."""
    from bocb.check import unfinished

    g = run.gauntlet
    parts = ((g.reference, run.reference_id, "the reference cells"), (g.candidate, run.candidate_id,
                                                                        f"the cells of {g.target}"))
    return [part for part in parts if unfinished(run.store, part[1])]


def _to_train(run) -> str:  # noqa: ANN001 - a bocb.check.CheckRun
    return " and ".join(what for _, _, what in _parts(run)) or "nothing"


def _say_cost(run, workers: int | None) -> float | None:  # noqa: ANN001 - a bocb.check.CheckRun
    """Print what training the check costs (the plan and its estimate per part, bocb.estimate) before any
    training; returns the estimated hours (None: unknown)."""
    from bocb.estimate import estimate_plan, plan_lines

    hours: list[float | None] = []
    for spec, _, what in _parts(run):
        cost = estimate_plan(spec, workers)
        typer.echo(f"{what}:\n" + "\n".join(plan_lines(cost)), err=True)
        hours.append(cost.wall_hours)
    return None if None in hours else sum(hours)


def _train(run, out: Path, workers: int | None) -> None:  # noqa: ANN001 - a bocb.check.CheckRun
    from bocb.devices import check_device
    from bocb.sweep import executor_for, train_planned
    from bocb.sweep.worker import stop_on_sigterm

    check_device(run.gauntlet.candidate.device)
    with stop_on_sigterm():
        for spec, benchmark_id, what in _parts(run):
            executor = executor_for(spec, workers)
            executor.check()
            typer.echo(f"training {what} ...", err=True)
            train_planned(executor, run.store, benchmark_id, spec)


def _print_check_and_write(run, out: Path, report: bool) -> int:  # noqa: ANN001 - a bocb.check.CheckRun
    from dataclasses import replace

    import pandas as pd

    from bocb.analysis import analyse
    from bocb.check import cache_reference, paper_orientation, placement, verdict_lines
    from bocb.cli.run import EXIT_CRASHED, count_line, matrix_text, say_report
    from bocb.protocol import TrialState

    g = run.gauntlet
    trials = pd.concat([run.store.trials_frame(run.reference_id), run.store.trials_frame(run.candidate_id)],
                       ignore_index=True)
    if cache_reference(run):
        typer.echo(f"reference cells kept for the next check: {run.cached}", err=True)
    marked = replace(g, target=f"{g.target} <- checked")  # so the matrix, every figure and table mark it
    trials[g.kind] = trials[g.kind].replace(g.target, marked.target)
    layers = run.store.layers_frame()
    if not layers.empty:
        layers[g.kind] = layers[g.kind].replace(g.target, marked.target)
    result = analyse(trials, run.store.epochs_frame(), gamma=g.reference.rules.gamma, alpha=g.reference.rules.alpha)
    typer.echo("\n".join(verdict_lines(result, marked)))
    typer.echo("\n" + matrix_text(result))
    where = placement(result, marked)
    if not where.empty:
        typer.echo(f"where {g.target} falls among the {where['of'].iloc[0]} "
                   f"{'backbones' if g.kind == 'backbone' else 'optimizers'} of this check (rank 1 = lowest):")
        for row in where.itertuples():
            typer.echo(f"  {row.statistic}: {row.value:.{0 if float(row.value).is_integer() else 2}f} "
                       f"(rank {row.rank} of {row.of})")
    orientation = paper_orientation(result, marked)
    if orientation:
        typer.echo(orientation)
    counts = trials["state"].value_counts()
    typer.echo(count_line(counts))
    if report:
        from bocb.report import render_report

        say_report(lambda: render_report(result, out / "report", layers=layers, title=f"bocb check: the {g.kind} "
                                         f"{g.target} against the {len(g.panel)}-entry panel"))
    return EXIT_CRASHED if counts.get(TrialState.FAILED.value, 0) else 0
