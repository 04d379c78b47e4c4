"""CIFAR stems: the 32x32 variants of the authors' code (paper-protocol notes), and the pieces the
hand-written backbones share (initialisation, the pooled classifier).

Each stem function edits a freshly built timm model in place and returns it; the
feature-map sizes each keeps for a 32x32 input are in docs/backbones.md and
checked by tests/test_backbones.py.
"""
from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn


def conv3x3(in_chans: int, out_chans: int, bias: bool) -> nn.Conv2d:
    """A 3x3 stride-1 conv initialised as timm initialises CNN convs (He normal, fan out)."""
    conv = nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=1, padding=1, bias=bias)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def cifar_resnet(model: nn.Module) -> nn.Module:
    """7x7/2 conv + max-pool -> 3x3/1 conv (BN + ReLU kept), no max-pool: maps 32-32-16-8-4."""
    model.conv1 = conv3x3(model.conv1.in_channels, model.conv1.out_channels, bias=False)
    model.maxpool = nn.Identity()
    return model


def cifar_densenet(model: nn.Module) -> nn.Module:
    """7x7/2 conv + BN-ReLU + max-pool -> a bare 3x3/1 conv: dense blocks at 32-16-8-4."""
    conv0 = model.features.conv0
    model.features.conv0 = conv3x3(conv0.in_channels, conv0.out_channels, bias=False)
    model.features.norm0 = nn.Identity()
    model.features.pool0 = nn.Identity()
    return model


def cifar_convnext(model: nn.Module) -> nn.Module:
    """4x4/4 patchify conv -> 3x3/1 conv (LayerNorm kept): stages at 32-16-8-4."""
    conv = model.stem[0]
    model.stem[0] = conv3x3(conv.in_channels, conv.out_channels, bias=True)
    trunc_normal_(model.stem[0].weight, std=0.02)  # ConvNeXt's own conv init
    return model


def unstride(model: nn.Module, attr: str) -> nn.Module:
    """Stride 1 for the stem conv ``attr`` (tiny variants only: keeps maps at 16-32 px)."""
    getattr(model, attr).stride = (1, 1)
    return model


def metaformer_stem(model: nn.Module, stride: int) -> nn.Module:
    """MetaFormer's 7x7/4 stem -> 3x3 conv with ``stride`` (the authors' PoolFormer CIFAR stem is stride 1)."""
    conv = model.stem.conv
    model.stem.conv = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=stride, padding=1)
    trunc_normal_(model.stem.conv.weight, std=0.02)  # MetaFormer's own init
    nn.init.zeros_(model.stem.conv.bias)
    return model


def init_conv_linear(m: nn.Module) -> None:
    """Truncated-normal (std 0.02) conv and linear weights, zero biases: the MetaFormer-era default."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class PooledClassifierNet(nn.Module):
    """timm's interface for a stem-then-stages CNN: ``forward_features`` (``stages(stem(x))``),
    ``forward_head`` (global average pool, ``norm``, dropout, linear) and ``get_classifier``.
    Subclasses build ``stem`` and ``stages`` and then call :meth:`add_head`."""

    def add_head(self, width: int, num_classes: int, drop_rate: float, norm: nn.Module | None = None) -> None:
        """The head, then the MetaFormer-era initialisation of every conv and linear layer."""
        self.num_features = width
        self.norm = norm if norm is not None else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_conv_linear)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.norm(x.mean(dim=(2, 3)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
