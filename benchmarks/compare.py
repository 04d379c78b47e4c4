"""How often `bocb compare` calls a cell "moved beyond seed noise" wrongly, and how often it finds a real move:
bocb's own rule (bocb.protocol.relative_cells and moved_cells) on simulated pairs of benchmarks.

Each replicate is a pair of benchmarks A and B of 6 backbones x 5 optimizers at n seeds per cell (n = 2, 3, 5),
simulated as benchmarks/verdicts.py does: top-1 = backbone effect (normal, mean 60, sd 10) + optimizer effect
(normal, sd 4) + seed noise, its sd drawn per backbone and side uniformly from 0.5 to 3 points. B is A's
truth with every backbone shifted by its own amount (normal, sd 10: another dataset, twice the epochs), so
no cell's standing within its backbone changes; then:

- null: nothing else. Any cell called moved is a false call: false_any is the share of pairs with at least
  one (Holm's family-wise error rate, at most α = 0.05 by construction), false_cell the share of cells;
- move kγ (k = 1, 2, 3, 4): one cell of the first backbone loses kγ points on B; power = the share of pairs
  where that cell is called moved; others_moved = the share of the other cells called moved.

The noise each side's rule uses is bocb.protocol.pooled_noise, as `bocb compare` computes it. The last line is
`false_any=X power_2gamma=Y` at 3 seeds.

    python benchmarks/compare.py [--replicates 400] [--gamma 3] [--docs]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bocb.protocol import moved_cells, pooled_noise, relative_cells

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from readme_results import report_simulation  # noqa: E402

BACKBONES, OPTIMIZERS = 6, 5
SEEDS = (2, 3, 5)
SCENARIOS = ("null", "move 1γ", "move 2γ", "move 3γ", "move 4γ")


def side(mean: np.ndarray, n_seeds: int, rng: np.random.Generator) -> pd.DataFrame:
    """One benchmark's per-seed results around the true cell means ``mean`` (backbones x optimizers)."""
    sd = rng.uniform(0.5, 3.0, BACKBONES)
    top1 = mean[:, :, None] + sd[:, None, None] * rng.standard_normal((BACKBONES, OPTIMIZERS, n_seeds))
    b, o, s = np.meshgrid(range(BACKBONES), range(OPTIMIZERS), range(n_seeds), indexing="ij")
    return pd.DataFrame({"backbone": [f"b{i}" for i in b.ravel()], "optimizer": [f"o{i}" for i in o.ravel()],
                         "seed": s.ravel(), "top1": top1.ravel()})


def replicate(scenario: str, n_seeds: int, gamma: float, rng: np.random.Generator) -> pd.DataFrame:
    """The moved calls of one simulated pair, with which cell carries the planted move."""
    truth = rng.normal(60, 10, BACKBONES)[:, None] + rng.normal(0, 4, OPTIMIZERS)[None, :]
    shifted = truth + rng.normal(0, 10, BACKBONES)[:, None]
    target = int(rng.integers(OPTIMIZERS))
    if scenario != "null":
        shifted[0, target] -= float(scenario.split()[1].rstrip("γ")) * gamma
    a, b = side(truth, n_seeds, rng), side(shifted, n_seeds, rng)
    cells = moved_cells(relative_cells(a, pooled_noise(a)), relative_cells(b, pooled_noise(b)))
    return cells.assign(target=(cells["backbone"] == "b0") & (cells["optimizer"] == f"o{target}")
                        & (scenario != "null"))


def table(replicates: int, gamma: float) -> pd.DataFrame:
    rng = np.random.default_rng(2024)
    rows = []
    for n_seeds in SEEDS:
        for scenario in SCENARIOS:
            pairs = [replicate(scenario, n_seeds, gamma, rng) for _ in range(replicates)]
            others = [p[~p["target"]] for p in pairs]
            rows.append({"seeds": n_seeds, "scenario": scenario, "pairs": replicates,
                         "any other cell moved %": 100 * np.mean([o["moved"].any() for o in others]),
                         "other cells moved %": 100 * np.mean([o["moved"].mean() for o in others]),
                         "planted cell moved %": (100 * np.mean([p.loc[p["target"], "moved"].any() for p in pairs])
                                                  if scenario != "null" else np.nan)})
    return pd.DataFrame(rows)


def summary_line(summary: pd.DataFrame) -> str:
    at3 = summary[summary["seeds"] == 3].set_index("scenario")
    return (f"false_any={at3.at['null', 'any other cell moved %'] / 100:.3f} "
            f"power_2gamma={at3.at['move 2γ', 'planted cell moved %'] / 100:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=400, help="simulated pairs per scenario and seed count")
    parser.add_argument("--gamma", type=float, default=3.0)
    parser.add_argument("--docs", action="store_true", help="also write the output into docs/compare.md")
    args = parser.parse_args()
    started = time.perf_counter()
    summary = table(args.replicates, args.gamma)
    printed = "\n".join([f"{args.replicates} simulated pairs of benchmarks of {BACKBONES} backbones x {OPTIMIZERS} "
                         f"optimizers per row, each backbone shifted on B, γ = {args.gamma:g}, α = 0.05, Holm over "
                         f"the {BACKBONES * OPTIMIZERS} cells",
                         summary.to_string(index=False, float_format="{:.1f}".format),
                         summary_line(summary)])
    report_simulation(printed, ROOT / "docs" / "compare.md", "compare-rule", args.docs, started)

if __name__ == "__main__":
    main()
