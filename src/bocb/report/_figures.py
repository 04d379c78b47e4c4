"""The report's figures (matplotlib Agg + seaborn), each saved as PNG and SVG and embedded as a data URI.

Every figure follows the heat map: backbones in its column order, optimizers in its row order, each optimizer in
its one colour (:func:`optimizer_colours`); every artist that draws an optimizer carries its name as SVG id
(``optimizer-<name>``), legend entries included, so the colours can be checked figure by figure.
"""
from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bocb.analysis import NEAR_BEST, Analysis  # noqa: E402
from bocb.colours import optimizer_colours, tag_optimizer  # noqa: E402
from bocb.report._contrast import text_colour  # noqa: E402
from bocb.weights.plots import METRIC_LABELS, alpha_bar_chart, layer_grid, ridge_plot  # noqa: E402

NEUTRAL = "#d9d9d9"  # boxes and violins that group several optimizers


@dataclass(frozen=True)
class Drawn:
    """A figure written to disk: its file stem, the caption shown under it, its PNG as a data URI."""

    name: str
    caption: str
    uri: str


def _stem(name: object) -> str:
    return re.sub(r"[^\w.-]+", "_", str(name))


def _legend(ax: plt.Axes, title: str = "optimizer") -> None:
    """A legend right of the axes, its entries tagged with their optimizer like the artists they stand for."""
    legend = ax.legend(title=title, fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for handle, text in zip(legend.legend_handles, legend.get_texts()):
        tag_optimizer(handle, text.get_text())


def _size(n_cols: int, n_rows: int) -> tuple[float, float]:
    return max(5.0, 0.8 * n_cols + 2.5), max(3.0, 0.35 * n_rows + 1.5)


def heatmap_marks(result: Analysis) -> dict[str, str]:
    """The heat map's markings that occur in this result, each with what it means: the key under the figure,
    the HTML table and the Markdown table, so no key promises a mark that is not drawn."""
    cells = result.cells
    marks = {}
    if cells["top4"].any():
        marks["bold"] = "among the backbone's 4 best optimizers (top-4)"
    if cells["eq1"].any():
        marks["italics in a dashed box"] = (f"fails Eq. 1 (more than min(IQR, γ = {result.gamma:g}) points below the "
                                            "backbone's best)")
    if (cells["n_diverged"] > 0).any():
        marks["†"] = "a seed of the chosen configuration diverged (scored at chance)"
    if not result.missing.empty:
        marks["n/a"] = "every trial of the cell crashed: no result"
    return marks


def heatmap_colours(result: Analysis) -> tuple[matplotlib.colors.Colormap, Normalize]:
    """viridis over the matrix's range: the figure's and the HTML table's backgrounds."""
    values = result.matrix.to_numpy(float)
    return matplotlib.colormaps["viridis"], Normalize(float(np.nanmin(values)), float(np.nanmax(values)))


def heatmap(result: Analysis) -> plt.Figure:
    """Test top-1 per cell, each number in black or white by its background's WCAG contrast; top-4 bold, Eq.-1
    failures italic in a dashed box, '†' where a seed of the chosen configuration diverged."""
    table = result.matrix.astype(float)
    cells = result.cells.set_index(["optimizer", "backbone"])
    cmap, norm = heatmap_colours(result)
    fig, ax = plt.subplots(figsize=_size(table.shape[1], table.shape[0] + 2))
    sns.heatmap(table, cmap=cmap, vmin=norm.vmin, vmax=norm.vmax, cbar_kws={"label": "test top-1 (%)"}, ax=ax,
                linewidths=0.5, linecolor="white")
    ax.set_facecolor("#dddddd")  # missing cells
    for i, optimizer in enumerate(table.index):
        for j, backbone in enumerate(table.columns):
            if (optimizer, backbone) not in cells.index:
                ax.text(j + 0.5, i + 0.5, "n/a", ha="center", va="center", fontsize=7, color="black")
                continue
            cell = cells.loc[(optimizer, backbone)]
            colour = text_colour(cmap(norm(cell.test_top1)))
            ax.text(j + 0.5, i + 0.5, f"{cell.test_top1:.1f}" + ("†" if cell.n_diverged else ""), ha="center",
                    va="center", fontsize=7, color=colour, fontweight="bold" if cell.top4 else "normal",
                    fontstyle="italic" if cell.eq1 else "normal")
            if cell.eq1:
                ax.add_patch(Rectangle((j + 0.08, i + 0.12), 0.84, 0.76, fill=False, edgecolor=colour,
                                       linestyle="--", linewidth=0.9))
    ax.set_xlabel("backbone")
    ax.set_ylabel("optimizer")
    key = "; ".join(f"{mark}: {meaning}" for mark, meaning in heatmap_marks(result).items())
    ax.set_title("Test top-1 (%) of each cell's chosen configuration" + (f"\n{key}" if key else ""), fontsize=8,
                 wrap=True)
    return fig


def _dodged(ax: plt.Axes, frame: pd.DataFrame, by: str, order: Sequence[str], y: str,
            colours: dict[str, tuple[float, float, float]]) -> None:
    """One point per row of ``frame`` at its ``by`` group, each optimizer at its own offset and in its colour
    (no random jitter: the same optimizer sits at the same place in every group)."""
    present = [o for o in colours if o in set(frame["optimizer"])]
    position = {name: i for i, name in enumerate(order)}
    for k, optimizer in enumerate(present):
        rows = frame[frame["optimizer"] == optimizer]
        offset = (k - (len(present) - 1) / 2) * min(0.6 / max(len(present), 1), 0.12)
        tag_optimizer(ax.scatter(rows[by].map(position) + offset, rows[y], color=colours[optimizer], edgecolor="black",
                        linewidth=0.4, s=24, zorder=3, label=optimizer), optimizer)
    _legend(ax)


def _boxes(ax: plt.Axes, groups: list[pd.Series], labels: Sequence[str],
           colours: Sequence[tuple[float, float, float] | str]) -> None:
    """Box plots (no outliers drawn: every value is drawn as a point on top), one per group in its colour."""
    drawn = ax.boxplot([g.dropna().to_numpy() for g in groups], positions=range(len(groups)), widths=0.55,
                       patch_artist=True, showfliers=False, medianprops={"color": "black"})
    for box, colour, label in zip(drawn["boxes"], colours, labels):
        box.set_facecolor(colour)
        if colour != NEUTRAL:
            tag_optimizer(box, label)
    ax.set_xticks(range(len(groups)), labels)


def _labels(ax: plt.Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=45)


def violin(result: Analysis) -> plt.Figure:
    """Per backbone, the spread of test top-1 over its optimizers (the violin), each optimizer a point."""
    backbones, colours = list(result.matrix.columns), optimizer_colours(result.matrix.index)
    cells = result.cells
    fig, ax = plt.subplots(figsize=_size(len(backbones) + 2, 8))
    sns.violinplot(data=cells, x="backbone", y="test_top1", order=backbones, cut=0, inner=None, color=NEUTRAL,
                   ax=ax)
    _dodged(ax, cells, "backbone", backbones, "test_top1", colours)
    _labels(ax, "Test top-1 over optimizers, per backbone", "backbone", "test top-1 (%)")
    return fig


def box(result: Analysis, by: str) -> plt.Figure:
    """Top-1 spread per ``by`` ('backbone' or 'optimizer') over the other factor."""
    backbones, colours = list(result.matrix.columns), optimizer_colours(result.matrix.index)
    cells = result.cells
    order = backbones if by == "backbone" else [o for o in colours if o in set(cells["optimizer"])]
    fig, ax = plt.subplots(figsize=_size(len(order) + 2, 8))
    groups = [cells.loc[cells[by] == name, "test_top1"] for name in order]
    if by == "backbone":
        _boxes(ax, groups, order, [NEUTRAL] * len(order))
        _dodged(ax, cells, "backbone", order, "test_top1", colours)
        title = "Test top-1 per backbone over its optimizers (each point one optimizer)"
    else:
        _boxes(ax, groups, order, [colours[o] for o in order])
        _points_by_position(ax, groups)
        title = "Test top-1 per optimizer over the backbones (each point one backbone)"
    _labels(ax, title, by, "test top-1 (%)")
    return fig


def _points_by_position(ax: plt.Axes, groups: list[pd.Series]) -> None:
    """The values of each box as black points, spread by a fixed small offset so equal values stay visible."""
    for i, values in enumerate(groups):
        values = values.dropna().to_numpy()
        offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.scatter(i + offsets, values, color="black", s=10, zorder=3)


def interaction(result: Analysis) -> plt.Figure:
    """The interaction terms (the coupling) and their share per backbone and per optimizer, with bootstrap CIs."""
    inter = result.decomposition["interaction"]
    colours = optimizer_colours(result.matrix.index)
    fig, axes = plt.subplots(1, 3, figsize=(max(12.0, 1.2 * inter.shape[1] + 8), max(4.0, 0.35 * inter.shape[0] + 2)))
    limit = float(np.nanmax(np.abs(inter.to_numpy()))) or 1.0
    sns.heatmap(inter, cmap="RdBu", center=0, vmin=-limit, vmax=limit, annot=inter.shape[1] <= 8, fmt=".1f",
                ax=axes[0], cbar_kws={"label": "interaction (top-1 points)"})
    axes[0].set_title("interaction = top-1 − mean − backbone effect − optimizer effect", fontsize=9)
    axes[0].set_xlabel("backbone")
    axes[0].set_ylabel("optimizer")
    for ax, scope in zip(axes[1:], ("backbone", "optimizer")):
        part = result.shares[result.shares["scope"] == scope]
        err = np.vstack([part["share"] - part["lo"], part["hi"] - part["share"]])
        bars = ax.barh(part["name"], part["share"], xerr=None if np.isnan(err).all() else np.abs(err), capsize=2,
                       color=[colours.get(name, NEUTRAL) if scope == "optimizer" else NEUTRAL for name in part["name"]],
                       edgecolor="black", linewidth=0.4)
        if scope == "optimizer":
            for bar, name in zip(bars, part["name"]):
                tag_optimizer(bar, name)
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_xlabel("interaction share (95% bootstrap CI over seeds)")
        ax.set_ylabel(scope)
        ax.set_title(f"share of the interaction in each {scope}'s spread", fontsize=9)
    fig.tight_layout()
    return fig


def profiles(result: Analysis) -> plt.Figure:
    """Performance profiles: per optimizer, the share of backbones where it is within τ points of the best."""
    colours = optimizer_colours(result.matrix.index)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for optimizer in [o for o in colours if o in set(result.profiles.columns)]:
        tag_optimizer(ax.step(result.profiles.index, result.profiles[optimizer], where="post", label=optimizer,
                     color=colours[optimizer])[0], optimizer)
    ax.set_xlabel("τ: top-1 points below the best optimizer of the backbone")
    ax.set_ylabel("share of backbones within τ")
    ax.set_title("Performance profiles (higher and further left is better)", fontsize=9)
    _legend(ax)
    return fig


HP_GROUPS = {"backbone": "Fig. 4", "optimizer": "Fig. 5"}


def hp_box(result: Analysis, by: str) -> plt.Figure:
    """The paper's Fig. 4 (``by='backbone'``) or Fig. 5 (``'optimizer'``): per group, the grid-step distance
    of each pair's optimal (lr, wd) to the group's mode, as analysis.hp_distances computed it."""
    distances = result.hp_backbone if by == "backbone" else result.hp_optimizer
    heatmap_order = result.matrix.columns if by == "backbone" else result.matrix.index
    order = [name for name in heatmap_order if name in set(distances[by])]
    colours = optimizer_colours(result.matrix.index)
    fig, ax = plt.subplots(figsize=_size(len(order) + 2, 8))
    groups = [distances.loc[distances[by] == name, "distance"] for name in order]
    if by == "optimizer":
        _boxes(ax, groups, order, [colours[o] for o in order])
        _points_by_position(ax, groups)
    else:
        _boxes(ax, groups, order, [NEUTRAL] * len(order))
        _dodged(ax, distances, "backbone", order, "distance", colours)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(-0.4, max(1.0, float(distances["distance"].max())) + 0.4)  # integer steps, 0 included
    other = "optimizers" if by == "backbone" else "backbones"
    _labels(ax, f"{HP_GROUPS[by]}: hyper-parameter robustness per {by} (each point: one of its {other})", by,
            f"steps to the {by}'s mode\n|Δlr| + |Δwd| (grid steps)")
    return fig


def _selection_split(result: Analysis) -> str:
    return "validation" if result.selected_on == "val_top1" else "test (no validation split)"


def tuning_curves(result: Analysis, backbone: str) -> plt.Figure:
    """Expected best validation top-1 after k random configurations of the grid, one line per optimizer; a
    ring marks the configurations needed to get within NEAR_BEST points of the grid's best."""
    colours = optimizer_colours(result.matrix.index)
    curves = result.tuning[result.tuning["backbone"] == backbone]
    needed = result.tuning_summary.set_index(["backbone", "optimizer"])["configs_needed"]
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for optimizer in [o for o in colours if o in set(curves["optimizer"])]:
        curve = curves[curves["optimizer"] == optimizer]
        tag_optimizer(ax.plot(curve["k"], curve["expected_best"], marker=".", color=colours[optimizer],
                              label=optimizer)[0],
             optimizer)
        at = curve[curve["k"] == needed[(backbone, optimizer)]]
        tag_optimizer(ax.plot(at["k"], at["expected_best"], marker="o", markersize=9, fillstyle="none",
                     color=colours[optimizer])[0], optimizer)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("k: configurations tried at random from the searched grid")
    ax.set_ylabel(f"expected best {_selection_split(result)} top-1 (%)")
    ax.set_title(f"{backbone}: tuning cost (ring: within {NEAR_BEST:g} point of the grid's best)", fontsize=9)
    _legend(ax)
    return fig


def learning_curves(result: Analysis, backbone: str) -> plt.Figure:
    """Per epoch, the chosen configuration's top-1 (left) and training loss (right), one line per optimizer."""
    colours = optimizer_colours(result.matrix.index)
    curves = result.learning[result.learning["backbone"] == backbone]
    split = "validation" if curves["curve"].iloc[0] == "val_top1" else "test"
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
    for optimizer in [o for o in colours if o in set(curves["optimizer"])]:
        curve = curves[curves["optimizer"] == optimizer]
        for ax, column in zip(axes, ("top1", "train_loss")):
            tag_optimizer(ax.plot(curve["epoch"], curve[column], marker=".", color=colours[optimizer],
                                  label=optimizer)[0],
                 optimizer)
    for ax, ylabel in zip(axes, (f"{split} top-1 (%)", "training loss")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (counted from 0)")
        ax.set_ylabel(ylabel)
    axes[0].set_title(f"{split} top-1 per epoch", fontsize=9)
    axes[1].set_title("training loss per epoch", fontsize=9)
    _legend(axes[1])
    fig.suptitle(f"{backbone}: learning curves of each optimizer's chosen configuration (mean over seeds)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, stem: Path) -> str:
    """Write stem.png and stem.svg; return the PNG as a base64 data URI for the HTML page."""
    fig.savefig(stem.with_suffix(".svg"), bbox_inches="tight")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    stem.with_suffix(".png").write_bytes(buffer.getvalue())
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _draw(make: Callable[[], plt.Figure], out_dir: Path, name: str, caption: str) -> Drawn:
    return Drawn(name, caption, save(make(), out_dir / name))


def all_figures(result: Analysis, out_dir: Path) -> dict[str, Drawn]:
    """name -> figure, for every single figure that the analysis has data for."""
    sns.set_theme(style="whitegrid", font_scale=0.8)
    makers = {
        "heatmap": (lambda: heatmap(result), "Test top-1 of each cell's chosen configuration (the table above as "
                                             "colours)."),
        "violin": (lambda: violin(result), "Per backbone, test top-1 over its optimizers: a wide violin is a "
                                           "backbone whose result depends on the optimizer."),
        "box_backbone": (lambda: box(result, "backbone"), "Per backbone, test top-1 over its optimizers."),
        "box_optimizer": (lambda: box(result, "optimizer"), "Per optimizer, test top-1 over the backbones."),
    }
    if not result.hp_backbone.empty:
        makers |= {
            "hp_backbone": (lambda: hp_box(result, "backbone"), "Fig. 4 of the paper: per backbone, each "
                                                                "optimizer's distance to the backbone's mode."),
            "hp_optimizer": (lambda: hp_box(result, "optimizer"), "Fig. 5 of the paper: per optimizer, each "
                                                                  "backbone's distance to the optimizer's mode."),
        }
    if result.decomposition is not None:
        makers |= {
            "interaction": (lambda: interaction(result), "Left: the interaction term of each cell; right: its "
                                                         "share of each backbone's and optimizer's spread."),
            "profiles": (lambda: profiles(result), "Performance profiles: the share of backbones on which each "
                                                   "optimizer is within τ points of the backbone's best."),
        }
    return {name: _draw(make, out_dir, name, caption) for name, (make, caption) in makers.items()}


def _per_backbone(result: Analysis, frame: pd.DataFrame) -> list[str]:
    return [b for b in result.matrix.columns if b in set(frame["backbone"])] if not frame.empty else []


def tuning_figures(result: Analysis, out_dir: Path) -> list[Drawn]:
    """The tuning-cost figure of each backbone, in the heat map's order."""
    return [_draw(lambda b=backbone: tuning_curves(result, b), out_dir, f"tuning_{_stem(backbone)}",
                  f"{backbone}: expected best {_selection_split(result)} top-1 after k configurations tried at "
                  "random, one line per optimizer")
            for backbone in _per_backbone(result, result.tuning)]


def curve_figures(result: Analysis, out_dir: Path) -> list[Drawn]:
    """The learning-curve figure of each backbone, in the heat map's order."""
    return [_draw(lambda b=backbone: learning_curves(result, b), out_dir, f"curves_{_stem(backbone)}",
                  f"{backbone}: top-1 and training loss per epoch of each optimizer's chosen configuration")
            for backbone in _per_backbone(result, result.learning)]


PAPER_LAYER_METRICS = ("alpha", "weight_entropy", "l2_norm", "topk_energy")  # the paper's Figs. 6-7, A2-A4


@dataclass(frozen=True)
class LayerFigures:
    """The layer-wise section: small multiples per metric and the alpha bars up front, ridge plots behind."""

    summary: list[Drawn]
    ridges: list[Drawn]


def weight_figures(result: Analysis, layers: pd.DataFrame | None, out_dir: Path) -> LayerFigures:
    """The layer-wise plots (paper Figs. 6-7): mean-alpha bars and one small-multiples figure per metric, then
    the full ridge plots per backbone and metric; backbones and optimizers in the heat map's order."""
    if layers is None or layers.empty:
        return LayerFigures([], [])
    order = {"backbones": list(result.matrix.columns), "optimizers": list(result.matrix.index)}
    colours = optimizer_colours(result.matrix.index)
    summary = [_draw(lambda: alpha_bar_chart(layers, colours=colours, **order), out_dir, "alpha_bars",
                     "Mean PL exponent α over layers per backbone and optimizer (shaded: the 2-6 band read as well "
                     "trained)")]
    summary += [_draw(lambda m=metric: layer_grid(layers, m, colours=colours, **order), out_dir, f"layers_{metric}",
                      f"{METRIC_LABELS[metric]} per layer: a row per backbone, a column per optimizer")
                for metric in PAPER_LAYER_METRICS]
    ridges = [_draw(lambda b=backbone, m=metric: ridge_plot(layers, m, backbone=b, colours=colours,
                                                            optimizers=order["optimizers"]),
                    out_dir, f"ridge_{_stem(backbone)}_{metric}", f"{backbone}: {METRIC_LABELS[metric]} per layer")
              for backbone in _per_backbone(result, layers) for metric in PAPER_LAYER_METRICS]
    return LayerFigures(summary, ridges)
