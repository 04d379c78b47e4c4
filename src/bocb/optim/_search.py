"""The paper's search protocol: consecutive log-grid values centred on each default."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bocb.errors import SpecError
from bocb.optim._registry import OPTIMIZERS
from bocb.recipes import published_column

FAMILIES = ("classical", "modern")
# Top of the weight-decay grid when the default is 0: an L2 coefficient of 1e-4 is the classical
# "small" value; decoupled decay is multiplied by the lr (1e-3..1e-4), so its small values are larger.
ZERO_WD_TOP = {False: 1e-4, True: 1e-2}
Given = float | list[float] | None  # a spec's lr or weight_decay: the default's grid, a grid's centre, the values


@dataclass(frozen=True)
class SearchSpace:
    lr: list[float]
    weight_decay: list[float]
    extras: dict[str, list[Any]]


def round_sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits, so grid values print and hash stably."""
    return float(f"{value:.{digits}g}")


def log_grid(centre: float, points: int, step: float) -> list[float]:
    """``points`` consecutive values centre * step**k, ascending, containing ``centre``.

    For an even count the extra point goes below the centre: offsets -n/2 .. n/2 - 1.
    """
    low = -(points // 2)
    return [round_sig(centre * step ** k) for k in range(low, low + points)]


def weight_decay_grid(default: float, points: int, step: float, decoupled: bool) -> list[float]:
    """Log grid around ``default``; for a default of 0: [0] plus ``points - 1`` values ending at ZERO_WD_TOP."""
    if default > 0:
        return log_grid(default, points, step)
    top = ZERO_WD_TOP[decoupled]
    return [0.0] + [round_sig(top * step ** -k) for k in range(points - 2, -1, -1)]


def _check_at_least(field: str, value: float, minimum: float, strict: bool = False) -> None:
    if value < minimum or (strict and value == minimum):
        raise SpecError(field, f"must be {'>' if strict else '>='} {minimum}, got {value}")


def grid_centre(name: str, family: str, recipe: str | None = None, setting: str = "cifar100") -> dict[str, float]:
    """The lr and weight decay the grid of optimizer ``name`` is centred on: the values Table A3 publishes for
    ``recipe`` in ``setting`` when ``name`` is the optimizer that recipe was published with (RSB A3: LAMB
    8e-3), else the optimizer's default for the recipe ``family``."""
    info = OPTIMIZERS.get(name, field="optimizers")
    if family not in FAMILIES:
        raise SpecError("family", f"unknown recipe family '{family}'; valid choices: {', '.join(FAMILIES)}")
    column = published_column(recipe, setting) if recipe is not None else None
    if column is not None and column.optimizer == info.name:
        return {"lr": column.lr, "weight_decay": column.weight_decay}
    return dict(info.defaults[family])


def search_space(name: str, family: str, *, lr_points: int = 5, wd_points: int = 5,
                 lr_step: float = 2.0, wd_step: float = 2.0, recipe: str | None = None,
                 setting: str = "cifar100", lr: Given = None, weight_decay: Given = None) -> SearchSpace:
    """The lr x weight-decay grid (and the extras) searched for optimizer ``name`` in ``family``, centred as
    :func:`grid_centre` says (pass the trial's ``recipe`` name and the dataset's ``setting`` to centre the
    recipe's own optimizer on Table A3's values).

    ``lr`` / ``weight_decay`` as a spec gives them: None (the grid around that centre), a number (the grid
    around it) or a list (exactly those values).
    """
    info = OPTIMIZERS.get(name, field="optimizers")
    _check_at_least("search.lr_points", lr_points, 1)
    _check_at_least("search.wd_points", wd_points, 1)
    _check_at_least("search.lr_step", lr_step, 1.0, strict=True)
    _check_at_least("search.wd_step", wd_step, 1.0, strict=True)
    default = grid_centre(name, family, recipe, setting)
    field = f"optimizers.{info.name}"
    return SearchSpace(
        lr=_values(lr, default["lr"], lambda c: log_grid(c, lr_points, lr_step), f"{field}.lr"),
        weight_decay=_values(weight_decay, default["weight_decay"],
                             lambda c: weight_decay_grid(c, wd_points, wd_step, info.decoupled_decay),
                             f"{field}.weight_decay"),
        extras={k: list(v) for k, v in info.extras.items()},
    )


def _values(given: Given, default: float | None, grid: Callable[[float], list[float]], field: str) -> list[float]:
    if isinstance(given, list):
        return list(given)
    centre = default if given is None else given
    if centre is None:  # an optimizer class of the user's whose signature has no default
        raise SpecError(field, "the optimizer has no default; give a value (the centre of the searched grid) "
                               "or a list of values")
    return grid(centre)
