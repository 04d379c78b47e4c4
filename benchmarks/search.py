"""Cheaper searches against the full grid on Fashion-MNIST: the epochs each spends, and the test accuracy it
gives up (regret), beside the seed noise.

Data: Fashion-MNIST at 16 px (Debian's dataset-fashion-mnist): a stratified 7,000-image training subset cut
into 2,000 images to train on and 5,000 to validate (one image is 0.02 points), and the full 10,000-image
test set. Backbones from three eras (AlexNet 2012, DeiT-S 2021, ConvNeXt-T 2022, tiny), four optimizers
(SGD-M, AdamW, LAMB, AdaGrad), a 3 x 3 lr x wd grid (ratio 3), 9 epochs, batch 32.

Every method is its own benchmark in one store, so trials they share (the same key: the same configuration
trained the same way) are trained once. Each searches at seed 0, and re-runs its chosen configuration at
seeds 1 and 2 (the `seeds` stage, not counted as search):

- grid: the whole grid;
- halving-restart: rungs at 1, 3 and 9 epochs keeping the best third (and ties), each rung a fresh run with
  a schedule of its own length; halving-continue: the same rungs, each promoted configuration resuming from
  its rung checkpoint under the full-budget schedule (search.promotion: continue); -strict: keep_ties off;
- early-stop: every configuration's first third of the epochs, then only those within 10 validation points
  of their pair's best go on from their checkpoint (search.early_stop at its defaults).

Regret of a method on a pair: the test top-1 of the grid's chosen configuration minus that of the method's,
both trained to the full budget and averaged over seeds 0-2 (negative when the method's choice tests
better); the same at seed 0 alone is printed too, where one configuration's luck at that seed weighs in
fully. Noise: the seed-to-seed standard deviation of the test top-1 of the grid's chosen configurations
(pooled over pairs). Cost: the epochs a method's search trains as if run alone (a continued trial counts only
the epochs past the trial of its run before it), as a fraction of the grid's. The last line is the cheapest
method whose mean regret is within the noise and whose worst regret is at most 2 points (or, if none is,
the one with the lowest mean regret), as `epochs_fraction=X mean_regret=Y max_regret=Z noise=W method=NAME`.

    python benchmarks/search.py [--out DIR] [--workers 2] [--backbones a,b] [--optimizers a,b] [--epochs 9] [--docs]

Rerunning with the same --out trains nothing already stored and prints the same tables in about a minute.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bocb.protocol import chosen_seeds, is_search_stage, run_key
from bocb.spec import parse_spec
from bocb.store import Store
from bocb.sweep import run_benchmark

BACKBONES = ["alexnet", "deit_s", "convnext_t"]
OPTIMIZERS = ["sgd", "adamw", "lamb", "adagrad"]
GRID = {"lr_points": 3, "wd_points": 3, "lr_step": 3.0, "wd_step": 3.0}
HALVING = {**GRID, "method": "halving", "rungs": [1 / 9, 1 / 3, 1.0], "keep_fraction": 1 / 3}
METHODS = {
    "halving-restart": HALVING,
    "halving-continue": {**HALVING, "promotion": "continue"},
    "halving-continue-strict": {**HALVING, "promotion": "continue", "keep_ties": False},
    "early-stop": {**GRID, "early_stop": {}},
}
ROOT = Path(__file__).resolve().parents[1]
MAX_REGRET = 2.0  # points: the worst a method may give up on any pair
PAIR = ["backbone", "optimizer"]


def base_spec(args: argparse.Namespace) -> dict:
    return {
        "dataset": {"name": "fashion_mnist", "image_size": 16, "train_subset": 7000, "val_fraction": 5 / 7},
        "backbones": args.backbones.split(","), "optimizers": args.optimizers.split(","), "size": "tiny",
        "recipe": "torch", "recipe_overrides": {"crop_padding": 1, "crop_padding_mode": "constant"},
        "epochs": args.epochs, "batch_size": 32, "keep_weights": "none",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bocb-search-benchmark")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--docs", action="store_true", help="also write the output into docs/search.md")
    args = parser.parse_args()
    started = time.perf_counter()
    printed = "\n".join(compare_methods(args))
    print(printed)
    if args.docs:
        write_docs(printed, time.perf_counter() - started)


def compare_methods(args: argparse.Namespace) -> list[str]:
    """Run (or find in the store) the grid and every method; the lines of the comparison, last line last."""
    base = {**base_spec(args), "seeds": [0, 1, 2]}
    grid = run_method(args, {**base, "name": "search-grid", "search": GRID})
    noise, per_pair_sd = seed_noise(grid)
    grid_epochs = epochs_spent(grid)
    table = chosen_results(grid).rename(columns={"config": "grid_choice", "mean": "grid", "seed0": "grid_seed0"})
    table["seed_sd"] = table.set_index(PAIR).index.map(per_pair_sd)
    summaries, seed0 = [], table[PAIR].copy()
    for name, search in METHODS.items():
        trials = run_method(args, {**base, "name": f"search-{name}", "search": search})
        chosen = chosen_results(trials).set_index(PAIR)
        regret = table.set_index(PAIR)["grid"] - chosen["mean"]
        table[name] = table.set_index(PAIR).index.map(regret)
        seed0[name] = seed0.set_index(PAIR).index.map(table.set_index(PAIR)["grid_seed0"] - chosen["seed0"])
        summaries.append(summary(name, epochs_spent(trials) / grid_epochs, regret, seed0[name], noise))
    number = lambda v: f"{v:.2f}"  # noqa: E731
    lines = ["regret per pair: test top-1 points the method's choice gives up against the grid's, both as means "
             "over seeds 0-2 (grid: that mean; seed_sd: its std over the seeds):",
             table.drop(columns="grid_seed0").to_string(index=False, float_format=number),
             "the same at seed 0 alone (the search seed, where each method chose):",
             seed0.to_string(index=False, float_format=number),
             f"grid: {grid_epochs} epochs of search; seed noise (pooled std of the chosen configurations' test "
             f"top-1 over 3 seeds): {noise:.2f} points"]
    lines += [f"{row['method']}: epochs_fraction={row['epochs_fraction']:.3f} mean_regret={row['mean_regret']:.2f} "
              f"max_regret={row['max_regret']:.2f} within_noise={row['within_noise']:.0%} "
              f"(seed 0 alone: mean {row['mean_seed0']:.2f}, max {row['max_seed0']:.2f}) "
              f"meets_target={row['meets_target']}" for row in summaries]
    best = pick(summaries)
    return lines + [f"epochs_fraction={best['epochs_fraction']:.3f} mean_regret={best['mean_regret']:.2f} "
                    f"max_regret={best['max_regret']:.2f} noise={noise:.2f} method={best['method']}"]


def write_docs(printed: str, seconds: float) -> None:
    """The output between docs/search.md's markers, with the commit, lock and date it was printed at (the
    trials themselves carry the commit each was trained at)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from readme_results import environment, replace_block

    env = environment()
    text = (f"`python benchmarks/search.py --docs` on this project's reference machine (2 CPU cores), lock "
            f"`{env['lock']}` (torch {env['torch']}), printed at commit `{env['commit']}` on "
            f"{datetime.date.today().isoformat()} in {seconds / 60:.0f} min (trials already in its store are "
            "not trained again; each trial's provenance names the commit it was trained at):\n\n"
            f"```\n{printed}\n```\n")
    replace_block(ROOT / "docs" / "search.md", "search", text)


def run_method(args: argparse.Namespace, spec_data: dict) -> pd.DataFrame:
    """Run one method's benchmark (or find its trials in the store); its trials frame."""
    spec = parse_spec(spec_data)
    started = time.perf_counter()
    run = run_benchmark(spec, args.out, workers=args.workers)
    trials = Store(run.store_url).trials_frame(run.benchmark_id)
    failed = int((trials["state"] == "failed").sum())
    print(f"{spec.name}: {len(trials)} trials ({failed} crashed) in {time.perf_counter() - started:.0f} s",
          flush=True)
    if failed:
        raise SystemExit(f"{spec.name}: {failed} trial(s) crashed: a crash is no result; rerun to retry them")
    return trials


def chosen_results(trials: pd.DataFrame) -> pd.DataFrame:
    """Per pair: the configuration the protocol's rule chooses (at seed 0, the search seed), and its
    full-budget test top-1 as the mean over its seeds and at seed 0 (a diverged run at chance, as every
    bocb score)."""
    per_seed = chosen_seeds(trials)
    grouped = per_seed.groupby(PAIR + ["config"], sort=False)["top1"]
    at_seed0 = per_seed[per_seed["seed"] == 0].set_index(PAIR + ["config"])["top1"]
    return pd.DataFrame({"mean": grouped.mean(), "seed0": at_seed0}).reset_index()


def seed_noise(grid: pd.DataFrame) -> tuple[float, pd.Series]:
    """(pooled std over pairs, per-pair std) of the chosen configurations' test top-1 over their seeds."""
    per_pair = chosen_seeds(grid).groupby(PAIR)["top1"].std(ddof=1)
    return float(np.sqrt((per_pair**2).mean())), per_pair


def epochs_spent(trials: pd.DataFrame) -> int:
    """Epochs the search trained as if it ran alone (re-runs at other seeds are not search): a trial that
    continues its run counts only the epochs past the run's longest earlier trial here, so a whole run trained
    in pieces costs its epochs once."""
    trials = trials[is_search_stage(trials["stage"])]
    configs = trials["config_json"].map(json.loads)
    runs = trials.assign(run=configs.map(run_key)).sort_values("epochs")
    before = runs.groupby("run")["epochs"].shift(fill_value=0)
    continued = runs["run"].map(runs.groupby("run")["config_json"].apply(
        lambda c: any(json.loads(x).get("schedule_epochs") for x in c)))
    return int(np.where(continued, runs["epochs"] - before, runs["epochs"]).sum())


def summary(name: str, fraction: float, regret: pd.Series, at_seed0: pd.Series, noise: float) -> dict:
    mean, worst = float(regret.mean()), float(regret.max())
    acceptable = mean <= noise and worst <= MAX_REGRET
    return {"method": name, "epochs_fraction": fraction, "mean_regret": mean, "max_regret": worst,
            "within_noise": float((regret <= noise).mean()), "mean_seed0": float(at_seed0.mean()),
            "max_seed0": float(at_seed0.max()), "acceptable": acceptable,
            "meets_target": acceptable and fraction <= 0.35}


def pick(summaries: list[dict]) -> dict:
    acceptable = [s for s in summaries if s["acceptable"]]
    if acceptable:
        return min(acceptable, key=lambda s: s["epochs_fraction"])
    return min(summaries, key=lambda s: (s["mean_regret"], s["epochs_fraction"]))


if __name__ == "__main__":
    main()
