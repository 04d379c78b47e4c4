"""Successive halving against the full grid, on real digits.

Runs one grid benchmark and two halving benchmarks (same backbones, optimizers, 3 x 3 lr/wd grid, 9
epochs; halving with and without ``keep_ties``) into one store, then prints, per (backbone, optimizer),
whether halving chose the grid's best configuration or one within 0.5 validation top-1 of it, and for each
the share of pairs that agree and of training epochs halving spent.
Halving's full-budget trials share their keys with the grid's, so the store trains them once; the epoch
share counts every trial each protocol planned, as if run alone.

The noise ceiling: the same grid again at another seed (``--noise-seed``, default 1; -1 skips it), scored
the same way against the first grid. It is what an equally good search with independent noise achieves,
so it bounds how much of the agreement figure measures the search rather than the validation split's noise;
also printed is the seed-to-seed standard deviation of one configuration's validation top-1.

The ASHA replay: if each rung continued the full-horizon run from the previous rung's checkpoint
(instead of re-training with a compressed schedule, as bocb's ``halving`` does), a configuration's score
at rung epoch e would be its grid trial's validation top-1 after epoch e, which the store holds. So every
such rung schedule is scored without training, by the same rule; the best few within 40 % of the
grid's epochs are printed (chosen in hindsight, so an upper bound for that family).

    python benchmarks/search.py [--out DIR] [--workers 2] [--noise-seed 1]
"""
from __future__ import annotations

import argparse
import itertools
import math
import time

import pandas as pd

from bocb.analysis import select_cells
from bocb.spec import parse_spec
from bocb.store import Store
from bocb.sweep import BenchmarkRun, run_benchmark

BASE = {
    "dataset": {"name": "digits", "image_size": 16, "val_fraction": 0.2},
    "backbones": ["alexnet", "vgg13_bn", "repvgg_a1", "poolformerv2_s12"],
    "optimizers": ["sgd", "adam", "adamw", "lamb"],
    "recipe": "torch", "recipe_overrides": {"hflip": False, "crop_padding": 0},
    "epochs": 9, "batch_size": 32,
}
GRID = {"method": "grid", "lr_points": 3, "wd_points": 3, "lr_step": 3.0, "wd_step": 3.0}
HALVING = {**GRID, "method": "halving", "rungs": [1 / 9, 1 / 3, 1.0], "keep_fraction": 1 / 3}
TOLERANCE = 0.5
BUDGET = 0.4  # share of the grid's epochs
Curves = dict[str, tuple[list[float], list[float]]]  # trial key -> (val top-1, train loss) per epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bocb-search-benchmark")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noise-seed", type=int, default=1, help="seed of the second grid; -1 skips it")
    args = parser.parse_args()
    grid_run = run_search(args, "search-grid", GRID, seed=0)
    grid = trials_of(grid_run)
    halving = {keep_ties: trials_of(run_search(args, "search-halving" + ("" if keep_ties else "-strict"),
                                               {**HALVING, "keep_ties": keep_ties}, seed=0))
               for keep_ties in (True, False)}
    tables = {keep_ties: agreement(grid, frame) for keep_ties, frame in halving.items()}
    print(tables[True].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.noise_seed >= 0:
        other = trials_of(run_search(args, f"search-grid-seed{args.noise_seed}", GRID, seed=args.noise_seed))
        ceiling = agreement(grid, other)
        print(f"noise ceiling: a second grid at seed {args.noise_seed} agrees with the first on "
              f"{ceiling['ok'].mean():.2%} of pairs; seed-to-seed std of one configuration's val top-1: "
              f"{seed_std(grid, other):.2f} points")
    print_replay(grid, val_curves(grid_run))
    for keep_ties in (False, True):
        table, share = tables[keep_ties], halving[keep_ties]["epochs"].sum() / grid["epochs"].sum()
        print(f"halving keep_ties={str(keep_ties).lower()}: pairs={len(table)} agree={table['ok'].mean():.2%} "
              f"epochs_share={share:.2%} (target: >= 90% of pairs at <= 40% of the epochs)")


def run_search(args: argparse.Namespace, name: str, search: dict, seed: int) -> BenchmarkRun:
    """Run one protocol (or find its trials in the store)."""
    spec = parse_spec({**BASE, "name": name, "seeds": [seed], "search": search})
    started = time.perf_counter()
    run = run_benchmark(spec, args.out, workers=args.workers)
    print(f"{name}: finished in {time.perf_counter() - started:.0f} s")
    return run


def trials_of(run: BenchmarkRun) -> pd.DataFrame:
    return Store(run.store_url).trials_frame(run.benchmark_id)


def val_curves(run: BenchmarkRun) -> Curves:
    """Per trial key: validation top-1 and training loss after each epoch."""
    epochs = Store(run.store_url).epochs_frame(run.benchmark_id).sort_values("epoch")
    return {key: (g["val_top1"].tolist(), g["train_loss"].tolist()) for key, g in epochs.groupby("trial_key")}


def full_budget_val(grid: pd.DataFrame) -> pd.Series:
    return grid[grid["state"] == "done"].set_index(["backbone", "optimizer", "config"])["val_top1"]


def agreement(grid: pd.DataFrame, candidate: pd.DataFrame) -> pd.DataFrame:
    """Per pair: did ``candidate`` choose the grid's best configuration or one within TOLERANCE of it
    (measured on the grid's own full-budget trial of that configuration)?"""
    full = full_budget_val(grid)
    grid_cells = select_cells(grid).set_index(["backbone", "optimizer"])
    rows = []
    for pair, chosen in select_cells(candidate).set_index(["backbone", "optimizer"]).iterrows():
        best = grid_cells.loc[pair]
        gap = best["val_top1"] - full.get((*pair, chosen["config"]), float("nan"))
        rows.append({"backbone": pair[0], "optimizer": pair[1], "grid_best": best["config"],
                     "choice": chosen["config"], "val_gap": gap,
                     "ok": chosen["config"] == best["config"] or gap <= TOLERANCE})
    return pd.DataFrame(rows)


def seed_std(grid: pd.DataFrame, other: pd.DataFrame) -> float:
    """Pooled seed-to-seed std of one configuration's val top-1 (two seeds: |a - b| / sqrt 2, RMS over
    configurations that finished at both)."""
    diff = (full_budget_val(grid) - full_budget_val(other)).dropna()
    return float(((diff**2) / 2).mean() ** 0.5)


def print_replay(grid: pd.DataFrame, curves: Curves) -> None:
    trials = grid.set_index("trial_key")
    total_epochs = int(trials["epochs"].max())
    configs = int(trials.groupby(["backbone", "optimizer"]).size().max())
    default = ((round(total_epochs / 9), round(total_epochs / 3)), (math.ceil(configs / 3), math.ceil(configs / 9)))
    agree, share = replay(trials, curves, *default)
    print(f"ASHA replay, rungs at {default[0]} epochs keeping {default[1]}: agree={agree:.2%} epochs_share={share:.2%}")
    scored = [(replay(trials, curves, *s), s) for s in schedules(total_epochs, configs)]
    within = sorted(((a, -c, s) for (a, c), s in scored if c <= BUDGET), reverse=True)
    for agree, neg_share, (rungs, keeps) in within[:3]:
        print(f"ASHA replay, best of {len(within)} within {BUDGET:.0%}: rungs at {rungs} keeping {keeps}: "
              f"agree={agree:.2%} epochs_share={-neg_share:.2%}")


def replay(trials: pd.DataFrame, curves: Curves, rungs: tuple[int, ...], keeps: tuple[int, ...]) -> tuple[float, float]:
    """(share of pairs that agree with the grid, share of the grid's epochs spent) for rungs ending at
    ``rungs`` epochs, keeping ``keeps`` configurations after each; ties go to the lower training loss."""
    total_epochs = int(trials["epochs"].max())
    agree, spent, grid_epochs, pairs = 0, 0, 0, 0
    for _, group in trials.groupby(["backbone", "optimizer"]):
        grid_epochs += len(group) * total_epochs
        final = {k: (row["val_top1"] if row["state"] == "done" else -math.inf) for k, row in group.iterrows()}
        alive, previous = list(group.index), 0
        for epoch, keep in zip(rungs, keeps):
            spent += len(alive) * (epoch - previous)
            previous = epoch
            alive = sorted(alive, key=lambda k, e=epoch: _score(curves, k, e), reverse=True)[:keep]
        spent += len(alive) * (total_epochs - previous)
        best = max(final.values())
        agree += max(final[k] for k in alive) >= best - TOLERANCE
        pairs += 1
    return agree / pairs, spent / grid_epochs


def _score(curves: Curves, key: str, epoch: int) -> tuple[float, float]:
    val, loss = curves.get(key, ([], []))
    if len(val) < epoch:  # diverged before this epoch
        return -math.inf, -math.inf
    return val[epoch - 1], -loss[epoch - 1]


def schedules(total_epochs: int, configs: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every one- or two-rung schedule before the full budget, with non-increasing survivors."""
    found = []
    for first in range(1, total_epochs):
        for keep in range(1, configs):
            found.append(((first,), (keep,)))
            for second, keep2 in itertools.product(range(first + 1, total_epochs), range(1, keep)):
                found.append(((first, second), (keep, keep2)))
    return found


if __name__ == "__main__":
    main()
