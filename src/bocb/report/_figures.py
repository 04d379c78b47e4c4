"""The report's figures (matplotlib Agg + seaborn), each saved as PNG and SVG and embedded as a data URI."""
from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bocb.analysis import NEAR_BEST, Analysis  # noqa: E402


def _size(n_cols: int, n_rows: int) -> tuple[float, float]:
    return max(5.0, 0.8 * n_cols + 2.5), max(3.0, 0.35 * n_rows + 1.5)


def optimizer_colours(optimizers: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per optimizer, assigned in the heat map's order (``result.matrix.index``): every figure
    that shows optimizers takes its colours from here, so an optimizer has one colour throughout.
    Qualitative palettes: tab10 up to 10 optimizers, tab20 up to 20, evenly spaced hues beyond."""
    names = list(dict.fromkeys(map(str, optimizers)))
    palette = "tab10" if len(names) <= 10 else "tab20" if len(names) <= 20 else "husl"
    return dict(zip(names, sns.color_palette(palette, len(names))))


def _stem(name: object) -> str:
    return re.sub(r"[^\w.-]+", "_", str(name))


def heatmap(result: Analysis) -> plt.Figure:
    """Test top-1 per cell; Eq.-1 failures in grey italics, top-4 bold, '†' where a chosen config had diverged seeds."""
    table = result.matrix
    cells = result.cells.set_index(["optimizer", "backbone"])
    fig, ax = plt.subplots(figsize=_size(table.shape[1], table.shape[0]))
    sns.heatmap(table.astype(float), cmap="viridis", cbar_kws={"label": "test top-1 (%)"}, ax=ax,
                linewidths=0.5, linecolor="white")
    ax.set_facecolor("#dddddd")  # missing cells
    for i, optimizer in enumerate(table.index):
        for j, backbone in enumerate(table.columns):
            if (optimizer, backbone) not in cells.index:
                ax.text(j + 0.5, i + 0.5, "n/a", ha="center", va="center", fontsize=7)
                continue
            cell = cells.loc[(optimizer, backbone)]
            label = f"{cell.test_top1:.1f}" + ("†" if cell.n_diverged else "")
            ax.text(j + 0.5, i + 0.5, label, ha="center", va="center", fontsize=7,
                    color="#bbbbbb" if cell.eq1 else "white", fontweight="bold" if cell.top4 else "normal",
                    fontstyle="italic" if cell.eq1 else "normal")
    ax.set_xlabel("backbone")
    ax.set_ylabel("optimizer")
    ax.set_title(f"Test top-1; grey = Eq. 1 failure (γ={result.gamma:g}), bold = top-4, † = diverged seeds")
    return fig


def violin(result: Analysis) -> plt.Figure:
    fig, ax = plt.subplots(figsize=_size(result.matrix.shape[1], 8))
    sns.violinplot(data=result.cells, x="backbone", y="test_top1", cut=0, inner="point", ax=ax, color="#8fb3d9")
    ax.set_ylabel("test top-1 (%) over optimizers")
    ax.tick_params(axis="x", rotation=45)
    return fig


def box(result: Analysis, by: str) -> plt.Figure:
    """Top-1 spread per ``by`` ('backbone' or 'optimizer') over the other factor."""
    n = result.cells[by].nunique()
    fig, ax = plt.subplots(figsize=_size(n, 8))
    sns.boxplot(data=result.cells, x=by, y="test_top1", ax=ax, color="#f2c28c")
    sns.stripplot(data=result.cells, x=by, y="test_top1", ax=ax, color="black", size=3)
    ax.set_ylabel("test top-1 (%)")
    ax.tick_params(axis="x", rotation=45)
    return fig


def interaction(result: Analysis) -> plt.Figure:
    """The interaction terms (the coupling) and their share per backbone and per optimizer, with bootstrap CIs."""
    inter = result.decomposition["interaction"]
    fig, axes = plt.subplots(1, 3, figsize=(max(12.0, 1.2 * inter.shape[1] + 8), max(4.0, 0.35 * inter.shape[0] + 1.5)))
    limit = float(np.nanmax(np.abs(inter.to_numpy()))) or 1.0
    sns.heatmap(inter, cmap="RdBu", center=0, vmin=-limit, vmax=limit, annot=inter.shape[1] <= 8, fmt=".1f",
                ax=axes[0], cbar_kws={"label": "interaction (points)"})
    axes[0].set_title("top-1 − mean − backbone − optimizer effect")
    for ax, scope in zip(axes[1:], ("backbone", "optimizer")):
        part = result.shares[result.shares["scope"] == scope]
        err = np.vstack([part["share"] - part["lo"], part["hi"] - part["share"]])
        ax.barh(part["name"], part["share"], xerr=None if np.isnan(err).all() else np.abs(err),
                color="#7a9cc6", capsize=2)
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_xlabel("interaction share (95% bootstrap CI over seeds)")
        ax.set_title(f"per {scope}")
    fig.tight_layout()
    return fig


def profiles(result: Analysis) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for optimizer in result.profiles.columns:
        ax.step(result.profiles.index, result.profiles[optimizer], where="post", label=optimizer)
    ax.set_xlabel("τ: top-1 points below the best optimizer of the backbone")
    ax.set_ylabel("share of backbones within τ")
    ax.legend(fontsize=7, ncol=2)
    return fig


HP_GROUPS = {"backbone": "Fig. 4", "optimizer": "Fig. 5"}


def hp_box(result: Analysis, by: str) -> plt.Figure:
    """The paper's Fig. 4 (``by='backbone'``) or Fig. 5 (``'optimizer'``): per group, the grid-step distance
    of each pair's optimal (lr, wd) to the group's mode, as analysis.hp_distances computed it."""
    distances = result.hp_backbone if by == "backbone" else result.hp_optimizer
    heatmap_order = result.matrix.columns if by == "backbone" else result.matrix.index
    order = [name for name in heatmap_order if name in set(distances[by])]
    colours = optimizer_colours(result.matrix.index)
    fig, ax = plt.subplots(figsize=_size(len(order), 8))
    if by == "optimizer":
        sns.boxplot(data=distances, x=by, y="distance", order=order, hue=by, palette=colours, legend=False,
                    saturation=1, showfliers=False, ax=ax)  # saturation 1: the palette's own colours
        sns.stripplot(data=distances, x=by, y="distance", order=order, color="black", size=3, ax=ax)
    else:
        sns.boxplot(data=distances, x=by, y="distance", order=order, color="#dddddd", showfliers=False, ax=ax)
        sns.stripplot(data=distances, x=by, y="distance", order=order, hue="optimizer",
                      hue_order=[o for o in colours if o in set(distances["optimizer"])], palette=colours,
                      size=5, jitter=0.2, ax=ax)
        ax.legend(title="optimizer", fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(-0.4, max(1.0, float(distances["distance"].max())) + 0.4)  # integer steps, 0 included
    ax.set_xlabel(by)
    ax.set_ylabel(f"steps to the {by}'s mode\n|Δlr| + |Δwd| (grid steps)")
    other = "optimizers" if by == "backbone" else "backbones"
    ax.set_title(f"{HP_GROUPS[by]}: hyper-parameter robustness per {by} (each point: one of its {other})")
    ax.tick_params(axis="x", rotation=45)
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
        ax.plot(curve["k"], curve["expected_best"], marker=".", color=colours[optimizer], label=optimizer)
        at = curve[curve["k"] == needed[(backbone, optimizer)]]
        ax.plot(at["k"], at["expected_best"], marker="o", markersize=9, fillstyle="none", color=colours[optimizer])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("k: configurations tried at random from the searched grid")
    ax.set_ylabel(f"expected best {_selection_split(result)} top-1 (%)")
    ax.set_title(f"{backbone}: tuning cost (ring: within {NEAR_BEST:g} point of the grid's best)")
    ax.legend(title="optimizer", fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def tuning_figures(result: Analysis, out_dir: Path) -> list[tuple[str, str]]:
    """(caption, data URI) of the tuning-cost figure of each backbone, in the heat map's order."""
    backbones = [b for b in result.matrix.columns if b in set(result.tuning["backbone"])]
    return [(f"{backbone}: expected best {_selection_split(result)} top-1 after k configurations tried at random, "
             "one line per optimizer",
             save(tuning_curves(result, backbone), out_dir / f"tuning_{_stem(backbone)}")) for backbone in backbones]


def save(fig: plt.Figure, stem: Path) -> str:
    """Write stem.png and stem.svg; return the PNG as a base64 data URI for the HTML page."""
    fig.savefig(stem.with_suffix(".svg"), bbox_inches="tight")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    stem.with_suffix(".png").write_bytes(buffer.getvalue())
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def all_figures(result: Analysis, out_dir: Path) -> dict[str, str]:
    """name -> data URI, for every figure that the analysis has data for."""
    makers = {"heatmap": heatmap, "violin": violin, "box_backbone": lambda r: box(r, "backbone"),
              "box_optimizer": lambda r: box(r, "optimizer")}
    if not result.hp_backbone.empty:
        makers |= {"hp_backbone": lambda r: hp_box(r, "backbone"), "hp_optimizer": lambda r: hp_box(r, "optimizer")}
    if result.decomposition is not None:
        makers |= {"interaction": interaction, "profiles": profiles}
    sns.set_theme(style="whitegrid", font_scale=0.8)
    return {name: save(make(result), out_dir / name) for name, make in makers.items()}


PAPER_LAYER_METRICS = ("alpha", "weight_entropy", "l2_norm", "topk_energy")  # the paper's Figs. 6-7, A2-A4


def weight_figures(layers: pd.DataFrame | None, out_dir: Path) -> list[tuple[str, str]]:
    """(title, data URI) of the layer-wise plots (paper Figs. 6-7): mean-alpha bars, then ridge plots."""
    if layers is None or layers.empty:
        return []
    from bocb.weights.plots import alpha_bar_chart, ridge_plot

    bars = save(alpha_bar_chart(layers), out_dir / "alpha_bars")
    figures = [("mean alpha per backbone and optimizer (2-6 band)", bars)]
    for backbone in dict.fromkeys(layers["backbone"]):
        stem = _stem(backbone)
        for metric in PAPER_LAYER_METRICS:
            figure = ridge_plot(layers, metric, backbone=backbone)
            figures.append((f"{backbone}: {metric} per layer", save(figure, out_dir / f"ridge_{stem}_{metric}")))
    return figures

