"""Layer-pattern figures: ridge plots per metric and mean alpha per (backbone, optimizer).

Input is a *layer frame*: rows of ``layer_table`` plus ``backbone`` and ``optimizer`` columns
(``bocb.store.Store.layers_frame()`` returns one). Several trials of one cell (seeds) are
averaged per layer. Imports no training code, so reports can call these directly.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bocb.colours import optimizer_colours, tag_optimizer  # noqa: E402
from bocb.errors import DataError, SpecError, unknown_name_message  # noqa: E402

RIDGE_METRICS = ("alpha", "weight_entropy", "l2_norm", "topk_energy", "spectral_norm", "spectral_entropy")
METRIC_LABELS = {"alpha": "PL exponent α", "weight_entropy": "weight entropy", "l2_norm": "L2 norm",
                 "topk_energy": "top-k PCA energy", "spectral_norm": "spectral norm",
                 "spectral_entropy": "spectral entropy"}
ALPHA_BAND = (2.0, 6.0)  # below: over-fitted / heavy-tailed, above: under-trained (paper §3.1 C)
_GROUP = ("backbone", "optimizer")
Colours = Mapping[str, Sequence[float] | str]


def _palette(frame: pd.DataFrame, colours: Colours | None) -> Colours:
    """The given colours (a report's, one per optimizer throughout), else the report's rule on this frame."""
    if colours is not None:
        return colours
    return optimizer_colours(frame["optimizer"])


def _ordered(names: Sequence[str] | None, present: pd.Series) -> list[str]:
    """``names`` (an order, e.g. the heat map's) restricted to those present; first-seen order without one."""
    seen = list(dict.fromkeys(map(str, present)))
    return seen if names is None else [str(n) for n in names if str(n) in set(seen)]


def ridge_plot(layers: pd.DataFrame, metric: str, *, backbone: str | None = None, colours: Colours | None = None,
               optimizers: Sequence[str] | None = None) -> plt.Figure:
    """One row per optimizer (in ``optimizers``' order), x = layer index, the metric as a filled ridge in the
    optimizer's colour on a shared y scale."""
    if metric not in RIDGE_METRICS:
        raise SpecError("metric", unknown_name_message("metric", metric, RIDGE_METRICS))
    frame = _one_backbone(_checked(layers, metric), backbone)
    means = frame.groupby(["optimizer", "layer"])[metric].mean().dropna()  # seeds averaged
    order, palette = _ordered(optimizers, frame["optimizer"]), _palette(frame, colours)
    baseline = float(means.min()) if len(means) else 0.0
    fig, axes = plt.subplots(len(order), 1, sharex=True, sharey=True, squeeze=False,
                             figsize=(8.0, 0.55 * len(order) + 1.2))
    for ax, optimizer in zip(axes[:, 0], order):
        ridge = means.get(optimizer, pd.Series(dtype=float))
        tag_optimizer(ax.fill_between(ridge.index, ridge.to_numpy(), baseline, color=palette[optimizer], alpha=0.6),
                      optimizer)
        tag_optimizer(ax.plot(ridge.index, ridge.to_numpy(), color=palette[optimizer], linewidth=1.2)[0], optimizer)
        ax.text(-0.01, 0.2, str(optimizer), transform=ax.transAxes, ha="right", fontsize=8)
        ax.patch.set_alpha(0.0)  # rows overlap: let the ridge below show through
        ax.set_yticks([])
        ax.tick_params(bottom=ax is axes[-1, 0])
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
    axes[-1, 0].set_xlabel("layer index")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    top = float(means.max()) if len(means) else 0.0
    fig.suptitle(f"{frame['backbone'].iloc[0]}: {METRIC_LABELS[metric]} per layer, one ridge per optimizer "
                 f"(shared y, {baseline:.3g} to {top:.3g})", fontsize=10)
    fig.subplots_adjust(hspace=-0.3 if len(order) > 1 else 0.0, left=0.2)
    return fig


def layer_grid(layers: pd.DataFrame, metric: str, *, colours: Colours | None = None,
               backbones: Sequence[str] | None = None, optimizers: Sequence[str] | None = None) -> plt.Figure:
    """Small multiples of one metric: a row per backbone, a column per optimizer, each panel the metric per
    layer (seeds averaged) in the optimizer's colour; the y scale is shared along a row (one backbone)."""
    if metric not in RIDGE_METRICS:
        raise SpecError("metric", unknown_name_message("metric", metric, RIDGE_METRICS))
    frame = _checked(layers, metric)
    means = frame.groupby(["backbone", "optimizer", "layer"])[metric].mean()
    rows, columns = _ordered(backbones, frame["backbone"]), _ordered(optimizers, frame["optimizer"])
    palette = _palette(frame, colours)
    fig, axes = plt.subplots(len(rows), len(columns), sharey="row", squeeze=False,
                             figsize=(1.7 * len(columns) + 1.2, 1.05 * len(rows) + 1.0))
    for (i, backbone), (j, optimizer) in itertools.product(enumerate(rows), enumerate(columns)):
        ax = axes[i, j]
        curve = means.get((backbone, optimizer), pd.Series(dtype=float)).dropna()
        if curve.empty:
            ax.text(0.5, 0.5, "n/a", transform=ax.transAxes, ha="center", va="center", fontsize=7)
        else:
            tag_optimizer(ax.plot(curve.index, curve.to_numpy(), color=palette[optimizer], linewidth=1.2)[0], optimizer)
            tag_optimizer(ax.fill_between(curve.index, curve.to_numpy(), float(curve.min()), color=palette[optimizer],
                                 alpha=0.25), optimizer)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
        ax.tick_params(labelsize=6, length=2, pad=1)
        if i == 0:
            ax.set_title(str(optimizer), fontsize=8)
        if j == 0:
            ax.set_ylabel(str(backbone), fontsize=8)
    fig.supxlabel("layer index", fontsize=8)
    fig.suptitle(f"{METRIC_LABELS[metric]} per layer: rows backbones, columns optimizers (y shared along a row)",
                 fontsize=9)
    fig.tight_layout(pad=0.4, h_pad=0.3, w_pad=0.3)
    return fig


def alpha_bar_chart(layers: pd.DataFrame, *, colours: Colours | None = None, backbones: Sequence[str] | None = None,
                    optimizers: Sequence[str] | None = None) -> plt.Figure:
    """Mean alpha over layers per (backbone, optimizer), one bar per optimizer in its colour, in the given orders,
    with the 2-6 'well-trained' band shaded."""
    frame = _checked(layers, "alpha").dropna(subset=["alpha"])
    means = frame.groupby(["backbone", "optimizer"])["alpha"].mean()
    rows, hues = _ordered(backbones, frame["backbone"]), _ordered(optimizers, frame["optimizer"])
    palette = _palette(frame, colours)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(rows) * len(hues) + 2.5), 4.0))
    ax.axhspan(*ALPHA_BAND, color="tab:green", alpha=0.12, label=f"{ALPHA_BAND[0]:g} ≤ α ≤ {ALPHA_BAND[1]:g}")
    width = 0.8 / len(hues)
    for j, optimizer in enumerate(hues):
        values = [means.get((backbone, optimizer), float("nan")) for backbone in rows]
        x = [i - 0.4 + width * (j + 0.5) for i in range(len(rows))]
        for bar in ax.bar(x, values, width=width, color=palette[optimizer], label=optimizer):
            tag_optimizer(bar, optimizer)
    ax.set_xticks(range(len(rows)), rows)
    ax.set_xlabel("backbone")
    ax.set_ylabel("mean α over layers")
    ax.set_title("Mean PL exponent α over layers per backbone and optimizer")
    legend = ax.legend(title="optimizer", fontsize=7, ncols=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for handle, text in zip(legend.legend_handles, legend.get_texts()):
        if text.get_text() in set(hues):
            tag_optimizer(handle, text.get_text())
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
