"""The protocol's rules, each defined once: stage and trial-state names, how a cell's configuration is
chosen from what is stored, what counts as a failure, which cells get more seeds, when a backbone learned
nothing, and when one result is below another beyond seed noise.

The planner, the store, the analysis, the report and the CLI import these; none keeps a copy. Pure:
pandas, numpy and scipy only (no torch), so the same rules run on a CSV on a machine without models.

A *trial frame* here has one row per trial with the columns backbone, optimizer, config (a label of the
searched configuration), seed, state, budget (1, or the epoch multiplier of a budget re-run), epochs,
val_top1, test_top1 and optionally train_loss, num_classes and test_size.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from bocb._lazy import LazyModule
from bocb.errors import DataError, SpecError, unknown_name_message

if TYPE_CHECKING:
    import pandas as pd
else:  # imported by the first rule that uses it (~0.3 s): a spec's check imports this module for its names only
    pd = LazyModule("pandas")

CELL = ["backbone", "optimizer"]
# The paper's two training settings (Table A3's columns). A dataset follows one (bocb.data.DatasetInfo.setting):
# it picks the recipes' values and Eq. 1's gamma.
SETTINGS = ("cifar100", "imagenet1k")
# Eq. 1's gamma per setting (paper Sec. 3.2): 3 on CIFAR-100 and on COCO transfer, 1 on ImageNet-1K.
GAMMA = {"cifar100": 3.0, "imagenet1k": 1.0, "coco": 3.0}
DEFAULT_GAMMA = GAMMA["cifar100"]  # a spec's rules.gamma when its dataset says nothing else
DEFAULT_ALPHA = 0.05  # significance level of "below the best beyond seed noise"


def rule_parameters(stored_spec: dict) -> tuple[float, float]:
    """(gamma, alpha) of a benchmark's stored spec; specs stored before the rules section named gamma
    ``failure_gap``."""
    rules = stored_spec.get("rules") or {}
    return (float(rules.get("gamma", stored_spec.get("failure_gap", DEFAULT_GAMMA))),
            float(rules.get("alpha", DEFAULT_ALPHA)))


class _Name(str, Enum):
    """A name stored as its plain string (in the store, in CSVs, in f-strings)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class TrialState(_Name):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DIVERGED = "diverged"  # non-finite loss: an optimizer outcome, scored at chance as the paper does
    FAILED = "failed"      # crashed (code, data, environment): never scored; a rerun of the spec retries it


FINISHED = (TrialState.DONE, TrialState.DIVERGED, TrialState.FAILED)  # a worker is done with it
SCORED = (TrialState.DONE, TrialState.DIVERGED)                       # it is a result
UNFINISHED = (TrialState.PENDING, TrialState.RUNNING)


class StageKind(_Name):
    SEARCH = "search"  # the whole lr x wd (x extras, when searched jointly) grid at the first seed
    PROBE = "probe"    # early stopping: every grid configuration's first epochs; hopeless ones stop there
    RUNG = "rung"      # successive halving: rung0, rung1, ...
    EDGES = "edges"    # grid points past an edge best: edges1, edges2, ...
    EXTRAS = "extras"  # two-phase search: the optimizer's own hyper-parameters at the lr and wd chosen first
    SEEDS = "seeds"    # the chosen configuration at the remaining seeds
    BUDGET = "budget"  # the chosen configuration at more epochs
    TRANSFER = "transfer"              # fine-tuning grid from each cell's first-seed pre-trained model
    TRANSFER_EDGES = "transfer-edges"  # fine-tuning grid points past an edge best: transfer-edges1, ...
    TRANSFER_SEEDS = "transfer-seeds"  # the chosen fine-tuning configuration from the other seeds' models


@dataclass
class EpochRecord:
    """One epoch of a trial as the engine measures it and the store's ``epochs`` table holds it (its
    columns are these fields: tests/test_store.py pins them)."""

    epoch: int
    train_loss: float
    val_top1: float | None
    test_top1: float | None  # the test split is measured at a trial's last epoch (every epoch without a val split)
    test_top5: float | None
    lr: float
    time_s: float
    ema_val_top1: float | None = None
    ema_test_top1: float | None = None


EPOCH_FIELDS = tuple(f.name for f in fields(EpochRecord))
# What a finished trial records in its row of the trials table (with its provenance, as JSON): the worker
# builds it (bocb.sweep.worker), the store writes exactly these and refuses any other name.
OUTCOME_COLUMNS = ("state", "val_top1", "test_top1", "test_top5", "train_loss", "time_s", "peak_mem_mb",
                   "optimizer_state_mb", "resumed_from_epoch", "error")


SEARCH_KINDS = (StageKind.PROBE, StageKind.SEARCH, StageKind.RUNG, StageKind.EDGES, StageKind.EXTRAS,
                StageKind.TRANSFER, StageKind.TRANSFER_EDGES)  # stages that try configurations
NUMBERED_KINDS = (StageKind.RUNG, StageKind.EDGES, StageKind.TRANSFER_EDGES)


def stage_name(kind: StageKind, index: int | None = None) -> str:
    """'search', 'seeds', 'budget'; 'rung0', 'edges1', ... for the numbered kinds."""
    return f"{kind}{index}" if kind in NUMBERED_KINDS else str(kind)


def stage_kind(name: str) -> StageKind:
    """The kind of a stage name ('rung2' -> RUNG); ValueError for a name no planner gives."""
    for kind in NUMBERED_KINDS:
        if name.startswith(kind.value) and name[len(kind.value):].isdigit():
            return kind
    return StageKind(name)


def stage_index(name: str) -> int:
    return int(name.removeprefix(stage_kind(name).value))


def is_search_stage(stages: pd.Series) -> pd.Series:
    """True for trials that searched a configuration (not seed re-runs or budget re-runs); False for a
    stage name no planner gives (a CSV's own)."""
    def searched(name: object) -> bool:
        try:
            return stage_kind(str(name)) in SEARCH_KINDS
        except ValueError:
            return False

    return stages.map(searched).astype(bool)


# -- trial keys ------------------------------------------------------------------------------------------

KEY_VERSION = 2
# Recipe ingredients at the value that means "not used". They are left out of a trial's key, so the key
# names only what changes the trial's numbers, and a later bocb that adds an ingredient (entered here with
# its not-used value) keys every earlier trial as before: a store's finished trials stay finished.
NOT_USED: dict[str, Any] = {
    "warmup_epochs": 0, "label_smoothing": 0.0, "drop_path_rate": 0.0, "repeated_aug": 1, "grad_clip": None,
    "randaugment": None, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "random_erasing": 0.0, "ema_decay": None,
    "bce_target_thresh": None, "train_image_ratio": 1.0, "test_crop": None,
}


NOT_USED_FIELDS: dict[str, Any] = {"init": None, "schedule_epochs": None}  # trial fields unused, likewise


def trial_key(config: dict[str, Any]) -> str:
    """The key of a trial from its config (a TrialConfig dumped to JSON types): a versioned hash of the
    config without the recipe ingredients and fields it does not use."""
    recipe = {k: v for k, v in config.get("recipe", {}).items() if not (k in NOT_USED and v == NOT_USED[k])}
    used = {k: v for k, v in config.items() if not (k in NOT_USED_FIELDS and v == NOT_USED_FIELDS[k])}
    canonical = json.dumps({"key_version": KEY_VERSION, **used, "recipe": recipe}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def run_key(config: dict[str, Any]) -> str:
    """The key of the whole run a trial belongs to: a trial with ``schedule_epochs`` trains the first
    ``epochs`` of the run of ``schedule_epochs`` epochs (same recipe, same schedule), whose key this is;
    any other trial is a whole run, its own key."""
    if config.get("schedule_epochs") is None:
        return trial_key(config)
    return trial_key({**config, "epochs": config["schedule_epochs"], "schedule_epochs": None})


def grid_edge(value: float, grid: Iterable[float]) -> str:
    """'low' or 'high' when ``value`` is the lowest or highest of a searched grid of >= 2 distinct values,
    else ''. The one rule for both sides of it: the planner extends the grid past such an edge
    (search.extend_edges, whose optimum may lie beyond) and the report flags the cells still there. Zero
    (no weight decay) is no low edge: nothing lies below it, and a multiplicative step cannot leave it."""
    points = sorted({float(v) for v in grid if not math.isnan(float(v))})
    if len(points) < 2 or math.isnan(value):
        return ""
    if value >= points[-1] or math.isclose(value, points[-1], rel_tol=1e-9):
        return "high"
    if (value <= points[0] or math.isclose(value, points[0], rel_tol=1e-9)) and value > 0:
        return "low"
    return ""


# -- configurations --------------------------------------------------------------------------------------

def config_label(lr: float, weight_decay: float, hparams: dict | None = None) -> str:
    """The name of a searched configuration: 'lr=0.001,wd=0.05' plus any optimizer arguments, sorted."""
    extras = hparams or {}
    return ",".join([f"lr={lr:g}", f"wd={weight_decay:g}"] + [f"{k}={extras[k]}" for k in sorted(extras)])


def _hparams(text: str) -> dict:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise DataError(f"results: column 'hparams_json' must hold JSON objects; found {text!r:.80}")
    return value



def with_config(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``config`` column: as given, else from lr, weight_decay and hparams_json (a CSV
    without lr or weight decay gets 'default': one configuration per cell)."""
    if "config" in frame:
        return frame.assign(config=frame["config"].astype(str))
    if not {"lr", "weight_decay"} <= set(frame) or frame[["lr", "weight_decay"]].isna().all().all():
        return frame.assign(config="default")
    hparams = frame["hparams_json"].fillna("{}").map(_hparams) if "hparams_json" in frame else [None] * len(frame)
    labels = [config_label(lr, wd, h) for lr, wd, h in zip(frame["lr"], frame["weight_decay"], hparams)]
    return frame.assign(config=pd.Series(labels, index=frame.index, dtype=object))


# -- scoring ---------------------------------------------------------------------------------------------

def chance_level(frame: pd.DataFrame) -> pd.Series:
    """Top-1 of a model that learned nothing: 100 / num_classes where the frame says, else 0."""
    if "num_classes" in frame:
        return 100.0 / pd.to_numeric(frame["num_classes"], errors="coerce").fillna(np.inf)
    return pd.Series(0.0, index=frame.index)


def scored(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials that are results: done ones as measured, diverged ones at chance on both splits.

    A crashed (failed) trial is no result and is dropped; so are unfinished ones.
    """
    rows = frame[frame["state"].isin(SCORED)].copy()
    numbers = rows[["val_top1", "test_top1"]].apply(pd.to_numeric, errors="coerce")
    rows = rows[(rows["state"] == TrialState.DIVERGED) | numbers.notna().any(axis=1)]  # done, no number: none
    return at_chance_if_diverged(rows)


def at_chance_if_diverged(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with diverged trials at chance on both splits (a diverged network predicts one class, so
    chance is what it measures, as the paper scores it) and crashed ones without a number."""
    frame = frame.copy()
    diverged, crashed = frame["state"] == TrialState.DIVERGED, frame["state"] == TrialState.FAILED
    chance = chance_level(frame)
    for column in ("val_top1", "test_top1"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
        frame.loc[diverged, column] = chance[diverged]
        frame.loc[crashed, column] = np.nan
    return frame


def main_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials at budget 1 and at their cell's full epochs (halving rungs train fewer and do not compete).

    The full epochs of a cell are the most any budget-1 trial of it was planned with, crashed ones
    included, so a cell whose full-budget trials all crashed does not fall back to a short rung.
    """
    rows = frame[frame["budget"] == 1]
    if rows.empty or rows["epochs"].isna().all():
        return rows
    full = rows.groupby(CELL, sort=False)["epochs"].transform("max")
    return rows[(rows["epochs"] == full) | full.isna()]


def searched_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials that searched a configuration at the benchmark's own budget (budget 1, a search stage:
    grid, rungs, probes, edges, extras), not seed or budget re-runs: what 'the grid searched' means to the
    planner's edge steps, the report's grids and the tuning cost alike."""
    return frame[is_search_stage(frame["stage"]) & (frame["budget"] == 1)]


def stopped_short(frame: pd.DataFrame) -> pd.DataFrame:
    """The configurations a search stopped before its full budget: early stopping's probes that did not go
    on, and halving's configurations cut at a rung. Each is a search trial (budget 1) whose configuration has
    no trial at its cell's full epochs; one row per configuration and seed, its furthest trial. Recorded in
    the store, never scored: :func:`main_budget` leaves them out of every choice and statistic."""
    rows = with_config(frame)
    if "stage" not in rows or rows.empty:
        return rows.iloc[0:0]
    rows = searched_trials(rows)
    ids = CELL + ["config", "seed"]
    reached = main_budget(rows)[ids].drop_duplicates()
    short = rows.merge(reached, on=ids, how="left", indicator=True)
    short = short[short["_merge"] == "left_only"].drop(columns="_merge")
    return short.sort_values("epochs", kind="stable").drop_duplicates(ids, keep="last").reset_index(drop=True)


def selection_metric(frame: pd.DataFrame) -> str:
    """'val_top1' when any finished trial has a validation score, else 'test_top1' (reports warn)."""
    done = frame[frame["state"] == TrialState.DONE]
    return "val_top1" if "val_top1" in done and done["val_top1"].notna().any() else "test_top1"


def selection_scores(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each trial's score when configurations are ranked (the choice, halving's rungs, early stopping's
    probes): ``score``, its selection metric, -inf unless it finished with a number (diverged, crashed,
    missing); ``loss``, its training loss, which breaks ties (+inf likewise)."""
    done = rows["state"] == TrialState.DONE
    loss = pd.to_numeric(rows["train_loss"], errors="coerce") if "train_loss" in rows \
        else pd.Series(np.nan, index=rows.index)
    return pd.DataFrame({"score": rows[metric].where(done & rows[metric].notna(), -math.inf),
                         "loss": loss.where(done).fillna(math.inf)}, index=rows.index)


def ranking_key(score: float, loss: float, config: str) -> tuple[float, float, str]:
    """THE order of configurations, wherever they are ranked (the choice, halving's rungs): the higher
    selection score first, ties to the lower training loss, then to the configuration label
    (:func:`config_label`), so that equal numbers never leave the order to where a list happened to start."""
    return -score, loss, config


def ranked_configs(frame: pd.DataFrame) -> pd.DataFrame:
    """Every candidate configuration of each cell, best first, as :func:`choose_configs` ranks them.

    Candidates are the cell's scored main-budget trials. Configurations are compared on the seeds they
    all share (the search seed under bocb's protocol, since only the chosen one is re-run at other
    seeds; every seed when a full grid was run at each), so re-seeding a choice never changes it. A
    configuration scores the mean selection metric (validation top-1) over those seeds; a diverged seed
    scores minus infinity. Ties go to the lower mean training loss, then to the configuration label.

    Returns one row per (cell, configuration), best first within each cell: backbone, optimizer, config,
    score, loss, val_top1 and test_top1 (means over the compared seeds, a diverged seed at chance as
    :func:`scored` sets it), n_seeds (compared), selected_on. Cells with no scored trial are absent.
    """
    metric = selection_metric(frame)
    rows = scored(main_budget(with_config(frame)))
    columns = CELL + ["config", "score", "loss", "val_top1", "test_top1", "n_seeds", "selected_on"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(**selection_scores(rows, metric).rename(columns={"score": "_score", "loss": "_loss"}))
    # the seeds every configuration of a cell has; a cell whose configurations share none compares every seed
    configs = rows.groupby(CELL, sort=False)["config"].transform("nunique")
    having = rows.groupby(CELL + ["seed"], sort=False)["config"].transform("nunique")
    common = having == configs
    compared = rows[common | ~common.groupby([rows[c] for c in CELL]).transform("any")]
    per_config = compared.groupby(CELL + ["config"], sort=False).agg(
        score=("_score", "mean"), loss=("_loss", "mean"), val_top1=("val_top1", "mean"),
        test_top1=("test_top1", "mean"), n_seeds=("seed", "nunique")).reset_index()
    cells = {cell: i for i, cell in enumerate(dict.fromkeys(zip(rows["backbone"], rows["optimizer"])))}
    keys = [(cells[(b, o)], *ranking_key(score, loss, config)) for b, o, score, loss, config in zip(
        per_config["backbone"], per_config["optimizer"], per_config["score"], per_config["loss"], per_config["config"])]
    order = sorted(range(len(per_config)), key=keys.__getitem__)  # cells as they first appear, best first in each
    return per_config.iloc[order].assign(selected_on=metric).reset_index(drop=True)[columns]


def choose_configs(frame: pd.DataFrame) -> pd.DataFrame:
    """THE rule that chooses each cell's configuration from what is stored: the first of
    :func:`ranked_configs` (the best mean validation top-1 on the seeds all configurations share; ties to
    the lower mean training loss, then the label).

    Returns one row per cell: backbone, optimizer, config, score, selected_on. Cells with no scored
    trial are absent.
    """
    ranked = ranked_configs(frame)
    return ranked.groupby(CELL, sort=False).head(1)[CELL + ["config", "score", "selected_on"]].reset_index(drop=True)


def chosen_seeds(frame: pd.DataFrame, chosen: pd.DataFrame | None = None) -> pd.DataFrame:
    """The scored main-budget trials of each cell's chosen configuration, one row per seed, with
    ``top1`` = test top-1 (chance for a diverged seed): the values every failure rule reads."""
    chosen = choose_configs(frame) if chosen is None else chosen
    rows = scored(main_budget(with_config(frame))).merge(chosen[CELL + ["config"]], on=CELL + ["config"])
    return rows.assign(top1=rows["test_top1"])


def rechecked_seeds(frame: pd.DataFrame, chosen: pd.DataFrame | None = None) -> tuple[pd.DataFrame, int]:
    """(chosen_seeds with every cell that a budget check re-ran at all its seeds replaced by that re-run,
    at the largest such budget; that budget, or 1 when no cell was re-run so): the results the verdict
    reads after ``budget_check: auto``."""
    chosen = choose_configs(frame) if chosen is None else chosen
    main = chosen_seeds(frame, chosen)
    rows = with_config(frame)
    reruns = scored(rows[rows["budget"] > 1]).merge(chosen[CELL + ["config"]], on=CELL + ["config"])
    if reruns.empty:
        return main, 1
    wanted = main.groupby(CELL, sort=False)["seed"].apply(set)
    complete = [(cell, budget) for (*cell, budget), group in reruns.groupby(CELL + ["budget"], sort=False)
                if tuple(cell) in wanted.index and set(group["seed"]) >= wanted[tuple(cell)]]
    if not complete:
        return main, 1
    longest = max(budget for _, budget in complete)
    cells = {tuple(cell) for cell, budget in complete if budget == longest}
    keep = ~main.set_index(CELL).index.isin(list(cells))
    again = reruns[(reruns["budget"] == longest) & reruns.set_index(CELL).index.isin(list(cells))]
    return pd.concat([main[keep], again.assign(top1=again["test_top1"])], ignore_index=True), int(longest)


def seeds_by_cell(per_seed: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """{(backbone, optimizer): the top-1 of each seed}: what the tests of seed noise compare."""
    return {cell: group["top1"].to_numpy(float) for cell, group in per_seed.groupby(CELL, sort=False)}


def cell_means(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: top1 (mean over seeds), n_seeds, sd (sample std; NaN with one seed)."""
    grouped = per_seed.dropna(subset=["top1"]).groupby(CELL, sort=False)["top1"]  # a seed without a number: none
    return pd.DataFrame({"top1": grouped.mean(), "n_seeds": grouped.count(), "sd": grouped.std(ddof=1)}).reset_index()


# -- failure rules ---------------------------------------------------------------------------------------

RULES = ("eq1", "tukey", "gap")


def iqr(values: pd.Series) -> float:
    return float(values.quantile(0.75) - values.quantile(0.25))


def failure_threshold(values: pd.Series, rule: str = "eq1", gamma: float = 3.0, gap: float = 3.0) -> float:
    """The top-1 below which a result counts as a failure, for one backbone's results.

    eq1:   max(R) - min(Q75(R) - Q25(R), gamma)   (paper Eq. 1, as printed; quartiles interpolate linearly)
    tukey: Q25(R) - 1.5 * IQR(R)                  (Tukey's lower fence)
    gap:   max(R) - gap                           (a fixed distance to the best)
    """
    if rule not in RULES:
        raise SpecError("rule", unknown_name_message("failure rule", rule, RULES))
    values = values.dropna()
    if rule == "eq1":
        return float(values.max() - min(iqr(values), gamma))
    if rule == "tukey":
        return float(values.quantile(0.25) - 1.5 * iqr(values))
    return float(values.max() - gap)


def failure_flags(long: pd.DataFrame, rule: str = "eq1", gamma: float = 3.0, gap: float = 3.0) -> pd.Series:
    """True where a cell's top1 is strictly below its backbone's threshold (``long``: backbone, top1)."""
    threshold = long.groupby("backbone", sort=False)["top1"].transform(
        lambda r: failure_threshold(r, rule, gamma, gap))
    return long["top1"] < threshold


def best_cells(means: pd.DataFrame) -> pd.Series:
    """True for each backbone's best cell (the first in order among equals)."""
    best = means.groupby("backbone", sort=False)["top1"].idxmax()
    return means.index.isin(best.to_numpy())


def cells_needing_seeds(frame: pd.DataFrame, gamma: float) -> pd.DataFrame:
    """The cells the seed-aware failure rule compares, and so must have more than one seed: each
    backbone's best cell and every cell Eq. 1 flags (on seed means of the chosen configurations).

    Returns backbone, optimizer, n_seeds. The planner re-seeds exactly these; the analysis calls a
    flag 'undecided' while one of them still has a single seed.
    """
    means = cell_means(chosen_seeds(frame))
    if means.empty:
        return means[CELL + ["n_seeds"]]
    wanted = failure_flags(means, "eq1", gamma) | best_cells(means)
    return means.loc[wanted, CELL + ["n_seeds"]].reset_index(drop=True)


# -- seed noise ------------------------------------------------------------------------------------------

MIN_NOISE_DF = 3  # fewer within-cell degrees of freedom on one backbone: pool over all backbones
UNSTABLE_ALPHA = 0.01  # a cell whose seeds spread beyond its backbone's other cells at this level (Bonferroni)
SUSPECT_ALPHA = 0.1  # a contrast's own cell spreading beyond its backbone's noise at this level: its own noise


def pooled_noise(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per backbone: the seed-to-seed standard deviation of a cell's top-1, pooled over its stable cells
    with several seeds (sd, df, scope, unstable).

    One wild cell cannot hijack it: a cell whose seeds spread more than the backbone's other cells beyond
    chance (an F-test of its variance against theirs, Bonferroni over the backbone's cells at
    UNSTABLE_ALPHA) is named in ``unstable`` and left out of the pool; its own comparisons use its own
    seeds (:func:`cell_variances`). A backbone with fewer than MIN_NOISE_DF degrees of freedom gets the
    value pooled over every backbone's stable cells (scope 'all'); none anywhere gives sd = NaN, df = 0.
    """
    means = _with_unstable(cell_means(per_seed))
    stable = means[~means["unstable"]]
    total_ss, total_df = float(stable["ss"].sum()), int(stable["df"].sum())
    overall = math.sqrt(total_ss / total_df) if total_df else math.nan
    rows = []
    for backbone, group in means.groupby("backbone", sort=False):
        kept = group[~group["unstable"]]
        df = int(kept["df"].sum())
        unstable = ", ".join(group.loc[group["unstable"], "optimizer"])
        if df >= MIN_NOISE_DF:
            rows.append((backbone, math.sqrt(float(kept["ss"].sum()) / df), df, "backbone", unstable))
        else:
            rows.append((backbone, overall, total_df, "all", unstable))
    return pd.DataFrame(rows, columns=["backbone", "sd", "df", "scope", "unstable"])


def relative_cells(per_seed: pd.DataFrame, noise: pd.DataFrame) -> pd.DataFrame:
    """Per cell: its mean top-1, ``relative`` (its standing: the mean minus the median of its backbone's cell
    means, which a uniform shift of the backbone leaves alone), the variance of its mean from the backbone's
    pooled seed noise (``noise``: :func:`pooled_noise`) over its seeds, that noise's df and sd."""
    means = cell_means(per_seed)
    sd = means["backbone"].map(noise.set_index("backbone")["sd"])
    df = means["backbone"].map(noise.set_index("backbone")["df"])
    centre = means.groupby("backbone", sort=False)["top1"].transform("median")
    return means.assign(relative=means["top1"] - centre, variance=sd ** 2 / means["n_seeds"], df=df, noise_sd=sd)


MOVE_DRAWS = 2000  # parametric draws for the null variance of a cell's change against its backbone's median change


def moved_cells(first: pd.DataFrame, second: pd.DataFrame, alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
    """The cells of two benchmarks (:func:`relative_cells` of each, on the same optimizers per backbone)
    whose standing within their backbone changed beyond seed noise.

    A cell's change is its mean on B minus on A; ``shift`` is that change minus the median change of the
    backbone's other cells, so a shift of the whole backbone (another dataset, more epochs) moves nothing and
    one cell that moved barely moves the others (the verdict rule centres interactions the same way). Null:
    the cell changed as its backbone's other cells did. ``shift``'s variance is the cell's own plus that of
    the others' median (parametric draws, fixed seed); the t-test is two-sided with Welch–Satterthwaite df
    from each side's noise df, Holm over every testable cell compared, so the chance of calling any cell
    moved when none did is meant to be at most ``alpha``; benchmarks/compare.py measures it near ``alpha``,
    somewhat above it at 3 seeds, mostly because the pool leaves cells flagged unstable out (docs/compare.md
    prints the rates). A cell without a noise
    estimate on either side, or alone on its backbone, is not testable (p NaN, never moved)."""
    from scipy import stats  # here: see _with_unstable

    both = first.merge(second, on=CELL, suffixes=("_a", "_b"))
    change = both["top1_b"] - both["top1_a"]
    variance = both["variance_a"] + both["variance_b"]
    df = variance ** 2 / (both["variance_a"] ** 2 / both["df_a"] + both["variance_b"] ** 2 / both["df_b"])
    others = pd.DataFrame({"change": change, "variance": variance}) \
        .groupby(both["backbone"], sort=False, group_keys=False)[["change", "variance"]].apply(_others_median)
    shift = change - others["median"]
    null_variance = variance + others["variance"]
    p = pd.Series(np.nan, index=both.index)
    testable = null_variance.notna() & (null_variance > 0) & df.notna() & (df > 0)
    p[testable] = 2 * stats.t.sf(np.abs(shift[testable]) / np.sqrt(null_variance[testable]), df[testable])
    adjusted = pd.Series(np.nan, index=both.index)
    if testable.any():
        adjusted[testable] = holm_adjusted(p[testable].to_numpy(float))
    return both.assign(change=change, shift=shift, se=np.sqrt(null_variance), p=p, p_holm=adjusted,
                       moved=adjusted.lt(alpha).fillna(False).astype(bool))


def _others_median(cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell of one backbone: the median change of its other cells, and that median's variance from
    parametric draws of their changes (NaN where untestable)."""
    values, changes = cells["variance"].to_numpy(float), cells["change"].to_numpy(float)
    if len(values) < 2 or not np.isfinite(values).all():
        return pd.DataFrame({"median": math.nan, "variance": math.nan}, index=cells.index)
    draws = np.random.default_rng(len(values)).standard_normal((MOVE_DRAWS, len(values))) * np.sqrt(values)
    rest = [np.delete(np.arange(len(values)), position) for position in range(len(values))]
    return pd.DataFrame({"median": [float(np.median(changes[r])) for r in rest],
                         "variance": [float(np.median(draws[:, r], axis=1).var()) for r in rest]}, index=cells.index)


def _with_unstable(means: pd.DataFrame) -> pd.DataFrame:
    """cell_means plus ss, df and unstable (see pooled_noise)."""
    from scipy import stats  # here, not at the top: scipy.stats costs ~0.7 s, and the spec check imports this module

    means = means.assign(ss=means["sd"].fillna(0.0) ** 2 * (means["n_seeds"] - 1), df=means["n_seeds"] - 1)
    unstable = pd.Series(False, index=means.index)
    for _, group in means[means["df"] > 0].groupby("backbone", sort=False):
        if len(group) < 3:  # two cells: which of the two is the wild one cannot be told
            continue
        for index, cell in group.iterrows():
            rest = group.drop(index)
            rest_var = float(rest["ss"].sum()) / int(rest["df"].sum())
            if rest_var == 0:
                unstable[index] = bool(cell.ss > 0)
                continue
            p = stats.f.sf(cell.ss / cell.df / rest_var, cell.df, int(rest["df"].sum()))
            unstable[index] = bool(p < UNSTABLE_ALPHA / len(group))
    return means.assign(unstable=unstable)


def below_beyond_noise(cell: np.ndarray, best: np.ndarray, sd: float, df: int, alpha: float = 0.05) -> bool:
    """One-sided test that a cell's seeds lie below the best cell's seeds beyond seed noise.

    Both replicated (>= 2 seeds each): Welch's t-test on their own seeds, so an unstable cell's spread
    counts against its own evidence only. Otherwise: a t-test with the pooled seed noise ``sd`` (``df``
    degrees of freedom, from :func:`pooled_noise`); False when no noise was measured. Exact data (no
    spread) are below whenever smaller.
    """
    from scipy import stats  # here, not at the top: scipy.stats costs ~0.7 s, and the spec check imports this module

    cell, best = np.asarray(cell, float), np.asarray(best, float)
    if best.mean() <= cell.mean():
        return False
    if len(cell) >= 2 and len(best) >= 2:
        if np.var(cell) == 0 and np.var(best) == 0:
            return True
        with warnings.catch_warnings():  # one constant group (all seeds at chance) is exact data, not lost precision
            warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation", RuntimeWarning)
            return bool(stats.ttest_ind(cell, best, equal_var=False, alternative="less").pvalue < alpha)
    if math.isnan(sd) or df < 1:
        return False
    if sd == 0:
        return True
    t = (best.mean() - cell.mean()) / (sd * math.sqrt(1 / len(cell) + 1 / len(best)))
    return bool(stats.t.sf(t, df) < alpha)


def detectable_gap(sd: float, df: int, n_best: int, alpha: float = 0.05) -> float:
    """The smallest shortfall of a one-seed cell to the best that :func:`below_beyond_noise` detects with
    the pooled noise."""
    from scipy import stats  # as in below_beyond_noise

    if math.isnan(sd) or df < 1:
        return math.inf
    return float(stats.t.isf(alpha, df) * sd * math.sqrt(1 + 1 / n_best))


def seed_aware_flags(per_seed: pd.DataFrame, gamma: float = 3.0, alpha: float = 0.05) -> pd.DataFrame:
    """Eq. 1 on seed means, kept only where the shortfall to the best is beyond seed noise.

    One row per cell: backbone, optimizer, top1 (mean), n_seeds, eq1, seed_aware (True/False) and
    undecided (an Eq.-1 flag that cannot be tested yet: the cell or the best has one seed).
    """
    means = cell_means(per_seed)
    means["eq1"] = failure_flags(means, "eq1", gamma)
    noise = pooled_noise(per_seed).set_index("backbone")
    seeds = seeds_by_cell(per_seed)
    best = means[best_cells(means)].set_index("backbone")["optimizer"]
    aware, undecided = [], []
    for row in means.itertuples():
        mine, top = seeds[(row.backbone, row.optimizer)], seeds[(row.backbone, best[row.backbone])]
        replicated = len(mine) >= 2 and len(top) >= 2
        aware.append(bool(row.eq1 and replicated and below_beyond_noise(
            mine, top, noise.at[row.backbone, "sd"], int(noise.at[row.backbone, "df"]), alpha)))
        undecided.append(bool(row.eq1 and not replicated))
    return means.assign(seed_aware=aware, undecided=undecided).drop(columns=["sd"])


# -- the coupling rule -----------------------------------------------------------------------------------
#
# Null of "coupled": the backbone's optimizer profile (each optimizer's seed mean minus the backbone's
# mean over its optimizers) is the common one (the same profile averaged over the other backbones), up to
# seed noise. One contrast per optimizer, d = own profile - common profile, each a t-test against the seed
# noise (Welch-Satterthwaite degrees of freedom over the noise estimates it uses), two-sided, Holm over
# the backbone's optimizers: "coupled" when one rejects.
# "Not coupled" is the equivalence claim that every contrast lies within ±γ: two one-sided tests per
# contrast at α, all of which must reject (an intersection-union test needs no multiplicity correction).
# Neither: unresolved, with the contrast the seeds could not settle and the seeds per cell that would.
# The t-test of a linear contrast and its TOST are written by hand: statsmodels' TOST takes two samples,
# not a contrast of many cells with noise pooled from several sources. benchmarks/verdicts.py measures
# how often each call is wrong (docs/analysis.md).

MAX_SEEDS_ASKED = 50  # beyond it, "more than 50 seeds": the estimate sits too close to the line to settle


class CellNoise(NamedTuple):
    """The seed noise a cell's mean is judged with: the variance of one seed's top-1, its degrees of
    freedom and the estimate it comes from (a backbone's pool, every backbone's, or the cell's own seeds),
    and the cell's own seed variance and degrees of freedom (NaN, 0 with one seed)."""

    var: float
    df: int
    source: tuple
    own_var: float
    own_df: int


def cell_variances(per_seed: pd.DataFrame, noise: pd.DataFrame | None = None) -> dict[tuple[str, str], CellNoise]:
    """{cell: CellNoise}: the backbone's pooled noise, or for an unstable cell (pooled_noise) its own seeds."""
    noise = (pooled_noise(per_seed) if noise is None else noise).set_index("backbone")
    means = _with_unstable(cell_means(per_seed))
    out = {}
    for row in means.itertuples():
        own = (row.ss / row.df, int(row.df)) if row.df >= 1 else (math.nan, 0)
        if row.unstable:
            out[(row.backbone, row.optimizer)] = CellNoise(*own, ("cell", row.backbone, row.optimizer), *own)
        else:
            mine = noise.loc[row.backbone]
            source = ("all",) if mine["scope"] == "all" else ("backbone", row.backbone)
            out[(row.backbone, row.optimizer)] = CellNoise(float(mine["sd"]) ** 2, int(mine["df"]), source, *own)
    return out


CONTRAST_COLUMNS = ["backbone", "optimizer", "effect", "se", "df", "p", "p_holm", "p_equiv", "n_seeds"]


def interaction_contrasts(per_seed: pd.DataFrame, gamma: float, noise: pd.DataFrame | None = None
                          ) -> pd.DataFrame:
    """One row per cell: its interaction contrast (``effect``: own profile minus the common profile), its
    standard error and degrees of freedom, the two-sided p of "no interaction", Holm-adjusted over the
    backbone's optimizers (``p_holm``), and the p of the equivalence test "within ±γ" (``p_equiv``). NaN
    where no other backbone or no noise is measured.

    The common profile of a backbone is, per optimizer, the median of the other backbones' profiles (those
    that have every optimizer it has): a minority of strongly coupled backbones (two of six on which SGD
    fails by 30 points) cannot drag it, as they would drag a mean and make every other backbone look coupled
    in the opposite direction. The median's variance comes from a parametric bootstrap of the other
    backbones' cell means under their seed noise (MEDIAN_DRAWS draws, a fixed seed: the same results always
    give the same verdict)."""
    table = cell_means(per_seed)
    means = {(b, o): (float(top), float(n))
             for b, o, top, n in table[CELL + ["top1", "n_seeds"]].itertuples(index=False)}
    variances = cell_variances(per_seed, noise)
    optimizers = {b: list(g["optimizer"]) for b, g in table.groupby("backbone", sort=False)}
    parts = []
    for backbone, own in optimizers.items():
        others = [b for b, theirs in optimizers.items() if b != backbone and set(own) <= set(theirs)]
        family = [(backbone, o, *_contrast(means, variances, backbone, o, own, others), means[(backbone, o)][1])
                  for o in own]
        parts.append(contrast_tests(family, gamma))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CONTRAST_COLUMNS)


def contrast_tests(family: list[tuple[str, str, float, float, float, float]], gamma: float) -> pd.DataFrame:
    """One family of contrasts, each (backbone, optimizer, effect, variance, df, n_seeds), tested: the
    two-sided p of "zero", Holm over the family, and the equivalence p of "within ±γ" (CONTRAST_COLUMNS).
    The coupling rule's family is a backbone's optimizers; the transfer rule's, a backbone's pre-training
    optimizers."""
    from scipy import stats  # as in below_beyond_noise

    rows = []
    for backbone, optimizer, effect, var, df, n_seeds in family:
        t = effect / math.sqrt(var) if var > 0 else math.copysign(math.inf, effect) if effect else 0.0
        p = float(2 * stats.t.sf(abs(t), df)) if df > 0 else math.nan
        rows.append([backbone, optimizer, effect, math.sqrt(var), df, p, math.nan,
                     _equivalence_p(effect, var, df, gamma), n_seeds])
    frame = pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
    if len(frame) and not frame["p"].isna().any():
        frame["p_holm"] = holm_adjusted(frame["p"].to_numpy(float))
    return frame


def holm_adjusted(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values. By hand: statsmodels' multipletests runs gc.collect() on every
    Holm call (0.1 s), which the simulation of this rule (thousands of calls) cannot afford."""
    order = np.argsort(p)
    stepped = np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1))
    adjusted = np.empty_like(stepped)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


MEDIAN_DRAWS = 400  # parametric-bootstrap draws of the common profile's median (its sd to about 4 %)


def _contrast(means: dict, variances: dict, backbone: str, optimizer: str, own: list[str],
              others: list[str]) -> tuple[float, float, float]:
    """(effect, variance, Welch-Satterthwaite df) of one interaction contrast; NaNs without others."""
    if not others:
        return math.nan, math.nan, 0.0
    # profiles are centred on the backbone's stable cells: an unstable cell's wild mean would otherwise
    # shift every other optimizer's contrast through the backbone's mean
    centre = [o for o in own if variances[(backbone, o)].source[0] != "cell"] or own
    weights = np.array([(o == optimizer) - (o in centre) / len(centre) for o in own])
    cell_means_of = np.array([[means[(b, o)][0] for o in own] for b in [backbone, *others]])
    effect = float(weights @ cell_means_of[0] - np.median(cell_means_of[1:] @ weights))
    by_source: dict[tuple, list] = {}
    for o, w in zip(own, weights):
        var, df, source = _judged_noise(variances[(backbone, o)], (backbone, o), is_own=o == optimizer)
        by_source.setdefault(source, [0.0, df])[0] += w * w * var / means[(backbone, o)][1]
    spread = np.array([[math.sqrt(variances[(b, o)].var / means[(b, o)][1]) for o in own] for b in others])
    if np.isnan(spread).any() or any(df < 1 for _, df in by_source.values()):
        return effect, math.nan, 0.0
    draws = cell_means_of[1:] + spread * np.random.default_rng(0).standard_normal((MEDIAN_DRAWS, *spread.shape))
    reference_df = min(variances[(b, o)].df for b in others for o in own)
    by_source[("median of others",)] = [float(np.median(draws @ weights, axis=1).var(ddof=1)), reference_df]
    total = sum(v for v, _ in by_source.values())
    if total == 0:
        return effect, 0.0, math.inf
    df = total ** 2 / sum(v * v / df for v, df in by_source.values() if v > 0)
    return effect, float(total), float(df)


def _judged_noise(noise: CellNoise, cell: tuple[str, str], is_own: bool) -> tuple[float, int, tuple]:
    """The noise a cell enters a contrast with. The contrast's own cell is judged by its own seeds when they
    spread wider than its backbone's noise at SUSPECT_ALPHA (one-sided F-test): a cell too wild for its
    backbone whose seeds did not reach the unstable line would otherwise borrow the backbone's smaller noise
    and look like an interaction. Measured in benchmarks/verdicts.py ("wild cell")."""
    from scipy import stats  # as in below_beyond_noise

    if is_own and noise.own_df >= 1 and noise.df >= 1 and noise.var > 0 and noise.own_var > noise.var \
            and stats.f.sf(noise.own_var / noise.var, noise.own_df, noise.df) < SUSPECT_ALPHA:
        return noise.own_var, noise.own_df, ("cell", *cell)
    return noise.var, noise.df, noise.source


def _equivalence_p(effect: float, var: float, df: float, gamma: float) -> float:
    """Two one-sided tests of -γ < effect < γ: the larger of their p-values."""
    from scipy import stats  # as in below_beyond_noise

    if math.isnan(var) or df <= 0:
        return math.nan
    if var == 0:
        return 0.0 if abs(effect) < gamma else 1.0
    se = math.sqrt(var)
    return float(max(stats.t.sf((effect + gamma) / se, df), stats.t.sf((gamma - effect) / se, df)))


DIFFERENT_CALL, EQUIVALENT_CALL = "different", "equivalent"
UNRESOLVED_CALL, UNTESTABLE_CALL = "unresolved", "untestable"


def contrast_call(contrasts: pd.DataFrame, alpha: float = 0.05) -> str:
    """The rule on one family of contrasts (contrast_tests): 'equivalent' when every contrast is within ±γ
    (a backbone not coupled), else 'different' when one rejects "zero" after Holm (coupled), else
    'unresolved'; 'untestable' with no common profile or no seed noise to test against."""
    if contrasts.empty or contrasts["p"].isna().any():
        return UNTESTABLE_CALL
    if (contrasts["p_equiv"] < alpha).all():
        return EQUIVALENT_CALL
    if (contrasts["p_holm"] < alpha).any():
        return DIFFERENT_CALL
    return UNRESOLVED_CALL


def seeds_to_settle(contrast: pd.Series, n_optimizers: int, gamma: float, alpha: float = 0.05) -> int | None:
    """Seeds per cell that would settle one unresolved contrast if its estimate held: the fewest with
    which it would reject "no interaction" (Bonferroni over the optimizers, Holm's first step) or fall
    within ±γ; None beyond MAX_SEEDS_ASKED. Standard error and degrees of freedom scale with the seeds."""
    from scipy import stats  # as in below_beyond_noise

    n_now = max(float(contrast["n_seeds"]), 1.0)
    effect, se, df = abs(float(contrast["effect"])), float(contrast["se"]), float(contrast["df"])
    for n in range(int(n_now) + 1, MAX_SEEDS_ASKED + 1):
        scaled_se = se * math.sqrt(n_now / n)
        scaled_df = df * (n - 1) / max(n_now - 1, 1.0)
        if effect / scaled_se > stats.t.isf(alpha / 2 / n_optimizers, scaled_df):
            return n
        if effect + stats.t.isf(alpha, scaled_df) * scaled_se < gamma:
            return n
    return None


def still_improving(curves: np.ndarray, gamma: float, alpha: float = 0.05) -> bool:
    """True when a cell's curve is still climbing at its last epoch. ``curves``: seeds x epochs, each row a
    seed's validation top-1 over the last half of its epochs (late_curves). One slope for all seeds (each
    with its own level) by least squares: still improving when it is positive beyond the curves' own
    epoch-to-epoch noise (one-sided t-test at ``alpha``, residual degrees of freedom) and the rise it fits
    over those epochs is at least γ/2 (kept up over a second budget, it could move the cell by γ)."""
    from scipy import stats  # as in below_beyond_noise

    curves = np.asarray(curves, float)
    if curves.ndim != 2 or curves.shape[1] < 3 or np.isnan(curves).any():
        return False
    seeds, points = curves.shape
    t = np.arange(points) - (points - 1) / 2
    slope = float(((curves - curves.mean(axis=1, keepdims=True)) @ t).sum() / (seeds * (t @ t)))
    if slope * (points - 1) < gamma / 2:
        return False
    residuals = curves - curves.mean(axis=1, keepdims=True) - slope * t
    df = seeds * points - seeds - 1
    variance = float((residuals ** 2).sum()) / df
    if variance == 0:
        return True
    return bool(stats.t.sf(slope / math.sqrt(variance / (seeds * (t @ t))), df) < alpha)


# -- did the backbone learn? -----------------------------------------------------------------------------

def chance_margin(chance: float, test_size: float, noise_sd: float) -> float:
    """How far above chance a backbone's best must be to show it learned: three binomial standard errors
    of an accuracy at chance on the test set (when its size is known), or two seed-noise standard
    deviations, whichever is larger, and never under half a point."""
    margins = [0.5]
    if test_size and not math.isnan(test_size) and 0 < chance < 100:
        margins.append(3 * 100 * math.sqrt(chance / 100 * (1 - chance / 100) / test_size))
    if not math.isnan(noise_sd):
        margins.append(2 * noise_sd)
    return max(margins)


def did_not_learn(best_top1: float, chance: float, test_size: float, noise_sd: float) -> bool:
    """True when a backbone's best cell is within noise of chance: nothing to compare optimizers on."""
    return best_top1 <= chance + chance_margin(chance, test_size, noise_sd)


def backbone_floor(trials: pd.DataFrame) -> pd.DataFrame:
    """Per backbone: chance top-1 and the test set's size (NaN when the frame does not say)."""
    chance = chance_level(trials)
    size = pd.to_numeric(trials["test_size"], errors="coerce") if "test_size" in trials else chance * math.nan
    frame = pd.DataFrame({"backbone": trials["backbone"], "chance": chance, "test_size": size})
    return frame.groupby("backbone", sort=False).agg(chance=("chance", "max"), test_size=("test_size", "max"))


def learned_backbones(per_seed: pd.DataFrame, trials: pd.DataFrame) -> pd.Series:
    """True per backbone whose best cell is beyond noise of chance (did_not_learn)."""
    means = cell_means(per_seed)
    noise = pooled_noise(per_seed).set_index("backbone")
    floor = backbone_floor(trials)
    best = means.groupby("backbone", sort=False)["top1"].max()
    return pd.Series({b: not did_not_learn(top, floor.at[b, "chance"], floor.at[b, "test_size"],
                                           noise.at[b, "sd"]) for b, top in best.items()}, name="learned")


# -- convergence before coupling -------------------------------------------------------------------------

def curve_column(epochs: pd.DataFrame) -> str:
    """The validation curve, or the test curve when the epochs frame has no validation values."""
    return "val_top1" if "val_top1" in epochs and epochs["val_top1"].notna().any() else "test_top1"


def late_curves(trials: pd.DataFrame, epochs: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """{cell: seeds x epochs, each seed's validation top-1 (test top-1 without a validation split) over the
    last half of its epochs (at least 3)}, for the trials in ``trials`` (backbone, optimizer, trial_key; the
    chosen configuration's seeds) from ``epochs`` (trial_key, epoch, val_top1, test_top1): what
    still_improving reads. Seeds with fewer epochs than the cell's most are left out."""
    if epochs is None or epochs.empty or not len(trials):
        return {}
    column = curve_column(epochs)
    joined = trials[CELL + ["trial_key"]].merge(epochs[["trial_key", "epoch", column]], on="trial_key")
    found: dict[tuple[str, str], list[np.ndarray]] = {}
    for (backbone, optimizer, _), seed in joined.groupby(CELL + ["trial_key"], sort=False):
        found.setdefault((backbone, optimizer), []).append(seed.sort_values("epoch")[column].to_numpy(float))
    out = {}
    for cell, curves in found.items():
        length = max(len(c) for c in curves)
        half = max(3, math.ceil(length / 2))
        full = [c[-half:] for c in curves if len(c) == length]
        if length >= 3 and full:
            out[cell] = np.vstack(full)
    return out


def climbing_cells(contrasts: pd.DataFrame, best: str, curves: dict, gamma: float, alpha: float = 0.05
                   ) -> list[str]:
    """The optimizers of one coupled backbone whose cells its verdict rests on (its best, and those whose
    contrast rejects after Holm) and that are still improving at their last epoch; [] unless coupled."""
    if contrast_call(contrasts, alpha) != DIFFERENT_CALL:
        return []
    backbone = contrasts["backbone"].iloc[0]
    resting = dict.fromkeys([best, *contrasts.loc[contrasts["p_holm"] < alpha, "optimizer"]])
    return [o for o in resting if still_improving(curves.get((backbone, o), np.empty((0, 0))), gamma, alpha)]


def cells_to_recheck(trials: pd.DataFrame, epochs: pd.DataFrame, gamma: float, alpha: float = 0.05
                     ) -> list[tuple[str, str]]:
    """The cells ``budget_check: auto`` re-runs at twice the epochs: on each backbone the coupling rule
    calls coupled, the cells its verdict rests on that are still improving (climbing_cells). ``trials``: a
    trial frame of the main budget; ``epochs``: their per-epoch curves."""
    chosen = chosen_seeds(trials)
    per_seed = chosen[CELL + ["seed", "top1"]]
    if per_seed.empty:
        return []
    learned = learned_backbones(per_seed, trials)
    judged = per_seed[per_seed["backbone"].map(learned).astype(bool)]
    if judged.empty:
        return []
    noise = pooled_noise(judged)
    contrasts = interaction_contrasts(judged, gamma, noise)
    curves = late_curves(chosen, epochs)
    best = cell_means(judged).sort_values("top1", ascending=False, kind="stable").groupby("backbone").head(1)
    best = dict(zip(best["backbone"], best["optimizer"]))
    return [(b, o) for b, group in contrasts.groupby("backbone", sort=False)
            for o in climbing_cells(group, best[b], curves, gamma, alpha)]


# -- transfer --------------------------------------------------------------------------------------------

def transfer_label(backbone: str, pre_optimizer: str, mode: str) -> str:
    """The name of a transfer cell's source: a backbone pre-trained with an optimizer, in a mode."""
    return json.dumps([backbone, pre_optimizer, mode])


def split_transfer_label(label: str) -> tuple[str, str, str]:
    backbone, pre_optimizer, mode = json.loads(label)
    return backbone, pre_optimizer, mode


def transfer_cells(trials: pd.DataFrame, sources: pd.DataFrame) -> pd.DataFrame:
    """Fine-tuning trials with their lineage (``pre_optimizer``, ``mode``, ``source_key``) and, as
    ``backbone``, their source's label (:func:`transfer_label`): every rule of this module (choose_configs,
    chosen_seeds, ...) then applies to source x fine-tuning optimizer cells unchanged. ``sources``: the
    pre-training trials (trial_key, optimizer)."""
    init = trials["config_json"].map(lambda text: json.loads(text).get("init") or {})
    source_key = init.map(lambda i: i.get("trial"))
    pre_optimizer = source_key.map(dict(zip(sources["trial_key"], sources["optimizer"])))
    mode = init.map(lambda i: i.get("mode"))
    labels = [transfer_label(b, p, m) for b, p, m in zip(trials["backbone"], pre_optimizer, mode)]
    return trials.assign(source_key=source_key, pre_optimizer=pre_optimizer, mode=mode,
                         backbone=pd.Series(labels, index=trials.index, dtype=object))
