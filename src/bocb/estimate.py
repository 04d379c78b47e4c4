"""What a benchmark costs before it runs: its trials, epochs and seeds, counted from the spec by the
planner's own rules, and a wall time from a few training steps of each backbone timed on this device.

The one place bocb times steps ahead of a run (``bocb run`` prints it before training, and with
``--plan-only``; ``bocb check`` is to reuse it). A backbone is timed as its trials train it: the engine's
own :class:`~bocb.engine.Trial` and training step (the recipe's loss, Mixup/CutMix, EMA, clipping, the
spec's precision and memory layout) on random tensors of the trial's shape, so no dataset file is needed.
On a GPU the recipe's batch is timed (halved on out-of-memory, then scaled linearly); on a CPU the timed
batch starts at 2 and doubles while a step stays short, then scales linearly to the recipe's batch, so
that costing 20 paper-size backbones takes a minute, not an hour. Not in the estimate: data loading and
augmentation outside the step, the differences between optimizers (each backbone is timed with the
spec's first optimizer), torch.compile (timed eager), and the time between trials.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from bocb.data import DATASETS, Loaders, split_sizes
from bocb.devices import check_device, resolve_device
from bocb.engine import Runtime, Trial
from bocb.errors import SpecError
from bocb.recipes import train_image_size
from bocb.spec import BenchmarkSpec, TrialConfig
from bocb.sweep.planner import Bound, Pair, StageCount, count_plan, pairs, trial_config

FIRST_CPU_BATCH = 2      # BatchNorm needs two samples per channel in training, Mixup an even batch
CPU_STEP_SECONDS = 0.25  # a CPU probe doubles its batch while a step takes less than this
WARMUP_STEPS = 1         # untimed: the first step pays allocation and kernel selection
TIMED_STEPS = 2          # each timed alone; the fastest counts (a machine shared with other jobs slows some)
UNKNOWN_CLASSES = 1000   # a folder dataset's class count is unknown without its files: ImageNet's


@dataclass(frozen=True)
class StepTime:
    """One backbone's measured cost: a training step at the recipe's batch and an evaluated image."""

    backbone: str
    size: str
    image_size: int
    batch_size: int     # the recipe's
    timed_batch: int    # the batch timed; step_s is scaled linearly from it
    step_s: float
    eval_image_s: float


class _RandomBatches:
    """Random tensors of a trial's shape, ``length`` batches an epoch; the batch can be resized between
    timings. Timing needs shapes, not data."""

    def __init__(self, side: int, in_chans: int, num_classes: int, length: int, device: torch.device) -> None:
        self.side, self.in_chans, self.num_classes, self.length, self.device = side, in_chans, num_classes, \
            length, device
        self.resize(1)

    def resize(self, batch: int) -> None:
        self.x = torch.randn(batch, self.in_chans, self.side, self.side, device=self.device)
        self.y = torch.randint(0, self.num_classes, (batch,), device=self.device)

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reshuffle."""

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return itertools.repeat((self.x, self.y), self.length)


def _synthetic_loaders(config: TrialConfig, train_side: int, device: torch.device) -> Loaders:
    info = DATASETS.get(config.dataset.name)
    classes = info.num_classes or UNKNOWN_CLASSES
    sizes = split_sizes(config.dataset)
    steps = max(1, sizes[0] // config.batch_size) if sizes else 1
    train = _RandomBatches(train_side, info.in_chans, classes, steps, device)
    test = _RandomBatches(config.image_size, info.in_chans, classes, 1, device)
    return Loaders(train=train, val=None, test=test, num_classes=classes, class_names=[str(i) for i in range(classes)],
                   in_chans=info.in_chans, train_size=steps * config.batch_size, val_size=0, test_size=1)


_TIMED: dict[str, StepTime] = {}  # this process's timings: a step is timed once however often it is costed


def _timing_key(config: TrialConfig, runtime: Runtime) -> str:
    """What a step's time depends on: the trial without its epochs, seed, lr and weight decay, and where
    it runs."""
    shape = config.model_dump(mode="json", exclude={"epochs", "seed", "lr", "weight_decay"})
    shape["recipe"].pop("epochs", None)
    return json.dumps([shape, repr(runtime)], sort_keys=True)


def time_steps(config: TrialConfig, runtime: Runtime) -> StepTime:
    """Time a few training steps and one evaluation of ``config``'s backbone, recipe and optimizer on
    ``runtime``'s device, as a worker with ``runtime.threads`` threads runs them (once per process)."""
    key = _timing_key(config, runtime)
    if key not in _TIMED:
        _TIMED[key] = _time_steps(config, runtime)
    return _TIMED[key]


def _time_steps(config: TrialConfig, runtime: Runtime) -> StepTime:
    device = resolve_device(runtime.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(runtime.threads)
    torch.set_flush_denormal(True)  # as the engine trains
    try:
        return _measure(config, runtime, device)
    finally:
        torch.set_num_threads(threads)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _measure(config: TrialConfig, runtime: Runtime, device: torch.device) -> StepTime:
    side = train_image_size(config.recipe, config.image_size)
    trial = Trial(config, runtime, _synthetic_loaders(config, side, device))
    timed, step_s = _time_training(trial, config.batch_size, device)
    trial.loaders.test.resize(timed)
    trial.accuracy(trial.model, trial.loaders.test)  # warm-up
    started = time.perf_counter()
    trial.accuracy(trial.model, trial.loaders.test)
    eval_image_s = (time.perf_counter() - started) / timed
    return StepTime(config.backbone, config.size, config.image_size, config.batch_size, timed,
                    step_s * config.batch_size / timed, eval_image_s)


def _time_training(trial: Trial, batch: int, device: torch.device) -> tuple[int, float]:
    """(timed batch, seconds per step at it): the recipe's batch on a GPU (halved while it does not fit),
    on a CPU doubling from FIRST_CPU_BATCH while a step is shorter than CPU_STEP_SECONDS."""
    timed = batch if device.type == "cuda" else min(batch, FIRST_CPU_BATCH)
    while True:
        trial.loaders.train.resize(timed)
        try:
            trial.train_epoch(0, steps=WARMUP_STEPS)
            seconds = min(_one_step(trial) for _ in range(TIMED_STEPS))
        except torch.cuda.OutOfMemoryError:
            if timed == 1:
                raise
            timed //= 2
            torch.cuda.empty_cache()
            continue
        if device.type == "cuda" or timed >= batch or seconds >= CPU_STEP_SECONDS:
            return timed, seconds
        timed = min(batch, 2 * timed)


def _one_step(trial: Trial) -> float:
    started = time.perf_counter()
    trial.train_epoch(0, steps=1)  # ends with .item(): the device has finished
    return time.perf_counter() - started


@dataclass(frozen=True)
class PlanCost:
    """A plan's trials and epochs per stage and pair, each backbone's timed steps, and the device."""

    counts: list[StageCount]
    steps: dict[tuple[str, str], StepTime]  # by (backbone, size)
    sizes: tuple[int, int, int] | None      # (train, val, test) images of a trial; None: unknown
    device: str                             # 'cpu, 1 thread per trial' or 'cuda:0 (its name)'
    parallel: int                           # trials run at once (local CPU workers), for the wall time
    seeds: int
    notes: tuple[str, ...] = ()

    @property
    def trials(self) -> int:
        return sum(len(c.epochs) for c in self.counts)

    @property
    def epochs(self) -> int:
        return sum(sum(c.epochs) for c in self.counts)

    @property
    def bound(self) -> Bound | Literal["about"]:
        """'exact', or the bound of the stages that are not: 'about' where some are at most, some at least."""
        bounds = {c.bound for c in self.counts if c.epochs} - {"exact"}
        return "exact" if not bounds else bounds.pop() if len(bounds) == 1 else "about"

    def epoch_seconds(self, pair: Pair) -> float | None:
        """Seconds of one epoch of ``pair``'s trials: its training steps and its evaluations."""
        step = self.steps.get((pair.backbone.name, pair.size))
        if self.sizes is None or step is None:
            return None
        train, val, test = self.sizes
        evaluated = (val + test) * (2 if pair.recipe.get("ema_decay") else 1)  # EMA weights are evaluated too
        return max(1, train // step.batch_size) * step.step_s + evaluated * step.eval_image_s

    @property
    def device_hours(self) -> float | None:
        """Hours of training, one trial at a time."""
        seconds = [(sum(c.epochs), self.epoch_seconds(c.pair)) for c in self.counts]
        if any(epoch is None for _, epoch in seconds):
            return None
        return sum(n * epoch for n, epoch in seconds) / 3600

    @property
    def wall_hours(self) -> float | None:
        hours = self.device_hours
        return None if hours is None else hours / self.parallel


def estimate_plan(spec: BenchmarkSpec, workers: int | None = None) -> PlanCost:
    """Count ``spec``'s plan and time each of its backbones on the device its trials would use here."""
    notes = []
    try:
        check_device(spec.device)
        device = resolve_device(spec.device)
    except SpecError:
        device = torch.device("cpu")
        notes.append(f"device {spec.device!r} is not on this machine: timed on the cpu")
    workers = workers or spec.workers or os.cpu_count() or 1
    parallel = workers if device.type == "cpu" and spec.executor == "local" else 1
    if spec.executor == "ray":
        notes.append("ray: the wall time assumes one trial at a time; divide by the trials your cluster runs at once")
    if spec.gpu.compile:
        notes.append("timed without torch.compile")
    runtime = Runtime(device=str(device), threads=1, channels_last=spec.gpu.channels_last,
                      non_blocking=spec.gpu.non_blocking, layer_table=False)
    steps: dict[tuple[str, str], StepTime] = {}
    for pair in pairs(spec):  # each backbone with the first optimizer
        key = (pair.backbone.name, pair.size)
        if key not in steps:
            lr, wd = pair.lr[len(pair.lr) // 2], pair.weight_decay[len(pair.weight_decay) // 2]
            try:
                steps[key] = time_steps(trial_config(spec, pair, lr, wd, {}, spec.seeds[0], pair.recipe["epochs"]),
                                        runtime)
            except Exception as exc:  # noqa: BLE001 - a backbone that cannot train: its trials crash and say why
                notes.append(f"could not time {pair.backbone.name} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:120] if str(exc) else ''}): no wall time")
    sizes = split_sizes(spec.dataset)
    if sizes is None:
        notes.append(f"the size of dataset {spec.dataset.name!r} is unknown without its files: no wall time "
                     "(give dataset.path, or dataset.train_subset and test_subset)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    where = f"{device} ({name})" if device.type == "cuda" else "cpu, 1 thread per trial"
    return PlanCost(count_plan(spec), steps, sizes, where, parallel, len(spec.seeds), tuple(notes))


def duration(hours: float) -> str:
    """'12 s', '40 min', '5.2 h', '1,234 h (51 days)'."""
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours:,.0f} h ({hours / 24:,.0f} days)"


def plan_lines(cost: PlanCost) -> list[str]:
    """The plan and its estimate as printed by ``bocb run``: trials, epochs and seeds, each stage, each
    backbone's timed step, and the wall time."""
    qualifier = "" if cost.bound == "exact" else f"{cost.bound} "
    backbones = {c.pair.backbone.name for c in cost.counts}
    optimizers = {c.pair.optimizer.name for c in cost.counts}
    lines = [f"plan: {qualifier}{cost.trials} trials, {qualifier}{cost.epochs} GPU-epochs (the epochs of every "
             f"trial summed), {cost.seeds} seed{'s' if cost.seeds > 1 else ''}, {len(backbones)} backbones x "
             f"{len(optimizers)} optimizers"]
    for stage, counts in itertools.groupby(cost.counts, key=lambda c: c.stage):
        counts = list(counts)
        trials, epochs = sum(len(c.epochs) for c in counts), sum(sum(c.epochs) for c in counts)
        bound = {c.bound for c in counts if c.epochs} - {"exact"}
        lines.append(f"  {stage:<8} {trials:>8} trials {epochs:>10} epochs" + (f"  ({bound.pop()})" if bound else ""))
    lines.append(f"timed steps on {cost.device} (each backbone with its recipe and the first optimizer):")
    first = {(c.pair.backbone.name, c.pair.size): c.pair for c in cost.counts}
    for (backbone, size), step in cost.steps.items():
        scaled = "" if step.timed_batch == step.batch_size else f" (timed at batch {step.timed_batch}, scaled)"
        line = (f"  {backbone:<20} {size:<5} {step.image_size:>3} px, batch {step.batch_size}: "
                f"{step.step_s:.3g} s/step{scaled}")
        seconds = cost.epoch_seconds(first[(backbone, size)])
        if seconds is not None:
            epochs = first[(backbone, size)].recipe["epochs"]
            line += f"; {duration(seconds * epochs / 3600)} per {epochs}-epoch trial"
        lines.append(line)
    if cost.wall_hours is None:
        lines.append("estimated wall time: unknown")
    else:
        lines.append(f"estimated wall time: {duration(cost.wall_hours)} on {cost.device}, {cost.parallel} trial(s) "
                     f"at a time ({duration(cost.device_hours)} one at a time); an estimate from timed steps: "
                     "data loading and per-optimizer differences are not in it")
    lines += [f"note: {n}" for n in cost.notes]
    return lines

