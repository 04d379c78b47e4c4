"""Build an optimizer from the registry and wrap it in the handle the training loop drives.

Torch is imported inside the functions that run it: importing bocb.optim (the registry a spec's names are
checked against, `bocb list optimizers`) must not cost the seconds torch takes.
"""
from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from typing import TYPE_CHECKING, Any

from bocb.errors import SpecError
from bocb.optim._param_groups import count_decayed, stem_and_head, weight_decay_groups
from bocb.optim._registry import OPTIMIZERS, OptimizerInfo
from bocb.optim._search import FAMILIES
from bocb.plugins import import_object, run_user_code

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

DISTRIBUTIONS = {"torch.optim": "torch", "timm.optim": "timm", "pytorch_optimizer": "pytorch_optimizer",
                 "schedulefree": "schedulefree"}
BETA_KEYS = ("beta1", "beta2")
HANDLE_KEYS = ("rho",)  # consumed by the handle (Sophia's estimate), not by the optimizer class


class GaussNewtonBartlett:
    """Sophia-G's diagonal Hessian estimate (Liu et al. 2023, Algorithm 2).

    Written here because no maintained library ships it (pytorch_optimizer has only the Hutchinson
    variant, whose double backward breaks fused attention): sample y ~ softmax(logits), take the
    gradient g of the mean cross-entropy on y, estimate h = rho * B * g * g. Folding rho in makes
    pytorch_optimizer's SophiaH update with p = 1, lr * clip(m / max(h, eps), 1), SophiaG's update
    lr * clip(m / max(rho * B * h_ema, eps), 1). Cost: one extra backward pass every ``period`` steps.
    """

    def __init__(self, params: list[Tensor], rho: float, period: int) -> None:
        self.params, self.rho, self.period = params, rho, period

    def estimate(self, logits: Tensor) -> list[Tensor]:
        import torch
        import torch.nn.functional as F

        sampled = torch.distributions.Categorical(logits=logits.detach().float()).sample()
        sampled_loss = F.cross_entropy(logits, sampled)
        grads = torch.autograd.grad(sampled_loss, self.params, retain_graph=True, allow_unused=True)
        scale = self.rho * logits.shape[0]
        return [torch.zeros_like(p) if g is None else scale * g * g for p, g in zip(self.params, grads)]


class OptimizerHandle:
    """What the engine's training loop uses: backward, step, zero_grad, train/eval modes."""

    def __init__(self, optimizer: torch.optim.Optimizer, provenance: dict[str, Any], uses_lr_schedule: bool,
                 hessian: GaussNewtonBartlett | None = None) -> None:
        self.optimizer = optimizer
        self.provenance = provenance
        self.uses_lr_schedule = uses_lr_schedule
        self.hessian = hessian
        self.steps = 0
        self._pending: list[Tensor] | None = None
        self.train()  # schedule-free optimizers refuse to step until put in train mode

    def _refresh_due(self) -> bool:
        # SophiaH refreshes on its steps 1, 1 + k, ... i.e. when our 0-based count is a multiple of k
        return self.hessian is not None and self.steps % self.hessian.period == 0

    def backward(self, loss: Tensor, logits: Tensor) -> None:
        if self._refresh_due():
            self._pending = self.hessian.estimate(logits)
        loss.backward()

    def step(self) -> None:
        if self.hessian is None:
            self.optimizer.step()
        else:
            if self._refresh_due() and self._pending is None:
                raise RuntimeError("Sophia needs OptimizerHandle.backward(loss, logits) on its refresh steps")
            self.optimizer.step(hessian=self._pending)
            self._pending = None
        self.steps += 1

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def averages_weights(self) -> bool:
        """True for schedule-free optimizers: evaluation runs at an average of the iterates, not at the
        weights that training saw (so BatchNorm statistics must be re-estimated there)."""
        return callable(getattr(self.optimizer, "eval", None))

    def train(self) -> None:
        self._set_mode("train")

    def eval(self) -> None:
        self._set_mode("eval")

    def _set_mode(self, mode: str) -> None:
        # Schedule-free optimizers swap weights between the training and averaged points.
        switch = getattr(self.optimizer, mode, None)
        if callable(switch):
            switch()


def _library_version(source: str, cls: type) -> str | None:
    """Version of the distribution that ships ``cls``: the zoo's libraries by name; a user's class by its
    top-level package (None for a module that no installed distribution ships)."""
    names = [DISTRIBUTIONS[source]] if source in DISTRIBUTIONS else \
        packages_distributions().get(cls.__module__.partition(".")[0], [])
    try:
        return version(names[0]) if names else None
    except PackageNotFoundError:
        return None


def resolve_kwargs(info: OptimizerInfo, hparams: dict[str, Any]) -> dict[str, Any]:
    """info.fixed overridden by ``hparams``; 'beta1'/'beta2' replace entries of ``betas``."""
    valid = set(info.fixed) | set(info.extras) | (set(BETA_KEYS) if "betas" in info.fixed else set())
    for key in hparams:
        if key not in valid:
            raise SpecError(f"optimizers.{info.name}.{key}",
                            f"unknown hyper-parameter; valid choices: {', '.join(sorted(valid))}")
    kwargs = dict(info.fixed)
    kwargs.update({k: v for k, v in hparams.items() if k not in BETA_KEYS})
    if any(key in hparams for key in BETA_KEYS):
        betas = list(kwargs["betas"])
        for i, key in enumerate(BETA_KEYS):
            betas[i] = hparams.get(key, betas[i])
        kwargs["betas"] = tuple(betas)
    return kwargs


def resolved_hyperparameters(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments (besides lr and weight decay) optimizer ``name`` is built with for ``hparams``:
    two sets of hparams train alike exactly when these are equal."""
    return resolve_kwargs(OPTIMIZERS.get(name, field="optimizers"), dict(hparams))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _check_arguments(lr: float, weight_decay: float, family: str) -> None:
    if not lr > 0:
        raise SpecError("lr", f"must be > 0, got {lr}")
    if not weight_decay >= 0:
        raise SpecError("weight_decay", f"must be >= 0, got {weight_decay}")
    if family not in FAMILIES:
        raise SpecError("family", f"unknown recipe family '{family}'; valid choices: {', '.join(FAMILIES)}")


def one_weight_group(info: OptimizerInfo) -> dict[str, Any]:
    """The parameter group the weight-decay policy gives a model of one 1 x 1 weight (on the fallback where
    the optimizer has one: that weight is stem and head), at weight decay 0. Made here, not by the policy,
    because the policy's grouping is timm's and importing timm costs seconds in every command that loads a
    spec; tests/test_optim.py checks that the two agree for every registered optimizer."""
    import torch

    return {"params": [torch.nn.Parameter(torch.zeros(1, 1))], "weight_decay": 0.0,
            **({"use_fallback": True} if info.fallback_stem_and_head else {})}


def check_hyperparameters(name: str, hparams: dict[str, Any], field: str) -> None:
    """Build optimizer ``name`` with ``hparams`` over one tiny parameter, so a spec whose arguments the class
    refuses (an unknown name, a value of the wrong type or range) fails when it is loaded, not in every
    planned trial."""
    try:
        info = OPTIMIZERS.get(name, field="optimizers")
        kwargs, handle_kwargs = _resolved(info, lr=1e-3, weight_decay=0.0, hparams=hparams, family="classical")
        # the class's own argument checks raise whatever they raise; a user's class may even exit
        run_user_code(lambda: _instantiate(info, [one_weight_group(info)], lr=1e-3, weight_decay=0.0,
                                           kwargs=kwargs, handle_kwargs=handle_kwargs),
                      field, f"{info.cls} refuses {hparams}")
    except SpecError as exc:
        raise SpecError(field, str(exc).split(": ", 1)[-1]) from None


def _resolved(info: OptimizerInfo, *, lr: float, weight_decay: float, hparams: dict[str, Any] | None,
              family: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checked keyword arguments of ``info``'s class, and those the handle consumes (Sophia's rho)."""
    _check_arguments(lr, weight_decay, family)
    kwargs = resolve_kwargs(info, dict(hparams or {}))
    handle_kwargs = {k: kwargs.pop(k) for k in HANDLE_KEYS if info.hessian and k in kwargs}
    return kwargs, handle_kwargs


def _instantiate(info: OptimizerInfo, groups: list[dict[str, Any]], *, lr: float, weight_decay: float,
                 kwargs: dict[str, Any], handle_kwargs: dict[str, Any],
                 ) -> tuple[torch.optim.Optimizer, GaussNewtonBartlett | None, type]:
    """``info``'s class over ``groups``: the optimizer, Sophia-G's estimate (None unless the optimizer takes
    one) and the class (or factory) the registry names."""
    cls = import_object(info.cls, "optimizers", "optimizer class")
    optimizer = cls(groups, lr=lr, weight_decay=weight_decay, **kwargs)
    hessian = None
    if info.hessian == "gnb":
        params = [p for g in optimizer.param_groups for p in g["params"]]
        hessian = GaussNewtonBartlett(params, handle_kwargs["rho"], kwargs["update_period"])
    return optimizer, hessian, cls


def build_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float,
                    hparams: dict[str, Any] | None = None, weight_decay_policy: str = "no_decay_1d",
                    family: str = "classical") -> OptimizerHandle:
    """The optimizer ``name`` over ``model``'s parameters, with every hyper-parameter explicit."""
    info = OPTIMIZERS.get(name, field="optimizers")
    kwargs, handle_kwargs = _resolved(info, lr=lr, weight_decay=weight_decay, hparams=hparams, family=family)
    fallback = stem_and_head(model) if info.fallback_stem_and_head else []
    groups = weight_decay_groups(model, weight_decay, weight_decay_policy, fallback)
    optimizer, hessian, cls = _instantiate(info, groups, lr=lr, weight_decay=weight_decay, kwargs=kwargs,
                                           handle_kwargs=handle_kwargs)
    provenance = {
        "optimizer": info.name,
        "paper_name": info.paper_name,
        "category": info.category,  # the paper's a-d family (or 'new'): the report's analysis by category
        "family": family,
        "library": info.source,
        "library_version": _library_version(info.source, cls),
        "class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "kwargs": _jsonable({"lr": lr, "weight_decay": weight_decay, **kwargs}),
        "weight_decay_policy": weight_decay_policy,
        **count_decayed(groups),
        "fallback_parameters": fallback,
        "internal_clipping": info.internal_clipping,
        "uses_lr_schedule": info.uses_lr_schedule,
        "hessian": None if hessian is None else {
            "estimator": "gauss-newton-bartlett (Sophia-G, sampled labels)",
            "rho": hessian.rho, "update_period": hessian.period,
            "extra_cost": f"one extra backward pass every {hessian.period} steps",
        },
    }
    return OptimizerHandle(optimizer, provenance, info.uses_lr_schedule, hessian)
