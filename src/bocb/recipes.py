"""Training recipes: the CIFAR-100 ingredients of the paper's Table A3.

Learning rates inside a recipe are ratios of the trial's base lr (warmup
start, cosine floor), so one recipe serves every point of an lr grid.
A recipe is a frozen dataclass of ingredients; the engine builds each
ingredient with timm (Mixup/CutMix, RandAugment, RandomErasing, ModelEmaV3,
CosineLRScheduler, the losses). Every backbone names its paper default
(Table A1); a spec may pick another recipe and override any ingredient. The
resolved recipe (a plain dict) is stored with each trial.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from bocb.errors import SpecError, unknown_name_message
from bocb.registry import Registry


@dataclass(frozen=True)
class Recipe:
    name: str
    family: Literal["classical", "modern"]
    description: str
    epochs: int = 200
    batch_size: int = 100
    warmup_epochs: int = 0
    warmup_lr_ratio: float = 1e-3
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    drop_path_rate: float = 0.0
    repeated_aug: int = 1
    grad_clip: float | None = None
    randaugment: str | None = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_switch_prob: float = 0.5
    random_erasing: float = 0.0
    ema_decay: float | None = None
    loss: Literal["ce", "bce"] = "ce"
    bce_target_thresh: float | None = None
    crop_padding: int = 4
    hflip: bool = True
    train_image_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPES: Registry[Recipe] = Registry("recipe")

RECIPES.register(Recipe(
    name="torch", family="classical",
    description="PyTorch-style: crop pad 4 + flip, CE, cosine to 0, no warmup, no clipping",
))
RECIPES.register(Recipe(
    name="deit", family="modern",
    description="DeiT: RandAugment m9, Mixup 0.8 / CutMix 1.0, LS 0.1, RE 0.25, drop path 0.1, clip 5",
    warmup_epochs=5, min_lr_ratio=0.02, label_smoothing=0.1, drop_path_rate=0.1, grad_clip=5.0,
    randaugment="rand-m9-mstd0.5-inc1", mixup_alpha=0.8, cutmix_alpha=1.0, random_erasing=0.25,
    ema_decay=0.99996, repeated_aug=3,
))
RECIPES.register(Recipe(
    name="convnext", family="modern",
    description="ConvNeXt: DeiT-style augmentation, 20 warmup epochs, drop path 0.1, EMA 0.9999",
    warmup_epochs=20, min_lr_ratio=1e-3, label_smoothing=0.1, drop_path_rate=0.1,
    randaugment="rand-m9-mstd0.5-inc1", mixup_alpha=0.8, cutmix_alpha=1.0, random_erasing=0.25,
    ema_decay=0.9999,
))
RECIPES.register(Recipe(
    name="rsb_a2", family="modern",
    description="RSB A2: BCE, Mixup 0.1 / CutMix 1.0, RandAugment m7, drop path 0.05, repeated aug",
    warmup_epochs=5, min_lr_ratio=1e-3, drop_path_rate=0.05, randaugment="rand-m7-mstd0.5-inc1",
    mixup_alpha=0.1, cutmix_alpha=1.0, loss="bce", bce_target_thresh=0.2, repeated_aug=3,
))
RECIPES.register(Recipe(
    name="rsb_a3", family="modern",
    description="RSB A3: as A2 at lower train resolution (160 of 224), BCE, RandAugment m6",
    warmup_epochs=5, min_lr_ratio=1e-3, randaugment="rand-m6-mstd0.5-inc1",
    mixup_alpha=0.1, cutmix_alpha=1.0, loss="bce", bce_target_thresh=0.2, train_image_size=160,
))

INGREDIENTS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "description"))


def resolve_recipe(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe ``name`` with ``overrides`` applied, as the plain dict stored per trial."""
    recipe = RECIPES.get(name, field="recipe")
    overrides = dict(overrides or {})
    for key in overrides:
        if key not in INGREDIENTS:
            raise SpecError(f"recipe_overrides.{key}", unknown_name_message("ingredient", key, INGREDIENTS))
    return dataclasses.replace(recipe, **overrides).as_dict()
