"""Optimizers of your own: a ``torch.optim.Optimizer`` subclass named ``package.module:Class`` in a spec or
published in the entry-point group ``bocb.optimizers``, described from its signature.

Its lr and weight-decay defaults (the centres of the searched grids unless the spec gives them) are the
signature's; every other argument with a plain default is passed explicitly and recorded, as for the zoo.
"""
from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any

from bocb.errors import SpecError
from bocb.optim._registry import OptimizerInfo
from bocb.optim._search import FAMILIES

SEARCHED = ("lr", "weight_decay")
_PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any) -> bool:
    """A default that a spec could write and a trial can record (not a tensor, a callable, a sentinel)."""
    return isinstance(value, _PLAIN) or (isinstance(value, (tuple, list)) and all(_plain(v) for v in value))


def _number(parameter: inspect.Parameter) -> float | None:
    default = parameter.default
    if isinstance(default, (int, float)) and not isinstance(default, bool) and default >= 0:
        return float(default)
    return None  # required, or a sentinel such as torch.optim.optimizer.required


def _described(value: Any) -> str:
    return f"the class {value.__module__}.{value.__qualname__}" if isinstance(value, type) \
        else f"of type {type(value).__name__}"


def optimizer_info(name: str, obj: Any, field: str) -> OptimizerInfo:
    """The registry entry ``name`` of a plugin: an :class:`OptimizerInfo` as it is, or an Optimizer subclass
    described from its signature. A one-line SpecError for anything else."""
    import torch  # here, not at the top: the registry loads without torch, which only a plugin needs

    if isinstance(obj, OptimizerInfo):
        return replace(obj, name=name)
    if not (isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)):
        raise SpecError(field, f"'{name}' is {_described(obj)}, not a torch.optim.Optimizer subclass")
    parameters = inspect.signature(obj).parameters
    for key in SEARCHED:  # bocb passes both to every optimizer, and searches them
        if key not in parameters:
            raise SpecError(field, f"optimizer class '{name}' takes no '{key}' argument; bocb searches lr and "
                                   "weight decay for every optimizer")
    lr = _number(parameters["lr"]) or None  # an lr of 0 is no centre for a log grid
    weight_decay = _number(parameters["weight_decay"]) or 0.0
    fixed = {key: p.default for key, p in parameters.items()
             if key not in ("params", *SEARCHED) and p.default is not p.empty and _plain(p.default)}
    return OptimizerInfo(
        name=name, paper_name=obj.__name__, category="user", source=obj.__module__,
        cls=f"{obj.__module__}:{obj.__qualname__}",
        defaults={family: {"lr": lr, "weight_decay": weight_decay} for family in FAMILIES}, fixed=fixed,
        note="your own: defaults from its signature" + ("" if lr is not None else "; no lr default, the spec gives lr"),
    )
