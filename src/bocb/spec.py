"""The benchmark spec (YAML, validated with pydantic) and the trial config it expands to.

A :class:`BenchmarkSpec` names everything by string; names are checked against
the registries (backbones, optimizers, datasets, recipes) so a typo is a
one-line error naming the field, the closest match and the valid choices.
A :class:`TrialConfig` is everything that defines one trial; its
:meth:`TrialConfig.key` identifies the trial in the store.
"""
from __future__ import annotations

import hashlib
import json
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from bocb.data import DATASETS, DatasetSpec, default_gamma, paper_setting
from bocb.errors import SpecError, unknown_name_message
from bocb.protocol import DEFAULT_ALPHA, DEFAULT_GAMMA, rule_parameters, run_key, trial_key
from bocb.strict import MAX_SEED, StrictModel

Size = Literal["paper", "tiny"]
ExecutorName = Literal["local", "ray"]
Promotion = Literal["restart", "continue"]  # how a piece of a run decided on early goes on: halving's rungs, probes
EXECUTORS: tuple[str, ...] = typing.get_args(ExecutorName)
# Bounds that keep a value storable (MAX_SEED, bocb.strict) and a trial plannable (MAX_IMAGE_SIDE: bocb.data).
MAX_GRID_POINTS = 100  # per hyper-parameter: the paper searches 5
MAX_BUDGET_MULTIPLIER = 64  # a budget check at 64x the epochs is already a new benchmark
MAX_GRID_DECADES = 24  # a grid with its edge steps spans at most 10^24 (default lr 1e-3: 1e-15 .. 1e9)
MAX_EPOCHS = 100_000
MAX_BATCH = 2**20


def _named_entries(items: Any) -> Any:
    """A list's plain names as entries ({name: ...}): `[sgd, {name: adamw, lr: ...}]` both work."""
    return [{"name": i} if isinstance(i, str) else i for i in items] if isinstance(items, list) else items


def _known_recipe(name: str, field: str) -> str:
    """'paper' (each backbone's Table A1 default) or a registered recipe's canonical name."""
    if name == "paper":
        return name
    from bocb.recipes import RECIPES

    return RECIPES.get(name, field=field).name


def check_dataset(dataset: DatasetSpec) -> None:
    """Raise a one-line SpecError when the dataset's files are missing (cheap: no full load)."""
    DATASETS.get(dataset.name).check(dataset)


class BackboneEntry(StrictModel):
    name: str
    size: Size | None = None
    recipe: str | None = Field(None, description="this backbone's own recipe; None: the spec's")
    recipe_overrides: dict[str, Any] | None = Field(None, description="on top of the spec's recipe_overrides")

    @field_validator("name")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        from bocb.backbones import resolve_backbone_name

        return resolve_backbone_name(name, field="backbones")

    @field_validator("recipe")
    @classmethod
    def _known_backbone_recipe(cls, name: str | None, info: ValidationInfo) -> str | None:
        return None if name is None else _known_recipe(name, f"backbones.{info.data.get('name')}.recipe")

    @model_serializer(mode="wrap")
    def _without_unset_recipe(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An entry without a recipe of its own dumps as before these fields existed: the benchmark ids of
        existing specs do not move."""
        data = handler(self)
        return {k: v for k, v in data.items() if k not in ("recipe", "recipe_overrides") or v is not None}


class OptimizerEntry(StrictModel):
    name: str
    lr: list[StrictFloat] | StrictFloat | None = Field(
        None, description="searched lr values, or the centre of the searched grid; None: the grid around the default")
    weight_decay: list[StrictFloat] | StrictFloat | None = None
    extras: dict[str, list[Any]] = Field(default_factory=dict, description="searched optimizer-specific values")
    params: dict[str, Any] = Field(default_factory=dict, description="fixed optimizer arguments")

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        from bocb.optim import OPTIMIZERS

        return OPTIMIZERS.get(name, field="optimizers").name

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, values: list[float] | float | None) -> list[float] | float | None:
        if values is not None and (not _as_list(values) or any(v <= 0 for v in _as_list(values))):
            raise ValueError("every lr must be > 0")
        return values

    @field_validator("weight_decay")
    @classmethod
    def _non_negative_wd(cls, values: list[float] | float | None) -> list[float] | float | None:
        if values is not None and (not _as_list(values) or any(v < 0 for v in _as_list(values))):
            raise ValueError("every weight_decay must be >= 0")
        return values

    def check_arguments(self) -> None:
        """Every searched extra value, with the fixed params, is built once on a tiny parameter: no trial is
        planned that must crash on its optimizer's arguments. Called by the spec once all its names are
        known (:meth:`BenchmarkSpec._optimizer_arguments_accepted`), not as a validator of this entry."""
        from bocb.optim import check_hyperparameters, search_space

        for key in ("lr", "weight_decay"):
            refuse_twice(f"optimizers.{self.name}.{key}", _as_list(getattr(self, key) or []))
        search_space(self.name, "classical", lr=self.lr, weight_decay=self.weight_decay)  # an lr it lacks
        check_hyperparameters(self.name, dict(self.params), f"optimizers.{self.name}.params")
        for key, values in self.extras.items():
            if not values:
                raise SpecError(f"optimizers.{self.name}.extras.{key}", "give at least one value")
            refuse_twice(f"optimizers.{self.name}.extras.{key}", values)
            for value in values:
                check_hyperparameters(self.name, {**self.params, key: value}, f"optimizers.{self.name}.extras.{key}")


def refuse_twice(field: str, values: list[Any]) -> None:
    """A value given twice in a list the protocol iterates over (names, seeds, a searched grid, budget
    multipliers) would plan the same trials twice under one key, or mean something the user did not write:
    refused, the duplicate named."""
    twice = sorted({str(v) for v in values if values.count(v) > 1})
    if twice:
        raise SpecError(field, f"{', '.join(twice)} given twice: each may appear once")


def _as_list(values: list[float] | float) -> list[float]:
    return values if isinstance(values, list) else [values]


class EarlyStopSpec(StrictModel):
    """Stop hopeless configurations of a grid search early: every configuration trains the first ``at`` share
    of its epochs (stage ``probe``); one whose validation top-1 then lies more than ``margin`` points below
    the best of its pair at that epoch stops there, and the others continue from their checkpoint (stage
    ``search``; with ``promotion: restart`` the probes are short runs of their own and the others train from
    scratch). A stopped configuration is recorded (its probe trial) and never scored."""

    at: StrictFloat = Field(1 / 3, gt=0.0, lt=1.0, description="share of the epochs trained before the decision")
    margin: StrictFloat = Field(10.0, gt=0.0, description="validation top-1 points below the pair's best at that "
                                                    "epoch beyond which a configuration stops")
    keep: StrictInt | None = Field(None, ge=1, le=MAX_GRID_POINTS**2,
                                   description="at most this many of a pair's best probes go on (ranked as "
                                               "every choice is: bocb.protocol.ranking_key); None: every one "
                                               "within the margin")
    probe_edges: bool = Field(False, description="extend_edges steps past an edge on the probes (each step a "
                                                 "probe too) before any configuration goes on, instead of on the "
                                                 "full-budget runs after")
    promotion: Promotion = Field(
        "continue", description="continue: a probe is the first epochs of its full-budget run, which goes on from "
                                "its checkpoint; restart: a probe is a short run with a schedule of its own "
                                "length (annealed, meant to lessen a truncated probe's lean to low learning "
                                "rates: docs/search.md measures it), and a configuration that goes on trains "
                                "its full-budget run from scratch")

    def id_fields(self) -> dict[str, Any]:
        """As it enters a benchmark id: the options added later, at the value that means the behaviour before
        them, are left out."""
        data = self.model_dump(mode="json")
        for name, before in (("keep", None), ("probe_edges", False), ("promotion", "continue")):
            if data[name] == before:
                del data[name]
        return data


class SearchSpec(StrictModel):
    method: Literal["grid", "halving"] = "grid"
    phases: Literal["one", "two"] = Field(
        "one", description="one: lr x wd x extras searched jointly (extras only where the spec names them); "
                           "two: the paper's order, lr x wd first with every optimizer argument at its default, "
                           "then the optimizer's extras (the spec's, else the registry's grid) at the chosen "
                           "lr and wd")
    lr_points: StrictInt = Field(5, ge=1, le=MAX_GRID_POINTS,
                                 description="consecutive log-grid values of lr, centred on the default")
    wd_points: StrictInt = Field(5, ge=1, le=MAX_GRID_POINTS)
    lr_step: StrictFloat = Field(2.0, gt=1.0, description="ratio between consecutive lr values")
    wd_step: StrictFloat = Field(2.0, gt=1.0)
    rungs: list[StrictFloat] = Field(default_factory=lambda: [1 / 9, 1 / 3, 1.0])
    keep_fraction: StrictFloat = Field(1 / 3, gt=0.0, le=1.0)
    keep_ties: bool = Field(True, description="halving: configurations tied with the last one kept go on too; "
                                              "false cuts exactly keep_fraction, ties by lower training loss")
    promotion: Promotion = Field(
        "restart", description="halving: a configuration promoted to the next rung trains again from scratch "
                               "with a schedule of that rung's length (restart), or resumes from its rung "
                               "checkpoint under the full-budget schedule, so no epoch is paid twice (continue)")
    early_stop: EarlyStopSpec | None = Field(None, description="grid: stop hopeless configurations early")
    extend_edges: StrictInt = Field(0, ge=0, le=MAX_GRID_POINTS, description="max grid steps added past an edge best")

    @field_validator("rungs")
    @classmethod
    def _rungs_increase_to_one(cls, rungs: list[float]) -> list[float]:
        if not rungs or rungs[-1] != 1.0 or any(not 0 < a < b for a, b in zip(rungs, rungs[1:])):
            raise ValueError("rungs must increase and end at 1.0")
        return rungs

    @model_validator(mode="after")
    def _grid_spans_finite_values(self) -> SearchSpec:
        """A grid and its edge steps span at most MAX_GRID_DECADES powers of ten around the default: a wider
        one under- or overflows (lr_step 1e308 makes every lr 0 or infinite)."""
        for name, step, points in (("lr_step", self.lr_step, self.lr_points),
                                   ("wd_step", self.wd_step, self.wd_points)):
            decades = math.log10(step) * (points - 1 + 2 * self.extend_edges)
            if decades > MAX_GRID_DECADES:
                raise SpecError(f"search.{name}", f"{step:g} over {points} points and {self.extend_edges} edge steps "
                                                  f"spans 10^{decades:.0f}; at most 10^{MAX_GRID_DECADES}")
        return self

    @model_validator(mode="after")
    def _options_of_its_method(self) -> SearchSpec:
        if self.method == "grid" and self.promotion != "restart":
            raise SpecError("search.promotion", "applies to method: halving (a grid has no rungs to promote "
                                                "from); for a cheaper grid, set search.early_stop")
        if self.early_stop is not None and self.early_stop.probe_edges and not self.extend_edges:
            raise SpecError("search.early_stop.probe_edges", "steps past the grid's edges on the probes: set "
                                                             "search.extend_edges too (how many steps)")
        if self.method == "halving" and self.early_stop is not None:
            raise SpecError("search.early_stop", "applies to method: grid (halving cuts configurations at its "
                                                 "rungs already)")
        return self

    def id_fields(self) -> dict[str, Any]:
        """The search as it enters a benchmark id: options added after a spec was written, at the value that
        means the behaviour before them, are left out, so such a spec keeps its benchmark id."""
        data = self.model_dump(mode="json")
        for name, before in (("promotion", "restart"), ("early_stop", None)):
            if data[name] == before:
                del data[name]
        if self.early_stop is not None:
            data["early_stop"] = self.early_stop.id_fields()
        return data


class BudgetCheckSpec(StrictModel):
    """Re-run chosen cells at multiples of the epoch budget: does a gap close, shrink or hold?

    ``budget_check: auto`` (auto: true, multipliers [2]): only the cells a "coupled" verdict rests on that
    are still improving at their last epoch (bocb.protocol.cells_to_recheck), at every seed they have."""

    auto: bool = Field(False, description="re-run only the still-improving cells a coupled verdict rests on")
    multipliers: list[Annotated[StrictInt, Field(le=MAX_BUDGET_MULTIPLIER)]] = Field(default_factory=lambda: [2, 4])
    backbones: list[str] | None = Field(None, description="None: every backbone")
    optimizers: list[str] | None = Field(None, description="None: every optimizer")

    @field_validator("multipliers")
    @classmethod
    def _above_one(cls, values: list[int]) -> list[int]:
        if not values or any(v < 2 for v in values):
            raise ValueError("multipliers must be integers >= 2")
        refuse_twice("budget_check.multipliers", values)
        return values

    @model_validator(mode="after")
    def _names_once(self) -> BudgetCheckSpec:
        for field in ("backbones", "optimizers"):
            refuse_twice(f"budget_check.{field}", getattr(self, field) or [])
        return self


class RulesSpec(StrictModel):
    """The parameters of the protocol's rules (bocb.protocol), stored with the benchmark so that every
    report of it reads the same ones."""

    gamma: StrictFloat = Field(DEFAULT_GAMMA, gt=0, description="Eq. 1's gamma in top-1 points: 3 for CIFAR-100 and "
                                                          "COCO, 1 for ImageNet-1K; in a spec, unset means the "
                                                          "dataset's (bocb.data.default_gamma)")
    alpha: StrictFloat = Field(DEFAULT_ALPHA, gt=0, lt=1,
                         description="significance level of 'below the best beyond seed noise'")


class GpuSpec(StrictModel):
    channels_last: bool = False
    amp: Literal["none", "bf16"] = "none"
    compile: bool = False
    non_blocking: bool = True


TransferMode = Literal["finetune", "linear_probe"]


class TransferSpec(StrictModel):
    """Fine-tune each kept pre-trained model (each cell's chosen configuration, at every seed) on a second
    dataset with every optimizer of a list, each with its own lr/wd search on that dataset's validation
    split; ``linear_probe`` trains a new head on the frozen backbone."""

    dataset: DatasetSpec
    optimizers: list[OptimizerEntry] = Field(min_length=1)
    modes: list[TransferMode] = Field(default_factory=lambda: ["finetune", "linear_probe"], min_length=1)
    recipe: str = Field("torch", description="the fine-tuning recipe (a recipe name)")
    recipe_overrides: dict[str, Any] = Field(default_factory=dict)
    epochs: StrictInt | None = Field(None, gt=0, le=MAX_EPOCHS, description="None: the recipe's epochs")
    batch_size: StrictInt | None = Field(None, gt=0, le=MAX_BATCH)
    search: SearchSpec = Field(default_factory=lambda: SearchSpec(lr_points=3, wd_points=1))

    @field_validator("optimizers", mode="before")
    @classmethod
    def _optimizer_strings(cls, items: Any) -> Any:
        return _named_entries(items)

    @field_validator("recipe")
    @classmethod
    def _known_transfer_recipe(cls, name: str) -> str:
        return _known_recipe(name, "transfer.recipe")

    @model_validator(mode="after")
    def _valid(self) -> TransferSpec:
        from bocb.recipes import resolve_recipe

        resolve_recipe(self.recipe, self.recipe_overrides)
        refuse_twice("transfer.modes", self.modes)
        if self.search.method != "grid" or self.search.phases != "one" or self.search.early_stop is not None:
            raise SpecError("transfer.search", "a transfer searches its whole grid in one phase (method: grid, "
                                               "phases: one, no early_stop)")
        DATASETS.get(self.dataset.name).check(self.dataset)
        return self


class BenchmarkSpec(StrictModel):
    name: str = "benchmark"
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    backbones: list[BackboneEntry] = Field(min_length=1)
    size: Size = "tiny"
    optimizers: list[OptimizerEntry] = Field(min_length=1)
    recipe: str = Field("paper", description="'paper': each backbone's Table A1 default; or a recipe name")
    recipe_overrides: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec = Field(default_factory=SearchSpec)
    seeds: list[Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    epochs: StrictInt | None = Field(None, gt=0, le=MAX_EPOCHS, description="None: the recipe's epochs")
    batch_size: StrictInt | None = Field(None, gt=0, le=MAX_BATCH)
    reseed: Literal["all", "failure_candidates"] = Field(
        "all", description="cells re-run at the remaining seeds: all, or only those the seed-aware failure rule "
                           "compares (each backbone's best and every cell Eq. 1 flags; bocb.protocol)")
    rules: RulesSpec = Field(default_factory=lambda: RulesSpec())
    budget_check: BudgetCheckSpec | None = None
    weight_decay_policy: Literal["no_decay_1d", "decay_all"] = "no_decay_1d"
    grad_clip: StrictFloat | None = Field(None, gt=0, description="overrides the recipe's clip-grad norm")
    store: str | None = Field(None, description="SQLAlchemy URL; None: DIR/bocb.db")
    executor: ExecutorName = "local"
    workers: StrictInt | None = Field(None, gt=0, description="None: one per core (local), what the cluster fits (ray)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    num_cpus: StrictFloat = Field(1.0, gt=0, description="per trial, for the ray executor")
    num_gpus: StrictFloat = Field(0.0, ge=0)
    checkpoint_every: StrictInt = Field(1, ge=0, description="epochs between in-trial checkpoints; 0: none")
    artifact_root: str | None = Field(None, description="checkpoints and kept weights; None: DIR/artifacts")
    transfer: TransferSpec | None = None
    transfer_from: str | None = Field(None, description="set by bocb: this is the transfer part of benchmark ID")
    keep_weights: Literal["chosen", "all", "none"] = Field(
        "chosen", description="final weights kept (bocb.kept): each cell's chosen configuration at every seed, "
                              "every finished trial, or none")

    @model_validator(mode="before")
    @classmethod
    def _gamma_of_the_dataset(cls, data: Any) -> Any:
        """An unset rules.gamma is the dataset's (3 on CIFAR-100-like data, 1 on ImageNet-1K), written into
        the spec so that the stored benchmark carries the number every report reads."""
        if not isinstance(data, dict) or not isinstance(data.get("rules", {}), dict):
            return data
        rules = data.get("rules", {})
        if rules.get("gamma") is not None:
            return data
        dataset = data.get("dataset") or {}
        name = dataset.get("name", "digits") if isinstance(dataset, dict) else getattr(dataset, "name", None)
        if not isinstance(name, str) or name not in DATASETS:
            return data  # the dataset field's own validator names the error
        return {**data, "rules": {**rules, "gamma": default_gamma(name)}}

    @field_validator("backbones", "optimizers", mode="before")
    @classmethod
    def _entry_strings(cls, items: Any) -> Any:
        return _named_entries(items)

    @field_validator("recipe")
    @classmethod
    def _known_spec_recipe(cls, name: str) -> str:
        return _known_recipe(name, "recipe")

    @field_validator("store")
    @classmethod
    def _openable_store(cls, url: str | None) -> str | None:
        if url is not None and not url.strip():  # '' would otherwise mean the default store, silently
            raise SpecError("store", "empty: give a file path or a database URL, or leave it out for the default")
        if url is not None:
            from bocb.store import check_url

            check_url(url)
        return url

    @model_validator(mode="after")
    def _nothing_twice(self) -> BenchmarkSpec:
        """A name or seed given twice would plan the same trials twice under one key: refused, named."""
        for field, values in (("optimizers", [o.name for o in self.optimizers]),
                              ("backbones", [f"{b.name} ({b.size or self.size})" for b in self.backbones]),
                              ("seeds", self.seeds),
                              ("transfer.optimizers", [o.name for o in self.transfer.optimizers] if self.transfer
                               else [])):
            refuse_twice(field, values)
        return self

    @model_validator(mode="after")
    def _user_backbones_build(self) -> BenchmarkSpec:
        """A user's backbone factory built once on one batch of this spec's input
        (bocb.backbones.check_user_backbone); after every name and value is checked, as it imports torch."""
        from bocb.backbones import check_user_backbone, input_size

        data = DATASETS.get(self.dataset.name)
        for entry in self.backbones:
            size = entry.size or self.size
            side = input_size(entry.name, size, self.dataset.image_size)
            check_user_backbone(entry.name, size, data.num_classes, side, data.in_chans, f"backbones.{entry.name}")
        return self

    @model_validator(mode="after")
    def _optimizer_arguments_accepted(self) -> BenchmarkSpec:
        """Each optimizer's arguments (OptimizerEntry.check_arguments), once every name is valid: building an
        optimizer imports torch (seconds), and a misspelt name later in the spec must fail without that wait."""
        for entry in [*self.optimizers, *(self.transfer.optimizers if self.transfer else [])]:
            entry.check_arguments()
        return self

    @model_validator(mode="after")
    def _overrides_valid(self) -> BenchmarkSpec:
        from bocb.recipes import resolve_recipe

        resolve_recipe("torch" if self.recipe == "paper" else self.recipe, self.recipe_overrides)
        if self.recipe_overrides.get("test_crop") is not None and DATASETS.get(self.dataset.name).build is None:
            raise SpecError("recipe_overrides.test_crop", f"applies to folder datasets (imagefolder, imagenet); "
                                                          f"{self.dataset.name} is held in memory and tested whole")
        for backbone in self.backbones:
            if backbone.recipe is not None or backbone.recipe_overrides is not None:
                try:
                    self.recipe_of(backbone)
                except SpecError as exc:  # name the backbone whose recipe it is
                    raise SpecError(f"backbones.{backbone.name}.{exc.field}", str(exc).split(": ", 1)[-1]) \
                        from None
        return self

    @field_validator("budget_check", mode="before")
    @classmethod
    def _auto_budget_check(cls, value: Any) -> Any:
        return {"auto": True, "multipliers": [2]} if value == "auto" else value

    @model_validator(mode="after")
    def _recipes_fit_images(self) -> BenchmarkSpec:
        """Each backbone's resolved recipe against the side its images have (recipes.check_fits_image)."""
        from bocb.backbones import input_size
        from bocb.recipes import check_fits_image

        for entry in self.backbones:
            side = input_size(entry.name, entry.size or self.size, self.dataset.image_size)
            field = f"backbones.{entry.name}.recipe_overrides" if entry.recipe_overrides else "recipe_overrides"
            check_fits_image(self.recipe_of(entry), side, field)
        return self

    @model_validator(mode="after")
    def _budget_check_names_in_spec(self) -> BenchmarkSpec:
        check = self.budget_check
        if check is None:
            return self
        for field, named, known in (("backbones", check.backbones, [b.name for b in self.backbones]),
                                    ("optimizers", check.optimizers, [o.name for o in self.optimizers])):
            for name in named or []:
                if name not in known:
                    raise SpecError(f"budget_check.{field}", unknown_name_message(field[:-1], name, known)
                                    .replace("valid choices", f"the spec's {field}"))
        return self

    @model_validator(mode="after")
    def _dataset_available(self, info: ValidationInfo) -> BenchmarkSpec:
        if (info.context or {}).get("check_data", True):
            check_dataset(self.dataset)
        return self

    @model_validator(mode="after")
    def _transfer_starts_from_kept_weights(self) -> BenchmarkSpec:
        if self.transfer is not None and self.keep_weights == "none":
            raise SpecError("keep_weights", "a transfer fine-tunes the kept pre-trained models: give 'chosen' or "
                                            "'all', not 'none'")
        if self.transfer_from is not None and self.transfer is None:
            raise SpecError("transfer_from", "names the pre-training benchmark of a transfer: give 'transfer' too")
        return self

    def size_of(self, backbone: BackboneEntry) -> Size:
        return backbone.size or self.size

    def pretraining(self) -> BenchmarkSpec:
        """The pre-training benchmark (this spec without its transfer part)."""
        return self.model_copy(update={"transfer_from": None})

    def transfer_part(self) -> BenchmarkSpec:
        """The transfer benchmark, which fine-tunes the pre-training benchmark's kept models."""
        return self.model_copy(update={"transfer_from": self.pretraining().benchmark_id()})
    def recipe_of(self, backbone: BackboneEntry) -> dict[str, Any]:
        """The resolved recipe ``backbone``'s trials use, in one place: its own recipe, else the spec's
        ('paper': its Table A1 default); the spec's recipe_overrides and grad_clip, then its own
        recipe_overrides, applied; the spec's epochs and batch_size, when it sets them, win."""
        from bocb.backbones import get_backbone
        from bocb.recipes import resolve_recipe

        name = backbone.recipe or self.recipe
        if name == "paper":
            name = get_backbone(backbone.name).default_recipe
        overrides = dict(self.recipe_overrides)
        if self.grad_clip is not None:
            overrides["grad_clip"] = self.grad_clip
        recipe = resolve_recipe(name, {**overrides, **(backbone.recipe_overrides or {})},
                                setting=paper_setting(self.dataset.name))
        return {**recipe, "epochs": self.epochs or recipe["epochs"],
                "batch_size": self.batch_size or recipe["batch_size"]}

    def benchmark_id(self) -> str:
        """Identifies what the benchmark computes (not where or how fast it runs). A pre-training benchmark's
        id ignores the transfer section (a transfer added later reuses its trials); a transfer's includes it."""
        ignored = set(EXECUTION_FIELDS) | ({"transfer", "transfer_from"} if self.transfer_from is None else set())
        data = self.model_dump(mode="json", exclude=ignored)
        data["search"] = self.search.id_fields()
        if data["search"]["phases"] == "one":  # added later (a transfer's search has always named it)
            del data["search"]["phases"]
        if self.transfer is not None and "transfer" in data:
            data["transfer"]["search"] = self.transfer.search.id_fields()
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


EXECUTION_FIELDS = ("store", "executor", "workers", "device", "num_cpus", "num_gpus", "checkpoint_every",
                    "artifact_root", "keep_weights")


class InitSpec(StrictModel):
    """Where a fine-tuning trial starts: the kept weights of a pre-training trial, with a new head."""

    trial: str = Field(pattern="^[0-9a-f]{20}$", description="the pre-training trial's key")
    mode: TransferMode


class TrialConfig(StrictModel):
    """Everything that defines one trial (and nothing about where it runs)."""

    dataset: DatasetSpec
    backbone: str
    size: Size
    image_size: int
    optimizer: str
    lr: float
    weight_decay: float
    hparams: dict[str, Any] = Field(default_factory=dict)
    recipe: dict[str, Any]
    epochs: int
    batch_size: int
    seed: int
    weight_decay_policy: str = "no_decay_1d"
    precision: str = "fp32"
    init: InitSpec | None = None  # None: from scratch
    # A trial that trains only the first ``epochs`` of a longer run (a rung of a continued search, an
    # early-stopping probe) follows the schedule of that run: its epochs, recipe["epochs"] included.
    schedule_epochs: int | None = None

    def key(self) -> str:
        """The trial's key in the store (bocb.protocol.trial_key)."""
        return trial_key(self.model_dump(mode="json"))

    def run_key(self) -> str:
        """The key of the whole run this trial is the start of (its own key when it trains the whole run):
        the trials of one run share its checkpoint, so each continues where the one before it stopped."""
        return run_key(self.model_dump(mode="json"))


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    return ".".join(parts) or "spec"


def _validation_message(exc: ValidationError) -> SpecError:
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # 'optimisers:' before 'missing'
    if isinstance(err.get("ctx", {}).get("error"), SpecError):
        return err["ctx"]["error"]
    field = _field_path(err["loc"])
    if err["type"] == "extra_forbidden":
        return SpecError(field, unknown_name_message("field", str(err["loc"][-1]), _known_fields(err["loc"][:-1])))
    msg = err["msg"].removeprefix("Value error, ")
    return SpecError(field, msg)


def upgrade_stored_spec(data: dict[str, Any]) -> dict[str, Any]:
    """A spec stored by an earlier bocb, in today's fields (``failure_gap`` became ``rules.gamma``)."""
    if "failure_gap" not in data:
        return data
    gamma, alpha = rule_parameters(data)
    upgraded = {k: v for k, v in data.items() if k != "failure_gap"}
    return {**upgraded, "rules": {"gamma": gamma, "alpha": alpha}}


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model at ``loc`` in a BenchmarkSpec (list indices skipped)."""
    model: Any = BenchmarkSpec
    for part in loc:
        if isinstance(part, int) or str(part).startswith("function-"):
            continue
        annotation = model.model_fields[part].annotation
        inner = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = inner[0] if inner else annotation
    return list(model.model_fields)


def parse_spec(data: Any, check_data: bool = True) -> BenchmarkSpec:
    """Validate a spec from a mapping; raises a one-line SpecError. ``check_data=False`` leaves the
    dataset's files unchecked (planning on a machine that will not train)."""
    if not isinstance(data, dict):
        raise SpecError("spec", "must be a YAML mapping of fields")
    _plain_values(data, "")
    try:
        return BenchmarkSpec.model_validate(data, context={"check_data": check_data})
    except SpecError:
        raise
    except ValidationError as exc:
        raise _validation_message(exc) from None


def _plain_values(value: Any, field: str) -> None:
    """Every value of a spec, free-form ones included (optimizer params and extras, recipe overrides):
    numbers finite, text without NUL bytes. The typed fields check themselves too; this is for the rest."""
    if isinstance(value, dict):
        for key, item in value.items():
            _plain_values(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _plain_values(item, f"{field}.{index}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise SpecError(field, f"must be a finite number, not {value}")
    elif isinstance(value, str) and "\x00" in value:
        raise SpecError(field, "contains a NUL byte")


def load_spec(path: str | Path, check_data: bool = True) -> BenchmarkSpec:
    """Read and validate a YAML spec file (``check_data``: as :func:`parse_spec`)."""
    from bocb.safe_yaml import load_yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError("spec", f"file not found: {path}")
    return parse_spec(load_yaml(path), check_data)


def preset_path(name: str) -> Path:
    return Path(__file__).parent / "presets" / f"{name}.yaml"


def preset_names() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).parent / "presets").glob("*.yaml"))


def load_preset(name: str, check_data: bool = True) -> BenchmarkSpec:
    if name not in preset_names():
        raise SpecError("--preset", unknown_name_message("preset", name, preset_names()))
    try:
        return load_spec(preset_path(name), check_data)
    except SpecError as exc:  # a preset on data this machine lacks (paper_imagenet needs its folder)
        raise SpecError("--preset", f"{name}: {exc}") from None
