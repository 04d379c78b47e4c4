"""JS⁰: how heterogeneous a backbone's block-wise Hessian spectra are at initialisation, before any training.

Zhang et al. (NeurIPS 2024, "Why Transformers Need Adam: A Hessian Perspective", arXiv 2402.16788) report that
SGD falls behind Adam where the Hessian's diagonal blocks have very different spectra (transformers) and not
where they are alike (CNNs), and measure it as JS⁰: the mean pairwise Jensen-Shannon distance between the
blocks' spectral densities at initialisation. This module computes it for any bocb backbone; whether it
predicts bocb's measured coupling is what benchmarks/predict.py checks (docs/predict.md has the answer).

- **A block is one parameter tensor** (a conv kernel, a linear weight, a query-key-value projection), as in
  the paper, which splits the Hessian by the network's parameter tensors: it is the unit Adam's per-tensor
  statistics and a layer's own scale live on, and it needs no per-architecture rule. Tensors with fewer
  than ``min_block`` (default 1000) parameters are skipped: biases, norm scales and layer scales are
  hundreds of numbers whose spectra a few Lanczos steps describe poorly, and there are as many of them as
  weights, so they would swamp the mean with pairs that say little about the weights.
- **The Hessian** is that of the training loss (cross-entropy, no label smoothing) of a freshly initialised
  model on the same fixed training images for every block and seed (the first ``batches`` batches of
  ``batch_size`` a seed-0 trial of the dataset trains on), in training mode (batch-norm on batch
  statistics) with dropout and drop-path off, so the loss is a deterministic function of the weights.
  ``seed`` draws the initial weights and the probe vectors.
- **Each block's density** is estimated by stochastic Lanczos quadrature: from ``probes`` random unit vectors,
  ``steps`` Lanczos steps on Hessian-vector products of the block's own diagonal Hessian block (double
  back-propagation, ``torch.autograd``), with full re-orthogonalisation; the tridiagonal's eigenvalues are
  the quadrature nodes and its eigenvectors' squared first entries the weights (Golub-Welsch).
- **JS⁰** smooths every block's nodes with one Gaussian (width ``SMOOTHING`` of the range all blocks' nodes
  span, so JS⁰ does not change when the loss is rescaled) on one common grid and averages scipy's
  ``jensenshannon`` (base 2: a distance in [0, 1]; 0 for identical densities, 1 for disjoint ones) over
  every pair of blocks.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from scipy.spatial.distance import jensenshannon
from torch import nn

from bocb.spec import DatasetSpec

MIN_BLOCK = 1000
SMOOTHING = 0.01  # the Gaussian's sd, as a share of the range the nodes of all blocks span
GRID_POINTS = 2000

HessianVectorProduct = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Quadrature:
    """One block's spectral density by SLQ: per probe, the nodes (Ritz values) and their weights (sum 1)."""

    nodes: np.ndarray    # probes x steps
    weights: np.ndarray  # probes x steps

    def moment(self, k: int) -> float:
        """The density's k-th moment, an estimate of tr(H^k) / n."""
        return float(np.mean(np.sum(self.weights * self.nodes ** k, axis=1)))


@dataclass(frozen=True)
class Estimate:
    """JS⁰ of one model, with the blocks it compared and how long it took."""

    js0: float
    blocks: list[str]
    quadratures: list[Quadrature]
    seconds: float


def lanczos(hvp: HessianVectorProduct, start: torch.Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The diagonal and off-diagonal of the tridiagonal matrix of ``steps`` Lanczos steps from ``start``,
    with full re-orthogonalisation against every earlier vector (twice: one Gram-Schmidt pass loses
    orthogonality in float32, and a lost direction shows up as a ghost copy of a large eigenvalue). Stops
    early when the Krylov space is exhausted (a block smaller than ``steps``, or a start in an invariant
    subspace). Written by hand: scipy's ``eigsh`` runs Lanczos but returns Ritz pairs, not the tridiagonal
    whose first eigenvector entries the quadrature weights are."""
    basis = [start / start.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    for _ in range(steps):
        w = hvp(basis[-1])
        alphas.append(float(w @ basis[-1]))
        if len(alphas) == steps:
            break
        stacked = torch.stack(basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        if beta <= 1e-6 * max(abs(a) for a in alphas) or beta == 0.0:
            break
        betas.append(beta)
        basis.append(w / beta)
    return np.array(alphas), np.array(betas)


def quadrature(hvp: HessianVectorProduct, size: int, probes: int, steps: int, generator: torch.Generator,
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Quadrature:
    """SLQ of the operator ``hvp`` on vectors of ``size``: Gaussian quadrature nodes and weights per probe.
    Probes that stop early (a small block) are padded with zero-weight nodes so every row has ``steps``."""
    nodes, weights = np.zeros((probes, steps)), np.zeros((probes, steps))
    for probe in range(probes):
        start = torch.randn(size, generator=generator, dtype=dtype).to(device)
        diagonal, off = lanczos(hvp, start, steps)
        ritz, vectors = eigh_tridiagonal(diagonal, off)
        n = len(ritz)
        nodes[probe, :n], weights[probe, :n] = ritz, vectors[0] ** 2
        nodes[probe, n:] = ritz[-1]
    return Quadrature(nodes, weights)


def densities(quadratures: Sequence[Quadrature], smoothing: float = SMOOTHING,
              points: int = GRID_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Every block's density on one common grid (rows sum to 1): each node a Gaussian of sd ``smoothing`` times
    the range of all nodes, weighted by its quadrature weight, averaged over the probes."""
    low = min(float(q.nodes.min()) for q in quadratures)
    high = max(float(q.nodes.max()) for q in quadratures)
    sd = smoothing * (high - low) or 1.0  # every node equal: any width gives the same (identical) densities
    grid = np.linspace(low - 4 * sd, high + 4 * sd, points)
    rows = []
    for q in quadratures:
        bumps = np.exp(-0.5 * ((grid[None, None, :] - q.nodes[:, :, None]) / sd) ** 2)
        rows.append(np.einsum("ps,psg->g", q.weights, bumps))
    table = np.array(rows)
    # far tails underflow to subnormals; scipy's jensenshannon halves them to exactly 0 in its mixture and
    # returns inf (p log p/0), so they are set to the 0 they stand for
    table[table < 1e-200] = 0.0
    return grid, table / table.sum(axis=1, keepdims=True)


def js0(quadratures: Sequence[Quadrature], smoothing: float = SMOOTHING) -> float:
    """The mean Jensen-Shannon distance (base 2, in [0, 1]) over every pair of the blocks' densities."""
    if len(quadratures) < 2:
        raise ValueError("JS⁰ needs at least two blocks")
    _, table = densities(quadratures, smoothing)
    return float(np.mean([distance(p, q) for p, q in itertools.combinations(table, 2)]))


def distance(p: np.ndarray, q: np.ndarray) -> float:
    """scipy's base-2 Jensen-Shannon distance of two finite densities; 0 where scipy returns NaN: for finite
    densities that only happens when they are equal up to rounding (blocks whose Hessian is ~0 at
    initialisation, behind zero-initialised layer scales), where the divergence rounds to a tiny negative
    number whose square root is NaN."""
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("a block's density is not finite")
    with np.errstate(invalid="ignore"):
        value = float(jensenshannon(p, q, base=2))
    return 0.0 if np.isnan(value) else value


def block_names(model: nn.Module, min_block: int = MIN_BLOCK) -> list[str]:
    """The parameter tensors that are blocks: trainable, with at least ``min_block`` entries."""
    return [name for name, p in model.named_parameters() if p.requires_grad and p.numel() >= min_block]


def block_hvps(loss: torch.Tensor, params: dict[str, nn.Parameter]) -> dict[str, HessianVectorProduct]:
    """Per block, v -> H_bb v, the block's own diagonal Hessian block times v: the gradient graph is built
    once (create_graph) and each product differentiates g_b . v with respect to that block only."""
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)

    def product(grad: torch.Tensor, param: nn.Parameter) -> HessianVectorProduct:
        def hvp(v: torch.Tensor) -> torch.Tensor:
            (out,) = torch.autograd.grad(grad.reshape(-1) @ v.to(grad.dtype), param, retain_graph=True)
            return out.reshape(-1).to(v.dtype)
        return hvp

    return {name: product(g, p) for (name, p), g in zip(params.items(), grads, strict=True)}


def deterministic(model: nn.Module) -> nn.Module:
    """Training mode (batch-norm on batch statistics, as the training loss sees it) without the random parts:
    dropout and drop-path modules in eval mode, where they are the identity."""
    from timm.layers import DropPath

    model.train()
    for module in model.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, DropPath)):
            module.eval()
    return model


def estimate_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, probes: int, steps: int,
                   seed: int, min_block: int = MIN_BLOCK) -> Estimate:
    """JS⁰ of ``model`` as it is (its weights are not changed) on ``images``/``labels``."""
    started = time.perf_counter()
    from timm.layers import set_fused_attn

    set_fused_attn(False)  # fused CPU attention cannot be differentiated twice
    deterministic(model)
    names = block_names(model, min_block)
    if len(names) < 2:
        raise ValueError(f"JS⁰ needs at least two parameter tensors of >= {min_block} entries; "
                         f"the model has {len(names)}")
    params = dict(model.named_parameters())
    loss = nn.functional.cross_entropy(model(images), labels)
    hvps = block_hvps(loss, {n: params[n] for n in names})
    generator = torch.Generator().manual_seed(seed)
    quads = [quadrature(hvps[n], params[n].numel(), probes, steps, generator, device=params[n].device)
             for n in names]
    return Estimate(js0(quads), names, quads, time.perf_counter() - started)


@dataclass(frozen=True)
class Settings:
    """How JS⁰ is estimated; the defaults keep a tiny backbone under a minute on 2 CPU cores
    (docs/predict.md gives the times and the spread over seeds)."""

    probes: int = 1
    steps: int = 12
    batches: int = 2
    batch_size: int = 32
    min_block: int = MIN_BLOCK


def training_batches(dataset: DatasetSpec, image_size: int, settings: Settings,
                     recipe: str = "torch", recipe_overrides: dict[str, Any] | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The first ``settings.batches`` training batches a seed-0 trial of ``dataset`` sees (its augmentation
    included), as one tensor; with the dataset's class and channel counts."""
    from bocb.data import build_loaders
    from bocb.recipes import resolve_recipe

    loaders = build_loaders(dataset, image_size=image_size, batch_size=settings.batch_size,
                            recipe=resolve_recipe(recipe, recipe_overrides), seed=0)
    loaders.train.set_epoch(0)
    pairs = list(itertools.islice(iter(loaders.train), settings.batches))
    images = torch.cat([x for x, _ in pairs])
    labels = torch.cat([y for _, y in pairs])
    return images, labels, loaders.num_classes, loaders.in_chans


def estimate(backbone: str, dataset: DatasetSpec, *, size: str = "tiny", seed: int = 0,
             settings: Settings = Settings(), recipe: str = "torch",
             recipe_overrides: dict[str, Any] | None = None, device: str = "cpu") -> Estimate:
    """JS⁰ of ``backbone`` (a registered name, alias or 'module:factory') freshly initialised at ``seed``, at
    ``dataset``'s image size, on its first training batches."""
    from bocb.backbones import build_backbone, input_size

    side = input_size(backbone, size, dataset.image_size)
    images, labels, classes, channels = training_batches(dataset, side, settings, recipe, recipe_overrides)
    torch.manual_seed(seed)
    model = build_backbone(backbone, size=size, num_classes=classes, img_size=side, in_chans=channels).to(device)
    return estimate_model(model, images.to(device), labels.to(device), probes=settings.probes,
                          steps=settings.steps, seed=seed, min_block=settings.min_block)
