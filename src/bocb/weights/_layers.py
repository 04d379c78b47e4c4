"""Which tensors are analysed: the weight of every Linear / Conv1d / Conv2d / Embedding layer."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from bocb.errors import BocbError

# Checked in this order, as WeightWatcher does (a subclass of Linear counts as Linear).
MODULE_TYPES: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Linear, "Linear"),
    (nn.Conv1d, "Conv1d"),
    (nn.Conv2d, "Conv2d"),
    (nn.Embedding, "Embedding"),
)
# A state dict has no classes: the rank of a '*.weight' tensor decides. A 2-D weight may be a
# Linear or an Embedding; both are analysed as one matrix, so the metrics do not depend on it.
RANK_TYPES = {2: "Linear", 3: "Conv1d", 4: "Conv2d"}
WEIGHT_SUFFIX = ".weight"


@dataclass(frozen=True)
class LayerWeight:
    name: str
    type: str
    weight: torch.Tensor


def layer_weights(source: nn.Module | Mapping[str, torch.Tensor]) -> list[LayerWeight]:
    """The analysed layers of a module or a state dict, in definition order."""
    if isinstance(source, nn.Module):
        return list(_from_module(source))
    if isinstance(source, Mapping):
        return list(_from_state_dict(source))
    raise BocbError(f"weights: expected an nn.Module or a state dict, got {type(source).__name__}")


def _from_module(model: nn.Module) -> Iterator[LayerWeight]:
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        for cls, type_name in MODULE_TYPES:
            if isinstance(module, cls):
                yield LayerWeight(name, type_name, weight.detach())
                break


def _from_state_dict(state: Mapping[str, torch.Tensor]) -> Iterator[LayerWeight]:
    for key, value in state.items():
        if not (isinstance(value, torch.Tensor) and key.endswith(WEIGHT_SUFFIX)):
            continue
        type_name = RANK_TYPES.get(value.dim())
        if type_name is not None:
            yield LayerWeight(key[: -len(WEIGHT_SUFFIX)], type_name, value.detach())
