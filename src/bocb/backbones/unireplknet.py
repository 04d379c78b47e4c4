"""UniRepLKNet (Ding et al., "UniRepLKNet: A Universal Perception Large-Kernel ConvNet", CVPR 2024),
from the paper, as a timm-style module with timm layers (neither timm nor torchvision has it).

A block: large-kernel depth-wise conv -> BN -> SE (1/4) -> Linear 4x -> GELU -> GRN -> Linear
-> BN -> layer scale, plus the residual. A 13x13 kernel is the training-time Dilated Reparam
Block: the 13x13 depth-wise conv (+BN) plus parallel dilated depth-wise convs (+BN) with
kernel/dilation (5,1), (7,2), (3,3), (3,4), (3,5), summed; a 3x3 kernel is a plain DW conv
without bias (BN follows). Kernel plan of UniRepLKNet-T (the authors' ``default_UniRepLKNet_T_kernel_sizes``,
github.com/AILab-CVC/UniRepLKNet, unireplknet.py): stage 1 all 3, stage 2 all 13, stage 3 alternates
13 and 3, stage 4 all 13 (S/B/L repeat (13, 3, 3) in stage 3 instead). Stem: 3x3/2 conv, LN, GELU,
3x3/2 conv, LN; downsampling 3x3/2 conv + LN; head GAP -> LN -> Linear. ``stem_stride=1`` (tiny
variants) makes both stem convs stride 1. The defaults are UniRepLKNet-T: widths (80, 160, 320, 640),
depths (3, 3, 18, 3). This is the training-time form; the authors' published parameter count (31 M)
is of the re-parameterised (deploy) form, which merges each Dilated Reparam Block into one kernel
and folds the BNs and layer scale (tests/test_backbones.py counts both).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath, LayerNorm, LayerNorm2d
from timm.layers.grn import GlobalResponseNorm
from torch import nn

from bocb.backbones._stems import PooledClassifierNet

DILATED_BRANCHES = {13: ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5))}  # kernel -> (kernel, dilation) pairs


def _dw_bn(dim: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(nn.Conv2d(dim, dim, kernel, padding=pad, dilation=dilation, groups=dim, bias=False),
                         nn.BatchNorm2d(dim))


class DilatedReparamBlock(nn.Module):
    """A large depth-wise kernel plus parallel dilated small kernels (training-time form)."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.origin = _dw_bn(dim, kernel)
        self.branches = nn.ModuleList(_dw_bn(dim, k, r) for k, r in DILATED_BRANCHES[kernel])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.origin(x)
        for branch in self.branches:
            out = out + branch(x)
        return out


class SEBlock(nn.Module):
    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.down = nn.Conv2d(dim, dim // reduction, 1)
        self.up = nn.Conv2d(dim // reduction, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.up(torch.relu(self.down(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class UniRepLKNetBlock(nn.Module):
    def __init__(self, dim: int, kernel: int, drop_path: float = 0.0, ls_init: float = 1e-6,
                 ffn_ratio: int = 4) -> None:
        super().__init__()
        if kernel in DILATED_BRANCHES:
            self.dwconv = DilatedReparamBlock(dim, kernel)
        else:
            self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False)
        self.norm = nn.BatchNorm2d(dim)
        self.se = SEBlock(dim)
        hidden = dim * ffn_ratio
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(hidden, channels_last=True)
        self.pwconv2 = nn.Linear(hidden, dim, bias=False)
        self.norm2 = nn.BatchNorm2d(dim)
        self.gamma = nn.Parameter(torch.full((dim,), ls_init))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x))).permute(0, 2, 3, 1)  # NHWC for the FFN
        y = self.pwconv2(self.grn(self.act(self.pwconv1(y)))).permute(0, 3, 1, 2)
        y = self.norm2(y) * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


def kernel_plan(depths: Sequence[int]) -> list[list[int]]:
    """UniRepLKNet-T's kernel sizes per block: 3s, 13s, 13 and 3 alternating, 13s."""
    patterns = ((3,), (13,), (13, 3), (13,))
    return [[pattern[j % len(pattern)] for j in range(depth)] for pattern, depth in zip(patterns, depths)]


class UniRepLKNet(PooledClassifierNet):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dims: Sequence[int] = (80, 160, 320, 640),
                 depths: Sequence[int] = (3, 3, 18, 3), drop_path_rate: float = 0.0, drop_rate: float = 0.0,
                 stem_stride: int = 2) -> None:
        super().__init__()
        half = dims[0] // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, stride=stem_stride, padding=1), LayerNorm2d(half), nn.GELU(),
            nn.Conv2d(half, dims[0], 3, stride=stem_stride, padding=1), LayerNorm2d(dims[0]),
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start = [], 0
        for i, kernels in enumerate(kernel_plan(depths)):
            down = nn.Identity() if i == 0 else nn.Sequential(
                nn.Conv2d(dims[i - 1], dims[i], 3, stride=2, padding=1), LayerNorm2d(dims[i]))
            blocks = [UniRepLKNetBlock(dims[i], k, rates[start + j]) for j, k in enumerate(kernels)]
            stages.append(nn.Sequential(down, *blocks))
            start += len(kernels)
        self.stages = nn.Sequential(*stages)
        self.add_head(dims[-1], num_classes, drop_rate, norm=LayerNorm(dims[-1]))
