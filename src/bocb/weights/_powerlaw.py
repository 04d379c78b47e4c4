"""Power-law fit of an eigenvalue spectrum, reproducing WeightWatcher 0.7.7's default ``WWFit``.

Written by hand because no maintained library has this exact estimator: the ``powerlaw``
package picks xmin differently and WeightWatcher only ships it inside a 5,900-line module
that configures logging and prints at import. See docs/weights.md for the derivation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# WeightWatcher 0.7.7 constants (weightwatcher/WW_powerlaw.py): below this many eigenvalues
# the bias-corrected small-n fit is used, with tails of at least SMALL_N_MIN_TAIL values.
SMALL_N_CUTOFF = 20
SMALL_N_MIN_TAIL = 8
# A tail whose log-sum is this small is degenerate (all values equal xmin): skipped.
DEGENERATE_LOG_SUM = 1e-12
_KS_BLOCK_ELEMENTS = 1 << 20  # memory bound of one vectorised KS block (8 MiB)


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float
    xmin: float
    D: float
    num_tail: int


NO_FIT = PowerLawFit(alpha=math.nan, xmin=math.nan, D=math.nan, num_tail=0)


def fit_power_law(eigenvalues: np.ndarray) -> PowerLawFit:
    """Fit p(x) ~ x^-alpha to the tail x >= xmin; xmin scanned over every value but the largest.

    ``eigenvalues`` must already be thresholded (positive). Fewer than two values: no fit.
    """
    x = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    if x.size < 2:
        return NO_FIT
    fit = _fit_small_n(x) if x.size < SMALL_N_CUTOFF else _fit_standard(x)
    # All tail values tied (e.g. an orthogonal matrix): no power law. WeightWatcher reports
    # alpha = inf (large n) or 0 (small n) there; we report NaN.
    return fit if math.isfinite(fit.alpha) else NO_FIT


def _ks_distance(tail: np.ndarray, alpha: float) -> float:
    """Kolmogorov-Smirnov distance between the tail and the fitted power-law CDF.

    The empirical CDF is i/n for i = 0..n-1 (WeightWatcher's convention, not (i+1)/n).
    """
    n = tail.size
    model_cdf = 1.0 - (tail / tail[0]) ** (1.0 - alpha)
    return float(np.max(np.abs(model_cdf - np.arange(n) / n)))


def _tail_log_sum(log_x: np.ndarray, i: int) -> float:
    """sum_{j >= i} ln(x_j / x_i), summed as WeightWatcher's small-n fit sums it."""
    return float(np.sum(log_x[i:]) - (log_x.size - i) * log_x[i])


def _fit_standard(x: np.ndarray) -> PowerLawFit:
    """MLE alpha = 1 + n / sum ln(x/xmin); keep the xmin with the smallest D (first on ties)."""
    log_x = np.log(x)
    starts = np.arange(x.size - 1)
    n = (x.size - starts).astype(np.float64)
    suffix_sums = np.cumsum(log_x[::-1])[::-1][:-1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # A zero log-sum (all tail values tied) gives alpha = inf, as numpy's division does.
        alphas = 1.0 + n / (suffix_sums - n * log_x[:-1])
        ds = _ks_distances(x, alphas)
    i = int(np.argmin(ds))
    return PowerLawFit(alpha=float(alphas[i]), xmin=float(x[i]), D=float(ds[i]), num_tail=x.size - i)


def _ks_distances(x: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """KS distance of the tail starting at each index i < len(x) - 1, in row blocks.

    The model CDF is 1 - (x/xmin)^(1-alpha), the empirical one (j - i)/n for j = i..N-1
    (WeightWatcher's convention, not (j - i + 1)/n). alpha <= 1 (not normalisable) scores 1.
    """
    size = x.size
    ds = np.ones(alphas.size)
    block = max(1, _KS_BLOCK_ELEMENTS // size)
    for lo in range(0, alphas.size, block):
        rows = np.arange(lo, min(lo + block, alphas.size))
        alpha = alphas[rows, None]
        offset = np.arange(size)[None, :] - rows[:, None]  # j - i
        model_cdf = 1.0 - (x[None, :] / x[rows, None]) ** (1.0 - alpha)
        gap = np.abs(model_cdf - offset / (size - rows[:, None]))
        gap[offset < 0] = 0.0  # only j >= i belongs to the tail
        valid = alphas[rows] > 1
        ds[rows[valid]] = gap[valid].max(axis=1)
    return ds


def _fit_small_n(x: np.ndarray) -> PowerLawFit:
    """Bias-corrected alpha = 1 + (n-1) / sum ln(x/xmin) over tails of >= 8 values.

    WeightWatcher 0.7.7's small-n code ranks xmin by D - 0.868/sqrt(n), but ``WWFit.__init__``
    then re-selects by the smallest D over the same candidates, so the smallest D is what
    0.7.7 actually reports; we reproduce that.
    """
    log_x = np.log(x)
    best = (math.inf, -1, math.nan)  # (D, i, alpha)
    with np.errstate(over="ignore"):
        for i in range(x.size - SMALL_N_MIN_TAIL + 1):
            s = _tail_log_sum(log_x, i)
            alpha = 1.0 + (x.size - i - 1.0) / s if s > DEGENERATE_LOG_SUM else 1.0
            if alpha <= 1.0:
                continue
            d = _ks_distance(x[i:], alpha)
            if d < best[0]:
                best = (d, i, alpha)
    if best[1] >= 0:
        d, i, alpha = best
        return PowerLawFit(alpha=alpha, xmin=float(x[i]), D=d, num_tail=x.size - i)
    # No tail of >= 8 values qualified: WeightWatcher falls back to the whole spectrum.
    s = _tail_log_sum(log_x, 0)
    if s <= DEGENERATE_LOG_SUM:
        return NO_FIT
    alpha = 1.0 + (x.size - 1.0) / s
    return PowerLawFit(alpha=alpha, xmin=float(x[0]), D=_ks_distance(x, alpha), num_tail=x.size)
