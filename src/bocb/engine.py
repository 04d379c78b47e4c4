"""One trial: build data, model, optimizer and schedule from a TrialConfig, train, evaluate.

The engine knows neither the store nor the sweep around it: it takes a
:class:`~bocb.spec.TrialConfig` and a :class:`Runtime` (where and how to run)
and returns a :class:`TrialOutcome`; ``on_epoch`` lets the caller persist each
epoch as it ends. A non-finite loss ends the trial as ``diverged``.
"""
from __future__ import annotations

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
from bocb.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from bocb.data import build_loaders
from bocb.memory import PeakMemory, tensor_megabytes
from bocb.optim import OPTIMIZERS, build_optimizer
from bocb.provenance import environment
from bocb.spec import TrialConfig


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


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_top1: float | None
    test_top1: float
    test_top5: float
    lr: float
    time_s: float
    ema_val_top1: float | None = None
    ema_test_top1: float | None = None


@dataclass
class TrialOutcome:
    state: str  # done | diverged | failed
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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


def _accuracy(model: torch.nn.Module, batches: Any, amp: bool, channels_last: bool) -> tuple[float, float]:
    correct1 = correct5 = total = 0
    model.eval()
    with torch.inference_mode(), torch.autocast("cuda" if _on_cuda(model) else "cpu", torch.bfloat16, enabled=amp):
        for x, y in batches:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x).float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == y).sum().item()
            correct5 += (top == y[:, None]).any(dim=1).sum().item()
            total += len(y)
    return 100.0 * correct1 / total, 100.0 * correct5 / total


def _on_cuda(model: torch.nn.Module) -> bool:
    return next(model.parameters()).is_cuda


def _optimizer_state_megabytes(optimizer: torch.optim.Optimizer) -> float:
    return tensor_megabytes(v for state in optimizer.state.values() for v in state.values())


class _Trial:
    """The mutable state of one running trial (model, optimizer, schedule, EMA, records)."""

    def __init__(self, config: TrialConfig, runtime: Runtime) -> None:
        self.config, self.runtime = config, runtime
        self.recipe = config.recipe
        self.device = resolve_device(runtime.device)
        self.amp = config.precision == "bf16"
        seed_everything(config.seed)
        self.loaders = build_loaders(config.dataset, image_size=config.image_size, batch_size=config.batch_size,
                                     recipe=self.recipe, seed=config.seed, device=self.device)
        if getattr(OPTIMIZERS.get(config.optimizer), "needs_double_backward", False):
            from timm.layers import set_fused_attn

            set_fused_attn(False)  # fused CPU attention cannot be differentiated twice (Sophia-H)
        self.model = build_backbone(config.backbone, size=config.size, num_classes=self.loaders.num_classes,
                                    img_size=config.image_size, in_chans=self.loaders.in_chans,
                                    drop_path_rate=self.recipe["drop_path_rate"]).to(self.device)
        if runtime.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        family = self.recipe["family"]
        self.handle = build_optimizer(config.optimizer, self.model, lr=config.lr, weight_decay=config.weight_decay,
                                      hparams=dict(config.hparams), weight_decay_policy=config.weight_decay_policy,
                                      family=family)
        self.steps_per_epoch = len(self.loaders.train)
        self.scheduler = self._scheduler() if self.handle.uses_lr_schedule else None
        self.ema = ModelEmaV3(self.model, decay=self.recipe["ema_decay"], use_warmup=True) \
            if self.recipe["ema_decay"] else None
        self.forward = torch.compile(self.model) if runtime.compile else self.model
        self.criterion = _Criterion(self.recipe, self.loaders.num_classes)
        self.records: list[EpochRecord] = []
        self.start_epoch = 0
        self.elapsed = 0.0

    def _scheduler(self) -> CosineLRScheduler:
        total = self.config.epochs * self.steps_per_epoch
        warmup = min(self.recipe["warmup_epochs"] * self.steps_per_epoch, total - 1)
        return CosineLRScheduler(
            self.handle.optimizer, t_initial=max(total - warmup, 1), lr_min=self.config.lr * self.recipe["min_lr_ratio"],
            warmup_t=warmup, warmup_lr_init=self.config.lr * self.recipe["warmup_lr_ratio"], warmup_prefix=True,
            t_in_epochs=False,
        )

    # -- checkpoints -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "epoch": len(self.records), "model": self.model.state_dict(),
            "optimizer": self.handle.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "ema": self.ema.module.state_dict() if self.ema else {},
            "rng": rng_state(), "records": [asdict(r) for r in self.records], "elapsed": self.elapsed,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.handle.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema:
            self.ema.module.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        self.records = [EpochRecord(**r) for r in state["records"]]
        self.start_epoch, self.elapsed = state["epoch"], state["elapsed"]

    # -- training ----------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> float | None:
        """Mean training loss of the epoch; None as soon as a loss is not finite."""
        self.model.train()
        self.handle.train()
        self.loaders.train.set_epoch(epoch)
        total, count = torch.zeros((), device=self.device), 0
        clip = self.recipe["grad_clip"]
        for i, (x, y) in enumerate(self.loaders.train):
            step = epoch * self.steps_per_epoch + i
            if self.scheduler:
                self.scheduler.step_update(step)
            x, target = self.criterion.targets(x, y)
            if self.runtime.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp):
                logits = self.forward(x)
                loss = self.criterion.loss(logits.float(), target)
            if not torch.isfinite(loss):
                return None
            self.handle.zero_grad()
            self.handle.backward(loss, logits)
            if clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.handle.step()
            if self.ema:
                self.ema.update(self.model, step=step)
            total += loss.detach()
            count += 1
        return (total / max(count, 1)).item()

    def evaluate(self, epoch: int, train_loss: float, seconds: float) -> EpochRecord:
        self.handle.eval()
        cl = self.runtime.channels_last
        val = _accuracy(self.model, self.loaders.val, self.amp, cl)[0] if self.loaders.val else None
        test1, test5 = _accuracy(self.model, self.loaders.test, self.amp, cl)
        ema_val = ema_test = None
        if self.ema:
            ema_val = _accuracy(self.ema.module, self.loaders.val, self.amp, cl)[0] if self.loaders.val else None
            ema_test = _accuracy(self.ema.module, self.loaders.test, self.amp, cl)[0]
        lr = self.handle.optimizer.param_groups[0]["lr"]
        return EpochRecord(epoch, train_loss, val, test1, test5, lr, seconds, ema_val, ema_test)


def run_trial(config: TrialConfig, runtime: Runtime = Runtime(),
              on_epoch: Callable[[EpochRecord], None] | None = None) -> TrialOutcome:
    """Train and evaluate one trial; resumes from ``runtime.checkpoint_path`` when a valid one exists."""
    torch.set_flush_denormal(True)  # denormals made some optimizer/backbone pairs 2.5-32x slower on CPU
    torch.set_num_threads(runtime.threads)
    outcome = TrialOutcome(state="failed")
    with PeakMemory(resolve_device(runtime.device)) as memory:
        try:
            trial = _Trial(config, runtime)
            outcome.provenance = _provenance(config, runtime, trial)
            _resume(trial, outcome)
            outcome.state = _train(trial, on_epoch)
            outcome.optimizer_state_mb = _optimizer_state_megabytes(trial.handle.optimizer)
            outcome.epochs, outcome.time_s = trial.records, trial.elapsed
            if outcome.state == "done" and runtime.layer_table:
                from bocb.weights import layer_table

                outcome.layer_table = layer_table(trial.model)
        except Exception as exc:  # noqa: BLE001 - a crashing trial is recorded as failed; the sweep goes on
            outcome.state, outcome.error = "failed", f"{type(exc).__name__}: {exc}"
    outcome.peak_mem_mb = memory.peak_mb
    return outcome


def _resume(trial: _Trial, outcome: TrialOutcome) -> None:
    path = trial.runtime.checkpoint_path
    state = load_checkpoint(path) if path else None
    if state is not None:
        trial.restore(state)
        outcome.resumed_from_epoch = trial.start_epoch


def _train(trial: _Trial, on_epoch: Callable[[EpochRecord], None] | None) -> str:
    every, path = trial.runtime.checkpoint_every, trial.runtime.checkpoint_path
    for epoch in range(trial.start_epoch, trial.config.epochs):
        started = time.perf_counter()
        loss = trial.train_epoch(epoch)
        if loss is None or not math.isfinite(loss):
            return "diverged"
        seconds = time.perf_counter() - started
        trial.elapsed += seconds
        record = trial.evaluate(epoch, loss, seconds)
        trial.records.append(record)
        if on_epoch:
            on_epoch(record)
        if path and every and (epoch + 1) % every == 0 and epoch + 1 < trial.config.epochs:
            save_checkpoint(path, trial.state())
    return "done"


def _provenance(config: TrialConfig, runtime: Runtime, trial: _Trial) -> dict[str, Any]:
    device = trial.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        **environment(), "device": str(device), "device_name": name, "threads": runtime.threads,
        "seed": config.seed, "precision": config.precision, "channels_last": runtime.channels_last,
        "compile": runtime.compile, "optimizer": trial.handle.provenance, "recipe": config.recipe,
        "parameters": sum(p.numel() for p in trial.model.parameters()),
        "train_size": trial.loaders.train_size, "val_size": trial.loaders.val_size,
        "test_size": trial.loaders.test_size,
    }
