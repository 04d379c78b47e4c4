"""Alpha per layer, bocb.weights vs WeightWatcher 0.7.7, on seeded randomly initialised models.

    python benchmarks/alpha_vs_weightwatcher.py

Prints, per model, the number of layers WeightWatcher fits, the largest absolute differences of
alpha / xmin / D, and the time each tool took; exits 1 if any alpha differs by 1e-3 or more.
Needs ``pip install weightwatcher==0.7.7`` and a CPU-only torch (see bocb.weights.reference).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from bocb.weights import layer_table
from bocb.weights.reference import compare_with_weightwatcher, weightwatcher_details

TARGET = 1e-3


def resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(num_classes=100)


def vit_tiny() -> nn.Module:
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=100, img_size=32, patch_size=4)


def convnext_atto() -> nn.Module:
    import timm

    return timm.create_model("convnext_atto", pretrained=False, num_classes=100)


MODELS: dict[str, Callable[[], nn.Module]] = {"resnet18": resnet18, "vit_tiny": vit_tiny,
                                              "convnext_atto": convnext_atto}


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(seeds: tuple[int, ...] = (0, 1)) -> int:
    torch.set_num_threads(1)
    worst = 0.0
    print(f"{'model':<14} {'seed':>4} {'layers':>6} {'max|Δalpha|':>12} {'max|Δxmin|':>11} {'max|ΔD|':>9} "
          f"{'bocb s':>7} {'ww s':>6}")
    for name, build in MODELS.items():
        for seed in seeds:
            torch.manual_seed(seed)
            model = build().eval()
            diff = compare_with_weightwatcher(model)
            bocb_s = _seconds(lambda m=model: layer_table(m))
            ww_s = _seconds(lambda m=model: weightwatcher_details(m))
            alpha_diff = float(diff["alpha_diff"].max())  # NaN if we missed a layer it fits
            worst = max(worst, float("inf") if math.isnan(alpha_diff) else alpha_diff)
            print(f"{name:<14} {seed:>4} {len(diff):>6} {alpha_diff:>12.2e} {diff['xmin_diff'].max():>11.2e} "
                  f"{diff['D_diff'].max():>9.2e} {bocb_s:>7.2f} {ww_s:>6.2f}")
    print(f"largest absolute alpha difference over all layers: {worst:.3e} (target < {TARGET:g})")
    return 0 if worst < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
