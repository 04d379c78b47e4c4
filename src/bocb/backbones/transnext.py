"""TransNeXt (Shi, "TransNeXt: Robust Foveal Visual Perception for Vision Transformers", CVPR 2024),
from the paper, as a timm-style module with timm layers (neither timm nor torchvision has it).

Stages 1-3 use aggregated attention: each query attends jointly (one softmax) to
- its 3x3 neighbourhood (fine, pixel-focused), with a learnable relative bias per window
  position, plus learnable tokens that re-weight the local attention (``q . T + b``), and
- a pooled copy of the whole map (coarse: adaptive average pool -> 1x1 conv -> LN -> GELU),
  with a continuous position bias from a small MLP over log-spaced relative coordinates.
Queries get a learnable query embedding; logits are cosine similarities scaled by a learnable
temperature (softplus) times log(number of keys) (length-scaled cosine attention). Stage 4 uses
full multi-head self-attention. Channel mixer: convolutional GLU (fc -> split -> DW 3x3 + GELU
gate -> fc, hidden 2/3 of dim x ratio). Patch embedding: 7x7/4 conv (3x3/2 later) + LayerNorm.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from timm.layers.attention import Attention
from torch import nn

WINDOW = 3  # local window side


def _log_spaced(coords: torch.Tensor) -> torch.Tensor:
    coords = coords * 8
    return torch.sign(coords) * torch.log2(coords.abs() + 1.0) / math.log2(8)


def _centres(n: int, device: torch.device) -> torch.Tensor:
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n


class AggregatedAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, pool_size: int, cpb_hidden: int = 512) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.pool_size = num_heads, dim // num_heads, pool_size
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.query_embedding = nn.Parameter(torch.zeros(num_heads, 1, self.head_dim))
        # softplus(t) = 1 / 0.24 at start: a moderate initial sharpness for cosine logits
        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), math.log(math.expm1(1 / 0.24))))
        self.local_bias = nn.Parameter(torch.zeros(num_heads, 1, WINDOW * WINDOW))
        self.learnable_tokens = nn.Parameter(torch.zeros(num_heads, self.head_dim, WINDOW * WINDOW))
        self.learnable_bias = nn.Parameter(torch.zeros(num_heads, 1, WINDOW * WINDOW))
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.sr = nn.Conv2d(dim, dim, 1)
        self.pool_norm = nn.LayerNorm(dim)
        self.cpb = nn.Sequential(nn.Linear(2, cpb_hidden), nn.ReLU(inplace=True), nn.Linear(cpb_hidden, num_heads))
        self.proj = nn.Linear(dim, dim)
        for p in (self.query_embedding, self.learnable_tokens, self.local_bias):
            trunc_normal_(p, std=0.02)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, h, N, d)
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _pool_bias(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Continuous position bias (heads, H*W, P*P) between query pixels and pooled cells."""
        qy, qx = torch.meshgrid(_centres(h, device), _centres(w, device), indexing="ij")
        py, px = torch.meshgrid(_centres(self.pool_size, device), _centres(self.pool_size, device), indexing="ij")
        rel = torch.stack([qy.reshape(-1, 1) - py.reshape(1, -1), qx.reshape(-1, 1) - px.reshape(1, -1)], dim=-1)
        return self.cpb(_log_spaced(rel)).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = F.normalize(self._heads(self.q(x)) + self.query_embedding, dim=-1)
        n_keys = WINDOW * WINDOW + self.pool_size ** 2
        q_scaled = q * F.softplus(self.temperature) * math.log(n_keys)

        # local keys/values: the 3x3 neighbourhood of every pixel, padding masked out
        kv = self.kv(x).transpose(1, 2).reshape(b, 2 * c, h, w)
        kv = F.unfold(kv, WINDOW, padding=WINDOW // 2).reshape(b, 2, self.num_heads, self.head_dim, -1, n)
        k_local = F.normalize(kv[:, 0], dim=2).permute(0, 1, 4, 2, 3)  # (B, h, N, d, 9)
        v_local = kv[:, 1].permute(0, 1, 4, 3, 2)  # (B, h, N, 9, d)
        attn_local = torch.einsum("bhnd,bhndk->bhnk", q_scaled, k_local) + self.local_bias
        inside = F.unfold(x.new_ones(1, 1, h, w), WINDOW, padding=WINDOW // 2).transpose(1, 2)  # (1, N, 9)
        attn_local = attn_local.masked_fill(inside == 0, float("-inf"))

        # pooled keys/values over the whole map
        pooled = self.sr(self.pool(x.transpose(1, 2).reshape(b, c, h, w))).flatten(2).transpose(1, 2)
        kv_pool = self.kv(F.gelu(self.pool_norm(pooled)))  # the same kv projection as the local path
        k_pool, v_pool = kv_pool.reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn_pool = q_scaled @ F.normalize(k_pool, dim=-1).transpose(-2, -1) + self._pool_bias(h, w, x.device)

        attn = torch.cat([attn_local, attn_pool], dim=-1).softmax(dim=-1)
        a_local, a_pool = attn.split([WINDOW * WINDOW, attn_pool.shape[-1]], dim=-1)
        a_local = a_local + q @ self.learnable_tokens + self.learnable_bias  # learnable tokens re-weight
        out = torch.einsum("bhnk,bhnkd->bhnd", a_local, v_local) + a_pool @ v_pool
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ConvolutionalGLU(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(2 * dim * mlp_ratio / 3)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x, v = self.fc1(x).chunk(2, dim=-1)
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(x) * v)


class TransNeXtBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, pool_size: int | None,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = AggregatedAttention(dim, num_heads, pool_size) if pool_size else Attention(dim, num_heads,
                                                                                               qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ConvolutionalGLU(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        y = self.norm1(x)
        y = self.attn(y, h, w) if isinstance(self.attn, AggregatedAttention) else self.attn(y)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class TransNeXtStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 pool_size: int | None, stride: int, drop_paths: list[float]) -> None:
        super().__init__()
        kernel = 2 * stride - 1 if stride > 2 else 3  # 7x7/4 stem, 3x3/2 later
        self.embed = nn.Conv2d(in_dim, dim, kernel, stride=stride, padding=kernel // 2)
        self.embed_norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(TransNeXtBlock(dim, num_heads, mlp_ratio, pool_size, dp) for dp in drop_paths)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, c, h, w = x.shape
        x = self.embed_norm(x.flatten(2).transpose(1, 2))
        for block in self.blocks:
            x = block(x, h, w)
        return self.norm(x).transpose(1, 2).reshape(b, c, h, w)


class TransNeXt(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, img_size: int = 224,
                 dims: Sequence[int] = (72, 144, 288, 576), depths: Sequence[int] = (2, 2, 15, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), mlp_ratios: Sequence[float] = (8, 8, 4, 4),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), drop_path_rate: float = 0.0, drop_rate: float = 0.0,
                 stem_stride: int = 4) -> None:
        super().__init__()
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start, in_dim, side = [], 0, in_chans, img_size
        for i, depth in enumerate(depths):
            stride = stem_stride if i == 0 else 2
            side = math.ceil(side / stride)
            # pooled map side: the stage's side / sr ratio (7 at 224 px); full attention in the last stage
            pool = max(1, side // sr_ratios[i]) if i < len(depths) - 1 else None
            stages.append(TransNeXtStage(in_dim, dims[i], depth, num_heads[i], mlp_ratios[i], pool, stride,
                                         rates[start: start + depth]))
            in_dim, start = dims[i], start + depth
        self.stages = nn.Sequential(*stages)
        self.num_features = dims[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(x.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
