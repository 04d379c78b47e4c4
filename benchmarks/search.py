"""Cheaper searches judged by the answers they give: the same verdicts and recommendations as the full grid,
for what share of its epochs?

Each panel is run under the full grid (its own search: lr points, edge steps) and under each cheaper method,
every method its own benchmark in one store, so trials they share (the same configuration trained the same
way: a continued probe ends as the grid's run of that configuration, bit for bit) are trained once. Every
benchmark re-runs each pair's chosen configuration at seeds 0-2 (`reseed: all`) and keeps the panel's budget
check, so both sides are judged by the same protocol, only the search differs.

Panels:
- quick: the quick preset (6 tiny backbones x 5 optimizers on digits, 3 lrs and up to 3 steps past an edge,
  5 epochs, `budget_check: auto`), at seeds 0-2;
- fashion: the fashion preset's search on Fashion-MNIST at 16 px (Debian's dataset-fashion-mnist), a
  stratified 7,000-image subset cut into 2,000 to train on and 5,000 to validate on, the 10,000-image test
  set; --backbones/--optimizers choose the panel (default: alexnet, deit_s, convnext_t x sgd, adamw, lamb,
  adagrad).

Per method:
- epochs_fraction: the epochs its search trains as if it ran alone (probes, rungs and steps past an edge
  included; a continued trial counts only its epochs past its checkpoint), over the grid's;
- verdicts_equal K/N: backbones whose verdict and recommended optimizers (bocb.analysis, the report's
  answer) equal the grid's. A difference is acceptable only where every cell whose chosen configuration
  differs from the grid's is tied with it within seed noise (two-sided Welch t-test over the 3 seeds,
  p >= 0.05); each difference is listed with that test;
- significant_regrets R: per pair, the regret (the grid's choice's mean test top-1 minus the method's, over
  seeds 0-2) tested one-sided (null: the method's choice is no worse; Welch t over the 3 seeds of each; a pair
  where both chose the same configuration has regret 0, p = 1), Holm over the method's pairs at 0.05;
- mean_regret beside noise (the pooled seed sd of the grid's chosen configurations).
A method passes with every verdict equal or acceptably different, R = 0, mean regret <= noise and
epochs_fraction <= 0.40. The last line of each panel is the cheapest passing method (else the one with the
most equal verdicts, then the lowest mean regret), as
`method=M epochs_fraction=X verdicts_equal=K/N significant_regrets=R mean_regret=Y noise=W`.

    python benchmarks/search.py [--panel quick|fashion] [--out DIR] [--workers 2] [--methods a,b] [--docs]

Rerunning with the same --out trains nothing already stored and prints the same tables.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bocb.analysis import analyse, compare
from bocb.protocol import chosen_seeds, holm_adjusted, is_search_stage, run_key, searched_trials
from bocb.spec import load_preset, parse_spec
from bocb.store import Store
from bocb.sweep import run_benchmark

ROOT = Path(__file__).resolve().parents[1]
PAIR = ["backbone", "optimizer"]
SEEDS = [0, 1, 2]
OTHER_SEEDS = [3, 4, 5]
ALPHA = 0.05
MAX_FRACTION = 0.40
# each method: the panel's search with these changes (its lr grid, wd grid and edge steps stay)
METHODS = {
    "early-stop": {"early_stop": {}},
    "probe-at0.2-best1": {"early_stop": {"at": 0.2, "keep": 1, "probe_edges": True}},
    "probe-at0.4-best1": {"early_stop": {"at": 0.4, "keep": 1, "probe_edges": True}},
    "probe-at0.2-best2": {"early_stop": {"at": 0.2, "keep": 2, "probe_edges": True}},
    "probe-at0.4-margin5": {"early_stop": {"at": 0.4, "margin": 5.0, "probe_edges": True}},
    "probe-at0.4-margin2": {"early_stop": {"at": 0.4, "margin": 2.0, "probe_edges": True}},
    "restart-at0.2-best1": {"early_stop": {"at": 0.2, "keep": 1, "probe_edges": True, "promotion": "restart"}},
    "restart-at0.4-best1": {"early_stop": {"at": 0.4, "keep": 1, "probe_edges": True, "promotion": "restart"}},
    "halving-continue": {"method": "halving", "rungs": [0.4, 1.0], "keep_fraction": 1 / 3, "promotion": "continue"},
}
FASHION_BACKBONES, FASHION_OPTIMIZERS = "alexnet,deit_s,convnext_t", "sgd,adamw,lamb,adagrad"


def panel_spec(args: argparse.Namespace) -> dict:
    """The panel's spec (its grid search), at seeds 0-2 for every pair."""
    spec = load_preset(args.panel, check_data=False).model_dump(mode="json", exclude_defaults=True)
    spec.update(seeds=SEEDS, reseed="all", keep_weights="none")
    if args.panel == "fashion":
        spec["dataset"] = {"name": "fashion_mnist", "image_size": 16, "train_subset": 7000, "val_fraction": 5 / 7}
        spec["backbones"] = (args.backbones or FASHION_BACKBONES).split(",")
        spec["optimizers"] = (args.optimizers or FASHION_OPTIMIZERS).split(",")
    else:
        spec["backbones"] = args.backbones.split(",") if args.backbones else spec["backbones"]
        spec["optimizers"] = args.optimizers.split(",") if args.optimizers else spec["optimizers"]
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panel", choices=["quick", "fashion"], default="quick")
    parser.add_argument("--out", default=None, help="default: bocb-search-benchmark-PANEL")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--backbones", default=None)
    parser.add_argument("--optimizers", default=None)
    parser.add_argument("--docs", action="store_true", help="also write the output into docs/search.md")
    args = parser.parse_args()
    args.out = args.out or f"bocb-search-benchmark-{args.panel}"
    started = time.perf_counter()
    printed = "\n".join(compare_methods(args))
    print(printed)
    if args.docs:
        write_docs(args.panel, printed, time.perf_counter() - started)


class Run:
    """One benchmark's results: its trials, its chosen configurations per seed, its verdicts."""

    def __init__(self, args: argparse.Namespace, spec_data: dict) -> None:
        spec = parse_spec(spec_data)
        started = time.perf_counter()
        run = run_benchmark(spec, args.out, workers=args.workers)
        store = Store(run.store_url, read_only=True)
        self.trials = store.trials_frame(run.benchmark_id)
        failed = int((self.trials["state"] == "failed").sum())
        print(f"{spec.name}: {len(self.trials)} trials ({failed} crashed) in {time.perf_counter() - started:.0f} s",
              flush=True)
        if failed:
            raise SystemExit(f"{spec.name}: {failed} trial(s) crashed: a crash is no result; rerun to retry them")
        self.analysis = analyse(self.trials, store.epochs_frame(run.benchmark_id), spec.rules.gamma,
                                alpha=spec.rules.alpha, n_boot=10)
        self.verdicts = self.analysis.verdicts.set_index("backbone")
        per_seed = chosen_seeds(self.trials)
        self.config = per_seed.groupby(PAIR)["config"].first()
        self.seeds = per_seed.groupby(PAIR)["top1"].apply(lambda s: s.to_numpy(dtype=float))
        self.epochs = epochs_spent(self.trials)


def compare_methods(args: argparse.Namespace) -> list[str]:
    """Run (or find in the store) the grid and every method; the lines of the comparison, last line last."""
    base = panel_spec(args)
    grid = Run(args, {**base, "name": f"search-{args.panel}-grid"})
    noise = float(np.sqrt(np.mean([np.var(s, ddof=1) for s in grid.seeds])))
    lines = [f"grid: {grid.epochs} epochs of search; seed noise (pooled sd of the chosen configurations' test "
             f"top-1 over seeds 0-2): {noise:.2f} points; verdicts:",
             grid.verdicts[["verdict", "recommended"]].to_string(), floor_line(grid)]
    # the yardstick: the same grid at three other seeds (what changes when nothing but the seeds does)
    again, lines_again = judge("grid-seeds3-5", grid, Run(args, {**base, "name": f"search-{args.panel}-grid-seeds3-5",
                                                             "seeds": OTHER_SEEDS}), noise)
    lines += lines_again
    summaries = []
    for name in args.methods.split(","):
        method = Run(args, {**base, "name": f"search-{args.panel}-{name}",
                            "search": {**base.get("search", {}), **METHODS[name]}})
        summary, details = judge(name, grid, method, noise)
        summaries.append(summary)
        lines += details
    lines += [line(s, noise) + f" differences_tied={s['differences_tied']} passes={s['passes']}" for s in summaries]
    lines.append(line(again, noise) + f" differences_tied={again['differences_tied']} (the yardstick, not a method)")
    return lines + [line(pick(summaries), noise)]


def floor_line(grid: Run) -> str:
    """What any method that trains each pair's choice to the end spends at least, and what the grid tries."""
    per_pair = searched_trials(grid.trials).groupby(PAIR).agg(full=("epochs", "max"), configs=("config", "nunique"))
    floor = int(per_pair["full"].sum())
    return (f"floor: a method that trains each pair's chosen configuration to the end spends at least its {floor} "
            f"epochs ({floor / grid.epochs:.1%} of the grid's); the grid tries {per_pair['configs'].mean():.2f} "
            f"configurations per pair, {per_pair['full'].mean():.0f} epochs each")


def judge(name: str, grid: Run, method: Run, noise: float) -> tuple[dict, list[str]]:
    """A method's summary, and the lines that show each regret tested and each answer that differs."""
    tests = regret_tests(grid, method)
    answers = answer_differences(grid, method, tests)
    equal = len(grid.verdicts) - len(answers)
    acceptable = all(a["tied"] for a in answers)
    significant = int((tests["p_holm"] < ALPHA).sum())
    fraction = method.epochs / grid.epochs
    mean_regret = float(tests["regret"].mean())
    summary = {"method": name, "epochs_fraction": fraction, "verdicts_equal": equal, "backbones": len(grid.verdicts),
               "differences_tied": sum(a["tied"] for a in answers),
               "significant_regrets": significant, "mean_regret": mean_regret,
               "passes": acceptable and significant == 0 and mean_regret <= noise and fraction <= MAX_FRACTION}
    differing = tests[~tests["same"]].drop(columns="same")
    lines = [f"{name}: the pairs whose trials differ from the grid's (regret: grid's mean test top-1 minus the "
             "method's over seeds 0-2; p: one-sided Welch t, Holm over all pairs):",
             differing.to_string(index=False, float_format=lambda v: f"{v:.3g}") if len(differing) else "  none"]
    lines += [f"  {a['backbone']}: grid says {a['grid']}; {name} says {a['method']}; "
              f"{'acceptable: every differing cell tied within seed noise' if a['tied'] else 'NOT acceptable'}"
              for a in answers]
    return summary, lines


def regret_tests(grid: Run, method: Run) -> pd.DataFrame:
    rows = []
    for pair in grid.config.index:
        mine, theirs = grid.seeds[pair], method.seeds[pair]
        same = grid.config[pair] == method.config[pair] and np.array_equal(mine, theirs)  # the very same trials
        regret = 0.0 if same else float(mine.mean() - theirs.mean())
        one_sided = 1.0 if same else welch_p(mine, theirs, "greater")
        rows.append({"backbone": pair[0], "optimizer": pair[1], "grid_choice": grid.config[pair],
                     "method_choice": method.config[pair], "same": same, "regret": regret, "p": one_sided,
                     "p_two_sided": 1.0 if same else welch_p(mine, theirs, "two-sided")})
    tests = pd.DataFrame(rows)
    return tests.assign(p_holm=holm_adjusted(tests["p"].to_numpy()))


def welch_p(a: np.ndarray, b: np.ndarray, alternative: str) -> float:
    """Welch's t-test of a against b (scipy); 1 where both have no spread and the same mean."""
    if np.ptp(a) == np.ptp(b) == 0:
        return 1.0 if a.mean() == b.mean() or alternative == "greater" and a.mean() < b.mean() else 0.0
    with warnings.catch_warnings():  # scipy warns of precision loss when seeds agree to many digits
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False, alternative=alternative).pvalue)


def answer_differences(grid: Run, method: Run, tests: pd.DataFrame) -> list[dict]:
    """The backbones whose verdict or recommendation differs (bocb.analysis.compare: what `bocb compare` calls
    a changed answer), each with whether every cell whose choice differs is tied with the grid's within seed
    noise."""
    answers = compare(grid.analysis, method.analysis, ("grid", "method"), n_boot=10).verdicts
    out = []
    for row in answers[answers["changed"]].itertuples():
        mine = tests[(tests["backbone"] == row.backbone) & ~tests["same"]]
        out.append({"backbone": row.backbone, "grid": f"{row.verdict_a} (use {row.recommended_a})",
                    "method": f"{row.verdict_b} (use {row.recommended_b})",
                    "tied": bool((mine["p_two_sided"] >= ALPHA).all())})
    return out


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


def line(s: dict, noise: float) -> str:
    return (f"method={s['method']} epochs_fraction={s['epochs_fraction']:.3f} "
            f"verdicts_equal={s['verdicts_equal']}/{s['backbones']} significant_regrets={s['significant_regrets']} "
            f"mean_regret={s['mean_regret']:.2f} noise={noise:.2f}")


def pick(summaries: list[dict]) -> dict:
    passing = [s for s in summaries if s["passes"]]
    if passing:
        return min(passing, key=lambda s: s["epochs_fraction"])
    return min(summaries, key=lambda s: (-s["verdicts_equal"], s["significant_regrets"], s["mean_regret"]))


def write_docs(panel: str, printed: str, seconds: float) -> None:
    """The output between docs/search.md's markers for the panel, with the commit, lock and date it was
    printed at (the trials themselves carry the commit each was trained at)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from readme_results import environment, replace_block

    env = environment()
    text = (f"`python benchmarks/search.py --panel {panel} --docs` on this project's reference machine (2 CPU "
            f"cores), lock `{env['lock']}` (torch {env['torch']}), printed at commit `{env['commit']}` on "
            f"{datetime.date.today().isoformat()} in {seconds / 60:.0f} min (trials already in its store are "
            "not trained again; each trial's provenance names the commit it was trained at):\n\n"
            f"```\n{printed}\n```\n")
    replace_block(ROOT / "docs" / "search.md", f"search-{panel}", text)


if __name__ == "__main__":
    main()
