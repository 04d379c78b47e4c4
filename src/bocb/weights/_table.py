"""The per-layer table: spectral (WeightWatcher-style) and value-based metrics of every layer."""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.stats
import torch
from torch import nn

from bocb.errors import SpecError
from bocb.weights._columns import COLUMNS
from bocb.weights._layers import LayerWeight, layer_weights
from bocb.weights._powerlaw import NO_FIT, PowerLawFit, fit_power_law

# WeightWatcher 0.7.7 defaults (weightwatcher/constants.py) for which layers get an alpha.
EIGENVALUE_THRESHOLD = 1e-5  # eigenvalues at or below this are dropped before the fit
MIN_EIGENVALUES = 8  # pooled count M * rf below this: no fit
MAX_EIGENVALUES = 15000  # pooled count above this: no fit
MAX_N = 50000  # larger matrix side above this: no fit
# WeightWatcher scales every conv slice by sqrt(1/2) ("conv2d_norm"). Alpha is scale-free,
# but the 1e-5 threshold is not, so the scaling decides which eigenvalues reach the fit.
CONV_SLICE_SCALE = math.sqrt(0.5)
WEIGHT_HISTOGRAM_BINS = 100



def layer_table(
    source: nn.Module | Mapping[str, torch.Tensor], *, topk: int | float = 5
) -> pd.DataFrame:
    """One row per Linear/Conv1d/Conv2d/Embedding weight of ``source`` (a module or state dict).

    Computed on CPU in float64 from the weights rounded to float32, whatever the model's
    device. ``topk`` is the number of principal components in ``topk_energy`` (an int >= 1)
    or a fraction of them (a float in (0, 1]). Columns: ``COLUMNS``; numeric: ``NUMERIC_COLUMNS``.
    """
    _check_topk(topk)
    rows = [_layer_row(i, layer, topk) for i, layer in enumerate(layer_weights(source))]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table = table.astype({"layer": "int64", "num_eigs": "int64"})
    table.attrs["topk"] = topk
    return table


def _check_topk(topk: int | float) -> None:
    ok = (isinstance(topk, int) and not isinstance(topk, bool) and topk >= 1) or (
        isinstance(topk, float) and 0.0 < topk <= 1.0
    )
    if not ok:
        raise SpecError("topk", f"got {topk!r}; expected an int >= 1 or a fraction in (0, 1]")


def _layer_row(index: int, layer: LayerWeight, topk: int | float) -> dict[str, object]:
    # WeightWatcher reads weights as float32 on CPU; the arithmetic after that is float64.
    weight = layer.weight.detach().to("cpu", torch.float32).to(torch.float64)
    slices, scale = _slices(weight, layer.type)
    singular = torch.linalg.svdvals(slices * scale).flatten().numpy()
    eigenvalues = np.sort(singular**2)
    rows, cols = slices.shape[-2:]
    fit = _fit_if_supported(eigenvalues, n=max(rows, cols), m=min(rows, cols), rf=slices.shape[0])
    return {
        "layer": index,
        "name": layer.name,
        "type": layer.type,
        "shape": "x".join(str(s) for s in weight.shape),
        "alpha": fit.alpha,
        "xmin": fit.xmin,
        "D": fit.D,
        "num_eigs": eigenvalues.size,
        "spectral_norm": float(singular.max() / scale),
        "l2_norm": float(torch.linalg.vector_norm(weight)),
        "weight_entropy": weight_entropy(weight),
        "spectral_entropy": spectral_entropy(singular, n=max(rows, cols)),
        "topk_energy": topk_energy(weight, topk),
    }


def _slices(weight: torch.Tensor, type_name: str) -> tuple[torch.Tensor, float]:
    """The matrices whose spectra are pooled: one per kernel position for a convolution.

    Conv2d (out, in, kh, kw) -> kh*kw matrices out x in (Conv1d likewise per tap; WeightWatcher
    0.7.7 fails on Conv1d, so slicing it like Conv2d is our extension).
    """
    if type_name in ("Linear", "Embedding"):
        return weight.unsqueeze(0), 1.0
    taps = weight.flatten(2).permute(2, 0, 1)  # (kh*kw, out, in)
    return taps, CONV_SLICE_SCALE


def _fit_if_supported(eigenvalues: np.ndarray, *, n: int, m: int, rf: int) -> PowerLawFit:
    """WeightWatcher's size rules decide whether a layer is fitted at all."""
    if not (MIN_EIGENVALUES <= m * rf <= MAX_EIGENVALUES) or n > MAX_N:
        return NO_FIT
    return fit_power_law(eigenvalues[eigenvalues > EIGENVALUE_THRESHOLD])


def spectral_entropy(singular_values: np.ndarray, *, n: int) -> float:
    """-sum p ln p / ln(rank), p = s^2 / sum s^2 over the pooled spectrum (WeightWatcher's 'entropy').

    rank counts s > max(s) * n * eps (numpy's matrix_rank rule, n = larger side). WeightWatcher
    adds 1e-10 to p and to the rank; we drop that (it changes the value by < 1e-7) and define
    the entropy of a rank <= 1 spectrum as 0 (its epsilon makes that case meaningless).
    """
    s = np.asarray(singular_values, dtype=np.float64)
    rank = int(np.count_nonzero(s > s.max() * n * np.finfo(np.float64).eps)) if s.size else 0
    if rank <= 1:
        return 0.0
    return float(scipy.stats.entropy(s**2) / math.log(rank))


def weight_entropy(weight: torch.Tensor) -> float:
    """Shannon entropy (nats) of the weight values: 100 equal-width bins over [min, max].

    A constant tensor falls in one bin: entropy 0. The maximum is ln(100) = 4.61.
    """
    counts, _ = np.histogram(weight.flatten().numpy(), bins=WEIGHT_HISTOGRAM_BINS)
    return float(scipy.stats.entropy(counts))


def topk_energy(weight: torch.Tensor, topk: int | float) -> float:
    """Share of variance in the top-k principal components of the layer's output units.

    Rows = output units (Conv: out x in*kh*kw; Embedding: one row per token), centred per
    column; PCA variances are the squared singular values of that matrix. A fraction k takes
    ceil(k * number of components). NaN when the centred matrix is zero (e.g. a single row).
    """
    rows = weight.reshape(weight.shape[0], -1)
    centred = rows - rows.mean(dim=0, keepdim=True)
    # Eigenvalues of the smaller Gram matrix = squared singular values, 5-10x faster than an SVD
    # of a wide conv matrix; squaring only blurs variances < 1e-16 of the total, which k-energy ignores.
    gram = centred @ centred.T if centred.shape[0] <= centred.shape[1] else centred.T @ centred
    variances = torch.linalg.eigvalsh(gram).flip(0).clamp(min=0).numpy()
    total = variances.sum()
    if total <= 0:
        return math.nan
    k = topk if isinstance(topk, int) else math.ceil(topk * variances.size)
    return float(variances[: min(k, variances.size)].sum() / total)
