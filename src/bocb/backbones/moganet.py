"""MogaNet (Li et al., "MogaNet: Multi-order Gated Aggregation Network", ICLR 2024), from the paper.

Neither timm nor torchvision has it, so it is written here as a timm-style module with
timm layers. A block is ``x + ls1 * Moga(BN(x))`` then ``x + ls2 * CA-FFN(BN(x))``:
- Moga (spatial aggregation): 1x1 conv, feature decomposition ``y + s * (y - GAP(y))``, SiLU;
  a gate branch (1x1 conv, SiLU) times a context branch (multi-order depth-wise convs:
  DW 5x5 d1 on all channels, then DW 5x5 d2 and DW 7x7 d3 on channel splits 3/8 and 4/8,
  concatenated and mixed by a 1x1 conv, SiLU); a 1x1 projection; plus its input.
- CA-FFN (channel aggregation): 1x1 expand, DW 3x3, GELU, then ``h + s * (h - GELU(conv1x1(h -> 1)))``,
  1x1 reduce.
Stem: two 3x3 stride-2 convs (BN, GELU between); downsampling: 3x3 stride-2 conv + BN; a
BatchNorm ends each stage (the authors' ``stem_norm_type='BN'`` default). ``stem_strides``: (2, 2) on
ImageNet; the CIFAR stem of the BOCB authors' code is (1, 1); our tiny variant uses (1, 2) to stay fast
on a CPU. The defaults are MogaNet-S as the authors' ``arch_zoo['small']`` defines it
(github.com/Westlake-AI/MogaNet, models/moganet.py): widths (64, 128, 320, 512), depths (2, 3, 12, 2),
FFN ratios (8, 8, 4, 4); tests/test_backbones.py checks them block by block.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath
from torch import nn

from bocb.backbones._stems import PooledClassifierNet


class ElementScale(nn.Module):
    """A learnable per-channel scale (used for layer scale and the decomposition weights)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, dim, 1, 1), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class MultiOrderDWConv(nn.Module):
    """Depth-wise convs of three orders (dilation 1, 2, 3) on channel splits 1:3:4."""

    def __init__(self, dim: int, split: tuple[int, int, int] = (1, 3, 4)) -> None:
        super().__init__()
        self.c1 = dim * split[1] // sum(split)
        self.c2 = dim * split[2] // sum(split)
        self.c0 = dim - self.c1 - self.c2
        self.dw0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.dw1 = nn.Conv2d(self.c1, self.c1, 5, padding=4, dilation=2, groups=self.c1)
        self.dw2 = nn.Conv2d(self.c2, self.c2, 7, padding=9, dilation=3, groups=self.c2)
        self.pw = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw0(x)
        low = x[:, : self.c0]
        mid = self.dw1(x[:, self.c0: self.c0 + self.c1])
        high = self.dw2(x[:, self.c0 + self.c1:])
        return self.pw(torch.cat([low, mid, high], dim=1))


class MultiOrderGatedAggregation(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.sigma = ElementScale(dim, 1e-5)
        self.gate = nn.Conv2d(dim, dim, 1)
        self.value = MultiOrderDWConv(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y = self.proj_1(x)
        y = self.act(y + self.sigma(y - y.mean(dim=(2, 3), keepdim=True)))  # feature decomposition
        y = self.act(self.gate(y)) * self.act(self.value(y))
        return self.proj_2(y) + shortcut


class ChannelAggregationFFN(nn.Module):
    def __init__(self, dim: int, ratio: float, drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.decompose = nn.Conv2d(hidden, 1, 1)
        self.sigma = ElementScale(hidden, 1e-5)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act(self.dwconv(self.fc1(x))))
        h = h + self.sigma(h - self.act(self.decompose(h)))  # channel aggregation
        return self.drop(self.fc2(h))


class MogaBlock(nn.Module):
    def __init__(self, dim: int, ffn_ratio: float, drop_path: float = 0.0, ls_init: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = MultiOrderGatedAggregation(dim)
        self.ls1 = ElementScale(dim, ls_init)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ChannelAggregationFFN(dim, ffn_ratio)
        self.ls2 = ElementScale(dim, ls_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


def _conv_bn(in_chs: int, out_chs: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1), nn.BatchNorm2d(out_chs)]


class MogaNet(PooledClassifierNet):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dims: Sequence[int] = (64, 128, 320, 512),
                 depths: Sequence[int] = (2, 3, 12, 2), ffn_ratios: Sequence[float] = (8, 8, 4, 4),
                 drop_path_rate: float = 0.0, drop_rate: float = 0.0,
                 stem_strides: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_chans, dims[0] // 2, stem_strides[0]), nn.GELU(),
                                  *_conv_bn(dims[0] // 2, dims[0], stem_strides[1]))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start = [], 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            down = nn.Identity() if i == 0 else nn.Sequential(*_conv_bn(dims[i - 1], dim, 2))
            blocks = [MogaBlock(dim, ffn_ratios[i], rates[start + j]) for j in range(depth)]
            stages.append(nn.Sequential(down, *blocks, nn.BatchNorm2d(dim)))
            start += depth
        self.stages = nn.Sequential(*stages)
        self.add_head(dims[-1], num_classes, drop_rate)
