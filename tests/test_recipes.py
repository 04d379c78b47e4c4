"""Recipes: their values, and proof that each ingredient reaches the engine's training step.

One short real trial per recipe (tiny backbone, digits at 16 px, 3 steps an epoch) is trained with
spies that only record: what the model receives, what the loss receives, the learning rate at each
step and what the stochastic-depth modules do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from scipy.stats import binomtest
from timm.layers import DropPath
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy

from bocb.backbones import BACKBONES, build_backbone, get_backbone
from bocb.engine import Runtime, Trial
from bocb.errors import SpecError
from bocb.recipes import RECIPES, resolve_recipe
from bocb.spec import DatasetSpec, TrialConfig

torch.set_num_threads(1)

BASE_LR = 0.05
STEPS = 3  # per epoch: 230 training images of digits' 256-image subset, batch 64
EPOCHS = 2
# Each recipe on the backbone it was written for (RSB on ResNet), tiny, at 16 px.
BACKBONE = {"torch": "resnet50", "deit": "deit_s", "convnext": "convnext_t", "rsb_a2": "resnet50",
            "rsb_a3": "resnet50"}
MODERN = ["deit", "convnext", "rsb_a2", "rsb_a3"]


def trial_config(recipe: str, backbone: str = "resnet50", epochs: int = EPOCHS, **overrides: object) -> TrialConfig:
    return TrialConfig(
        dataset=DatasetSpec(name="digits", image_size=16, train_subset=256, test_subset=64), backbone=backbone,
        size="tiny", image_size=16, optimizer="sgd", lr=BASE_LR, weight_decay=5e-4,
        recipe=resolve_recipe(recipe, overrides) | {"epochs": epochs, "batch_size": 64}, epochs=epochs,
        batch_size=64, seed=0,
    )


@dataclass
class Seen:
    """What the training step handed to the model and the loss, step by step."""

    inputs: list[torch.Tensor] = field(default_factory=list)
    eval_sides: set[int] = field(default_factory=set)
    targets: list[torch.Tensor] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    dropped: int = 0  # samples a DropPath zeroed
    passed: int = 0  # samples with a non-zero branch through that DropPath in training mode
    loss: object = None  # the loss the engine built (the spy wraps it)


def spy(trial: Trial, drop_path: DropPath | None) -> Seen:
    seen = Seen(loss=trial.criterion.loss)
    loss = trial.criterion.loss

    def record_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.targets.append(target.detach().clone())
        seen.lrs.append(trial.handle.optimizer.param_groups[0]["lr"])
        return loss(logits, target)

    def record_input(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if module.training:
            seen.inputs.append(args[0].detach().clone())
        else:
            seen.eval_sides.add(args[0].shape[-1])

    def record_drop(module: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if module.training:
            # Only samples with a non-zero branch count: ResNet's zero-initialised last BN gives all-zero
            # branches in the first steps, dropped or not.
            live = args[0].flatten(1).abs().sum(1) > 0
            seen.dropped += int((out.flatten(1)[live].abs().sum(1) == 0).sum())
            seen.passed += int(live.sum())

    trial.criterion.loss = record_loss
    trial.model.register_forward_pre_hook(record_input)
    if drop_path is not None:
        drop_path.register_forward_hook(record_drop)
    return seen


def deepest_drop_path(model: torch.nn.Module) -> DropPath | None:
    paths = [m for m in model.modules() if isinstance(m, DropPath)]
    return max(paths, key=lambda m: m.drop_prob) if paths else None


@dataclass
class Run:
    recipe: dict
    trial: Trial
    seen: Seen
    initial: dict[str, torch.Tensor]
    batches: list[tuple[torch.Tensor, torch.Tensor]]  # the loader's epoch-0 batches, fetched again


@pytest.fixture(scope="module", params=sorted(RECIPES.names()))
def run(request: pytest.FixtureRequest) -> Run:
    name = request.param
    # One warmup epoch so that the warmup and the cosine both fit in the EPOCHS * STEPS steps.
    config = trial_config(name, BACKBONE[name], **({"warmup_epochs": 1} if name in MODERN else {}))
    trial = Trial(config, Runtime())
    seen = spy(trial, deepest_drop_path(trial.model))
    initial = {k: v.clone() for k, v in trial.model.state_dict().items()}
    for epoch in range(EPOCHS):
        assert trial.train_epoch(epoch) is not None
    trial.evaluate(EPOCHS - 1, 0.0, 0.0)
    trial.loaders.train.set_epoch(0)
    return Run(config.recipe, trial, seen, initial, list(trial.loaders.train))


def one_hot(y: torch.Tensor, smoothing: float, classes: int = 10) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, classes).float() * (1 - smoothing) + smoothing / classes


# --- values -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("torch", dict(warmup_epochs=0, min_lr_ratio=0.0, label_smoothing=0.0, mixup_alpha=0.0, randaugment=None,
                   ema_decay=None, grad_clip=None, loss="ce", crop_padding=4, crop_padding_mode="reflect", hflip=True)),
    ("deit", dict(warmup_epochs=5, warmup_lr_ratio=1e-6 / 5e-4, min_lr_ratio=1e-5 / 5e-4, label_smoothing=0.1,
                  drop_path_rate=0.1, repeated_aug=3, grad_clip=5.0, randaugment="rand-m9-mstd0.5-inc1",
                  mixup_alpha=0.8, cutmix_alpha=1.0, random_erasing=0.25, ema_decay=0.99996, loss="ce")),
    ("convnext", dict(warmup_epochs=20, warmup_lr_ratio=0.0, min_lr_ratio=1e-6 / 4e-3, label_smoothing=0.1,
                      drop_path_rate=0.1, repeated_aug=1, randaugment="rand-m9-mstd0.5-inc1", mixup_alpha=0.8,
                      cutmix_alpha=1.0, random_erasing=0.25, ema_decay=0.9999, loss="ce")),
    ("rsb_a2", dict(warmup_epochs=5, label_smoothing=0.0, drop_path_rate=0.05, repeated_aug=3,
                    randaugment="rand-m7-mstd0.5-inc1", mixup_alpha=0.1, cutmix_alpha=1.0, random_erasing=0.0,
                    ema_decay=None, loss="bce", bce_target_thresh=0.2, train_image_ratio=1.0)),
    ("rsb_a3", dict(warmup_epochs=5, drop_path_rate=0.0, repeated_aug=1, randaugment="rand-m6-mstd0.5-inc1",
                    mixup_alpha=0.1, cutmix_alpha=1.0, random_erasing=0.0, ema_decay=None, loss="bce",
                    bce_target_thresh=0.2, train_image_ratio=160 / 224)),
])
def test_recipe_values_follow_their_sources(name: str, expected: dict) -> None:
    recipe = resolve_recipe(name)
    assert (recipe["epochs"], recipe["batch_size"]) == (200, 100)  # the paper's CIFAR-100 budget, every recipe
    assert {k: recipe[k] for k in expected} == pytest.approx(expected)


def test_overrides_apply_and_bad_ones_name_the_field() -> None:
    assert resolve_recipe("deit", {"mixup_alpha": 0.2})["mixup_alpha"] == 0.2
    with pytest.raises(SpecError, match=r"recipe_overrides\.mixup: unknown ingredient 'mixup'; did you mean"):
        resolve_recipe("deit", {"mixup": 0.2})
    with pytest.raises(SpecError, match=r"recipe_overrides\.drop_path_rate: must be a number >= 0 and < 1"):
        resolve_recipe("deit", {"drop_path_rate": 1.5})
    with pytest.raises(SpecError, match=r"recipe_overrides\.loss: unknown loss 'mse'; valid choices: bce, ce"):
        resolve_recipe("torch", {"loss": "mse"})
    with pytest.raises(SpecError, match=r"recipe_overrides\.crop_padding_mode: unknown mode 'zeros'; "
                                        r"valid choices: constant, reflect"):
        resolve_recipe("torch", {"crop_padding_mode": "zeros"})
    with pytest.raises(SpecError, match=r"recipe: unknown recipe 'deit3'"):
        resolve_recipe("deit3")


# --- ingredients reach the training step ------------------------------------------------------

def test_model_trains_on_the_loaders_batches_mixed_only_where_the_recipe_mixes(run: Run) -> None:
    mixes = run.recipe["mixup_alpha"] > 0 or run.recipe["cutmix_alpha"] > 0
    for (x, _), seen in zip(run.batches, run.seen.inputs[:STEPS]):
        assert seen.shape == x.shape
        assert torch.equal(seen, x) != mixes


def test_mixup_cutmix_make_soft_targets_with_the_recipes_smoothing(run: Run) -> None:
    smoothing = run.recipe["label_smoothing"]
    for (_, y), target in zip(run.batches, run.seen.targets[:STEPS]):
        if run.recipe["name"] == "torch":
            assert torch.equal(target, y)  # hard labels straight from the loader
            continue
        assert target.shape == (len(y), 10)
        assert torch.allclose(target.sum(1), torch.ones(len(y)))
        assert target.min() >= smoothing / 10 - 1e-6  # smoothing is inside the mixed targets
    if run.recipe["name"] != "torch":
        labels = [one_hot(y, smoothing) for _, y in run.batches]
        assert any(not torch.allclose(t, hard) for t, hard in zip(run.seen.targets, labels))


def test_loss_is_the_recipes(run: Run) -> None:
    expected = {"ce": SoftTargetCrossEntropy, "bce": BinaryCrossEntropy}[run.recipe["loss"]] \
        if run.recipe["name"] != "torch" else torch.nn.CrossEntropyLoss
    assert isinstance(run.seen.loss, expected)
    if run.recipe["loss"] == "bce":
        assert run.seen.loss.target_threshold == 0.2


def test_learning_rates_follow_warmup_then_cosine(run: Run) -> None:
    r = run.recipe
    total = EPOCHS * STEPS
    warmup = r["warmup_epochs"] * STEPS
    start, floor = BASE_LR * r["warmup_lr_ratio"], BASE_LR * r["min_lr_ratio"]
    expected = [start + t * (BASE_LR - start) / warmup for t in range(warmup)]
    expected += [floor + 0.5 * (BASE_LR - floor) * (1 + math.cos(math.pi * t / (total - warmup)))
                 for t in range(total - warmup)]
    assert run.seen.lrs == pytest.approx(expected, rel=1e-9)
    if warmup:
        assert run.seen.lrs[0] < run.seen.lrs[1] < run.seen.lrs[warmup] == pytest.approx(BASE_LR)


def test_ema_weights_move_and_differ_from_the_raw_weights(run: Run) -> None:
    ema = run.trial.ema
    if run.recipe["ema_decay"] is None:
        assert ema is None
        return
    raw = run.trial.model.state_dict()
    averaged = ema.module.state_dict()
    weights = [k for k, v in raw.items() if v.is_floating_point() and v.dim() > 1]
    assert all(not torch.equal(averaged[k], raw[k]) for k in weights)
    assert all(not torch.equal(averaged[k], run.initial[k]) for k in weights)


def test_stochastic_depth_modules_carry_the_rate_and_drop_samples(run: Run) -> None:
    rate = run.recipe["drop_path_rate"]
    deepest = deepest_drop_path(run.trial.model)
    if rate == 0:
        assert deepest is None or deepest.drop_prob == 0
        return
    # timm's schedules grow linearly with depth and reach the full rate in the last block.
    assert deepest.drop_prob == pytest.approx(rate)
    assert run.seen.passed >= STEPS * 64
    assert run.seen.dropped > 0
    assert binomtest(run.seen.dropped, run.seen.passed, rate).pvalue > 1e-3


def test_augmentation_ingredients_reach_the_loader(run: Run) -> None:
    train = run.trial.loaders.train
    assert train.repeats == run.recipe["repeated_aug"]
    assert (train.augment.randaugment is not None) == (run.recipe["randaugment"] is not None)
    erasing = train.augment.erasing
    assert (erasing.probability if erasing else 0.0) == run.recipe["random_erasing"]


def test_train_image_ratio_trains_smaller_and_evaluates_at_image_size(run: Run) -> None:
    side = 11 if run.recipe["name"] == "rsb_a3" else 16  # round(16 * 160 / 224) = 11
    assert {x.shape[-1] for x in run.seen.inputs} == {side}
    assert run.seen.eval_sides == {16}


def test_gradient_clipping_bounds_the_norm_the_optimizer_steps_with() -> None:
    norms: dict[float | None, list[float]] = {}
    for clip in (None, 0.01):
        trial = Trial(trial_config("torch", grad_clip=clip), Runtime())
        seen = norms.setdefault(clip, [])
        trial.handle.optimizer.register_step_pre_hook(
            lambda opt, args, kwargs, seen=seen, params=trial.params: seen.append(
                float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))))
        trial.train_epoch(0, steps=2)
    assert min(norms[None]) > 0.01
    assert max(norms[0.01]) <= 0.01 * (1 + 1e-4)


def _paper_drop_path_rate(backbone: str) -> float:
    return resolve_recipe(get_backbone(backbone).default_recipe)["drop_path_rate"]


@pytest.mark.parametrize("backbone", sorted(n for n in BACKBONES.names() if _paper_drop_path_rate(n) > 0))
def test_every_backbone_with_stochastic_depth_in_its_recipe_carries_the_rate(backbone: str) -> None:
    rate = _paper_drop_path_rate(backbone)
    model = build_backbone(backbone, size="tiny", num_classes=10, img_size=16, drop_path_rate=rate)
    deepest = deepest_drop_path(model)
    # The deepest block gets the full rate (EfficientNet's schedule stops one block short of it).
    assert deepest is not None and 0.8 * rate <= deepest.drop_prob <= rate + 1e-6
