"""Does JS⁰ (bocb.predict: block-wise Hessian heterogeneity at initialisation, Zhang et al. 2024) predict the
optimizer coupling bocb measures? JS⁰ of every backbone of a spec beside its measured coupling from real searched
runs of that spec, and the statistics the ship rule of issue #32 reads.

1. Measured: `bocb run SPEC --out OUT` (skipped with --skip-run; a finished store re-runs nothing), then bocb's
   own analysis of the store (bocb.analysis.analyse_store: cell selection, Eq. 1 and its seed-aware version,
   the verdicts): per backbone SGD-M's test top-1, the best of the adaptive optimizers (AdamW, Adam, LAMB), the
   deficit between them, whether the seed-aware Eq. 1 rule flags SGD-M ("SGD fails Eq. 1") and the verdict.
2. Predicted: JS⁰ of each backbone at --seeds seeds (each seed: new initial weights and probe vectors, the same
   training images), on the spec's dataset, size and recipe. Each value is appended to --js0-csv with its
   settings and seconds, and read back from there on a later run with the same settings (so --docs after an
   interrupted run does not recompute the finished ones).
3. Statistics: Spearman's rho between the seed-mean JS⁰ and the deficit with a two-sided permutation p-value
   (10,000 random pairings, scipy.stats.permutation_test); leave-one-backbone-out accuracy of a one-threshold
   classifier "JS⁰ >= t: SGD fails Eq. 1" (the paper's direction; t fitted on the other backbones at the
   midpoint that classifies them best), beside the leave-one-out accuracy of always guessing the majority
   label; a scatter plot (--plot). The last line is `spearman=R p=P loo_accuracy=A ship=yes|no`: ship means
   rho >= 0.6 and p < 0.01 on every backbone of the spec.

4. With several specs (by default predict_fashion.yaml and predict_digits.yaml: two data sets), whether the
   measured coupling and JS⁰ each rank the backbones alike on both, as a property of the backbone must.

A store whose run has not finished is analysed without the later stages (edges, seeds) still in progress and
without the backbones whose search is unfinished, and the output says what was left out; where the run
stopped before the second seeds, "fails Eq. 1" is Eq. 1 on the cell means instead of its seed-aware version,
and the output says so.

    python benchmarks/predict.py [--spec benchmarks/predict_fashion.yaml --spec ...] [--out /tmp/SPEC-NAME]
        [--workers 2] [--skip-run] [--seeds 5] [--probes 1] [--steps 12] [--batches 2] [--device cpu]
        [--backbones a,b] [--docs]

At paper size on a GPU: a spec with `size: paper` and `device: cuda`, and --device cuda.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from bocb.analysis import analyse
from bocb.predict import Settings, estimate
from bocb.protocol import UNFINISHED, rule_parameters
from bocb.spec import BenchmarkSpec, load_spec
from bocb.store import Store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from readme_results import report_simulation  # noqa: E402

SGD = "sgd"
ADAPTIVE = ("adamw", "adam", "lamb")
PERMUTATIONS = 10_000
SHIP_RHO, SHIP_P = 0.6, 0.01


def run_search(spec_path: Path, out: Path, workers: int) -> None:
    """`bocb run` of the spec: plans and trains what the store does not hold yet."""
    done = subprocess.run([sys.executable, "-m", "bocb", "run", str(spec_path), "--out", str(out),
                           "--workers", str(workers)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bocb run exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def measured(store: Path, spec: BenchmarkSpec) -> tuple[pd.DataFrame, str]:
    """Per backbone: SGD-M's test top-1, the best adaptive optimizer and its top-1, the deficit, SGD-M's Eq. 1 flags
    (on the cell means, and seed-aware) and the verdict, from bocb's analysis (bocb.analysis.analyse, with the
    rules' parameters stored with the benchmark) of the backbones none of whose planned trials is unfinished;
    with a line on the searched run."""
    db = Store(store, read_only=True)
    benchmark = spec.benchmark_id()
    trials = db.trials_frame(benchmark)
    # a later stage (edges, seeds) still in progress is left out whole, so every backbone is judged on the
    # same stages; backbones whose search itself is unfinished are left out
    is_open = trials["state"].isin([s.value for s in UNFINISHED])
    open_stages = set(trials.loc[is_open, "stage"]) - {"search"}
    staged = trials[~trials["stage"].isin(open_stages)]
    unfinished = set(staged.loc[staged["state"].isin([s.value for s in UNFINISHED]), "backbone"])
    finished = [b for b in dict.fromkeys(trials["backbone"]) if b not in unfinished]
    gamma, alpha = rule_parameters(db.benchmark_spec(benchmark))
    epochs = db.epochs_frame(benchmark)
    kept = staged[staged["backbone"].isin(finished)]
    analysed = analyse(kept, epochs[epochs["trial_key"].isin(kept["trial_key"])], gamma=gamma, alpha=alpha,
                       n_boot=100)
    cells = analysed.cells.set_index(["backbone", "optimizer"])
    verdicts = analysed.verdicts.set_index("backbone")
    rows = []
    for backbone in finished:
        adaptive = cells.loc[[(backbone, o) for o in ADAPTIVE if (backbone, o) in cells.index]]
        best = adaptive["test_top1"].idxmax()[1]
        sgd = cells.loc[(backbone, SGD)]
        rows.append({"backbone": backbone, "sgd": sgd["test_top1"], "best_adaptive": best,
                     "adaptive": adaptive["test_top1"].max(),
                     # rounded: equal deficits differ by float noise otherwise, and Spearman would rank the tie
                     "deficit": round(adaptive["test_top1"].max() - sgd["test_top1"], 9),
                     "sgd_seeds": int(sgd["n_seeds"]), "sgd_eq1": bool(sgd["eq1"]),
                     "sgd_seed_aware": bool(sgd["seed_aware"]), "undecided": bool(sgd["undecided"]),
                     "verdict": verdicts.at[backbone, "verdict"]})
    stages = ", ".join(dict.fromkeys(kept["stage"]))
    state = (f"stages analysed: {stages}"
             + (f"; stages left out, unfinished: {', '.join(sorted(open_stages))}" if open_stages else "")
             + (f"; backbones left out, search unfinished: {', '.join(sorted(unfinished))}" if unfinished else ""))
    return pd.DataFrame(rows), run_line(trials) + f"; {state}"


def run_line(trials: pd.DataFrame) -> str:
    """How many trials the benchmark finished, how many an earlier benchmark had already run (reused from the
    store: started before this benchmark planned its search, i.e. before its newest search trial was created),
    and the wall time from the first to the last of its own."""
    finished = trials[trials["finished_at"].notna()]
    planned = trials.loc[trials["stage"] == "search", "created_at"].max()
    own = finished[finished["started_at"] >= planned]
    wall = (own["finished_at"].max() - own["started_at"].min()) / 60 if len(own) else 0.0
    return (f"searched run: {len(finished)} finished trials ({len(finished) - len(own)} reused from the store, "
            f"{len(own)} run for this benchmark in {wall:.1f} min wall, {own['time_s'].sum() / 60:.1f} min of "
            "trial time)")


def js0_table(spec: BenchmarkSpec, backbones: list[str], seeds: int, settings: Settings, device: str,
              cache: Path, cached_only: bool = False) -> pd.DataFrame:
    """JS⁰ per backbone and seed: from ``cache`` where it holds the same settings, else estimated and appended
    (``cached_only``: not estimated, so a backbone may have fewer seeds, or none)."""
    key = {"data": training_data(spec), "size": spec.size, "image_size": spec.dataset.image_size or 0,
           "device": device, **asdict(settings)}
    known = pd.read_csv(cache) if cache.exists() else pd.DataFrame(columns=["backbone", "seed", *key])
    if missing := [column for column in key if column not in known.columns]:
        raise SystemExit(f"{cache}: no column {', '.join(missing)}: a JS⁰ file of an older benchmarks/predict.py; "
                         "give another --js0-csv")
    same = known.loc[(known[list(key)] == pd.Series(key)).all(axis=1)] if len(known) else known
    rows = []
    for seed in range(seeds):  # seed by seed: an interrupted run has every backbone at its first seeds
        for backbone in backbones:
            hit = same[(same["backbone"] == backbone) & (same["seed"] == seed)]
            if len(hit):
                rows.append(hit.iloc[-1].to_dict())
                continue
            if cached_only:
                continue
            value = estimate(backbone, spec.dataset, size=spec.size, seed=seed, settings=settings,
                             recipe=spec.recipe, recipe_overrides=spec.recipe_overrides, device=device)
            row = {"backbone": backbone, "seed": seed, "js0": value.js0, "blocks": len(value.blocks),
                   "seconds": value.seconds, **key}
            pd.DataFrame([row]).to_csv(cache, mode="a", header=not cache.exists(), index=False)
            print(f"  {backbone} seed {seed}: JS⁰ {value.js0:.4f} ({len(value.blocks)} blocks, {value.seconds:.0f} s)",
                  file=sys.stderr, flush=True)
            rows.append(row)
    return pd.DataFrame(rows)


def training_data(spec: BenchmarkSpec) -> str:
    """What decides the training images JS⁰ is taken on (the dataset, its subsets and the recipe's
    augmentation), as one JSON string: a JS⁰ file's rows are reused only where it is the same."""
    return json.dumps({"dataset": spec.dataset.model_dump(mode="json"), "recipe": spec.recipe,
                       "recipe_overrides": spec.recipe_overrides}, sort_keys=True)


def per_backbone(js: pd.DataFrame) -> pd.DataFrame:
    """Seed mean, sd, min and max of JS⁰, blocks and mean seconds per backbone."""
    grouped = js.groupby("backbone", sort=False)
    return pd.DataFrame({"js0": grouped["js0"].mean(), "js0_sd": grouped["js0"].std(ddof=1),
                         "js0_min": grouped["js0"].min(), "js0_max": grouped["js0"].max(),
                         "seeds": grouped["js0"].size(), "blocks": grouped["blocks"].first(),
                         "seconds": grouped["seconds"].mean()})


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its two-sided permutation p-value over random re-pairings of x and y."""
    result = stats.permutation_test((x, y), lambda a, b: stats.spearmanr(a, b).statistic,
                                    permutation_type="pairings", n_resamples=PERMUTATIONS,
                                    alternative="two-sided", random_state=0)
    return float(result.statistic), float(result.pvalue)


def fit_threshold(x: np.ndarray, label: np.ndarray) -> float:
    """The threshold t of "x >= t: label" that classifies (x, label) best; among equally good ones the
    middle one, each a midpoint between neighbouring values (or beyond the ends: all or none positive)."""
    values = np.unique(x)
    cuts = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2, [values[-1] + 1.0]])
    accuracy = np.array([np.mean((x >= t) == label) for t in cuts])
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(cuts[best[len(best) // 2]])


def leave_one_out(x: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """Leave-one-out accuracy of the one-threshold classifier, and of guessing the others' majority label."""
    hits, majority = [], []
    for i in range(len(x)):
        rest = np.arange(len(x)) != i
        hits.append((x[i] >= fit_threshold(x[rest], label[rest])) == label[i])
        majority.append((label[rest].mean() > 0.5) == label[i])
    return float(np.mean(hits)), float(np.mean(majority))


def plot(table: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    legend = ((True, "tab:red", "SGD-M fails Eq. 1"), (False, "tab:blue", "it does not"))
    for fails, colour, label in legend:
        part = table[table["sgd_fails"] == fails]
        ax.errorbar(part["js0"], part["deficit"], xerr=[part["js0"] - part["js0_min"], part["js0_max"] - part["js0"]],
                    fmt="o", color=colour, label=label, capsize=2)
    for row in table.itertuples():
        ax.annotate(row.backbone, (row.js0, row.deficit), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("JS⁰ at initialisation (seed mean; bars: min-max over seeds)")
    ax.set_ylabel("SGD-M's deficit to the best of AdamW/Adam/LAMB (top-1 points)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def failure_label(table: pd.DataFrame) -> tuple[pd.Series, str]:
    """"SGD fails Eq. 1" per backbone: the seed-aware rule's flag where every backbone has it; else (a run
    stopped before its second seeds) Eq. 1 on the cell means for all, so one rule labels every backbone."""
    undecided = int(table["undecided"].sum())
    if undecided == 0:
        return table["sgd_seed_aware"], "the seed-aware Eq. 1 rule"
    return table["sgd_eq1"], (f"Eq. 1 on the cell means (the seed-aware rule is undecided on {undecided} "
                              "backbones: the run stopped before their second seeds)")


def spread_line(table: pd.DataFrame) -> str:
    """JS⁰'s spread over seeds beside its spread across backbones, and the time per estimate."""
    seeded = table[table["seeds"] >= 2]
    within = (f"JS⁰ sd over seeds ({len(seeded)} backbones with >= 2 seeds): median {seeded['js0_sd'].median():.4f}, "
              f"largest {seeded['js0_sd'].max():.4f} ({seeded.loc[seeded['js0_sd'].idxmax(), 'backbone']})"
              if len(seeded) else "JS⁰ sd over seeds: no backbone has 2 seeds yet")
    return (f"{within}; sd of the seed means across backbones {table['js0'].std(ddof=1):.4f}; seconds per estimate: "
            f"median {table['seconds'].median():.0f}, largest {table['seconds'].max():.0f} "
            f"({table.loc[table['seconds'].idxmax(), 'backbone']})")


def report(table: pd.DataFrame, settings: Settings, seeds: int, run: str, spec: BenchmarkSpec) -> tuple[str, dict]:
    rho, p = spearman(table["js0"].to_numpy(), table["deficit"].to_numpy())
    loo, majority = leave_one_out(table["js0"].to_numpy(), table["sgd_fails"].to_numpy())
    _, rule = failure_label(table)
    complete = len(table) == len(spec.backbones)
    ship = rho >= SHIP_RHO and p < SHIP_P and complete
    shown = table.assign(js0_spread=table["js0_max"] - table["js0_min"])[
        ["backbone", "js0", "seeds", "js0_sd", "js0_spread", "blocks", "seconds", "sgd", "best_adaptive", "adaptive",
         "deficit", "sgd_seeds", "sgd_eq1", "sgd_seed_aware", "verdict"]]
    lines = [f"{spec.name}: {len(table)} backbones, {spec.size}, {spec.dataset.name} at {spec.dataset.image_size} px; "
             f"JS⁰ at up to {seeds} seeds (column seeds; {settings.probes} probe x {settings.steps} Lanczos "
             "steps per block, "
             f"{settings.batches} batches of {settings.batch_size}, blocks: tensors of >= {settings.min_block} "
             "parameters; base-2 Jensen-Shannon distance, in [0, 1])",
             run,
             shown.to_string(index=False, float_format="{:.4g}".format),
             spread_line(table),
             f"Spearman rho(JS⁰, deficit) = {rho:.3f}, two-sided permutation p = {p:.4f} ({PERMUTATIONS} pairings)",
             f"SGD fails Eq. 1 ({rule}) on {int(table['sgd_fails'].sum())} of {len(table)}; "
             "leave-one-backbone-out accuracy of "
             f"'JS⁰ >= t: fails': {loo:.2f} (always the majority label: {majority:.2f})",
             f"ship rule: rho >= {SHIP_RHO} and p < {SHIP_P} on all {len(spec.backbones)} backbones: "
             f"{'met' if ship else 'not met'}" + ("" if complete else f" (only {len(table)} measured)"),
             f"spearman={rho:.3f} p={p:.4f} loo_accuracy={loo:.2f} ship={'yes' if ship else 'no'}"]
    return "\n".join(lines), {"rho": rho, "p": p, "loo": loo, "ship": ship}


def one_spec(path: Path, spec: BenchmarkSpec, args: argparse.Namespace, settings: Settings) -> pd.DataFrame:
    """Run (unless --skip-run), estimate and report one spec (loaded from ``path``); its table, one row per
    backbone."""
    started = time.perf_counter()
    out = args.out or Path("/tmp") / spec.name
    cache = args.js0_csv or ROOT / "benchmarks" / f"js0_{spec.name}.csv"
    if not args.skip_run:
        run_search(path, out, args.workers)
    backbones = args.backbones.split(",") if args.backbones else [b.name for b in spec.backbones]
    js = js0_table(spec, backbones, args.seeds, settings, args.device, cache, args.cached_js0)
    outcome, run = measured(out / "bocb.db", spec)
    missing = [b for b in outcome["backbone"] if b not in set(js["backbone"])]
    if missing:
        run += f"; no JS⁰ yet for {', '.join(missing)} (left out)"
    outcome = outcome[outcome["backbone"].isin(backbones) & ~outcome["backbone"].isin(missing)]
    table = outcome.join(per_backbone(js), on="backbone")
    table["sgd_fails"] = failure_label(table)[0]
    printed, numbers = report(table, settings, args.seeds, run, spec)
    plot(table, args.plot or (ROOT / "docs" if args.docs else out) / f"{spec.name}.png",
         f"{spec.name}: rho = {numbers['rho']:.2f} (p = {numbers['p']:.3f}), "
         f"leave-one-out accuracy {numbers['loo']:.2f}")
    # each spec's output has its own block in docs/predict.md: <!-- SPEC-NAME-run:start -->
    report_simulation(printed, ROOT / "docs" / "predict.md", spec.name, args.docs, started)
    return table.set_index("backbone")


def agreement(tables: dict[str, pd.DataFrame]) -> str:
    """Between every two specs, over their common backbones: Spearman's rho (permutation p) of SGD-M's deficit
    and of JS⁰, and how often "SGD fails Eq. 1" agrees. A coupling that is a property of the backbone ranks
    the backbones alike on both data sets; JS⁰ can predict it no better than it agrees with itself."""
    from sklearn.metrics import cohen_kappa_score

    lines = []
    for (a, left), (b, right) in itertools.combinations(tables.items(), 2):
        common = left.index.intersection(right.index)
        deficit = spearman(left.loc[common, "deficit"].to_numpy(), right.loc[common, "deficit"].to_numpy())
        js = spearman(left.loc[common, "js0"].to_numpy(), right.loc[common, "js0"].to_numpy())
        fails_a, fails_b = (t.loc[common, "sgd_fails"].to_numpy(bool) for t in (left, right))
        rules = {failure_label(t.loc[common])[1] for t in (left, right)}
        chance = fails_a.mean() * fails_b.mean() + (1 - fails_a.mean()) * (1 - fails_b.mean())
        lines += [f"{a} vs {b}, {len(common)} backbones:",
                  f"  SGD-M's deficit: Spearman rho = {deficit[0]:.3f}, two-sided permutation p = {deficit[1]:.4f}",
                  f"  'SGD fails Eq. 1' ({' / '.join(sorted(rules))}): the same on "
                  f"{np.mean(fails_a == fails_b):.2f} of the backbones (by chance, at these rates: {chance:.2f}; "
                  f"Cohen's kappa {cohen_kappa_score(fails_a, fails_b):.2f})",
                  f"  JS⁰ (seed means): Spearman rho = {js[0]:.3f}, two-sided permutation p = {js[1]:.4f}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, action="append", default=None,
                        help="a searched run's spec; repeat for several data sets "
                             "(default: benchmarks/predict_fashion.yaml and benchmarks/predict_digits.yaml)")
    parser.add_argument("--out", type=Path, default=None,
                        help="bocb run's results folder, with one --spec (default /tmp/SPEC-NAME)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-run", action="store_true", help="analyse the store as it is, run nothing")
    parser.add_argument("--seeds", type=int, default=5, help="JS⁰ seeds per backbone")
    parser.add_argument("--probes", type=int, default=Settings.probes)
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--batches", type=int, default=Settings.batches)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for JS⁰")
    parser.add_argument("--backbones", default=None, help="comma-separated subset of the spec's (default: all)")
    parser.add_argument("--js0-csv", type=Path, default=None,
                        help="with one --spec (default benchmarks/js0_SPEC-NAME.csv)")
    parser.add_argument("--plot", type=Path, default=None, help="with one --spec (default docs/SPEC-NAME.png)")
    parser.add_argument("--cached-js0", action="store_true",
                        help="estimate no JS⁰: use what each spec's JS⁰ file holds (up to --seeds per backbone)")
    parser.add_argument("--docs", action="store_true", help="also write the output into docs/predict.md")
    args = parser.parse_args()
    paths = args.spec or [ROOT / "benchmarks" / "predict_fashion.yaml", ROOT / "benchmarks" / "predict_digits.yaml"]
    specs = {path: load_spec(path) for path in paths}
    if len(specs) > 1 and (args.out or args.js0_csv or args.plot):
        parser.error("--out, --js0-csv and --plot name one spec's files: give one --spec with them")
    if args.docs:  # every block's markers, before any block is written
        page = (ROOT / "docs" / "predict.md").read_text()
        for marker in [*(spec.name for spec in specs.values()), "predict-agreement"]:
            if f"<!-- {marker}-run:start -->" not in page:
                parser.error(f"docs/predict.md has no <!-- {marker}-run:start --> block")
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    settings = Settings(probes=args.probes, steps=args.steps, batches=args.batches)
    tables = {spec.name: one_spec(path, spec, args, settings) for path, spec in specs.items()}
    if len(tables) > 1:
        report_simulation(agreement(tables), ROOT / "docs" / "predict.md", "predict-agreement", args.docs, started)


if __name__ == "__main__":
    main()
