"""A user-defined backbone given to bocb as 'own_backbone_factory:small_cnn' (tests only)."""
from __future__ import annotations

from torch import nn


def small_cnn(num_classes: int, img_size: int) -> nn.Module:
    """Two conv layers and a linear head; img_size only checks the input is big enough."""
    assert img_size >= 8
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, num_classes),
    )


NOT_CALLABLE = 3
