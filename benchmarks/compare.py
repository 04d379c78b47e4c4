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

With --calibration, only the null, at --replicates pairs per seed count, the same pairs judged three ways: with
the rule's noise (pooled_noise: a backbone's cells pooled, a cell flagged unstable left out), with every cell
of the backbone pooled (nothing left out), and with the true noise (known sd, unlimited df). Where the rule
exceeds α, the other two say why: the estimate of the noise, or the test built on it.

    python benchmarks/compare.py [--replicates 400] [--gamma 3] [--calibration] [--docs]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bocb.protocol import cell_means, moved_cells, pooled_noise, relative_cells

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from readme_results import report_simulation  # noqa: E402

BACKBONES, OPTIMIZERS = 6, 5
SEEDS = (2, 3, 5)
SCENARIOS = ("null", "move 1γ", "move 2γ", "move 3γ", "move 4γ")


def side(mean: np.ndarray, n_seeds: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """One benchmark's per-seed results around the true cell means ``mean`` (backbones x optimizers), and
    each backbone's true seed sd."""
    sd = rng.uniform(0.5, 3.0, BACKBONES)
    top1 = mean[:, :, None] + sd[:, None, None] * rng.standard_normal((BACKBONES, OPTIMIZERS, n_seeds))
    b, o, s = np.meshgrid(range(BACKBONES), range(OPTIMIZERS), range(n_seeds), indexing="ij")
    return pd.DataFrame({"backbone": [f"b{i}" for i in b.ravel()], "optimizer": [f"o{i}" for i in o.ravel()],
                         "seed": s.ravel(), "top1": top1.ravel()}), sd


def pair_truth(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True cell means of A, and of B: every backbone shifted by its own amount."""
    truth = rng.normal(60, 10, BACKBONES)[:, None] + rng.normal(0, 4, OPTIMIZERS)[None, :]
    return truth, truth + rng.normal(0, 10, BACKBONES)[:, None]


def replicate(scenario: str, n_seeds: int, gamma: float, rng: np.random.Generator) -> pd.DataFrame:
    """The moved calls of one simulated pair, with which cell carries the planted move."""
    truth, shifted = pair_truth(rng)
    target = int(rng.integers(OPTIMIZERS))
    if scenario != "null":
        shifted[0, target] -= float(scenario.split()[1].rstrip("γ")) * gamma
    (a, _), (b, _) = side(truth, n_seeds, rng), side(shifted, n_seeds, rng)
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


NOISE_ESTIMATES = ("the rule's noise", "every cell pooled", "true noise")


def noise_frames(per_seed: pd.DataFrame, true_sd: np.ndarray) -> dict[str, pd.DataFrame]:
    """One side's noise, per backbone, three ways (NOISE_ESTIMATES), in pooled_noise's columns."""
    means = cell_means(per_seed)
    grouped = means.assign(ss=means["sd"] ** 2 * (means["n_seeds"] - 1), df=means["n_seeds"] - 1) \
        .groupby("backbone", sort=False)[["ss", "df"]].sum()
    every = pd.DataFrame({"backbone": grouped.index, "sd": np.sqrt(grouped["ss"] / grouped["df"]),
                          "df": grouped["df"].astype(int), "scope": "backbone", "unstable": ""})
    # side() lists the backbones in true_sd's order
    known = every.assign(sd=true_sd, df=10 ** 9)
    return dict(zip(NOISE_ESTIMATES, (pooled_noise(per_seed), every, known), strict=True))


def calibration_row(n_seeds: int, replicates: int) -> dict[str, float]:
    """The null at ``n_seeds``: the share of pairs with any cell called moved, per noise estimate (%), and the
    share of pairs where the rule flagged a cell unstable on either side."""
    rng = np.random.default_rng(1000 + n_seeds)
    false, flagged = dict.fromkeys(NOISE_ESTIMATES, 0), 0
    for _ in range(replicates):
        truth, shifted = pair_truth(rng)
        (a, sd_a), (b, sd_b) = side(truth, n_seeds, rng), side(shifted, n_seeds, rng)
        noise_a, noise_b = noise_frames(a, sd_a), noise_frames(b, sd_b)
        flagged += bool((noise_a[NOISE_ESTIMATES[0]]["unstable"] != "").any()
                        or (noise_b[NOISE_ESTIMATES[0]]["unstable"] != "").any())
        for name in NOISE_ESTIMATES:
            cells = moved_cells(relative_cells(a, noise_a[name]), relative_cells(b, noise_b[name]))
            false[name] += bool(cells["moved"].any())
    row: dict[str, float] = {"seeds": n_seeds, "pairs": replicates}
    row |= {f"{name} %": 100 * count / replicates for name, count in false.items()}
    return row | {"a cell flagged unstable %": 100 * flagged / replicates}


def calibration(replicates: int) -> str:
    """The null calibration table (--calibration), one seed count per process."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(calibration_row, SEEDS, [replicates] * len(SEEDS)))
    se = 100 * np.sqrt(0.05 * 0.95 / replicates)
    return "\n".join([f"null: {replicates} simulated pairs per row ({BACKBONES} backbones x {OPTIMIZERS} optimizers, "
                      f"each backbone shifted on B, α = 0.05, Holm over the {BACKBONES * OPTIMIZERS} cells); "
                      f"columns: the share of pairs with any cell called moved, by the noise the rule is given "
                      f"(standard error of a rate of 5 %: {se:.1f} points)",
                      pd.DataFrame(rows).to_string(index=False, float_format="{:.1f}".format)])


def summary_line(summary: pd.DataFrame) -> str:
    at3 = summary[summary["seeds"] == 3].set_index("scenario")
    return (f"false_any={at3.at['null', 'any other cell moved %'] / 100:.3f} "
            f"power_2gamma={at3.at['move 2γ', 'planted cell moved %'] / 100:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=400, help="simulated pairs per scenario and seed count")
    parser.add_argument("--gamma", type=float, default=3.0)
    parser.add_argument("--calibration", action="store_true",
                        help="only the null, judged with three noise estimates (see above)")
    parser.add_argument("--docs", action="store_true", help="also write the output into docs/compare.md")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.calibration:
        report_simulation(calibration(args.replicates), ROOT / "docs" / "compare.md", "compare-null", args.docs,
                          started)
        return
    summary = table(args.replicates, args.gamma)
    printed = "\n".join([f"{args.replicates} simulated pairs of benchmarks of {BACKBONES} backbones x {OPTIMIZERS} "
                         f"optimizers per row, each backbone shifted on B, γ = {args.gamma:g}, α = 0.05, Holm over "
                         f"the {BACKBONES * OPTIMIZERS} cells",
                         summary.to_string(index=False, float_format="{:.1f}".format),
                         summary_line(summary)])
    report_simulation(printed, ROOT / "docs" / "compare.md", "compare-rule", args.docs, started)

if __name__ == "__main__":
    main()
