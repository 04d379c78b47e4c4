"""The transfer part of a benchmark: fine-tuning the pre-training benchmark's kept models on a second dataset.

Its trials wait until the pre-training benchmark is complete; then, in stages:

- ``transfer``: from each cell's first-seed model (the cell's chosen configuration), every fine-tuning
  optimizer x mode (fine-tune, linear probe) x that optimizer's lr/wd grid, at the first seed;
- ``transfer-seeds``: from the other seeds' models, the configuration chosen for (backbone, pre-training
  optimizer, mode, fine-tuning optimizer) by the protocol's one rule on the ``transfer`` stage.

The sources are the pre-training trials the protocol chose (bocb.protocol.chosen_seeds) that finished done (a
diverged model has nothing to transfer). A fine-tuning trial is planned like any trial (bocb.sweep.planner)
from the fine-tuning settings of the spec's ``transfer`` section, and starts from its source's kept weights
(its config's ``init``).
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd

from bocb.protocol import (
    StageKind,
    TrialState,
    choose_configs,
    chosen_seeds,
    stage_name,
    transfer_cells,
    transfer_label,
    with_config,
)
from bocb.spec import BenchmarkSpec, InitSpec, TrialConfig
from bocb.store import PlannedTrial
from bocb.sweep.planner import (
    Chosen,
    EpochsSource,
    Pair,
    Stage,
    choice_of,
    edge_steps,
    grid,
    next_stage,
    pairs,
    pending_stage,
    stored_keys,
    trial_config,
)


def fine_tuning_spec(spec: BenchmarkSpec) -> BenchmarkSpec:
    """The spec a fine-tuning trial is planned from: the pre-training spec with the transfer section's
    dataset (at the pre-training image size), optimizers, recipe, epochs and search."""
    t = spec.transfer
    dataset = t.dataset.model_copy(update={"image_size": spec.dataset.image_size})
    return spec.model_copy(update={
        "dataset": dataset, "optimizers": t.optimizers, "recipe": t.recipe, "recipe_overrides": t.recipe_overrides,
        "epochs": t.epochs, "batch_size": t.batch_size, "search": t.search, "budget_check": None,
        "transfer": None, "transfer_from": None})


def sources(source_trials: pd.DataFrame) -> pd.DataFrame:
    """The pre-trained models a transfer starts from: each cell's chosen configuration, every seed, done."""
    rows = chosen_seeds(source_trials)
    return rows[rows["state"] == TrialState.DONE].sort_values(["backbone", "optimizer", "seed"])


def next_transfer_stage(spec: BenchmarkSpec, source_trials: pd.DataFrame, results: pd.DataFrame,
                        source_epochs: EpochsSource | None = None) -> Stage | None:
    """As :func:`bocb.sweep.planner.next_stage`, for the transfer part of ``spec`` (its ``transfer_from``
    names the pre-training benchmark, whose trials are ``source_trials`` and per-epoch curves
    ``source_epochs``)."""
    if next_stage(spec.pretraining(), source_trials, source_epochs) is not None:
        return Stage("pretraining", [], waiting=True)  # its kept models are not all there yet
    tuning = fine_tuning_spec(spec)
    by_names = {p.names: p for p in pairs(tuning)}
    models = sources(source_trials)
    stored, unfinished = stored_keys(results)
    first = models[models["seed"] == spec.seeds[0]]
    edges = [stage_name(StageKind.TRANSFER_EDGES, i) for i in range(1, tuning.search.extend_edges + 1)]
    stages = [
        (str(StageKind.TRANSFER), lambda _: [
            _planned(tuning, by_names[(m.backbone, o.name)], m, mode, choice, str(StageKind.TRANSFER))
            for m in first.itertuples() for o in tuning.optimizers for mode in spec.transfer.modes
            for choice in grid(tuning, by_names[(m.backbone, o.name)])]),
        *((name, lambda earlier, name=name: _past_edges(spec, tuning, by_names, first, earlier, name))
          for name in edges),
        (str(StageKind.TRANSFER_SEEDS), lambda earlier: _reseeded(spec, tuning, by_names, models, earlier)),
    ]
    names = [name for name, _ in stages]
    for i, (name, planned) in enumerate(stages):
        earlier = results[results["stage"].isin(names[:i])] if len(results) else results
        # a later stage reads the earlier ones' results: computed only when reached
        stage = pending_stage(name, planned(earlier), stored, unfinished)
        if stage is not None:
            return stage
    return None


def _past_edges(spec: BenchmarkSpec, tuning: BenchmarkSpec, by_names: dict[tuple[str, str], Pair],
               first: pd.DataFrame, earlier: pd.DataFrame, stage: str) -> list[PlannedTrial]:
    """One more grid point past each edge at which a transfer cell's chosen configuration sits (the
    planner's own rule, on transfer cells)."""
    if earlier.empty:
        return []
    chosen = Chosen(transfer_cells(earlier, first))
    planned = []
    for m in first.itertuples():
        for optimizer in tuning.optimizers:
            pair = by_names[(m.backbone, optimizer.name)]
            for mode in spec.transfer.modes:
                cell = replace(pair, backbone=pair.backbone.model_copy(
                    update={"name": transfer_label(m.backbone, m.optimizer, mode)}))
                planned += [_planned(tuning, pair, m, mode, step, stage) for step in edge_steps(tuning, cell, chosen)]
    return planned


def _reseeded(spec: BenchmarkSpec, tuning: BenchmarkSpec, by_names: dict[tuple[str, str], Pair],
              models: pd.DataFrame, searched: pd.DataFrame) -> list[PlannedTrial]:
    if searched.empty:
        return []
    cells = with_config(transfer_cells(searched, models))
    chosen = choose_configs(cells)
    planned = []
    for m in models[models["seed"] != spec.seeds[0]].itertuples():
        for optimizer in tuning.optimizers:
            for mode in spec.transfer.modes:
                label = transfer_label(m.backbone, m.optimizer, mode)
                config = chosen.loc[(chosen["backbone"] == label) & (chosen["optimizer"] == optimizer.name), "config"]
                if config.empty:
                    continue
                pair = by_names[(m.backbone, optimizer.name)]
                row = cells[(cells["backbone"] == label) & (cells["optimizer"] == optimizer.name)
                            & (cells["config"] == config.iloc[0])].iloc[0]
                planned.append(_planned(tuning, pair, m, mode, choice_of(pair, row), str(StageKind.TRANSFER_SEEDS)))
    return planned


def _planned(tuning: BenchmarkSpec, pair: Pair, model: object, mode: str, choice: tuple, stage: str
             ) -> PlannedTrial:
    lr, wd, extras = choice
    config: TrialConfig = trial_config(tuning, pair, lr, wd, extras, int(model.seed), pair.recipe["epochs"])
    config = config.model_copy(update={"init": InitSpec(trial=model.trial_key, mode=mode)})
    return PlannedTrial(config.key(), config.model_dump(mode="json"), str(stage))
