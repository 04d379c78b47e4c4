"""TransNeXt (Shi, "TransNeXt: Robust Foveal Visual Perception for Vision Transformers", CVPR 2024),
written here from the paper and the author's reference code (github.com/DaiShiResearch/TransNeXt,
classification/transnext_native.py), as a timm-style module with timm layers (neither timm nor
torchvision has it).

Stages 1-3 use aggregated attention: each query attends jointly (one softmax) to
- its 3x3 neighbourhood (fine, pixel-focused), with a learnable bias per window position, plus
  learnable tokens that re-weight the local attention (``q . T + b``), and
- a pooled copy of the whole map (coarse: 1x1 conv -> GELU -> adaptive average pool -> LN),
  with a continuous position bias from a small MLP over log-spaced relative coordinates.
Queries are L2-normalised, get a learnable query embedding, and are scaled by a learnable temperature
(softplus) times log(number of keys the query sees) (length-scaled cosine attention). Stage 4 uses full
self-attention of the same kind with its own continuous position bias. Channel mixer: convolutional GLU
(fc -> split -> DW 3x3 + GELU gate -> fc, hidden 2/3 of dim x ratio). Patch embedding: 7x7/4 conv
(3x3/2 later) + LayerNorm. The position-bias MLP runs on the table of distinct relative offsets and is
gathered per (query, key) pair, as the reference code does: evaluating it on every pair instead cost
2 GFLOPs of TransNeXt-T's 5.7 at 224 px. The defaults are TransNeXt-T (``transnext_tiny``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

WINDOW = 3  # local window side
CPB_HIDDEN = 512
Norm = partial(nn.LayerNorm, eps=1e-6)


@dataclass
class Geometry:
    """What a stage's attention needs about its map: which window positions fall off the map
    (N, 9), log(number of keys) per query (N, 1), and the relative-offset index (N * keys) into the
    table of distinct offsets (T, 2) for the continuous position bias."""

    outside: torch.Tensor
    length_scale: torch.Tensor
    index: torch.Tensor
    table: torch.Tensor


@torch.no_grad()
def relative_offsets(query: tuple[int, int], key: tuple[int, int],
                     device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, table): log-spaced offsets between every query pixel and every cell of an adaptive average
    pool of the query grid to ``key`` cells, as distinct rows (table) and one index per pair."""
    axes = []
    for nq, nk in zip(query, key):
        q = torch.arange(nq, dtype=torch.float32, device=device)
        k = F.adaptive_avg_pool1d(q[None], nk)[0]
        axes.append((q[:, None] - k[None, :]) / max(nq - 1, 1) * 8)
    rel_h, rel_w = axes
    pairs = torch.stack(torch.broadcast_tensors(rel_h[:, None, :, None], rel_w[None, :, None, :]), dim=-1)
    table, index = torch.unique(pairs.reshape(-1, 2), return_inverse=True, dim=0)
    return index, torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def geometry(h: int, w: int, pool: int | None, device: torch.device | None = None) -> Geometry:
    """The geometry of an (h, w) map with ``pool`` x ``pool`` pooled keys (None: full attention)."""
    if pool is None:
        index, table = relative_offsets((h, w), (h, w), device)
        return Geometry(torch.zeros(h * w, 0, dtype=torch.bool, device=device),
                        torch.full((h * w, 1), math.log(h * w), device=device), index, table)
    on_map = F.unfold(torch.ones(1, 1, h, w, device=device), WINDOW, padding=WINDOW // 2)[0].T  # (N, 9)
    index, table = relative_offsets((h, w), (pool, pool), device)
    return Geometry(on_map == 0, torch.log(on_map.sum(-1, keepdim=True) + pool * pool), index, table)


def _cpb(num_heads: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2, CPB_HIDDEN), nn.ReLU(inplace=True), nn.Linear(CPB_HIDDEN, num_heads))


class _CosineAttention(nn.Module):
    """What both attentions share: query embedding, temperature, position-bias MLP, output projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.query_embedding = nn.Parameter(trunc_normal_(torch.empty(num_heads, 1, self.head_dim), std=0.02))
        # softplus(t) = 1 / 0.24 at start, as the reference code
        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), math.log(math.expm1(1 / 0.24))))
        self.cpb = _cpb(num_heads)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor, parts: int) -> torch.Tensor:  # (B, N, parts*C) -> (B, parts*h, N, d)
        return x.reshape(x.shape[0], x.shape[1], parts * self.num_heads, self.head_dim).transpose(1, 2)

    def _scaled(self, q_norm: torch.Tensor, geo: Geometry) -> torch.Tensor:
        return (q_norm + self.query_embedding) * F.softplus(self.temperature) * geo.length_scale

    def _position_bias(self, geo: Geometry, keys: int) -> torch.Tensor:
        return self.cpb(geo.table).T[:, geo.index].view(self.num_heads, -1, keys)

    def _out(self, x: torch.Tensor) -> torch.Tensor:  # (B, h, N, d) -> (B, N, C)
        return self.proj(x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1))


class AggregatedAttention(_CosineAttention):
    def __init__(self, dim: int, num_heads: int, pool_size: int) -> None:
        super().__init__(dim, num_heads)
        self.pool_len = pool_size * pool_size
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.local_bias = nn.Parameter(trunc_normal_(torch.empty(num_heads, WINDOW * WINDOW), std=4e-4))
        self.learnable_tokens = nn.Parameter(trunc_normal_(torch.empty(num_heads, self.head_dim, WINDOW * WINDOW),
                                                           std=0.02))
        self.learnable_bias = nn.Parameter(torch.zeros(num_heads, 1, WINDOW * WINDOW))
        self.sr = nn.Conv2d(dim, dim, 1)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.pool_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int, geo: Geometry) -> torch.Tensor:
        b, n, c = x.shape
        q_norm = F.normalize(self._heads(self.q(x), 1), dim=-1)
        q_scaled = self._scaled(q_norm, geo)

        # local keys (normalised) and values: the 3x3 neighbourhood of every pixel, padding masked out
        k, v = self.kv(x).chunk(2, dim=-1)
        k = F.normalize(k.reshape(b, n, self.num_heads, self.head_dim), dim=-1).reshape(b, n, c)
        kv = torch.cat([k, v], dim=-1).transpose(1, 2).reshape(b, 2 * c, h, w)
        kv = F.unfold(kv, WINDOW, padding=WINDOW // 2).reshape(b, 2 * self.num_heads, self.head_dim, -1, n)
        k_local, v_local = kv.permute(0, 1, 4, 2, 3).chunk(2, dim=1)  # (B, h, N, d, 9) each
        attn_local = (q_scaled.unsqueeze(-2) @ k_local).squeeze(-2) + self.local_bias.unsqueeze(1)
        attn_local = attn_local.masked_fill(geo.outside, float("-inf"))

        # pooled keys and values over the whole map, through the same kv projection
        pooled = self.pool(F.gelu(self.sr(x.transpose(1, 2).reshape(b, c, h, w))))
        k_pool, v_pool = self._heads(self.kv(self.pool_norm(pooled.flatten(2).transpose(1, 2))), 2).chunk(2, dim=1)
        attn_pool = (q_scaled @ F.normalize(k_pool, dim=-1).transpose(-2, -1)
                     + self._position_bias(geo, self.pool_len))

        attn = torch.cat([attn_local, attn_pool], dim=-1).softmax(dim=-1)
        a_local, a_pool = attn.split([WINDOW * WINDOW, self.pool_len], dim=-1)
        a_local = q_norm @ self.learnable_tokens + self.learnable_bias + a_local  # learnable tokens re-weight
        out = (a_local.unsqueeze(-2) @ v_local.transpose(-2, -1)).squeeze(-2) + a_pool @ v_pool
        return self._out(out)


class FullAttention(_CosineAttention):
    """Stage 4: length-scaled cosine self-attention over the whole map with a continuous position bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int, geo: Geometry) -> torch.Tensor:
        q, k, v = self._heads(self.qkv(x), 3).chunk(3, dim=1)
        attn = (self._scaled(F.normalize(q, dim=-1), geo) @ F.normalize(k, dim=-1).transpose(-2, -1)
                + self._position_bias(geo, x.shape[1]))
        return self._out(attn.softmax(dim=-1) @ v)


class ConvolutionalGLU(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(2 * int(dim * mlp_ratio) / 3)
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
        self.norm1 = Norm(dim)
        self.attn = AggregatedAttention(dim, num_heads, pool_size) if pool_size else FullAttention(dim, num_heads)
        self.norm2 = Norm(dim)
        self.mlp = ConvolutionalGLU(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, h: int, w: int, geo: Geometry) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w, geo))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class TransNeXtStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 pool_size: int | None, stride: int, side: int, drop_paths: list[float]) -> None:
        super().__init__()
        kernel = 2 * stride - 1 if stride > 2 else 3  # 7x7/4 stem, 3x3/2 later
        self.embed = nn.Conv2d(in_dim, dim, kernel, stride=stride, padding=kernel // 2)
        self.embed_norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(TransNeXtBlock(dim, num_heads, mlp_ratio, pool_size, dp) for dp in drop_paths)
        self.norm = Norm(dim)
        self.pool_size, self.side = pool_size, side
        for key, value in vars(geometry(side, side, pool_size)).items():  # computed once, for the built size
            self.register_buffer(f"geo_{key}", value, persistent=False)

    def _geometry(self, h: int, w: int) -> Geometry:
        if (h, w) == (self.side, self.side):
            return Geometry(self.geo_outside, self.geo_length_scale, self.geo_index, self.geo_table)
        return geometry(h, w, self.pool_size, self.geo_table.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, c, h, w = x.shape
        x, geo = self.embed_norm(x.flatten(2).transpose(1, 2)), self._geometry(h, w)
        for block in self.blocks:
            x = block(x, h, w, geo)
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
            stages.append(TransNeXtStage(in_dim, dims[i], depth, num_heads[i], mlp_ratios[i], pool, stride, side,
                                         rates[start: start + depth]))
            in_dim, start = dims[i], start + depth
        self.stages = nn.Sequential(*stages)
        self.num_features = dims[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """The reference code's initialisation: truncated-normal linears, He-normal (fan-out) convs."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 * m.groups / (m.kernel_size[0] * m.kernel_size[1]
                                                                        * m.out_channels)))
        if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """The reference code keeps query embeddings, local biases, temperatures and the position-bias MLPs
        out of weight decay (its ``no_weight_decay_keywords``)."""
        keywords = ("query_embedding", "local_bias", "cpb", "temperature")
        return {name for name, _ in self.named_parameters() if any(k in name for k in keywords)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(x.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
