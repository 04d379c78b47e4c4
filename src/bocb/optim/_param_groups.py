"""One weight-decay policy for every optimizer (timm's grouping, recorded per trial)."""
from __future__ import annotations

import glob
from typing import TYPE_CHECKING, Any

from bocb.errors import SpecError

if TYPE_CHECKING:
    from torch import nn

WEIGHT_DECAY_POLICIES = ("no_decay_1d", "decay_all")


def weight_decay_groups(model: nn.Module, weight_decay: float, policy: str,
                        fallback: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Parameter groups for ``policy``; each group is tagged ``decay_excluded`` for the record.

    'no_decay_1d': every 1-D tensor and ``*.bias`` (biases, norm weights) and the names in
    ``model.no_weight_decay()`` (position embeddings, class token...) get no decay: timm's policy.
    'decay_all': everything decayed. Parameters named in ``fallback`` go to groups marked
    ``use_fallback`` (timm's flag: a hybrid optimizer such as Muon updates them with its AdamW).
    """
    from timm.optim import param_groups_weight_decay  # here: importing bocb.optim must not import timm and torch

    if policy not in WEIGHT_DECAY_POLICIES:
        raise SpecError("weight_decay_policy",
                        f"unknown policy '{policy}'; valid choices: {', '.join(WEIGHT_DECAY_POLICIES)}")
    no_decay_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    exclude = policy == "no_decay_1d"
    # A non-zero placeholder: timm merges everything into one group when weight_decay is 0, and the
    # split must not depend on the searched value.
    groups = param_groups_weight_decay(model, 1.0, weight_decay_exclude_1d=exclude,
                                       no_weight_decay_list=no_decay_names if exclude else (),
                                       fallback_list=[glob.escape(name) for name in fallback])
    for group in groups:
        group["decay_excluded"] = group["weight_decay"] == 0.0
        group["weight_decay"] = 0.0 if group["decay_excluded"] else weight_decay
    return groups


def stem_and_head(model: nn.Module) -> list[str]:
    """Names of the parameters of the input layer (the first module with a >= 2-D weight: stem conv,
    patch embedding) and of the classifier (timm's ``get_classifier()``, else the last Linear)."""
    from bocb.backbones import classifier

    weighted = [m for m in model.modules() if getattr(m, "weight", None) is not None and m.weight.ndim >= 2]
    try:
        heads = [classifier(model)]
    except ValueError:  # no classifier at all: the stem only
        heads = []
    chosen = {id(p) for m in weighted[:1] + heads for p in m.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in chosen]


def count_decayed(groups: list[dict[str, Any]]) -> dict[str, int]:
    """Number of tensors the policy decays and excludes, and those on a hybrid's fallback (for the record)."""
    excluded = sum(len(g["params"]) for g in groups if g["decay_excluded"])
    return {"decayed_tensors": sum(len(g["params"]) for g in groups) - excluded, "non_decayed_tensors": excluded,
            "fallback_tensors": sum(len(g["params"]) for g in groups if g.get("use_fallback"))}
