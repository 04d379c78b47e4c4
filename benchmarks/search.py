"""Successive halving against the full grid, on real digits.

Runs one grid benchmark and one halving benchmark (same backbones, optimizers, 3 x 3 lr/wd grid, 9 epochs)
into one store, then prints, per (backbone, optimizer), whether halving chose the grid's best
configuration or one within 0.5 validation top-1 of it, and the share of training epochs halving spent.
Halving's full-budget trials share their keys with the grid's, so the store trains them once; the epoch
share counts every trial each protocol planned, as if run alone.

    python benchmarks/search.py [--out DIR] [--workers 2]
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from bocb.analysis import select_cells
from bocb.spec import parse_spec
from bocb.store import Store
from bocb.sweep import run_benchmark

BASE = {
    "dataset": {"name": "digits", "image_size": 16, "val_fraction": 0.2},
    "backbones": ["alexnet", "vgg13_bn", "repvgg_a1", "poolformerv2_s12"],
    "optimizers": ["sgd", "adam", "adamw", "lamb"],
    "recipe": "torch", "recipe_overrides": {"hflip": False, "crop_padding": 0},
    "epochs": 9, "batch_size": 32, "seeds": [0],
}
GRID = {"lr_points": 3, "wd_points": 3, "lr_step": 3.0, "wd_step": 3.0}
TOLERANCE = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bocb-search-benchmark")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    frames = {}
    for method, extra in (("grid", {}), ("halving", {"rungs": [1 / 9, 1 / 3, 1.0], "keep_fraction": 1 / 3})):
        spec = parse_spec({**BASE, "name": f"search-{method}", "search": {**GRID, "method": method, **extra}})
        started = time.perf_counter()
        run = run_benchmark(spec, args.out, workers=args.workers)
        print(f"{method}: finished in {time.perf_counter() - started:.0f} s")
        frames[method] = Store(run.store_url).trials_frame(run.benchmark_id)
    compare(frames["grid"], frames["halving"])


def compare(grid: pd.DataFrame, halving: pd.DataFrame) -> None:
    full = grid[grid["state"] == "done"].set_index(["backbone", "optimizer", "config"])["val_top1"]
    grid_cells = select_cells(grid).set_index(["backbone", "optimizer"])
    halving_cells = select_cells(halving).set_index(["backbone", "optimizer"])
    rows = []
    for pair, chosen in halving_cells.iterrows():
        best = grid_cells.loc[pair]
        gap = best["val_top1"] - full.get((*pair, chosen["config"]), float("nan"))
        rows.append({"backbone": pair[0], "optimizer": pair[1], "grid_best": best["config"],
                     "halving_choice": chosen["config"], "val_gap": gap,
                     "ok": chosen["config"] == best["config"] or gap <= TOLERANCE})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    epochs_share = halving["epochs"].sum() / grid["epochs"].sum()
    print(f"pairs={len(table)} agree={table['ok'].mean():.2%} epochs_share={epochs_share:.2%} "
          f"(target: >= 90% of pairs at <= 40% of the epochs)")


if __name__ == "__main__":
    main()
