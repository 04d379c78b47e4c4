"""Schedule-free AdamW evaluated with training-time vs re-estimated BatchNorm statistics, same weights.

    python benchmarks/schedulefree_bn.py

Trains three tiny BatchNorm backbones on digits (16 px, 5 epochs, batch 32, lr 2.5e-3, wd 0.05, the
``torch`` recipe) with schedule-free AdamW, switches to its averaged (eval) weights and measures test top-1
twice: with the running statistics gathered during training, then after ``Trial.recompute_batchnorm``
(what ``Trial.evaluate`` does for schedule-free optimizers).
"""
from __future__ import annotations

import torch

from bocb.engine import Runtime, Trial
from bocb.recipes import resolve_recipe
from bocb.spec import DatasetSpec, TrialConfig

EPOCHS, BATCH = 5, 32


def main() -> None:
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    for backbone in ("resnet50", "vgg13_bn", "repvgg_a1"):
        config = TrialConfig(dataset=DatasetSpec(name="digits", image_size=16), backbone=backbone, size="tiny",
                             image_size=16, optimizer="adamw_schedulefree", lr=2.5e-3, weight_decay=0.05,
                             recipe=resolve_recipe("torch", {"epochs": EPOCHS, "batch_size": BATCH}),
                             epochs=EPOCHS, batch_size=BATCH, seed=0)
        trial = Trial(config, Runtime())
        for epoch in range(EPOCHS):
            trial.train_epoch(epoch)
        trial.handle.eval()
        stale = trial.accuracy(trial.model, trial.loaders.test)[0]
        trial.recompute_batchnorm()
        fresh = trial.accuracy(trial.model, trial.loaders.test)[0]
        print(f"{backbone}: test top-1 with training-time BatchNorm statistics {stale:.2f}, re-estimated {fresh:.2f}")


if __name__ == "__main__":
    main()
