"""How fast the commands that train nothing answer: `bocb --help`, a bad spec's one-line error, `bocb results`
and `bocb status` of a finished store, `bocb list optimizers`.

    python benchmarks/latency.py [--runs 7] [--store PATH]

Each command runs ``--runs`` times, each time in a fresh process (``python -m bocb ...``, what the console
script runs), interleaved with ``python -c pass`` (the interpreter's own start), so that a busy moment of
the machine costs every command alike; it prints the median wall time of each and its excess over
``python -c pass``. Without ``--store`` it first makes a finished store by a tiny real run (ResNet-50 x
SGD-M, one configuration, one epoch on digits: about 30 s on 2 cores). Every command is run once before the
timing and must exit as expected (a bad spec: code 2), so that a broken command is not timed as a fast one.
The last line is ``help=0.20s bad_spec=0.38s results=1.01s status=1.00s list_optimizers=0.40s
baseline=0.01s`` (docs/latency.md has a whole output, and what it was before the commands imported lazily).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import yaml

SPEC = {"dataset": {"name": "digits", "image_size": 16}, "backbones": ["resnet50"], "optimizers": ["sgd"],
        "size": "tiny", "recipe": "torch", "epochs": 1, "batch_size": 64, "seeds": [0],
        "search": {"lr_points": 1, "wd_points": 1}}
BAD_SPEC = {**SPEC, "backbones": ["resnet5"]}  # error: backbones: unknown backbone 'resnet5'; did you mean ...
BOCB = [sys.executable, "-m", "bocb"]


def finished_store(folder: Path) -> Path:
    """A store with the tiny spec's one trial trained (a real run, report left out)."""
    spec = folder / "tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    print("making a finished store (bocb run of a tiny spec) ...", file=sys.stderr)
    done = subprocess.run([*BOCB, "run", str(spec), "--out", str(folder / "out"), "--workers", "1", "--no-report"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the tiny run failed (exit code {done.returncode}):\n{done.stderr}")
    return folder / "out" / "bocb.db"


class Command(NamedTuple):
    label: str
    shown: str  # as a user types it
    argv: list[str]
    exit_code: int  # what it must end with


def commands(store: Path, bad_spec: Path) -> list[Command]:
    return [
        Command("baseline", "python -c pass", [sys.executable, "-c", "pass"], 0),
        Command("help", "bocb --help", [*BOCB, "--help"], 0),
        Command("bad_spec", f"bocb run {bad_spec.name}", [*BOCB, "run", str(bad_spec)], 2),
        Command("results", f"bocb results {store.name}", [*BOCB, "results", str(store)], 0),
        Command("status", f"bocb status {store.name}", [*BOCB, "status", str(store)], 0),
        Command("list_optimizers", "bocb list optimizers", [*BOCB, "list", "optimizers"], 0),
    ]


def check(runs: list[Command]) -> None:
    """Each command exits as it must; else its output, and exit code 1."""
    for run in runs:
        done = subprocess.run(run.argv, capture_output=True, text=True)
        if done.returncode != run.exit_code:
            sys.exit(f"{run.label}: `{run.shown}` exited {done.returncode}, not {run.exit_code}:\n{done.stderr}")


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def medians(runs: list[Command], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {run.label: [] for run in runs}
    for _ in range(repeats):  # interleaved: a busy moment costs every command alike
        for run in runs:
            times[run.label].append(wall(run.argv))
    return {label: statistics.median(values) for label, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per command (the median is shown)")
    parser.add_argument("--store", type=Path, help="a finished store; default: made by a tiny real run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = args.store or finished_store(folder)
        bad_spec = folder / "bad.yaml"
        bad_spec.write_text(yaml.safe_dump(BAD_SPEC))
        runs = commands(store, bad_spec)
        check(runs)
        load = os.getloadavg()[0]
        times = medians(runs, args.runs)
    baseline = times["baseline"]
    print(f"median wall time of {args.runs} fresh processes each, {os.cpu_count()} CPU cores, "
          f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    for run in runs:
        excess = "" if run.label == "baseline" else f"  (+{times[run.label] - baseline:.2f} s over python -c pass)"
        print(f"{run.shown:<24} {times[run.label]:5.2f} s{excess}")
    print(" ".join(f"{run.label}={times[run.label]:.2f}s" for run in runs[1:]) + f" baseline={baseline:.2f}s")


if __name__ == "__main__":
    main()
