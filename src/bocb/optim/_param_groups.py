"""One weight-decay policy for every optimizer (timm's grouping, recorded per trial)."""
from __future__ import annotations

from typing import Any

from timm.optim import param_groups_weight_decay
from torch import nn

from bocb.errors import SpecError

WEIGHT_DECAY_POLICIES = ("no_decay_1d", "decay_all")


def weight_decay_groups(model: nn.Module, weight_decay: float, policy: str) -> list[dict[str, Any]]:
    """Parameter groups for ``policy``; each group is tagged ``decay_excluded`` for the record.

    'no_decay_1d': every 1-D tensor and ``*.bias`` (biases, norm weights) and the names in
    ``model.no_weight_decay()`` (position embeddings, class token...) get no decay: timm's policy.
    'decay_all': one group, everything decayed.
    """
    if policy not in WEIGHT_DECAY_POLICIES:
        raise SpecError("weight_decay_policy",
                        f"unknown policy '{policy}'; valid choices: {', '.join(WEIGHT_DECAY_POLICIES)}")
    if policy == "decay_all":
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay, "decay_excluded": False}]
    no_decay_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    # A non-zero placeholder: timm merges everything into one group when weight_decay is 0, and the
    # split must not depend on the searched value.
    groups = param_groups_weight_decay(model, 1.0, no_weight_decay_list=no_decay_names)
    for group in groups:
        group["decay_excluded"] = group["weight_decay"] == 0.0
        group["weight_decay"] = 0.0 if group["decay_excluded"] else weight_decay
    return groups


def count_decayed(groups: list[dict[str, Any]]) -> dict[str, int]:
    """Number of tensors the policy decays and excludes (for the provenance record)."""
    excluded = sum(len(g["params"]) for g in groups if g["decay_excluded"])
    return {"decayed_tensors": sum(len(g["params"]) for g in groups) - excluded, "non_decayed_tensors": excluded}
