"""The backbone zoo: the BOCB paper's 20 backbones at paper and tiny size, plus users' own.

``build_backbone(name, size=..., num_classes=..., img_size=...)`` builds one;
``input_size(name, size, requested)`` tells the data layer which side to deliver.
"""
from __future__ import annotations

from bocb.backbones._api import (
    BACKBONES,
    SIZES,
    BackboneInfo,
    build_backbone,
    check_user_backbone,
    classifier,
    get_backbone,
    input_size,
    load_entry_points,
    register_backbone,
    resolve_backbone_name,
)
from bocb.backbones._catalogue import PAPER_ORDER  # importing the catalogue registers the paper's 20

__all__ = [
    "BACKBONES",
    "SIZES",
    "PAPER_ORDER",
    "BackboneInfo",
    "build_backbone",
    "classifier",
    "get_backbone",
    "check_user_backbone",
    "input_size",
    "load_entry_points",
    "register_backbone",
    "resolve_backbone_name",
]
