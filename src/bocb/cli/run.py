"""`bocb run`, `bocb results`, `bocb worker`: plan, execute and read a benchmark."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bocb.cli._app import (
    app,
    benchmark_id_of,
    check_output_dir,
    confirm_budget,
    open_store,
    resumable_on_interrupt,
)
from bocb.errors import SpecError, unknown_name_message

# bocb.spec and bocb.protocol (pydantic, pandas) are imported by the commands that use them: `bocb --help`
# imports every command module, and must not wait for them
if TYPE_CHECKING:
    import pandas as pd

    from bocb.analysis import Analysis, StoreAnalysis
    from bocb.estimate import PlanCost
    from bocb.spec import BenchmarkSpec
    from bocb.sweep import BenchmarkRun

DEFAULT_BUDGET_HOURS = 24.0  # a plan estimated at up to a day trains without asking


def _spec_from_args(spec_path: Path | None, preset: str | None, overrides: dict,
                    check_data: bool = True) -> BenchmarkSpec:
    from bocb.spec import load_preset, load_spec, parse_spec

    if spec_path is not None and preset is not None:
        raise SpecError("--preset", "give a SPEC file or --preset, not both")
    spec = (load_spec(spec_path, check_data) if spec_path is not None
            else load_preset("quick" if preset is None else preset, check_data))
    if not overrides:
        return spec
    data = spec.model_dump(mode="json", exclude_unset=True)
    for dotted, value in overrides.items():
        target = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return parse_spec(data, check_data)


@app.command()
def run(
    spec_path: Path | None = typer.Argument(None, metavar="[SPEC]", help="YAML spec; default: the quick preset"),
    preset: str | None = typer.Option(None, "--preset", help="a built-in spec: quick (default), fashion, "
                                                             "transfer, paper_cifar100, paper_imagenet"),
    out: Path = typer.Option(Path("bocb-results"), "--out", "-o", help="results.csv, bocb.db, report/"),
    store: str | None = typer.Option(None, "--store", help="SQLAlchemy URL or SQLite path; default OUT/bocb.db"),
    workers: int | None = typer.Option(None, "--workers", min=1, help="local worker processes (default one per "
                                       "core) or Ray tasks (default: as many as the cluster fits)"),
    executor: str | None = typer.Option(None, "--executor", help="local | ray"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address; default: start a local one"),
    plan_only: bool = typer.Option(False, "--plan-only", help="print the plan and its estimated cost, register "
                                                              "and plan it; run nothing (for `bocb worker`)"),
    budget_hours: float = typer.Option(DEFAULT_BUDGET_HOURS, "--budget-hours", min=0.0,
                                       help="a plan estimated to take longer asks for --yes before training"),
    yes: bool = typer.Option(False, "--yes", "-y", help="train a plan over --budget-hours without asking"),
    extend_edges: int | None = typer.Option(None, "--extend-edges", min=0,
                                            help="add up to N grid steps past an edge best "
                                                 "(default 3 if given bare)"),
    report: bool = typer.Option(True, "--report/--no-report", help="write OUT/report at the end"),
) -> None:
    """Run a benchmark (default: the quick preset) and print its top-1 matrix."""
    from bocb.spec import EXECUTORS

    overrides: dict = {}
    if executor is not None:
        if executor not in EXECUTORS:
            raise SpecError("--executor", unknown_name_message("executor", executor, EXECUTORS))
        overrides["executor"] = executor
    if extend_edges is not None:
        overrides["search.extend_edges"] = extend_edges
    spec = _spec_from_args(spec_path, preset, overrides, check_data=not plan_only)
    check_output_dir(out, "--out")
    from bocb.estimate import estimate_plan, plan_lines
    from bocb.sweep import executor_for, plan_benchmark, run_benchmark, store_url_for, verify_data

    store_url_for(spec, out, store)  # before the plan is timed, as are the data files (planning checks again)
    verify_data(spec)

    started = time.perf_counter()
    if plan_only:  # planning on a machine that will not train: missing data files are the workers' to have
        cost = estimate_plan(spec, workers)
        typer.echo("\n".join(plan_lines(cost)))
        _note_missing_data(spec)
        if cost.wall_hours is not None and cost.wall_hours > budget_hours:
            typer.echo(f"note: over the budget of {budget_hours:g} h: `bocb run` asks for --yes before training it")
        planned = plan_benchmark(spec, out, store)
        _say_retried(planned.retried)
        part = f" and its transfer part {planned.transfer_id}" if planned.transfer_id else ""
        typer.echo(f"planned benchmark {planned.benchmark_id}{part} in {planned.store_url}; "
                   f"start workers with: bocb worker --store {planned.store_url}")
        return
    if spec.executor == "local":  # Ray workers have their own devices; this machine may have none
        from bocb.devices import check_device

        check_device(spec.device)
    executor_for(spec, workers, address).check()  # before the plan is timed and anything is stored
    cost = estimate_plan(spec, workers)
    asked = _confirm_budget(cost, budget_hours, yes)
    from bocb.sweep.worker import stop_on_sigterm

    def on_planned(planned: BenchmarkRun) -> None:  # the store is sound and nothing has trained yet
        if not asked:
            typer.echo("\n".join(plan_lines(cost)), err=True)
        _say_retried(planned.retried)

    with resumable_on_interrupt(), stop_on_sigterm():  # SIGTERM (a scheduler, `kill`) stops as Ctrl-C does
        done = run_benchmark(spec, out, store, workers=workers, address=address, on_planned=on_planned)
    code = _print_and_write(done, spec, report)
    typer.echo(f"finished in {time.perf_counter() - started:.0f} s; results in {done.out_dir}/")
    if code:
        raise typer.Exit(code)


EXIT_CRASHED = 3  # the run finished, but some trials crashed (no result): rerunning the command retries them


def _note_missing_data(spec: BenchmarkSpec) -> None:
    from bocb.spec import check_dataset

    try:
        check_dataset(spec.dataset)
    except SpecError as exc:
        typer.echo(f"note: {exc} (not needed to plan; the machines that train need it)")


def _confirm_budget(cost: PlanCost, budget_hours: float, yes: bool) -> bool:
    """Train a plan over the budget only when told to (bocb.cli._app.confirm_budget); returns whether it
    asked (and so showed the plan)."""
    from bocb.estimate import plan_lines

    return confirm_budget(cost.wall_hours, f"the plan ({cost.trials} trials, {cost.epochs} GPU-epochs)", budget_hours,
                          yes, lambda: plan_lines(cost), "`bocb run --plan-only` prints the estimate",
                          f" ({cost.parallel} at a time on {cost.device})")


def _say_retried(retried: int) -> None:
    if retried:
        typer.echo(f"retrying {retried} crashed trial(s) of an earlier run", err=True)


def _print_and_write(done: BenchmarkRun, spec: BenchmarkSpec, report: bool) -> int:
    """Print the matrix, the verdicts and the trial count, write results.csv and the report; returns the
    exit code (EXIT_CRASHED when any trial crashed)."""
    from bocb.analysis import analyse_store
    from bocb.protocol import TrialState

    db = done.store
    every = db.trials_frame()  # every benchmark of the store: a second spec run into the same --out loses nothing
    trials = every[every["benchmark"] == done.benchmark_id].reset_index(drop=True)
    results_csv(every).to_csv(done.out_dir / "results.csv", index=False)
    if every["benchmark"].nunique() > 1:
        typer.echo(f"results.csv holds the {every['benchmark'].nunique()} benchmarks of this store "
                   f"(column benchmark; this one is {done.benchmark_id})", err=True)
    counts = trials["state"].value_counts()
    n_crashed = int(counts.get(TrialState.FAILED.value, 0))
    analysed = None
    if counts.get(TrialState.DONE.value, 0) + counts.get(TrialState.DIVERGED.value, 0):
        analysed = analyse_store(db, done.benchmark_id, transfer_id=done.transfer_id)  # as `bocb report` does
        result = analysed.result
        typer.echo(matrix_text(result))
        typer.echo(verdict_text(result.verdicts))
        typer.echo(edge_line(result.cells))
        for note in result.notes:
            typer.echo(f"note: {note}")
    typer.echo(count_line(counts))
    if n_crashed:
        errors = trials.loc[trials["state"] == TrialState.FAILED.value, "error"].fillna("").str.split("\n").str[0]
        typer.echo(f"first crash: {errors.iloc[0]} (`bocb status {done.store_url}` lists them all)", err=True)
    n_crashed_transfer = _print_transfer(done, spec, every, analysed) if done.transfer_id else 0
    if report and analysed is not None:
        from bocb.report import render_store_report

        say_report(lambda: render_store_report(analysed, done.out_dir / "report"))
    return EXIT_CRASHED if n_crashed + n_crashed_transfer else 0


def matrix_text(result: Analysis) -> str:
    """The top-1 matrix of the chosen configurations under its heading (`bocb run`, `bocb check`)."""
    from bocb.analysis import format_matrix

    return (f"top-1 (test) of the configuration with the best {result.selected_on}:\n"
            + format_matrix(result.matrix, "table"))


def say_report(render: Callable[[], Path]) -> None:
    """Write the report (which takes a while: said first, on stderr) and print where it is."""
    typer.echo("writing the report ...", err=True)
    typer.echo(f"report: {render()}")


def _print_transfer(done: BenchmarkRun, spec: BenchmarkSpec, every: pd.DataFrame,
                    analysed: StoreAnalysis | None) -> int:
    """Print the transfer part's matrices, verdicts and trial count; returns its crashes."""
    from bocb.analysis import format_transfer
    from bocb.protocol import TrialState

    counts = every.loc[every["benchmark"] == done.transfer_id, "state"].value_counts()
    if analysed is not None and analysed.transfer is not None:
        typer.echo(format_transfer(analysed.transfer, spec.transfer.dataset.name))
    typer.echo(f"transfer: {count_line(counts)}")
    return int(counts.get(TrialState.FAILED.value, 0))


def edge_line(cells: pd.DataFrame) -> str:
    """Whether any chosen configuration sits at an edge of its grid (its optimum may lie outside)."""
    edges = cells[cells["edge"]]
    if edges.empty:
        return f"grid edges: none of the {len(cells)} chosen configurations is at an edge of its searched grid"
    names = ", ".join(f"{r.backbone} + {r.optimizer} ({'lr' if r.lr_edge else 'wd'} {r.lr_edge or r.wd_edge})"
                      for r in edges.itertuples())
    return (f"grid edges: {len(edges)} of {len(cells)} chosen configurations at an edge (the optimum may lie "
            f"outside; search.extend_edges extends past it): {names}")


def count_line(counts: pd.Series) -> str:
    """'110 trials: 108 done, 2 diverged (scored at chance), 0 crashed'."""
    from bocb.protocol import TrialState

    get = lambda state: int(counts.get(state.value, 0))  # noqa: E731
    crashed = get(TrialState.FAILED)
    line = (f"{int(counts.sum())} trials: {get(TrialState.DONE)} done, {get(TrialState.DIVERGED)} diverged "
            f"(scored at chance), {crashed} crashed")
    if crashed:
        line += f" (not scored; exit code {EXIT_CRASHED}; run the same command again to retry them)"
    return line


def verdict_text(verdicts: pd.DataFrame) -> str:
    """The per-backbone verdict as a few aligned lines: backbone, verdict, optimizers to use, and why."""
    width = max(len(b) for b in verdicts["backbone"])
    lines = ["verdict per backbone (use = the best optimizer and those tied with it within seed noise):"]
    for row in verdicts.itertuples():
        lines.append(f"  {row.backbone:<{width}}  {row.verdict:<38} use: {row.recommended}")
        lines.append(f"  {'':<{width}}  {row.explanation}")
    return "\n".join(lines)


RAW_COLUMNS = ("config_json", "provenance_json")


def results_csv(trials: pd.DataFrame) -> pd.DataFrame:
    """The one-row-per-trial table written as results.csv (raw JSON blobs left in the store)."""
    return trials.drop(columns=[c for c in RAW_COLUMNS if c in trials.columns])


@app.command()
def results(
    store: str = typer.Argument(..., help="SQLAlchemy URL or SQLite path"),
    fmt: str = typer.Option("table", "--format", help="table | csv | markdown | json"),
    benchmark: str | None = typer.Option(None, "--benchmark", help="benchmark id; default: the latest"),
    value: str = typer.Option("test_top1", "--value", help="cell value: test_top1, val_top1, test_top1_std, ..."),
) -> None:
    """Print the top-1 matrix of a store (optimizers as rows, backbones as columns)."""
    from bocb.analysis import FORMATS, format_matrix, matrix, missing_cells, select_cells, tidy

    if fmt not in FORMATS:
        raise SpecError("--format", unknown_name_message("format", fmt, FORMATS))
    db = open_store(store)
    trials = db.trials_frame(benchmark_id_of(db, benchmark))
    cells = select_cells(trials)
    typer.echo(format_matrix(matrix(cells, value, missing_cells(tidy(trials), cells)), fmt), nl=False)


@app.command()
def worker(
    store: str = typer.Option(..., "--store", help="SQLAlchemy URL of a store planned with `bocb run --plan-only`"),
    benchmark: str | None = typer.Option(None, "--benchmark", help="benchmark id; default: every one in the store"),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads of this worker"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N; default: the spec's"),
    artifact_root: Path | None = typer.Option(None, "--artifact-root", help="checkpoints; default: the spec's"),
    stale_after: float = typer.Option(120.0, "--stale-after", min=1.0, help="seconds without heartbeat = abandoned"),
    heartbeat: float = typer.Option(10.0, "--heartbeat", min=0.1, help="seconds between heartbeats"),
    max_trials: int | None = typer.Option(None, "--max-trials", min=1, help="stop after this many trials"),
) -> None:
    """Claim and run trials of a planned benchmark until it is complete (one process; start many)."""
    from bocb.devices import check_device
    from bocb.sweep import stored_artifact_root
    from bocb.sweep.worker import Assignment, WorkerOptions, load_benchmark, worker_loop

    db = open_store(store, write=True)  # checked and upgraded here, once; the loop reopens it unchecked
    chosen = benchmark_id_of(db, benchmark) if benchmark else None
    first = chosen or benchmark_id_of(db, None)
    check_device(device or load_benchmark(db, first).device, "--device" if device else "device")
    root = artifact_root or stored_artifact_root(db, first)
    options = WorkerOptions(artifact_root=root, threads=threads, device=device, stale_after_s=stale_after,
                            heartbeat_s=heartbeat, max_trials=max_trials)
    with resumable_on_interrupt():
        ran = worker_loop(Assignment(db.url, chosen, None, options))  # each benchmark's stored spec
    typer.echo(f"worker ran {ran} trial(s)")
