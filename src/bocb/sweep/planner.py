"""The search protocol as a pure function of the spec and the results stored so far.

Stages run in order; each stage's trials depend only on finished results of
earlier stages, so planning is deterministic and idempotent: any process (the
driver, a worker, a Ray driver) may call :func:`next_stage` and insert what it
returns; keys make duplicates impossible.

- grid: ``search`` (every lr x wd x extras configuration at the first seed;
  with ``search.phases: two``, every lr x wd configuration with the extras at
  their defaults);
- halving: ``rung0 .. rungN`` (successive halving over epochs: each rung keeps
  the best ``keep_fraction`` of the previous one by validation top-1, and
  those tied with the last one kept; the last rung is the full budget);
- ``edges1 .. edgesK`` (with ``search.extend_edges`` = K): a pair whose best
  lr or wd sits at the edge of what was tried gets the next grid point in that
  direction, one step per stage;
- ``extras`` (with ``search.phases: two``, the paper's second phase): each
  combination of the optimizer's extras at the lr and wd chosen so far (the
  combination that trains exactly as the chosen configuration is not re-run);
- ``seeds``: each pair's best configuration re-run at the remaining seeds;
- ``budget``: with ``budget_check``, chosen cells re-run at 2x and 4x epochs; with ``budget_check: auto``,
  only the still-improving cells a "coupled" verdict rests on, at 2x and every seed they have (its rule,
  bocb.protocol.cells_to_recheck, reads the per-epoch curves: ``next_stage``'s ``epochs``).
Which configuration a pair has chosen, which cells are re-seeded and the stage
names come from :mod:`bocb.protocol`, the same rules the analysis applies.
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from bocb.backbones import input_size
from bocb.data import paper_setting
from bocb.optim import resolved_hyperparameters, round_sig, search_space
from bocb.protocol import (
    CELL,
    FINISHED,
    SCORED,
    StageKind,
    cells_needing_seeds,
    cells_to_recheck,
    choose_configs,
    config_label,
    grid_edge,
    ranking_key,
    run_key,
    searched_trials,
    selection_metric,
    selection_scores,
    stage_index,
    stage_kind,
    stage_name,
    with_config,
)
from bocb.spec import BackboneEntry, BenchmarkSpec, OptimizerEntry, Promotion, TrialConfig
from bocb.store import PlannedTrial


@dataclass(frozen=True)
class Pair:
    """One (backbone, optimizer) cell with everything its trials share."""

    backbone: BackboneEntry
    optimizer: OptimizerEntry
    size: str
    image_size: int
    recipe: dict[str, Any]
    lr: tuple[float, ...]
    weight_decay: tuple[float, ...]
    extras: tuple[tuple[str, tuple[Any, ...]], ...]

    @property
    def names(self) -> tuple[str, str]:
        return self.backbone.name, self.optimizer.name


@dataclass(frozen=True)
class Stage:
    name: str
    planned: list[PlannedTrial]  # trials of this stage not stored yet
    waiting: bool  # trials of this stage are still running or pending


def pairs(spec: BenchmarkSpec) -> list[Pair]:
    return [_pair(spec, b, o) for b in spec.backbones for o in spec.optimizers]


def _pair(spec: BenchmarkSpec, backbone: BackboneEntry, optimizer: OptimizerEntry) -> Pair:
    size = spec.size_of(backbone)
    recipe = spec.recipe_of(backbone)
    setting = paper_setting(spec.dataset.name)
    s = spec.search
    space = search_space(optimizer.name, recipe["family"], lr_points=s.lr_points, wd_points=s.wd_points,
                         lr_step=s.lr_step, wd_step=s.wd_step, recipe=recipe["name"], setting=setting,
                         lr=optimizer.lr, weight_decay=optimizer.weight_decay)
    # A joint search multiplies the grid by the extras, so it searches only those the spec names; the
    # second phase adds them instead, so it tunes the registry's grid when the spec names none.
    extras = optimizer.extras or (space.extras if s.phases == "two" else {})
    return Pair(
        backbone=backbone, optimizer=optimizer, size=size,
        image_size=input_size(backbone.name, size, spec.dataset.image_size), recipe=recipe,
        lr=tuple(space.lr), weight_decay=tuple(space.weight_decay),
        extras=tuple((k, tuple(v)) for k, v in sorted(extras.items())),
    )


def trial_config(spec: BenchmarkSpec, pair: Pair, lr: float, wd: float, extras: dict[str, Any],
                 seed: int, epochs: int, schedule_epochs: int | None = None) -> TrialConfig:
    """One trial of ``pair``: ``epochs`` epochs of a run of its own length, or, with ``schedule_epochs``, the
    first ``epochs`` of the run of ``schedule_epochs`` epochs (which later trials of that run continue)."""
    whole = epochs if schedule_epochs is None or schedule_epochs == epochs else None
    return TrialConfig(
        dataset=spec.dataset, backbone=pair.backbone.name, size=pair.size, image_size=pair.image_size,
        optimizer=pair.optimizer.name, lr=lr, weight_decay=wd, hparams={**pair.optimizer.params, **extras},
        recipe={**pair.recipe, "epochs": whole or schedule_epochs}, epochs=epochs,
        batch_size=pair.recipe["batch_size"], seed=seed, weight_decay_policy=spec.weight_decay_policy,
        precision="bf16" if spec.gpu.amp == "bf16" else "fp32", schedule_epochs=None if whole else schedule_epochs,
    )


def extras_combinations(pair: Pair) -> list[dict[str, Any]]:
    """Every combination of the pair's searched extras ([{}] when none is searched)."""
    names = [k for k, _ in pair.extras]
    return [dict(zip(names, values)) for values in itertools.product(*(v for _, v in pair.extras))]


def grid(spec: BenchmarkSpec, pair: Pair) -> list[tuple[float, float, dict[str, Any]]]:
    """The configurations of the first search phase: lr x wd, times the extras when searched jointly."""
    extras = extras_combinations(pair) if spec.search.phases == "one" else [{}]
    return [(lr, wd, e) for lr, wd, e in itertools.product(pair.lr, pair.weight_decay, extras)]


def stage_names(spec: BenchmarkSpec) -> list[str]:
    edges = [stage_name(StageKind.EDGES, i) for i in range(1, spec.search.extend_edges + 1)]
    if spec.search.method == "halving":
        search = [stage_name(StageKind.RUNG, i) for i in range(len(spec.search.rungs))] + edges
    elif spec.search.early_stop is None:
        search = [stage_name(StageKind.SEARCH)] + edges
    elif probing_edges(spec):  # the steps past an edge are probes too: decided before anything goes on
        search = [stage_name(StageKind.PROBE)] + edges + [stage_name(StageKind.SEARCH)]
    else:
        search = [stage_name(StageKind.PROBE), stage_name(StageKind.SEARCH)] + edges
    extras = [stage_name(StageKind.EXTRAS)] if spec.search.phases == "two" else []
    budget = [stage_name(StageKind.BUDGET)] if spec.budget_check else []
    return search + extras + [stage_name(StageKind.SEEDS)] + budget


def probing_edges(spec: BenchmarkSpec) -> bool:
    """Whether the steps past a grid edge are early stopping's probes (search.early_stop.probe_edges)."""
    return spec.search.early_stop is not None and spec.search.early_stop.probe_edges


def continued_in(spec: BenchmarkSpec, stage: str) -> str:
    """The stage that continues the runs a stage starts: the next rung, or early stopping's ``search``."""
    if stage_kind(stage) == StageKind.RUNG:
        return stage_name(StageKind.RUNG, stage_index(stage) + 1)
    return stage_name(StageKind.SEARCH)


def rung_epochs(spec: BenchmarkSpec, pair: Pair, rung: int) -> int:
    return max(1, round(spec.search.rungs[rung] * pair.recipe["epochs"]))


def rung_trial(spec: BenchmarkSpec, pair: Pair, config: Choice, rung: int) -> TrialConfig:
    """A configuration's trial at a halving rung: a run of the rung's length (promotion: restart), or the
    first epochs of the full-budget run, continued by the next rung from its checkpoint (continue)."""
    return trial_config(spec, pair, *config, spec.seeds[0], rung_epochs(spec, pair, rung),
                        piece_schedule(pair, spec.search.promotion))


def piece_schedule(pair: Pair, promotion: Promotion) -> int | None:
    """The schedule of a short trial a search decides on (a halving rung, an early-stopping probe): the full
    run's epochs when the run goes on from it (continue), its own length when it is a run of its own (None)."""
    return pair.recipe["epochs"] if promotion == "continue" else None


def probe_epochs(spec: BenchmarkSpec, pair: Pair) -> int:
    """The epochs every grid configuration trains before early stopping decides (at least 1, fewer than all)."""
    epochs = pair.recipe["epochs"]
    return min(max(1, round(spec.search.early_stop.at * epochs)), max(epochs - 1, 1))


EpochsSource = Callable[[], pd.DataFrame]  # the benchmark's per-epoch curves, read only when a rule needs them


def next_stage(spec: BenchmarkSpec, results: pd.DataFrame, epochs: EpochsSource | None = None) -> Stage | None:
    """The trials to add now, or to wait for; None when the benchmark is complete.

    ``results`` is the store's trials frame of this benchmark (trial_key, stage, budget, state, backbone,
    size, optimizer, config, lr, weight_decay, hparams_json, seed, epochs, val_top1, test_top1, train_loss,
    num_classes). Each pair goes through the stages on its own: a stage of one pair sees only that pair's
    results of the stages before it, and is planned as soon as they are finished, whatever the other pairs
    are doing (no worker waits at a stage barrier for the slowest pair). A stage whose rule compares pairs
    waits for exactly the pairs it compares (:func:`stage_scope`): the re-seed stage with
    ``reseed: failure_candidates`` for its backbone's, and ``budget_check: auto`` for every pair. So what a
    stage wants never changes once planned, and the trials are those a run that waited for each whole stage
    plans; the one exception is the re-seed stage with ``reseed: failure_candidates``, which runs in rounds
    (see :func:`_reseed_cells`). ``epochs`` returns the store's per-epoch frame of this benchmark; only
    ``budget_check: auto`` needs it.
    """
    stored, unfinished = stored_keys(results)
    names, every_pair = stage_names(spec), pairs(spec)
    active, found = every_pair, []  # active: the pairs whose every earlier stage is finished
    for i, name in enumerate(names):
        groups = _groups(spec, name, every_pair, {p.names for p in active})
        earlier = _of_pairs(_of_stages(results, names[:i]), [p for group in groups for p in group])
        chosen, carried_on, own = Chosen(earlier, epochs), [], _of_stages(results, [name])
        for group in groups:
            cells = group
            if stage_kind(name) == StageKind.SEEDS and spec.reseed == "failure_candidates":
                cells = _reseed_cells(spec, group, _of_pairs(earlier, group), _of_pairs(own, group), unfinished)
            stage = pending_stage(name, [t for pair in cells for t in _planned(spec, pair, name, chosen)], stored,
                                  unfinished)
            if stage is None:
                carried_on += group
            else:
                found.append(stage)
        active = carried_on
    if not found:
        return None
    planned = [t for stage in found for t in stage.planned]
    return Stage(", ".join(dict.fromkeys(s.name for s in found if s.planned or not planned)), planned,
                 waiting=not planned)


Scope = Literal["pair", "backbone", "benchmark"]


def stage_scope(spec: BenchmarkSpec, stage: str) -> Scope:
    """Whose results a stage's rule reads, and so which pairs must have finished the stages before it: its
    own pair's, its backbone's (the seed-aware failure rule compares a backbone's cells: re-seeding
    ``failure_candidates``), or every pair's (``budget_check: auto`` re-checks the cells a coupling verdict
    rests on, and that verdict compares a backbone's optimizer profile with the other backbones')."""
    kind = stage_kind(stage)
    if kind == StageKind.SEEDS and spec.reseed == "failure_candidates":
        return "backbone"
    if kind == StageKind.BUDGET and spec.budget_check.auto:
        return "benchmark"
    return "pair"


def _groups(spec: BenchmarkSpec, stage: str, every_pair: list[Pair], active: set[tuple[str, str]]
            ) -> list[list[Pair]]:
    """The pairs a stage is planned for, in groups decided together (its scope), keeping only the groups whose
    every pair has finished the stages before it."""
    scope = stage_scope(spec, stage)
    if scope == "pair":
        return [[p] for p in every_pair if p.names in active]
    by: dict[str, list[Pair]] = {}
    for p in every_pair:
        by.setdefault(p.backbone.name if scope == "backbone" else "", []).append(p)
    return [group for group in by.values() if all(p.names in active for p in group)]


def ended_runs(spec: BenchmarkSpec, results: pd.DataFrame) -> set[str]:
    """The runs started in pieces (a rung of a continued halving, an early-stopping probe) whose checkpoint no
    trial will continue from: the whole run is finished (here, or in another benchmark of the store that
    shares it), or its start was left out of its pair's stage after its own once that stage was planned,
    which is final (a pair's stage is planned only when the one before it has finished)."""
    if not len(results):
        return set()
    names = stage_names(spec)
    planned_stages = set(zip(results["backbone"], results["optimizer"], results["stage"]))
    configs = results["config_json"].map(json.loads)
    runs = results.assign(run=configs.map(run_key), start=configs.map(lambda c: c.get("schedule_epochs") is not None))
    finished = set(runs.loc[(runs["trial_key"] == runs["run"]) & runs["state"].isin(FINISHED), "run"])
    longest = runs.groupby("run")["epochs"].max()
    # a crashed start is retried by the next run: its checkpoint stays for that retry
    starts = runs[runs["start"] & runs["state"].isin(SCORED) & runs["stage"].isin(names[:-1])]
    cut = {row.run for row in starts.itertuples()
           if (row.backbone, row.optimizer, continued_in(spec, row.stage)) in planned_stages
           and longest[row.run] == row.epochs}
    return cut | (finished & set(starts["run"]))


def stored_keys(results: pd.DataFrame) -> tuple[set[str], set[str]]:
    """(the keys of every stored trial, the keys of those not finished)."""
    if not len(results):
        return set(), set()
    return set(results["trial_key"]), set(results.loc[~results["state"].isin(FINISHED), "trial_key"])


def pending_stage(name: str, wanted: list[PlannedTrial], stored: set[str], unfinished: set[str]) -> Stage | None:
    """The stage ``name`` if it has trials to add (those of ``wanted`` not ``stored``) or to wait for (any
    ``unfinished``); None when all it wants are finished."""
    missing = [t for t in wanted if t.key not in stored]
    if missing:
        return Stage(name, missing, waiting=False)
    if any(t.key in unfinished for t in wanted):
        return Stage(name, [], waiting=True)
    return None


def _of_stages(results: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    return results[results["stage"].isin(names)] if len(results) else results


def _of_pairs(results: pd.DataFrame, chosen: list[Pair]) -> pd.DataFrame:
    if not len(results):
        return results
    wanted = pd.MultiIndex.from_tuples([p.names for p in chosen], names=["backbone", "optimizer"])
    return results[pd.MultiIndex.from_frame(results[["backbone", "optimizer"]]).isin(wanted)]


def _reseed_cells(spec: BenchmarkSpec, every_pair: list[Pair], earlier: pd.DataFrame, reseeded: pd.DataFrame,
                  unfinished: set[str]) -> list[Pair]:
    """The cells to re-seed: exactly those the seed-aware failure rule compares
    (:func:`bocb.protocol.cells_needing_seeds`), decided in rounds. Re-seeding moves seed means, which can
    change which cells Eq. 1 flags or which is best; so once a round has finished, the cells the rule now
    needs join those already re-seeded. A round in progress is waited for, so the trials planned depend on
    results only, never on timing."""
    cells = set(zip(reseeded["backbone"], reseeded["optimizer"])) if len(reseeded) else set()
    if not (len(reseeded) and reseeded["trial_key"].isin(unfinished).any()):
        seen = pd.concat([earlier, reseeded]) if len(reseeded) else earlier
        needed = cells_needing_seeds(seen, spec.rules.gamma) if len(seen) else pd.DataFrame(columns=CELL)
        cells |= set(zip(needed["backbone"], needed["optimizer"]))
    return [pair for pair in every_pair if pair.names in cells]


Choice = tuple[float, float, dict[str, Any]]  # lr, weight decay, searched extras


class Chosen:
    """Each pair's configuration chosen by the protocol's one rule on the results of earlier stages, and
    the pair's own rows; computed once per stage, on first use."""

    def __init__(self, earlier: pd.DataFrame, epochs: EpochsSource | None = None) -> None:
        self.earlier = with_config(earlier) if len(earlier) else earlier
        self.epochs = epochs
        self._configs: dict[tuple[str, str], str] | None = None
        self._rows: dict[tuple[str, str, str], pd.DataFrame] | None = None
        self._rechecks: set[tuple[str, str]] | None = None

    def rechecked(self, spec: BenchmarkSpec, pair: Pair) -> bool:
        """Whether ``budget_check: auto`` re-runs this pair's cell (bocb.protocol.cells_to_recheck)."""
        if self._rechecks is None:
            if self.epochs is None:
                raise ValueError("budget_check: auto plans from the per-epoch curves: pass next_stage its epochs")
            found = cells_to_recheck(self.earlier, self.epochs(), spec.rules.gamma, spec.rules.alpha) \
                if len(self.earlier) else []
            self._rechecks = set(found)
        return pair.names in self._rechecks

    def seeds(self, pair: Pair) -> list[int]:
        """The seeds at which the pair's chosen configuration was trained (main budget)."""
        if self.best(pair) is None:
            return []
        rows = self.rows(pair)
        rows = rows[(rows["config"] == self._configs.get(pair.names)) & (rows["budget"] == 1)] if len(rows) else rows
        return sorted(int(s) for s in rows["seed"].unique()) if len(rows) else []

    def rows(self, pair: Pair) -> pd.DataFrame:
        if self._rows is None:
            groups = self.earlier.groupby(["backbone", "optimizer", "size"], sort=False) if len(self.earlier) else []
            self._rows = {key: group for key, group in groups}
        return self._rows.get((*pair.names, pair.size), self.earlier.iloc[0:0])

    def best(self, pair: Pair) -> Choice | None:
        if self._configs is None:
            chosen = choose_configs(self.earlier) if len(self.earlier) else pd.DataFrame(columns=CELL + ["config"])
            self._configs = {(b, o): c for b, o, c in zip(chosen["backbone"], chosen["optimizer"], chosen["config"])}
        config = self._configs.get(pair.names)
        if config is None:
            return None
        rows = self.rows(pair)
        return choice_of(pair, rows[rows["config"] == config].iloc[0])


def _planned(spec: BenchmarkSpec, pair: Pair, stage: str, chosen: Chosen) -> list[PlannedTrial]:
    return [PlannedTrial(cfg.key(), cfg.model_dump(mode="json"), stage, budget)
            for cfg, budget in _pair_stage(spec, pair, stage, chosen)]


def _pair_stage(spec: BenchmarkSpec, pair: Pair, stage: str, chosen: Chosen) -> list[tuple[TrialConfig, int]]:
    """The trials (with their budget multiple) a stage plans for one pair, from the results before it."""
    return STAGE_RULES[stage_kind(stage)].trials(spec, pair, stage, chosen)


def _budget_multipliers(spec: BenchmarkSpec, pair: Pair) -> list[int]:
    check = spec.budget_check
    backbone, optimizer = pair.names
    if ((check.backbones and backbone not in check.backbones)
            or (check.optimizers and optimizer not in check.optimizers)):
        return []
    return list(check.multipliers)


def _score(rows: pd.DataFrame, cfg: TrialConfig) -> tuple[float, float]:
    """(score, loss) of one trial by protocol.selection_scores: ties on a coarse validation split (all at
    chance after a short rung, say) go to the lower training loss; (-inf, inf) for a trial not there."""
    hit = rows[rows["trial_key"] == cfg.key()] if len(rows) else rows
    if not len(hit):
        return -math.inf, math.inf
    first = selection_scores(hit.iloc[:1], selection_metric(rows)).iloc[0]
    return float(first["score"]), float(first["loss"])


def _survivors(spec: BenchmarkSpec, pair: Pair, rung: int, rows: pd.DataFrame) -> list[int]:
    """Indices into grid(pair) of the configurations trained at ``rung`` (best first): the best
    ``keep_fraction`` of the previous rung and, with ``search.keep_ties``, every configuration tied on the
    selection metric with the last one kept (a rung that cannot tell them apart, all still at chance say,
    should not cut among them by training-loss noise: the slow starter it would drop can be the pair's
    best by far). Without it, ties go to the lower training loss."""
    if rung == 0:
        return list(range(len(grid(spec, pair))))
    alive = _survivors(spec, pair, rung - 1, rows)
    keep = _kept(len(alive), spec.search.keep_fraction)
    configs = grid(spec, pair)
    scores = {i: _score(rows, rung_trial(spec, pair, configs[i], rung - 1)) for i in alive}
    ranked = sorted(alive, key=lambda i: ranking_key(*scores[i], config_label(*configs[i])))
    last_kept = scores[ranked[keep - 1]][0]
    while spec.search.keep_ties and keep < len(ranked) and scores[ranked[keep]][0] == last_kept > -math.inf:
        keep += 1
    return ranked[:keep]


def _not_stopped(spec: BenchmarkSpec, pair: Pair, rows: pd.DataFrame) -> list[Choice]:
    """The probed configurations early stopping lets go on (the grid's, and with ``probe_edges`` the steps
    past its edges): those whose probe scored within ``margin`` validation points of the pair's best probe,
    at most the best ``keep`` of them (ranked by :func:`bocb.protocol.ranking_key`). A probe that diverged or
    crashed stops its configuration (a crashed one is retried by the next run before this stage is planned);
    ties with the bound go on. When no probe learned anything, every one goes on (up to ``keep``)."""
    early = spec.search.early_stop
    configs = grid(spec, pair)
    if early.probe_edges:
        configs += [c for c in (choice_of(pair, row) for _, row in rows.iterrows()) if c not in configs]
    scores = [_score(rows, probe_trial(spec, pair, c)) for c in configs]
    ranked = sorted(range(len(configs)), key=lambda i: ranking_key(*scores[i], config_label(*configs[i])))
    best = scores[ranked[0]][0] if ranked else -math.inf
    going = [i for i in ranked if best == -math.inf or scores[i][0] >= best - early.margin]
    return [configs[i] for i in sorted(going[:early.keep])]


def probe_trial(spec: BenchmarkSpec, pair: Pair, config: Choice) -> TrialConfig:
    """A configuration's early-stopping probe: the first epochs of its full-budget run (promotion: continue),
    or a run of the probe's length with a schedule of its own (restart)."""
    return trial_config(spec, pair, *config, spec.seeds[0], probe_epochs(spec, pair),
                        piece_schedule(pair, spec.search.early_stop.promotion))


def _kept(alive: int, keep_fraction: float) -> int:
    """How many of ``alive`` configurations a rung keeps (before ties)."""
    return max(1, math.ceil(alive * keep_fraction))


def _extras_at_chosen(pair: Pair, chosen: Chosen) -> list[Choice]:
    """The second search phase: each combination of the extras at the lr and wd chosen so far."""
    best = chosen.best(pair)
    if best is None:
        return []
    lr, wd, extras = best
    return [(lr, wd, combination) for combination in _new_extras(pair, extras)]


def _new_extras(pair: Pair, chosen: dict[str, Any]) -> list[dict[str, Any]]:
    """The extras combinations that train differently from ``chosen`` (one of them, all extras at their
    defaults say, trains exactly as the configuration already chosen: it is not trained again)."""
    name, params = pair.optimizer.name, pair.optimizer.params
    trained = resolved_hyperparameters(name, {**params, **chosen})
    return [c for c in extras_combinations(pair) if resolved_hyperparameters(name, {**params, **c}) != trained]


def choice_of(pair: Pair, row: pd.Series) -> Choice:
    """A stored trial's configuration as the planner trains it: lr, weight decay and the pair's searched extras."""
    hparams = json.loads(row["hparams_json"] or "{}")
    searched = {k: hparams[k] for k, _ in pair.extras if k in hparams}
    return float(row["lr"]), float(row["weight_decay"]), searched


def edge_steps(spec: BenchmarkSpec, pair: Pair, chosen: Chosen) -> list[Choice]:
    """One more grid point past each edge at which the pair's chosen configuration sits."""
    best = chosen.best(pair)
    if best is None:
        return []
    lr, wd, extras = best
    rows = chosen.rows(pair)  # the grid searched: every configuration tried, a short rung or probe included
    tried = searched_trials(rows)
    steps: list[Choice] = []
    lr_step, wd_step = spec.search.lr_step, spec.search.wd_step
    edge = grid_edge(lr, tried["lr"])
    if edge:
        steps.append((round_sig(lr * lr_step if edge == "high" else lr / lr_step), wd, extras))
    edge = grid_edge(wd, tried["weight_decay"])
    if edge:
        steps.append((lr, round_sig(wd * wd_step if edge == "high" else wd / wd_step), extras))
    return steps


# -- what a plan will train, known before any result -------------------------------------------------------

Bound = Literal["exact", "at most", "at least"]


@dataclass(frozen=True)
class StageCount:
    """What one stage of one pair trains: its trials' epochs, and whether that number is exact or a bound
    (the cells re-seeded by failure candidates, the steps past a grid edge and the configurations early
    stopping lets go on depend on results: at most; halving keeps ties: at least)."""

    pair: Pair
    stage: str
    epochs: tuple[int, ...]  # one entry per trial: the epochs it trains (a continued one: past its checkpoint)
    bound: Bound


def count_plan(spec: BenchmarkSpec) -> list[StageCount]:
    """Every stage of every pair, counted from the spec alone (the same rules :func:`next_stage` follows)."""
    return [StageCount(pair, name, *_stage_epochs(spec, pair, name))
            for name in stage_names(spec) for pair in pairs(spec)]


def _stage_epochs(spec: BenchmarkSpec, pair: Pair, stage: str) -> tuple[tuple[int, ...], Bound]:
    """What a stage will train for one pair, known before any result: each trial's epochs, and whether that
    count is exact or a bound (it depends on results)."""
    return STAGE_RULES[stage_kind(stage)].epochs(spec, pair, stage)


# -- each kind of stage: its trials once the stages before it have results, and its cost before any -------

Trials = list[tuple[TrialConfig, int]]
Cost = tuple[tuple[int, ...], Bound]


def _at_first_seed(spec: BenchmarkSpec, pair: Pair, choices: list[Choice]) -> Trials:
    return [(trial_config(spec, pair, *c, spec.seeds[0], pair.recipe["epochs"]), 1) for c in choices]


def _probe_trials(spec: BenchmarkSpec, pair: Pair, stage: str, chosen: Chosen) -> Trials:
    return [(probe_trial(spec, pair, c), 1) for c in grid(spec, pair)]


def _probe_epochs(spec: BenchmarkSpec, pair: Pair, stage: str) -> Cost:
    return (probe_epochs(spec, pair),) * len(grid(spec, pair)), "exact"


def _search_trials(spec: BenchmarkSpec, pair: Pair, stage: str, chosen: Chosen) -> Trials:
    early = spec.search.early_stop is not None
    return _at_first_seed(spec, pair, _not_stopped(spec, pair, chosen.rows(pair)) if early else grid(spec, pair))


def _search_epochs(spec: BenchmarkSpec, pair: Pair, stage: str) -> Cost:
    epochs, configs, early = pair.recipe["epochs"], len(grid(spec, pair)), spec.search.early_stop
    if early is None:
        return (epochs,) * configs, "exact"
    if early.probe_edges:
        configs += spec.search.extend_edges * _edge_directions(pair)
    trains = epochs - probe_epochs(spec, pair) if early.promotion == "continue" else epochs
    return (trains,) * min(configs, early.keep or configs), "at most"


def _rung_trials(spec: BenchmarkSpec, pair: Pair, stage: str, chosen: Chosen) -> Trials:
    rung, configs = stage_index(stage), grid(spec, pair)
    return [(rung_trial(spec, pair, configs[i], rung), 1) for i in _survivors(spec, pair, rung, chosen.rows(pair))]


def _rung_epochs(spec: BenchmarkSpec, pair: Pair, stage: str) -> Cost:
    rung, alive = stage_index(stage), len(grid(spec, pair))
    for _ in range(rung):
        alive = _kept(alive, spec.search.keep_fraction)
    trains = rung_epochs(spec, pair, rung)
    if rung and spec.search.promotion == "continue":
        trains -= rung_epochs(spec, pair, rung - 1)
    return (trains,) * alive, "at least" if rung and spec.search.keep_ties else "exact"


def _edges_trials(spec: BenchmarkSpec, pair: Pair, stage: str, chosen: Chosen) -> Trials:
    steps = edge_steps(spec, pair, chosen)  # with probe_edges: from the best probe, as probes
    if probing_edges(spec):
        return [(probe_trial(spec, pair, c), 1) for c in steps]
    return _at_first_seed(spec, pair, steps)


def _edges_epochs(spec: BenchmarkSpec, pair: Pair, stage: str) -> Cost:
    epochs = probe_epochs(spec, pair) if probing_edges(spec) else pair.recipe["epochs"]
    return (epochs,) * _edge_directions(pair), "at most"


def _edge_directions(pair: Pair) -> int:
    """The steps one edges stage can take: one in lr and one in wd where the grid has a direction to step in
    (protocol.grid_edge)."""
    return (len(pair.lr) >= 2) + (len(pair.weight_decay) >= 2)


def _extras_trials(spec: BenchmarkSpec, pair: Pair, stage: str, chosen: Chosen) -> Trials:
    return _at_first_seed(spec, pair, _extras_at_chosen(pair, chosen))


def _extras_epochs(spec: BenchmarkSpec, pair: Pair, stage: str) -> Cost:
    return (pair.recipe["epochs"],) * len(_new_extras(pair, {})), "exact"


def _seeds_trials(spec: BenchmarkSpec, pair: Pair, stage: str, chosen: Chosen) -> Trials:
    best = chosen.best(pair)
    return [] if best is None else [(trial_config(spec, pair, *best, s, pair.recipe["epochs"]), 1)
                                    for s in spec.seeds[1:]]


def _seeds_epochs(spec: BenchmarkSpec, pair: Pair, stage: str) -> Cost:
    return (pair.recipe["epochs"],) * (len(spec.seeds) - 1), "exact" if spec.reseed == "all" else "at most"


def _budget_trials(spec: BenchmarkSpec, pair: Pair, stage: str, chosen: Chosen) -> Trials:
    best, epochs = chosen.best(pair), pair.recipe["epochs"]
    if best is None:
        return []
    if spec.budget_check.auto:  # only the still-improving cells of coupled backbones, at each of their seeds
        seeds = chosen.seeds(pair) if chosen.rechecked(spec, pair) else []
    else:
        seeds = [spec.seeds[0]]
    return [(trial_config(spec, pair, *best, s, epochs * m), m) for m in _budget_multipliers(spec, pair)
            for s in seeds]


def _budget_epochs(spec: BenchmarkSpec, pair: Pair, stage: str) -> Cost:
    epochs, multipliers = pair.recipe["epochs"], _budget_multipliers(spec, pair)
    if spec.budget_check.auto:
        return tuple(epochs * m for m in multipliers for _ in spec.seeds), "at most"
    return tuple(epochs * m for m in multipliers), "exact"


@dataclass(frozen=True)
class StageRule:
    """One kind of stage, in one place: the trials it plans for a pair from the results before it, and what
    it will train before any result (the plan's cost)."""

    trials: Callable[[BenchmarkSpec, Pair, str, Chosen], Trials]
    epochs: Callable[[BenchmarkSpec, Pair, str], Cost]


STAGE_RULES = {
    StageKind.PROBE: StageRule(_probe_trials, _probe_epochs),
    StageKind.SEARCH: StageRule(_search_trials, _search_epochs),
    StageKind.RUNG: StageRule(_rung_trials, _rung_epochs),
    StageKind.EDGES: StageRule(_edges_trials, _edges_epochs),
    StageKind.EXTRAS: StageRule(_extras_trials, _extras_epochs),
    StageKind.SEEDS: StageRule(_seeds_trials, _seeds_epochs),
    StageKind.BUDGET: StageRule(_budget_trials, _budget_epochs),
}
