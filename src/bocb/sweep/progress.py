"""Where a running benchmark stands, told the same way by every executor: a live bar on a terminal, and off
one (a file, a pipe, a CI log) a plain line at most every ``every_s`` seconds, and one at the end."""
from __future__ import annotations

import time
from types import TracebackType

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bocb.protocol import FINISHED
from bocb.store import Store

LINE_EVERY_S = 30.0


class RunProgress:
    def __init__(self, store: Store, benchmark_id: str, console: Console, every_s: float = LINE_EVERY_S) -> None:
        self.store, self.benchmark_id, self.console, self.every_s = store, benchmark_id, console, every_s
        self._bar: Progress | None = None
        self._last_line = float("-inf")
        self._started = time.monotonic()

    def __enter__(self) -> RunProgress:
        if self.console.is_terminal:
            # the total is the trials planned so far: it grows as each stage is planned from the last one's results
            self._bar = Progress(TextColumn("[bold]{task.fields[stage]}"), BarColumn(bar_width=20),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                                 TextColumn("{task.fields[best]}"), console=self.console, transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task("trials", total=None, best="", stage="planning", eta="")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, error, trace)
        elif kind is None:
            self._last_line = float("-inf")
            self.update(workers=1)  # the final line, whenever the last one was

    def update(self, workers: int) -> None:
        """Read the store and show where the run stands (off a terminal: only if ``every_s`` has passed)."""
        if self._bar is None and time.monotonic() - self._last_line < self.every_s:
            return
        stages = self.store.stage_progress(self.benchmark_id)
        finished = stages["state"].isin([s.value for s in FINISHED])
        running = stages.loc[~finished, "stage"].drop_duplicates().tolist()
        total, done = int(stages["n"].sum()), int(stages.loc[finished, "n"].sum())
        stage = ", ".join(running) or ("done" if total else "planning")
        eta, best = _eta(stages, finished, workers), _best_so_far(self.store, self.benchmark_id)
        if self._bar is not None:
            self._bar.update(self._task, total=total, completed=done, best=best, stage=stage, eta=eta)
            return
        self._last_line = time.monotonic()
        minutes, seconds = divmod(round(self._last_line - self._started), 60)
        self.console.print(f"progress: {done}/{total} trials finished, stage {stage}, {minutes}:{seconds:02d} "
                           f"elapsed, {eta}" + (f", {best}" if best else ""), soft_wrap=True, highlight=False)


def _eta(stages: pd.DataFrame, finished: pd.Series, workers: int) -> str:
    """Time left for the trials planned so far, from the measured mean time of this benchmark's finished
    trials (later stages, planned as earlier ones finish, add to it)."""
    done = stages[finished & stages["time_s"].notna()]
    if done.empty:
        return "eta -"
    mean = float((done["time_s"] * done["n"]).sum() / done["n"].sum())
    left = int(stages.loc[~finished, "n"].sum())
    minutes, seconds = divmod(round(mean * left / max(workers, 1)), 60)
    return f"eta {minutes}:{seconds:02d}"


def _best_so_far(store: Store, benchmark_id: str) -> str:
    for metric in ("val_top1", "test_top1"):  # test only when the dataset has no validation split
        best = store.best_trial(benchmark_id, metric)
        if best:
            return f"best {metric} {best[metric]:.1f} ({best['backbone']} + {best['optimizer']})"
    return ""
