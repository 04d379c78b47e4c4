"""`write_report`: analyse a results frame and write HTML, Markdown, LaTeX, CSV and PNG/SVG figures."""
from __future__ import annotations

from pathlib import Path

import jinja2
import pandas as pd

from bocb.analysis import (
    NEAR_BEST,
    Analysis,
    StoreAnalysis,
    TransferAnalysis,
    analyse,
    analyse_store,
    format_matrix,
    layers_by_pre_optimizer,
    markdown_table,
    read_results,
)
from bocb.paper import ComparePaper, PaperComparison, paper_comparison
from bocb.protocol import rule_parameters
from bocb.report._figures import (
    Drawn,
    LayerFigures,
    all_figures,
    curve_figures,
    heatmap_marks,
    optimizer_colours,
    save,
    tuning_figures,
    weight_figures,
)
from bocb.report._tables import (
    html_matrix,
    latex_table,
    latex_tuning,
    markdown_matrix,
    top_and_failed,
    tuning_table,
)

FLOAT = "{:.2f}".format
TITLE = "Backbone-optimizer coupling report"


def _html(frame: pd.DataFrame, index: bool = False) -> str:
    return frame.to_html(index=index, float_format=FLOAT, na_rep="-", border=0) if not frame.empty else ""


def _chance_text(result: Analysis) -> str:
    return "100 / num_classes (chance)" if "num_classes" in result.trials else "0 (no num_classes column)"


def _edges(result: Analysis) -> pd.DataFrame:
    columns = ["backbone", "optimizer", "lr", "weight_decay", "lr_edge", "wd_edge"]
    edges = result.cells.loc[result.cells["edge"], columns]
    return edges.assign(lr=edges["lr"].map("{:.4g}".format), weight_decay=edges["weight_decay"].map("{:.4g}".format))


def verdict_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The verdicts as a reader wants them: backbone, verdict, the optimizers to use, why."""
    return verdicts[["backbone", "verdict", "recommended", "explanation"]].rename(
        columns={"recommended": "use (tied with the best)", "explanation": "why"})


def _crashed(result: Analysis) -> pd.DataFrame:
    crashed = result.crashed
    columns = [c for c in ("backbone", "optimizer", "config", "seed", "stage", "error") if c in crashed]
    return crashed[columns].assign(error=crashed["error"].fillna("").astype(str).str.split("\n").str[0]) \
        if "error" in crashed else crashed[columns]  # a CSV's error column without any error reads as floats


def _transfer_blocks(transfer: TransferAnalysis | None) -> list[tuple[str, str, str]]:
    """(heading, matrix HTML, verdict with the interaction share) per backbone and mode of a transfer."""
    if transfer is None:
        return []
    return [(f"{t.backbone}, {t.mode.replace('_', ' ')}", _html(transfer.matrix(t.backbone, t.mode), index=True),
             f"{t.verdict}; interaction share {FLOAT(t.share)} [{FLOAT(t.lo)}, {FLOAT(t.hi)}]")
            for t in transfer.tests.itertuples()]


def _transfer_figures(result: Analysis, transfer: TransferAnalysis | None, layers: pd.DataFrame | None,
                      out: Path) -> list[Drawn]:
    """The fine-tuned models' mean alpha per backbone and mode, grouped by pre-training optimizer (in its colour)."""
    grouped = layers_by_pre_optimizer(transfer, layers) if transfer is not None else pd.DataFrame()
    if grouped.empty:
        return []
    from bocb.weights.plots import alpha_bar_chart

    name = "transfer_alpha_bars"
    figure = alpha_bar_chart(grouped, colours=optimizer_colours(result.matrix.index), optimizers=result.matrix.index)
    return [Drawn(name, "Fine-tuned models: mean PL exponent α per backbone and mode, by pre-training optimizer "
                        "(shaded: the 2-6 band)", save(figure, out / name))]


def _in_heatmap_order(frame: pd.DataFrame, result: Analysis) -> pd.DataFrame:
    """Rows of a per-cell (or per-backbone) table in the heat map's order of backbones, then optimizers."""
    if frame.empty:
        return frame
    keys = [frame["backbone"].map({b: i for i, b in enumerate(result.matrix.columns)})]
    if "optimizer" in frame:
        keys.append(frame["optimizer"].map({o: i for i, o in enumerate(result.matrix.index)}))
    order = pd.DataFrame({i: k.to_numpy() for i, k in enumerate(keys)}).sort_values(list(range(len(keys))),
                                                                                   kind="stable").index
    return frame.iloc[order].reset_index(drop=True)


def _categories(result: Analysis) -> pd.DataFrame:
    table = result.categories
    return table.assign(mean_rank=table["mean_rank"].map("{:.1f}".format)) if not table.empty else table


def render_html(result: Analysis, figures: dict[str, Drawn], title: str, comparison: PaperComparison | None,
                layers: LayerFigures = LayerFigures([], []), tuning: list[Drawn] = (), curves: list[Drawn] = (),
                transfer: list[tuple[str, str, str]] = (), transfer_figures: list[Drawn] = ()) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("bocb.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    shares = result.shares
    ordered = lambda frame: _html(_in_heatmap_order(frame, result))  # noqa: E731
    return env.get_template("report.html.j2").render(
        title=title, n_trials=len(result.trials), alpha=f"{result.alpha:g}",
        verdict_table=ordered(verdict_table(result.verdicts)), crashed_table=_html(_crashed(result)),
        n_crashed=len(result.crashed), n_backbones=result.matrix.shape[1],
        n_optimizers=result.matrix.shape[0], selected_on=result.selected_on, gamma=f"{result.gamma:g}",
        chance_text=_chance_text(result), notes=result.notes, figures=figures,
        heatmap_table=html_matrix(result), heatmap_marks=heatmap_marks(result), both=top_and_failed(result),
        summary_table=ordered(result.summary), edge_table=ordered(_edges(result)) or "<p>None.</p>",
        ranking_table=_html(result.ranking, index=True),
        ranking_components=", ".join(result.ranking.attrs.get("components_used", [])),
        category_table=_html(_categories(result)), category_sentence=CATEGORY_SENTENCE,
        total_share=FLOAT(shares.loc[shares.scope == "total", "share"].iloc[0]) if shares is not None else "",
        shares_table=_html(shares) if shares is not None else "",
        hp_table=_html(result.hp_optimizer.groupby("optimizer", sort=False)["distance"].mean().to_frame(), index=True),
        curves_table=ordered(result.curves), curve_figures=curves, budget_table=ordered(result.budget),
        tuning_table=_html(tuning_table(result), index=True), tuning_figures=tuning, within=f"{NEAR_BEST:g}",
        comparison=comparison, compare_table=_html(comparison.labelled()) if comparison else "",
        layer_figures=layers.summary, ridge_figures=layers.ridges, transfer=transfer, transfer_figures=transfer_figures)


def write_report(source: pd.DataFrame | str | Path, out_dir: str | Path, *, epochs: pd.DataFrame | None = None,
                 layers: pd.DataFrame | None = None, gamma: float | None = None, alpha: float | None = None,
                 benchmark_id: str | None = None, compare_paper: ComparePaper | None = None, n_boot: int = 1000,
                 title: str = TITLE) -> Path:
    """Analyse ``source`` (a trial frame, a CSV path, a .db path or a store URL) and write the report.

    A store's report is :func:`render_store_report` of :func:`bocb.analysis.analyse_store` (its benchmark
    ``benchmark_id``, default the latest; its epochs, layer tables, transfer part and the rules' parameters
    stored with it), as ``bocb run`` writes it; ``gamma``/``alpha`` override the stored parameters (default
    for a frame or CSV: bocb.protocol's). ``compare_paper`` puts a paper table beside our cells
    (:func:`bocb.paper.paper_comparison`: refused, before anything is written, across datasets or model sizes
    unless it asks for them ``anyway``).
    """
    if isinstance(source, pd.DataFrame) or str(source).lower().endswith(".csv"):
        trials = source if isinstance(source, pd.DataFrame) else read_results(source).trials
        default_gamma, default_alpha = rule_parameters({})
        result = analyse(trials, epochs, gamma=default_gamma if gamma is None else gamma,
                         alpha=default_alpha if alpha is None else alpha, n_boot=n_boot)
        return render_report(result, out_dir, layers=layers, compare_paper=compare_paper, title=title)
    analysed = analyse_store(source, benchmark_id, gamma=gamma, alpha=alpha, n_boot=n_boot)
    return render_store_report(analysed, out_dir, compare_paper=compare_paper, title=title)


def render_store_report(analysed: StoreAnalysis, out_dir: str | Path, *, compare_paper: ComparePaper | None = None,
                        title: str = TITLE) -> Path:
    """Write the report of a store's analysed benchmark (and its transfer part): what ``bocb run`` and
    ``bocb report STORE`` both write."""
    return render_report(analysed.result, out_dir, layers=analysed.layers, compare_paper=compare_paper, title=title,
                         transfer=analysed.transfer, transfer_layers=analysed.transfer_layers)


def render_report(result: Analysis, out_dir: str | Path, *, layers: pd.DataFrame | None = None,
                  compare_paper: ComparePaper | None = None, title: str = TITLE,
                  transfer: TransferAnalysis | None = None, transfer_layers: pd.DataFrame | None = None) -> Path:
    """Write a finished analysis into ``out_dir``: index.html (self-contained, figures embedded), report.md,
    heatmap.tex, tuning.tex, cells.csv, verdicts.csv, matrix.csv, summary.csv, ranking.csv, tuning.csv (the
    expected-best curves), tuning_summary.csv, categories.csv (when the trials name their optimizers'
    categories), learning_curves.csv (when there are per-epoch results) and each figure as PNG and SVG.
    Returns index.html.
    ``layers`` (layer tables with backbone and optimizer columns) adds the layer-wise plots; ``transfer`` a
    transfer section (its matrices and tests also as transfer.csv and transfer_tests.csv), with the
    fine-tuned models' layer patterns by pre-training optimizer from ``transfer_layers``; ``compare_paper`` the
    paper's numbers beside ours (also in report.md)."""
    # first: a comparison refused across datasets or model sizes leaves nothing written
    comparison = paper_comparison(result.trials, result.cells, compare_paper) if compare_paper else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = all_figures(result, out)
    (out / "heatmap.tex").write_text(latex_table(result))
    (out / "tuning.tex").write_text(latex_tuning(result))
    result.tuning.to_csv(out / "tuning.csv", index=False)
    result.tuning_summary.to_csv(out / "tuning_summary.csv", index=False)
    result.cells.to_csv(out / "cells.csv", index=False)
    result.verdicts.to_csv(out / "verdicts.csv", index=False)
    (out / "matrix.csv").write_text(format_matrix(result.matrix, "csv"))
    result.summary.to_csv(out / "summary.csv", index=False)
    result.ranking.to_csv(out / "ranking.csv")
    if not result.categories.empty:
        result.categories.to_csv(out / "categories.csv", index=False)
    if not result.learning.empty:
        result.learning.to_csv(out / "learning_curves.csv", index=False)
    (out / "report.md").write_text(render_markdown(result, title, comparison))
    if transfer is not None:
        transfer.per_seed.to_csv(out / "transfer.csv", index=False)
        transfer.tests.to_csv(out / "transfer_tests.csv", index=False)
    page = out / "index.html"
    page.write_text(render_html(result, figures, title, comparison, weight_figures(result, layers, out),
                                tuning_figures(result, out), curve_figures(result, out), _transfer_blocks(transfer),
                                _transfer_figures(result, transfer, transfer_layers, out)))
    return page


def _tuning_sentence(result: Analysis) -> str:
    return (f"Configurations needed to get within {NEAR_BEST:g} point of the grid's best, of the n searched: the "
            f"smallest k whose expected best {result.selected_on} over k configurations drawn at random without "
            "replacement reaches it (docs/analysis.md, tuning cost).")


MARKDOWN_MARKS = {"bold": "**bold**", "italics in a dashed box": "_italics_"}  # Markdown draws no box


def render_markdown(result: Analysis, title: str, comparison: PaperComparison | None = None) -> str:
    key = "; ".join(f"{MARKDOWN_MARKS.get(mark, mark)}: {meaning}" for mark, meaning in heatmap_marks(result).items())
    parts = [f"# {title}", "", "## Verdict", "", markdown_table(verdict_table(result.verdicts), index=False),
             f"Test top-1 of the configuration selected on {result.selected_on}; failures by Eq. 1 with γ = "
             f"{result.gamma:g}." + (f" Key: {key}." if key else ""), *result.notes, "",
             markdown_matrix(result), top_and_failed(result),
             "## Per backbone", "", markdown_table(result.summary, index=False),
             "## Ranking", "", markdown_table(result.ranking)]
    if not result.categories.empty:
        parts += ["## By optimizer category", "", CATEGORY_SENTENCE, "",
                  markdown_table(_categories(result), index=False)]
    parts += ["## Tuning cost", "", _tuning_sentence(result), "", markdown_table(tuning_table(result))]
    if not result.budget.empty:
        parts += ["## Budget check", "", markdown_table(result.budget, index=False)]
    if comparison is not None:
        parts += [f"## {comparison.title}", ""]
        parts += [line for sentence in comparison.sentences for line in (sentence, "")]  # a paragraph each
        parts.append(markdown_table(comparison.labelled(), index=False))
    return "\n".join(parts)


CATEGORY_SENTENCE = ("The paper's optimizer families: (a) fixed learning rate with momentum, (b) adaptive learning "
                     "rate with momentum, (c) estimated learning rate with momentum, (d) adaptive learning rate on "
                     "the current gradient; 'new': beyond the paper. mean_rank: the family's mean place among the "
                     "backbone's optimizers (1 = best test top-1); failures: its cells failing Eq. 1; spread: max − "
                     "min test top-1 within the family (points; over all backbones, the mean of the per-backbone "
                     "spreads).")
