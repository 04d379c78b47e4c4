"""`bocb status`: where a benchmark stands while workers run it (reads the store, trains nothing)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from bocb.cli._app import app, benchmark_id_of, open_store, print_table
from bocb.errors import SpecError

if TYPE_CHECKING:
    import pandas as pd


@app.command()
def status(
    store: str = typer.Argument(..., help="SQLAlchemy URL or SQLite path"),
    benchmark: str | None = typer.Option(None, "--benchmark", help="benchmark id; default: the latest"),
    stale_after: float = typer.Option(120.0, "--stale-after", min=1.0,
                                      help="flag running trials whose heartbeat is older (as `bocb worker`)"),
) -> None:
    """Trials per stage and state, the running ones with their epoch and heartbeat, the failed ones' errors."""
    from bocb.protocol import FINISHED, UNFINISHED, TrialState  # here: `bocb --help` need not import pandas

    states = tuple(s.value for s in (*UNFINISHED, *FINISHED))
    db = open_store(store)
    benchmark_id = benchmark_id_of(db, benchmark)
    trials = db.trials_frame(benchmark_id)
    if trials.empty:
        raise SpecError("STORE", f"benchmark {benchmark_id} has no trials planned")
    counts = trials.groupby("stage", sort=False)["state"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=states, fill_value=0)
    table = Table("stage", *states, title=f"benchmark {benchmark_id} ({trials['benchmark_name'].iloc[0]})")
    for stage, row in counts.iterrows():
        table.add_row(stage, *(str(row[s]) for s in states))
    print_table(table)
    finished = trials["state"].isin([s.value for s in FINISHED]).sum()
    typer.echo(f"{finished} of {len(trials)} trials finished")
    running = trials[trials["state"] == TrialState.RUNNING]
    if len(running):
        epochs = db.epochs_frame(benchmark_id).groupby("trial_key")["epoch"].max()
        print_table(_running_table(running, epochs, stale_after, time.time()))
    failed = trials[trials["state"] == TrialState.FAILED]
    for _, row in failed.iterrows():
        error = (row["error"] if isinstance(row["error"], str) else "").strip().splitlines() or ["(no message)"]
        typer.echo(f"failed {row['trial_key'][:10]} {row['backbone']} + {row['optimizer']} {row['config']}: "
                   f"{error[0]}")


def _running_table(running: pd.DataFrame, last_epoch: pd.Series, stale_after: float, now: float) -> Table:
    table = Table("trial", "pair", "configuration", "epochs done", "worker", "heartbeat", "attempt")
    for _, row in running.iterrows():
        done = last_epoch.get(row["trial_key"], -1) + 1
        age = now - row["heartbeat_at"]
        beat = f"{age:.0f} s ago" + (" (stale: will be reclaimed)" if age > stale_after else "")
        table.add_row(row["trial_key"][:10], f"{row['backbone']} + {row['optimizer']}", row["config"],
                      f"{done}/{row['epochs']}", str(row["worker"]), beat, str(row["attempts"]))
    return table
