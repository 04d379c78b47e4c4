"""One trial: build data, model, optimizer and schedule from a TrialConfig, train, evaluate.

The engine knows neither the store nor the sweep around it: it takes a
:class:`~bocb.spec.TrialConfig` and a :class:`Runtime` (where and how to run)
and returns a :class:`TrialOutcome`; ``on_epoch`` lets the caller persist each
epoch as it ends. A non-finite loss ends the trial as ``diverged``.

``run_trial`` is ``start_trial`` (build, resume from a valid checkpoint) then ``train``; the
pieces are public so that tests and benchmarks can drive a :class:`Trial` step by step.
Recipes and checkpoints: docs/recipes.md; throughput: docs/throughput.md.
"""
from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3

from bocb.backbones import build_backbone
from bocb.checkpoint import discard_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from bocb.data import Loaders, build_loaders
from bocb.devices import resolve_device
from bocb.memory import PeakMemory, tensor_megabytes
from bocb.optim import OPTIMIZERS, build_optimizer
from bocb.protocol import EpochRecord, TrialState
from bocb.provenance import environment
from bocb.recipes import train_image_size
from bocb.spec import TrialConfig

log = logging.getLogger(__name__)
_FINITE_CHECK_EVERY = 16  # steps between divergence checks (each check waits for the device)
_BATCHNORM_BATCHES = 16  # training batches that re-estimate BatchNorm statistics for schedule-free evaluation


@dataclass(frozen=True)
class Runtime:
    """Where and how a trial runs; none of it changes what the trial is."""

    device: str = "auto"
    threads: int = 1
    checkpoint_path: Path | None = None
    checkpoint_every: int = 1
    channels_last: bool = False
    compile: bool = False
    non_blocking: bool = True
    layer_table: bool = True
    weights_path: Path | None = None  # keep the final weights there (bocb.kept), when the trial is done
    init_weights_path: Path | None = None  # a fine-tuning trial's pre-trained weights (its config's ``init``)


@dataclass
class TrialOutcome:
    state: str  # a TrialState value: done | diverged | failed (crashed)
    epochs: list[EpochRecord] = field(default_factory=list)
    time_s: float = 0.0
    peak_mem_mb: float | None = None
    optimizer_state_mb: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    layer_table: Any = None  # pandas DataFrame of bocb.weights.layer_table, for finished trials
    error: str | None = None
    resumed_from_epoch: int | None = None

    @property
    def last(self) -> EpochRecord | None:
        return self.epochs[-1] if self.epochs else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Criterion:
    """Training loss as the recipe asks (timm's losses), with its Mixup/CutMix."""

    def __init__(self, recipe: dict[str, Any], num_classes: int) -> None:
        smoothing = recipe["label_smoothing"]
        mixing = recipe["mixup_alpha"] > 0 or recipe["cutmix_alpha"] > 0
        self.mixup = Mixup(
            mixup_alpha=recipe["mixup_alpha"], cutmix_alpha=recipe["cutmix_alpha"],
            switch_prob=recipe["mixup_switch_prob"], label_smoothing=smoothing, num_classes=num_classes,
        ) if mixing else None
        if recipe["loss"] == "bce":
            self.loss = BinaryCrossEntropy(smoothing=0.0 if mixing else smoothing,
                                           target_threshold=recipe["bce_target_thresh"])
        elif mixing:
            self.loss = SoftTargetCrossEntropy()
        elif smoothing > 0:
            self.loss = LabelSmoothingCrossEntropy(smoothing=smoothing)
        else:
            self.loss = torch.nn.CrossEntropyLoss()

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixup is None:
            return x, y
        if len(x) % 2:  # timm's batch mixing pairs samples: drop one from an odd batch
            x, y = x[:-1], y[:-1]
        return self.mixup(x, y)


def _optimizer_state_megabytes(optimizer: torch.optim.Optimizer) -> float:
    return tensor_megabytes(v for state in optimizer.state.values() for v in state.values())


def _channels_last_safe(model: torch.nn.Module, device: torch.device) -> bool:
    """False where channels-last would crash: torch 2.15's CPU backward of a 1x1 stride-2 convolution
    with few (3 or 4; 8 and 16 work) input channels corrupts the heap (RepVGG's stem; docs/throughput.md)."""
    risky = device.type == "cpu" and any(
        isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) and m.in_channels < 8
        for m in model.modules())
    if risky:
        log.warning("channels_last is off for this trial: torch's CPU kernels crash on its 1x1 strided stem conv")
    return not risky


class Trial:
    """The mutable state of one running trial (model, optimizer, schedule, EMA, records).

    :meth:`train_epoch` is the training loop (``steps`` cuts it short: benchmarks/throughput.py
    and bocb.estimate time it); :meth:`state` / :meth:`restore` are what a checkpoint holds.
    ``loaders`` replaces the dataset's own (bocb.estimate times steps on batches of the right shape).
    """

    def __init__(self, config: TrialConfig, runtime: Runtime, loaders: Loaders | None = None) -> None:
        self.config, self.runtime = config, runtime
        self.recipe = config.recipe
        self.device = resolve_device(runtime.device)
        self.amp = config.precision == "bf16"
        seed_everything(config.seed)
        self.train_image_size = train_image_size(self.recipe, config.image_size)
        self.loaders = loaders or build_loaders(
            config.dataset, image_size=config.image_size, batch_size=config.batch_size,
            recipe={**self.recipe, "train_image_size": self.train_image_size}, seed=config.seed, device=self.device)
        if getattr(OPTIMIZERS.get(config.optimizer), "needs_double_backward", False):
            from timm.layers import set_fused_attn

            set_fused_attn(False)  # fused CPU attention cannot be differentiated twice (Sophia-H)
        self.model = build_backbone(config.backbone, size=config.size, num_classes=self.loaders.num_classes,
                                    img_size=config.image_size, in_chans=self.loaders.in_chans,
                                    drop_path_rate=self.recipe["drop_path_rate"])
        self.probe_head = self._start_from_pretrained() if config.init else None
        self.channels_last = runtime.channels_last and _channels_last_safe(self.model, self.device)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(self.device, memory_format=self.memory_format)
        self.params = [p for p in self.model.parameters() if p.requires_grad]  # walked once, not per step
        self.handle = build_optimizer(config.optimizer, self.model, lr=config.lr, weight_decay=config.weight_decay,
                                      hparams=dict(config.hparams), weight_decay_policy=config.weight_decay_policy,
                                      family=self.recipe["family"])
        self.steps_per_epoch = len(self.loaders.train)
        self.scheduler = self._scheduler() if self.handle.uses_lr_schedule else None
        self.ema = ModelEmaV3(self.model, decay=self.recipe["ema_decay"], use_warmup=True) \
            if self.recipe["ema_decay"] else None
        self.forward = torch.compile(self.model) if runtime.compile else self.model
        self.criterion = _Criterion(self.recipe, self.loaders.num_classes)
        self.records: list[EpochRecord] = []
        self.start_epoch = 0
        self.elapsed = 0.0

    def _start_from_pretrained(self) -> torch.nn.Module | None:
        """Load the pre-trained weights named by the config's ``init`` (a new head); a linear probe's head."""
        from bocb.kept import start_from_kept

        if self.runtime.init_weights_path is None:
            raise ValueError(f"trial starts from pre-training trial {self.config.init.trial}, but no path to its "
                             "kept weights was given")
        return start_from_kept(self.model, self.runtime.init_weights_path, self.config.init.mode)

    def _scheduler(self) -> CosineLRScheduler:
        total = (self.config.schedule_epochs or self.config.epochs) * self.steps_per_epoch  # the whole run's
        warmup = min(self.recipe["warmup_epochs"] * self.steps_per_epoch, total - 1)
        return CosineLRScheduler(
            self.handle.optimizer, t_initial=max(total - warmup, 1),
            lr_min=self.config.lr * self.recipe["min_lr_ratio"],
            warmup_t=warmup, warmup_lr_init=self.config.lr * self.recipe["warmup_lr_ratio"], warmup_prefix=True,
            t_in_epochs=False,
        )

    # -- checkpoints -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "trial": self.config.run_key(), "epoch": len(self.records), "model": self.model.state_dict(),
            "optimizer": self.handle.optimizer.state_dict(), "handle_steps": self.handle.steps,
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "ema": self.ema.module.state_dict() if self.ema else {},
            "rng": rng_state(), "records": [asdict(r) for r in self.records], "elapsed": self.elapsed,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.handle.optimizer.load_state_dict(state["optimizer"])
        self.handle.steps = state["handle_steps"]  # Sophia's Hessian refreshes keep their cadence
        if self.scheduler:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema:
            self.ema.module.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        self.records = [EpochRecord(**r) for r in state["records"]]
        self.start_epoch, self.elapsed = state["epoch"], state["elapsed"]

    # -- training ----------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, steps: int | None = None) -> float | None:
        """Mean training loss of the epoch (of its first ``steps`` steps); None if a loss was not finite."""
        self.model.train()
        if self.probe_head is not None:  # a linear probe trains its head alone: the body, BatchNorm statistics
            self.model.eval()            # included, stays as pre-trained
            self.probe_head.train()
        self.handle.train()
        self.loaders.train.set_epoch(epoch)
        total, count = torch.zeros((), device=self.device), 0
        for i, (x, y) in enumerate(itertools.islice(self.loaders.train, steps)):
            total += self._step(x, y, epoch * self.steps_per_epoch + i)
            count += 1
            # A NaN/inf loss poisons the running sum; checking it only now and then saves a device sync per step.
            if count % _FINITE_CHECK_EVERY == 0 and not torch.isfinite(total):
                return None
        mean = (total / max(count, 1)).item()
        return mean if math.isfinite(mean) else None

    def _step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        """One optimisation step on a batch; returns the detached loss (no device sync)."""
        if self.scheduler:
            self.scheduler.step_update(step)
        x = x.to(self.device, non_blocking=self.runtime.non_blocking, memory_format=self.memory_format)
        y = y.to(self.device, non_blocking=self.runtime.non_blocking)
        x, target = self.criterion.targets(x, y)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp):
            logits = self.forward(x)
            loss = self.criterion.loss(logits.float(), target)
        self.handle.zero_grad()
        self.handle.backward(loss, logits)
        if self.recipe["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.params, self.recipe["grad_clip"])
        self.handle.step()
        if self.ema:
            self.ema.update(self.model, step=step)
        return loss.detach()

    def recompute_batchnorm(self) -> None:
        """BatchNorm running statistics at the current weights, averaged over the first training batches
        of the epoch (torch's ``update_bn``; a no-op without BatchNorm). Schedule-free optimizers need it:
        they evaluate at averaged weights, which the statistics gathered during training do not describe
        (the schedulefree README prescribes this). Drop-path and dropout draws are kept off the training
        RNG, so training continues as if this had not run."""
        batches = (x.to(self.device, non_blocking=self.runtime.non_blocking, memory_format=self.memory_format)
                   for x, _ in itertools.islice(self.loaders.train, _BATCHNORM_BATCHES))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.optim.swa_utils.update_bn(batches, self.model)

    def accuracy(self, model: torch.nn.Module, batches: Any) -> tuple[float, float]:
        """Top-1 and top-5 accuracy (%) of ``model`` over ``batches``, counted on the device."""
        correct = torch.zeros(2, dtype=torch.long, device=self.device)
        total = 0
        model.eval()
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp):
            for x, y in batches:
                x = x.to(self.device, non_blocking=self.runtime.non_blocking, memory_format=self.memory_format)
                y = y.to(self.device, non_blocking=self.runtime.non_blocking)
                top = model(x).float().topk(min(5, self.loaders.num_classes), dim=1).indices
                hits = top == y[:, None]
                correct += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum()])
                total += len(y)
        top1, top5 = (100.0 * correct.double() / max(total, 1)).tolist()
        return top1, top5

    def evaluate(self, epoch: int, train_loss: float, seconds: float, test: bool = True) -> EpochRecord:
        """The epoch's record: validation top-1 and, with ``test`` or without a validation split, test top-1
        and top-5 (never used to choose; measuring 10,000 test images every epoch can cost more than the
        epoch's training)."""
        self.handle.eval()
        if self.handle.averages_weights and self.probe_head is None:  # a probe's BatchNorm stays pre-trained
            self.recompute_batchnorm()
        val = self.accuracy(self.model, self.loaders.val)[0] if self.loaders.val else None
        test = test or val is None
        test1, test5 = self.accuracy(self.model, self.loaders.test) if test else (None, None)
        ema_val = ema_test = None
        if self.ema:
            ema_val = self.accuracy(self.ema.module, self.loaders.val)[0] if self.loaders.val else None
            ema_test = self.accuracy(self.ema.module, self.loaders.test)[0] if test else None
        lr = self.handle.optimizer.param_groups[0]["lr"]
        return EpochRecord(epoch, train_loss, val, test1, test5, lr, seconds, ema_val, ema_test)


def start_trial(config: TrialConfig, runtime: Runtime) -> tuple[Trial, int | None]:
    """A trial ready to train, resumed from ``runtime.checkpoint_path`` when a valid checkpoint of its run is
    there (its own, or that of the trial of its run that stopped before it: a rung it continues); also the
    epoch it resumes from (None: from scratch). A checkpoint that loads but does not fit (another model, a
    changed optimizer) is discarded and the trial starts afresh; one past the trial's last epoch (a longer
    trial of the same run wrote it) is left for that trial, and this one starts afresh."""
    trial = Trial(config, runtime)
    path = runtime.checkpoint_path
    state = load_checkpoint(path, config.run_key()) if path else None
    if state is None or state["epoch"] > config.epochs:
        return trial, None
    try:
        trial.restore(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        discard_checkpoint(path, f"{type(exc).__name__}: {exc}")
        return Trial(config, runtime), None  # restore may have half-applied: rebuild from scratch
    return trial, trial.start_epoch


def train(trial: Trial, on_epoch: Callable[[EpochRecord], None] | None = None) -> str:
    """Train from ``trial.start_epoch`` to the end: 'done' or 'diverged'. ``on_epoch`` sees each new epoch
    before its checkpoint is written, so a kill in between re-runs (and re-reports) that epoch. A trial that
    trains the start of a longer run leaves a checkpoint at its end, for the trial that continues the run."""
    every, path, last = trial.runtime.checkpoint_every, trial.runtime.checkpoint_path, trial.config.epochs
    for epoch in range(trial.start_epoch, last):
        started = time.perf_counter()
        loss = trial.train_epoch(epoch)
        if loss is None:
            return TrialState.DIVERGED.value
        seconds = time.perf_counter() - started
        trial.elapsed += seconds
        record = trial.evaluate(epoch, loss, seconds, test=epoch + 1 == last)
        trial.records.append(record)
        if on_epoch:
            on_epoch(record)
        continued = epoch + 1 == last and trial.config.schedule_epochs is not None
        if path and (continued or every and (epoch + 1) % every == 0 and epoch + 1 < last):
            save_checkpoint(path, trial.state())
    return TrialState.DONE.value


def run_trial(config: TrialConfig, runtime: Runtime = Runtime(),
              on_epoch: Callable[[EpochRecord], None] | None = None) -> TrialOutcome:
    """Train and evaluate one trial; resumes from ``runtime.checkpoint_path`` when a valid one exists."""
    torch.set_flush_denormal(True)  # denormals made some optimizer/backbone pairs 2.5-32x slower on CPU
    torch.set_num_threads(runtime.threads)
    outcome, memory = TrialOutcome(state=TrialState.FAILED.value), None
    try:  # the device itself may fail (a CUDA error): that too is this trial's failure, not the sweep's
        with PeakMemory(resolve_device(runtime.device)) as memory:
            _run(config, runtime, on_epoch, outcome)
    except Exception as exc:  # noqa: BLE001 - a crashing trial is recorded as failed; the sweep goes on
        outcome.state, outcome.error = TrialState.FAILED.value, f"{type(exc).__name__}: {exc}"
    outcome.peak_mem_mb = memory.peak_mb if memory else None
    return outcome


def _run(config: TrialConfig, runtime: Runtime, on_epoch: Callable[[EpochRecord], None] | None,
         outcome: TrialOutcome) -> None:
    trial, outcome.resumed_from_epoch = start_trial(config, runtime)
    outcome.provenance = _provenance(config, runtime, trial)
    outcome.state = train(trial, on_epoch)
    outcome.optimizer_state_mb = _optimizer_state_megabytes(trial.handle.optimizer)
    outcome.epochs, outcome.time_s = trial.records, trial.elapsed
    if outcome.state == TrialState.DONE and runtime.layer_table:
        from bocb.weights import layer_table

        outcome.layer_table = layer_table(trial.model)
    if outcome.state == TrialState.DONE and runtime.weights_path:
        from bocb.kept import save_kept

        save_kept(trial.model, runtime.weights_path, {  # the weights the final numbers were measured with
            "key": config.key(), "config": config.model_dump(mode="json"), "provenance": outcome.provenance,
            "final": asdict(trial.records[-1])})


def _provenance(config: TrialConfig, runtime: Runtime, trial: Trial) -> dict[str, Any]:
    device = trial.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        **environment(), "device": str(device), "device_name": name, "threads": runtime.threads,
        "seed": config.seed, "precision": config.precision, "channels_last": trial.channels_last,
        "compile": runtime.compile, "non_blocking": runtime.non_blocking, "train_image_size": trial.train_image_size,
        "optimizer": trial.handle.provenance, "recipe": config.recipe,
        "parameters": sum(p.numel() for p in trial.model.parameters()),
        "train_size": trial.loaders.train_size, "val_size": trial.loaders.val_size,
        "test_size": trial.loaders.test_size, "num_classes": trial.loaders.num_classes,
    }
