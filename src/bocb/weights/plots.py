"""Layer-pattern figures: ridge plots per metric and mean alpha per (backbone, optimizer).

Input is a *layer frame*: rows of ``layer_table`` plus ``backbone`` and ``optimizer`` columns
(``bocb.store.Store.layers_frame()`` returns one). Several trials of one cell (seeds) are
averaged per layer. Imports no training code, so reports can call these directly.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bocb.errors import DataError, SpecError, unknown_name_message  # noqa: E402

RIDGE_METRICS = ("alpha", "weight_entropy", "l2_norm", "topk_energy", "spectral_norm", "spectral_entropy")
ALPHA_BAND = (2.0, 6.0)  # below: over-fitted / heavy-tailed, above: under-trained (paper §3.1 C)
_GROUP = ("backbone", "optimizer")


def ridge_plot(layers: pd.DataFrame, metric: str, *, backbone: str | None = None) -> plt.Figure:
    """One row per optimizer, x = layer index, the metric as a filled ridge on a shared y scale."""
    if metric not in RIDGE_METRICS:
        raise SpecError("metric", unknown_name_message("metric", metric, RIDGE_METRICS))
    frame = _one_backbone(_checked(layers, metric), backbone)
    means = frame.groupby(["optimizer", "layer"])[metric].mean().dropna()  # seeds averaged
    optimizers = list(dict.fromkeys(frame["optimizer"]))  # first-seen order, as trials were run
    baseline = float(means.min()) if len(means) else 0.0
    fig, axes = plt.subplots(len(optimizers), 1, sharex=True, sharey=True, squeeze=False,
                             figsize=(8.0, 0.55 * len(optimizers) + 1.2))
    for ax, optimizer, color in zip(axes[:, 0], optimizers, sns.color_palette("viridis", len(optimizers))):
        ridge = means.get(optimizer, pd.Series(dtype=float))
        ax.fill_between(ridge.index, ridge.to_numpy(), baseline, color=color, alpha=0.6)
        ax.plot(ridge.index, ridge.to_numpy(), color=color, linewidth=1.2)
        ax.text(-0.01, 0.2, str(optimizer), transform=ax.transAxes, ha="right", fontsize=8)
        ax.patch.set_alpha(0.0)  # rows overlap: let the ridge below show through
        ax.set_yticks([])
        ax.tick_params(bottom=ax is axes[-1, 0])
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
    axes[-1, 0].set_xlabel("layer index")
    top = float(means.max()) if len(means) else 0.0
    fig.suptitle(f"{metric} per layer: {frame['backbone'].iloc[0]} (shared y, {baseline:.3g} to {top:.3g})",
                 fontsize=10)
    fig.subplots_adjust(hspace=-0.3 if len(optimizers) > 1 else 0.0, left=0.2)
    return fig


def alpha_bar_chart(layers: pd.DataFrame) -> plt.Figure:
    """Mean alpha over layers per (backbone, optimizer), with the 2-6 'well-trained' band shaded."""
    frame = _checked(layers, "alpha").dropna(subset=["alpha"])
    n_backbones, n_optimizers = frame["backbone"].nunique(), frame["optimizer"].nunique()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * n_backbones * n_optimizers + 2.5), 4.0))
    ax.axhspan(*ALPHA_BAND, color="tab:green", alpha=0.12, label=f"{ALPHA_BAND[0]:g} ≤ α ≤ {ALPHA_BAND[1]:g}")
    sns.barplot(frame, x="backbone", y="alpha", hue="optimizer", estimator="mean", errorbar=None,
                palette="viridis", ax=ax)
    ax.set_ylabel("mean α over layers")
    ax.legend(fontsize=7, ncols=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def write_weight_plots(layers: pd.DataFrame, out_dir: str | Path,
                       metrics: Sequence[str] = RIDGE_METRICS) -> list[Path]:
    """Ridge plots ``ridge_<backbone>_<metric>.png`` per backbone and ``alpha_bars.png`` into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for backbone in dict.fromkeys(_checked(layers).get("backbone")):
        for metric in metrics:
            stem = re.sub(r"[^\w.-]+", "_", str(backbone))  # a factory name 'pkg.mod:fn' is no file name
            written.append(_save(ridge_plot(layers, metric, backbone=backbone), out / f"ridge_{stem}_{metric}.png"))
    written.append(_save(alpha_bar_chart(layers), out / "alpha_bars.png"))
    return written


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _checked(layers: pd.DataFrame, *columns: str) -> pd.DataFrame:
    missing = [c for c in (*_GROUP, "layer", *columns) if c not in layers.columns]
    if missing:
        raise DataError(f"layer frame: missing columns {', '.join(missing)} "
                        "(need backbone, optimizer, layer and the metric)")
    if layers.empty:
        raise DataError("layer frame: no rows (no trial stored a layer table)")
    return layers


def _one_backbone(frame: pd.DataFrame, backbone: str | None) -> pd.DataFrame:
    backbones = list(dict.fromkeys(frame["backbone"]))
    if backbone is None and len(backbones) == 1:
        return frame
    if backbone not in backbones:
        raise SpecError("backbone", unknown_name_message("backbone", str(backbone), map(str, backbones)))
    return frame[frame["backbone"] == backbone]
