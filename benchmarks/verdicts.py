"""How often the verdict rule is wrong, and how often it decides: bocb's own verdicts on simulated results.

Each replicate is a benchmark of 6 backbones x 5 optimizers at n seeds per cell (n = 2, 3, 5): top-1 =
backbone effect (normal, mean 60, sd 10) + optimizer effect (normal, sd 4, the same on every backbone) +
seed noise, whose sd is drawn per backbone uniformly from 0.5 to 3 points. The scenarios:

- null: no interaction anywhere. Every backbone called "coupled" is a false call (false_coupled); every one
  called "not coupled" or "optimizer-sensitive, not coupled" a decided one (the equivalence claim, within
  ±γ), reported over all null backbones and over those with seed sd <= 1 (decided_low_noise);
- drop kγ (k = 1, 2, 3, 4): one optimizer on the first backbone loses kγ points, nothing else changes;
  power = the share of those backbones called "coupled"; the other five backbones are still null (their
  false calls are counted too: the coupled one must not lend its interaction to them);
- wild cell: the null, but one cell of the first backbone has a seed sd of 15 points (tiny AlexNet under
  SGD-M, say): its backbone and the others must not be called coupled for it.

The verdicts are bocb's (`bocb.analysis.verdicts`, the function `bocb run`, `bocb report` and `bocb check`
print), with γ = 3 (the CIFAR-100 default; --gamma) and α = 0.05. The last line is
`false_coupled=X decided_low_noise=Y power_3gamma=Z` at 3 seeds; the issue's targets are X <= 5 %,
Y >= 90 %, Z >= 90 %.

    python benchmarks/verdicts.py [--replicates 400] [--workers 2] [--gamma 3] [--docs]
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from bocb.analysis import verdicts
from bocb.analysis._verdict import COUPLED, NOT_COUPLED, SHARED_EFFECT, STILL_LEARNING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from readme_results import report_simulation  # noqa: E402

BACKBONES, OPTIMIZERS = 6, 5
SEEDS = (2, 3, 5)
SCENARIOS = ("null", "drop 1γ", "drop 2γ", "drop 3γ", "drop 4γ", "wild cell")
NOT_COUPLED_CALLS = (NOT_COUPLED, SHARED_EFFECT)
WILD_SD = 15.0


def simulate(scenario: str, n_seeds: int, gamma: float, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """One replicate's per-seed results (backbone, optimizer, seed, top1) and each backbone's seed sd."""
    backbone_effect = rng.normal(60, 10, BACKBONES)
    optimizer_effect = rng.normal(0, 4, OPTIMIZERS)
    sd = rng.uniform(0.5, 3.0, BACKBONES)
    mean = backbone_effect[:, None] + optimizer_effect[None, :]
    cell_sd = np.repeat(sd[:, None], OPTIMIZERS, axis=1)
    if scenario.startswith("drop"):
        mean[0, rng.integers(OPTIMIZERS)] -= float(scenario.split()[1].rstrip("γ")) * gamma
    if scenario == "wild cell":
        cell_sd[0, rng.integers(OPTIMIZERS)] = WILD_SD
    top1 = mean[:, :, None] + cell_sd[:, :, None] * rng.standard_normal((BACKBONES, OPTIMIZERS, n_seeds))
    b, o, s = np.meshgrid(range(BACKBONES), range(OPTIMIZERS), range(n_seeds), indexing="ij")
    frame = pd.DataFrame({"backbone": [f"b{i}" for i in b.ravel()], "optimizer": [f"o{i}" for i in o.ravel()],
                          "seed": s.ravel(), "top1": top1.ravel()})
    return frame, sd


def judge(task: tuple[str, int, float, int, int]) -> list[dict]:
    """The verdict of every backbone in ``count`` replicates of one scenario (one process's share)."""
    scenario, n_seeds, gamma, count, seed = task
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        per_seed, sd = simulate(scenario, n_seeds, gamma, rng)
        trials = per_seed.assign(num_classes=10, test_size=10_000)
        learned = pd.Series(True, index=pd.unique(per_seed["backbone"]))
        result = verdicts(per_seed, trials, learned, gamma)
        for index, row in enumerate(result.itertuples()):
            rows.append({"scenario": scenario, "seeds": n_seeds, "target": index == 0, "sd": sd[index],
                         "verdict": row.verdict})
    return rows


def run(replicates: int, workers: int, gamma: float) -> pd.DataFrame:
    chunks = max(1, workers * 2)
    tasks = [(scenario, n, gamma, replicates // chunks + (i < replicates % chunks), 1000 * k + 10 * n + i)
             for k, scenario in enumerate(SCENARIOS) for n in SEEDS for i in range(chunks)]
    with ProcessPoolExecutor(workers) as pool:
        return pd.DataFrame([row for rows in pool.map(judge, tasks) for row in rows])


def rates(calls: pd.Series) -> dict[str, float]:
    coupled = calls.isin([COUPLED, STILL_LEARNING]).mean()
    decided = calls.isin(NOT_COUPLED_CALLS).mean()
    return {"n": len(calls), "coupled %": 100 * coupled, "not coupled %": 100 * decided,
            "uncertain %": 100 * (1 - coupled - decided)}


def table(results: pd.DataFrame) -> pd.DataFrame:
    """Per seeds and scenario: the calls on the backbones the scenario is about (all of them in the null;
    the first one, which carries the drop or the wild cell, otherwise) and the false "coupled" calls on the
    others."""
    rows = []
    for (n, scenario), group in results.groupby(["seeds", "scenario"], sort=False):
        about = group if scenario == "null" else group[group["target"]]
        rest = group[~group["target"]] if scenario != "null" else group.iloc[0:0]
        row = {"seeds": n, "scenario": scenario, **rates(about["verdict"])}
        row["null sd<=1: not coupled %"] = (100 * group.loc[group["sd"] <= 1, "verdict"].isin(NOT_COUPLED_CALLS).mean()
                                             if scenario == "null" else np.nan)
        row["others: coupled %"] = 100 * rest["verdict"].isin([COUPLED, STILL_LEARNING]).mean() if len(rest) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def summary_line(summary: pd.DataFrame) -> str:
    at3 = summary[summary["seeds"] == 3].set_index("scenario")
    return (f"false_coupled={at3.at['null', 'coupled %'] / 100:.3f} "
            f"decided_low_noise={at3.at['null', 'null sd<=1: not coupled %'] / 100:.3f} "
            f"power_3gamma={at3.at['drop 3γ', 'coupled %'] / 100:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=400, help="benchmarks per scenario and seed count")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gamma", type=float, default=3.0)
    parser.add_argument("--docs", action="store_true", help="also write the output into docs/analysis.md")
    args = parser.parse_args()
    started = time.perf_counter()
    summary = table(run(args.replicates, args.workers, args.gamma))
    printed = "\n".join([f"{args.replicates} simulated benchmarks of {BACKBONES} backbones x {OPTIMIZERS} optimizers "
                         f"per row, γ = {args.gamma:g}, α = 0.05",
                         summary.to_string(index=False, float_format="{:.1f}".format), summary_line(summary)])
    report_simulation(printed, ROOT / "docs" / "analysis.md", "verdicts", args.docs, started)

if __name__ == "__main__":
    main()
