"""Training throughput of bocb's trainer beside a torchvision-style loop and a bare loop, same model.

    python benchmarks/throughput.py --steps 10 --rounds 3

All three train the tiny ResNet-50 (``build_backbone("resnet50", size="tiny")``) with SGD-M on
bocb's synthetic CIFAR-sized set (1,000 images, 32x32x3, 10 classes), batch 128, one thread:

(a) bocb: the engine's own training loop (``Trial.train_epoch``) on ``build_loaders``' in-memory
    batches with the ``torch`` recipe (crop pad 4 reflect + flip, cosine schedule);
(b) reference: as the torchvision / timm examples write it: a dataset of PIL images (CIFAR10's
    ``__getitem__``), RandomCrop(32, padding=4, padding_mode='reflect') + RandomHorizontalFlip + ToTensor + Normalize, a
    shuffling DataLoader; timed with num_workers 0 and 2, the better one counts;
(c) bare: pre-made normalised tensors, no augmentation, no schedule (the ceiling).

The variants run interleaved (a, b0, b2, c, a, ...) ``--rounds`` times and report medians, since
the machine is shared. All three use one memory layout: NCHW, or channels-last with
``--channels-last`` (bocb's ``Runtime(channels_last=True)``; oneDNN runs this ResNet faster in it).
``--bocb-only-channels-last`` gives channels-last to bocb alone, the examples keeping NCHW: that
measures the layout, not the data path, and the output says so.

It also times each data path alone (batches drawn, no training) and prints the most any data path
could gain over the reference given the measured compute: (C + D_ref) / (C + D_bocb) per batch, with
C the bare loop's step time. The last line is ``vs_reference=X.XX vs_bare=Y.YY`` (bocb's images/s
over each).
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from bocb.backbones import build_backbone
from bocb.data import DATASETS
from bocb.engine import Runtime, Trial
from bocb.recipes import resolve_recipe
from bocb.spec import DatasetSpec, TrialConfig

BATCH, SIDE, LR, WD, MOMENTUM = 128, 32, 0.05, 5e-4, 0.9
DATASET = DatasetSpec(name="synthetic", image_size=SIDE, val_fraction=0.0)

Timer = Callable[[int], float]  # steps -> images/s


def bocb_config() -> TrialConfig:
    return TrialConfig(dataset=DATASET, backbone="resnet50", size="tiny", image_size=SIDE, optimizer="sgd",
                       lr=LR, weight_decay=WD, recipe=resolve_recipe("torch", {"batch_size": BATCH}),
                       epochs=200, batch_size=BATCH, seed=0)


def bocb_timer(trial: Trial) -> Timer:
    epochs = itertools.count()

    def run(steps: int) -> float:
        started = time.perf_counter()
        done = 0
        while done < steps:  # 1,000 images are 7 steps an epoch: the timed run spans epochs
            take = min(steps - done, trial.steps_per_epoch)
            trial.train_epoch(next(epochs), steps=take)
            done += take
        return steps * BATCH / (time.perf_counter() - started)

    return run


def _sgd(model: torch.nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)


def _model(channels_last: bool) -> torch.nn.Module:
    model = build_backbone("resnet50", size="tiny", num_classes=10, img_size=SIDE)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _loop(model: torch.nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
          channels_last: bool) -> Timer:
    """The plain training step every example writes; times ``steps`` batches drawn from ``batches``."""
    optimizer = _sgd(model)
    model.train()

    def run(steps: int) -> float:
        started = time.perf_counter()
        for x, y in itertools.islice(batches, steps):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return steps * BATCH / (time.perf_counter() - started)

    return run


class PilImages(torch.utils.data.Dataset):
    """torchvision's CIFAR10 without its files: HWC uint8 array, PIL image per item, then transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.data, self.targets, self.transform = images.transpose(0, 2, 3, 1), labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def _forever(loader: torch.utils.data.DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for _ in itertools.count():
        yield from loader


def reference_loader(workers: int) -> torch.utils.data.DataLoader:
    import torchvision.transforms as T

    raw = DATASETS.get("synthetic").load(DATASET)
    mean = (raw.train_x.mean(axis=(0, 2, 3)) / 255).tolist()
    std = (raw.train_x.std(axis=(0, 2, 3)) / 255).tolist()
    transform = T.Compose([T.RandomCrop(SIDE, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip(),
                           T.ToTensor(), T.Normalize(mean, std)])
    # Persistent workers so that the 7-step epochs of this small set do not pay a worker start each.
    return torch.utils.data.DataLoader(PilImages(raw.train_x, raw.train_y, transform), batch_size=BATCH,
                                       shuffle=True, drop_last=True, num_workers=workers,
                                       persistent_workers=workers > 0)


def reference_timer(workers: int, channels_last: bool) -> Timer:
    return _loop(_model(channels_last), _forever(reference_loader(workers)), channels_last)


def bocb_batches(trial: Trial) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The timed trial's own training batches, epoch after epoch."""
    for epoch in itertools.count():
        trial.loaders.train.set_epoch(epoch)
        yield from trial.loaders.train


def print_data_bound(compute_ms: float, trial: Trial) -> None:
    """The data paths alone, and what they allow: with compute C per batch, a loop whose data costs D
    runs at C + D, so no data path can beat the reference by more than (C + D_ref) / (C + D_bocb)."""
    count = 3 * (1000 // BATCH)
    ours = data_only_ms(bocb_batches(trial), count)
    reference = data_only_ms(_forever(reference_loader(0)), count)
    print(f"data only, ms/batch: bocb={ours:.1f} reference_w0={reference:.1f}; compute (bare) {compute_ms:.0f} "
          f"ms/batch -> a data path can gain at most x{(compute_ms + reference) / (compute_ms + ours):.2f} "
          "over the reference at equal layout")


def bare_timer(channels_last: bool) -> Timer:
    raw = DATASETS.get("synthetic").load(DATASET)
    x = torch.from_numpy(raw.train_x).float().div_(255)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    y = torch.from_numpy(raw.train_y)
    steps = len(y) // BATCH
    batches = ((x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]) for i in itertools.cycle(range(steps)))
    return _loop(_model(channels_last), batches, channels_last)


def data_only_ms(batches: Iterator, count: int) -> float:
    """Milliseconds per batch to draw ``count`` batches (augmented, normalised) without training."""
    started = time.perf_counter()
    for _ in itertools.islice(batches, count):
        pass
    return 1000 * (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument("--channels-last", action="store_true", help="all three loops in channels-last")
    layout.add_argument("--bocb-only-channels-last", action="store_true",
                        help="bocb and the bare ceiling in channels-last, the reference in NCHW")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # bocb's engine sets it; the same for every variant
    torch.manual_seed(0)
    ours_cl = args.channels_last or args.bocb_only_channels_last
    trial = Trial(bocb_config(), Runtime(device="cpu", channels_last=ours_cl))

    timers = {
        "bocb": bocb_timer(trial),
        "reference_w0": reference_timer(0, args.channels_last),
        "reference_w2": reference_timer(2, args.channels_last),
        "bare": bare_timer(ours_cl),
    }
    for timer in timers.values():
        timer(args.warmup)
    rates: dict[str, list[float]] = {name: [] for name in timers}
    for round_ in range(args.rounds):
        for name, timer in timers.items():
            rates[name].append(timer(args.steps))
        print(f"round {round_ + 1}: " + "  ".join(f"{n}={r[-1]:.1f}" for n, r in rates.items()), flush=True)
    median = {name: statistics.median(r) for name, r in rates.items()}
    reference = max(median["reference_w0"], median["reference_w2"])
    print("median images/s: " + "  ".join(f"{n}={m:.1f}" for n, m in median.items()))
    print(f"channels_last: bocb/bare={ours_cl} reference={args.channels_last}; "
          f"steps={args.steps} rounds={args.rounds} batch={BATCH} threads=1")
    print_data_bound(1000 * BATCH / median["bare"], trial)
    print(f"vs_reference={median['bocb'] / reference:.2f} vs_bare={median['bocb'] / median['bare']:.2f}")


if __name__ == "__main__":
    main()
