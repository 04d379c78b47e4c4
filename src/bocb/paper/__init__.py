"""The paper's published tables (Li et al. 2024, arXiv 2410.06373) and our analysis of them.

Shipped as package data: Table 1 (CIFAR-100 top-1, 20 optimizers x 20 backbones, plus its printed
Mean and Std/Range rows), Table 2 (ImageNet-1K), Table 3 (COCO transfer), Table 4 (rankings).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from io import StringIO
from typing import TYPE_CHECKING

import pandas as pd
from scipy import stats

from bocb.analysis import FORMATS, backbone_summary, flag_cells, markdown_table, weighted_ranking
from bocb.errors import SpecError, check_choice
from bocb.plugins import is_reference
from bocb.protocol import GAMMA as PAPER_GAMMA

if TYPE_CHECKING:
    from bocb.data import DatasetInfo

FILES = {1: "table1_cifar100_top1.csv", 2: "table2_imagenet1k_top1.csv", 3: "table3_coco_transfer.csv",
         4: "table4_optimizer_rankings.csv"}
# The setting (bocb.protocol.SETTINGS; COCO for the transfer table) each table was measured in, and its dataset.
SETTING = {1: "cifar100", 2: "imagenet1k", 3: "coco"}
DATASET_TITLES = {1: "CIFAR-100", 2: "ImageNet-1K", 3: "COCO"}
TITLES = {1: f"Table 1: {DATASET_TITLES[1]} top-1 (%)", 2: f"Table 2: {DATASET_TITLES[2]} top-1 (%)",
          3: f"Table 3: {DATASET_TITLES[3]} transfer (pose AP / detection mAP)", 4: "Table 4: optimizer rankings"}
# paper §3.2: gamma 3 on CIFAR-100 and COCO, 1 on ImageNet (bocb.protocol.GAMMA)
GAMMA = {table: PAPER_GAMMA[setting] for table, setting in SETTING.items()}
COMPARED_TABLES = (1, 2)  # the tables of top-1 from scratch, which our benchmarks measure too
PAPER_SIZE = "paper"  # the spec's `size` of the published models, the only ones the tables report

# Paper column headers -> our backbone registry names; paper rows -> our optimizer names.
BACKBONE_NAMES = {
    "AlexNet": "alexnet", "VGG-13": "vgg13_bn", "R-50": "resnet50", "DN-121": "densenet121",
    "MobV2": "mobilenetv2", "Eff-B0": "efficientnet_b0", "RVGG-A1": "repvgg_a1", "DeiT-S": "deit_s",
    "MLP-S": "mlp_mixer_s", "Swin-T": "swin_t", "CNX-T": "convnext_t", "CNXV2-T": "convnextv2_t",
    "Moga-S": "moganet_s", "URLK-T": "unireplknet_t", "TNX-T": "transnext_t", "IF-12": "identityformer_s12",
    "PFV2-12": "poolformerv2_s12", "CF-12": "convformer_s12", "AF-12": "attentionformer_s12",
    "CAF-12": "caformer_s12",
    "DeiT-S (DeiT recipe 300ep)": "deit_s", "R-50 (RSB A2 recipe 300ep)": "resnet50",
}
OPTIMIZER_NAMES = {
    "SGD-M": "sgd", "SGD": "sgd", "SGDP": "sgdp", "LION": "lion", "Adam": "adam", "Adamax": "adamax",
    "NAdam": "nadam", "AdamW": "adamw", "LAMB": "lamb", "RAdam": "radam", "AdamP": "adamp", "Adan": "adan",
    "AdaBound": "adabound", "LARS": "lars", "AdaFactor": "adafactor", "AdaBelief": "adabelief",
    "NovoGrad": "novograd", "Sophia": "sophia", "AdaGrad": "adagrad", "AdaDelta": "adadelta",
    "RMSProp": "rmsprop",
}
# The printed summary's precision: mean to 0.01, std to 0.1, range to 1; differences beyond half
# a printed digit are reported.
PRINTED_TOLERANCE = {"mean": 0.005, "std": 0.05, "range": 0.5}


def check_table(table: int, allowed: tuple[int, ...] = (1, 2, 3, 4), field: str = "--table") -> int:
    if table not in allowed:
        raise SpecError(field, f"unknown table {table}; valid choices: {', '.join(map(str, allowed))}")
    return table


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(StringIO(resources.files(__name__).joinpath(name).read_text()), index_col=0)


def load_table(table: int) -> pd.DataFrame:
    """A shipped table as printed: rows optimizers (Table 4: aspects), columns as headed in the paper."""
    return _read(FILES[check_table(table)])


def printed_summary() -> pd.DataFrame:
    """Table 1's printed Mean / Std / Range rows, one row per backbone."""
    rows = _read("table1_cifar100_summary_rows.csv")
    std_range = rows.loc["Std/Range"].str.split("/", expand=True).astype(float)
    return pd.DataFrame({"mean": rows.loc["Mean"].astype(float), "std": std_range[0], "range": std_range[1]})


def long_table(table: int) -> pd.DataFrame:
    """Tables 1-3 as a long frame: backbone (the paper's column header), optimizer, top1."""
    wide = load_table(check_table(table, (1, 2, 3)))
    long = wide.reset_index().melt(id_vars="optimizer", var_name="backbone", value_name="top1")
    return long[["backbone", "optimizer", "top1"]]


def analyse_table(table: int, gamma: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells with eq1/tukey/gap/top4 flags, per-backbone summary) of a shipped table with its gamma."""
    gamma = GAMMA[check_table(table, (1, 2, 3))] if gamma is None else gamma
    long = long_table(table)
    summary = backbone_summary(long, gamma)
    if table == 1:
        printed = printed_summary().add_prefix("printed_")
        summary = summary.merge(printed, left_on="backbone", right_index=True)
        summary["differs"] = summary.apply(_differences, axis=1)
    return flag_cells(long, gamma), summary


def _differences(row: pd.Series) -> str:
    """'mean +0.36, std +1.37' for the statistics that differ from the printed row beyond its precision."""
    parts = [f"{name} {row[name] - row['printed_' + name]:+.2f}" for name, tol in PRINTED_TOLERANCE.items()
             if abs(row[name] - row["printed_" + name]) > tol + 1e-9]
    return ", ".join(parts)


def table4_ranking() -> pd.DataFrame:
    """Table 4's component rows re-weighted (0.4 / 0.2 / 0.2 / 0.2) beside the published Overall row."""
    printed = load_table(4).T
    components = printed.rename(columns={"Performance": "performance", "Hyper-parameter": "hyper_parameter",
                                         "BOCB": "bocb", "Computations": "computations"})
    ranking = weighted_ranking(components[["performance", "hyper_parameter", "bocb", "computations"]])
    ranking["published"] = printed["Overall"]
    ranking.index.name = "optimizer"
    return ranking


def kendall_tau(ranking: pd.DataFrame) -> float:
    return float(stats.kendalltau(ranking["overall"], ranking["published"]).statistic)


def _paper_cells(table: int) -> pd.DataFrame:
    """Table 1 or 2 in our names: backbone, optimizer, paper_backbone (the paper's column header), paper."""
    long = long_table(check_table(table, COMPARED_TABLES))
    return long.assign(paper_backbone=long["backbone"], backbone=long["backbone"].map(BACKBONE_NAMES),
                       optimizer=long["optimizer"].map(OPTIMIZER_NAMES)).rename(columns={"top1": "paper"})


def compare(cells: pd.DataFrame, table: int = 1) -> pd.DataFrame:
    """Our test top-1 beside the paper's for the (backbone, optimizer) pairs both have (our names), with the
    paper's column header (Table 2's names the recipe its models were trained with)."""
    joined = cells[["backbone", "optimizer", "test_top1"]].rename(columns={"test_top1": "ours"}).merge(
        _paper_cells(table), on=["backbone", "optimizer"])
    joined["difference"] = joined["ours"] - joined["paper"]
    return joined[["backbone", "optimizer", "paper_backbone", "ours", "paper", "difference"]]


@dataclass(frozen=True)
class ComparePaper:
    """What `bocb report --compare-paper` asks for. ``table`` None: the table of the setting the results'
    dataset follows (bocb.data.paper_setting: digits follows CIFAR-100's). ``anyway``: results on another
    dataset or at another model size are shown, labelled not comparable, instead of refused."""

    table: int | None = None
    anyway: bool = False


@dataclass(frozen=True)
class PaperComparison:
    """Our cells beside a paper table, and what each side is (``ours``: 'digits, tiny models'; ``theirs``:
    'CIFAR-100, paper-size models')."""

    table: int
    pairs: pd.DataFrame  # compare()'s columns
    ours: str
    theirs: str
    comparable: bool  # the same dataset, and every compared backbone at paper size
    left_out: str  # which of our backbones and optimizers the table lacks, as a sentence ('' when none)

    @property
    def title(self) -> str:
        return f"Beside the paper ({TITLES[self.table]}): " + (
            f"ours on {self.ours}" if self.comparable else "not comparable")

    @property
    def sentences(self) -> list[str]:
        """What the comparison is, in words (the label when it is not like for like), then what it leaves out."""
        said = [f"Test top-1 of our selected configurations ({self.ours}) beside Table {self.table}'s "
                f"({self.theirs})." if self.comparable else
                f"Not comparable: {self.ours} vs the paper's {self.theirs} — shown for orientation only."]
        if self.pairs.empty:
            said.append(f"None of our backbone-optimizer pairs is in Table {self.table}.")
        return said + ([self.left_out] if self.left_out else [])

    def labelled(self) -> pd.DataFrame:
        """The pairs, each column headed by what it holds, so the table read alone says it too."""
        return self.pairs.rename(columns={
            "paper_backbone": "paper's column", "ours": f"ours ({self.ours})", "paper": f"paper ({self.theirs})",
            "difference": "difference" if self.comparable else "difference (not comparable)"})


UNSTATED = "unstated"  # a dataset or size the results do not state (no column, or an empty cell)
SIZE_WORDS = {PAPER_SIZE: "paper-size", "tiny": "tiny", UNSTATED: "unstated-size"}


def paper_comparison(trials: pd.DataFrame, cells: pd.DataFrame, request: ComparePaper) -> PaperComparison:
    """Our ``cells`` beside the requested table when the ``trials`` (their dataset and size columns) are the
    table's dataset with paper-size models; otherwise a SpecError naming both sides or, with
    ``request.anyway``, the comparison labelled not comparable."""
    datasets = sorted(set(_stated(trials, "dataset")))
    table = request.table or _table_of(datasets)
    pairs = compare(cells, table)
    # the sizes that matter are those of the backbones compared; with none in common, say what all of ours are
    backbones = list(dict.fromkeys(pairs["backbone"])) or list(dict.fromkeys(cells["backbone"]))
    sizes = _sizes(trials, backbones)
    ours = f"{' and '.join(map(_dataset_text, datasets))}, {_size_text(sizes)}"
    theirs = f"{DATASET_TITLES[table]}, {SIZE_WORDS[PAPER_SIZE]} models"
    comparable = all(_is_table_dataset(d, table) for d in datasets) and set(sizes.values()) <= {PAPER_SIZE}
    if not comparable and not request.anyway:
        hint = (" (a CSV states them in columns 'dataset' and 'size')"
                if UNSTATED in [*datasets, *sizes.values()] else "")
        raise SpecError("--compare-paper", f"the results are {ours}{hint} and the paper's Table {table} is "
                                           f"{theirs}: not comparable; --compare-paper-anyway shows them side by "
                                           "side, labelled, for orientation only")
    return PaperComparison(table, pairs, ours, theirs, comparable, _left_out(cells, table))


def _stated(trials: pd.DataFrame, column: str) -> pd.Series:
    """A column of the trials as strings, 'unstated' where they do not say (no such column, an empty cell)."""
    if column not in trials:
        return pd.Series(UNSTATED, index=trials.index, dtype=object)
    return trials[column].map(lambda value: UNSTATED if pd.isna(value) else str(value))


def _dataset_entry(name: str) -> DatasetInfo | None:
    """The registry's entry for a dataset the results name; None for a name bocb does not know. A
    'package.module:attr' name is never imported: a CSV from someone else must not run code."""
    from bocb.data import DATASETS  # imports torch: only when a comparison is asked for

    return DATASETS.get(name) if not is_reference(name) and name in DATASETS else None


def _table_of(datasets: list[str]) -> int:
    """The table of the setting the results' one dataset follows; Table 1 (the default --paper-table) when
    they state several datasets or none bocb knows."""
    from bocb.data import paper_setting

    if len(datasets) != 1 or _dataset_entry(datasets[0]) is None:
        return COMPARED_TABLES[0]
    return {SETTING[table]: table for table in COMPARED_TABLES}.get(paper_setting(datasets[0]), COMPARED_TABLES[0])


def _is_table_dataset(name: str, table: int) -> bool:
    """Whether ``name`` is the dataset the table was measured on, not one that only follows its setting
    (digits, CIFAR-10); the registry knows ImageNet-1K's setting name 'imagenet1k' as the dataset 'imagenet'."""
    entry = _dataset_entry(name)
    return entry is not None and entry is _dataset_entry(SETTING[table])


def _dataset_text(name: str) -> str:
    entry = _dataset_entry(name)
    if entry is not None:
        return entry.name  # an alias ('in1k') as its registry name
    return "an unstated dataset" if name == UNSTATED else f"{name} (not a bocb dataset name: bocb list datasets)"


def _sizes(trials: pd.DataFrame, backbones: list[str]) -> dict[str, str]:
    """Each backbone's model size as its trials state it: 'paper', 'tiny', 'unstated', or 'mixed' when they
    state several (a CSV of several benchmarks)."""
    stated = _stated(trials, "size").groupby(trials["backbone"]).agg(lambda s: s.iloc[0] if s.nunique() == 1
                                                                     else "mixed")
    return {backbone: stated.get(backbone, UNSTATED) for backbone in backbones}


def _size_text(sizes: dict[str, str]) -> str:
    """'tiny models'; with several sizes, each with its backbones: 'paper-size models (resnet50) and tiny
    models (deit_s)'."""
    groups: dict[str, list[str]] = {}
    for backbone, size in sizes.items():
        groups.setdefault(size, []).append(backbone)
    if len(groups) <= 1:
        return f"{_size_word(next(iter(groups), UNSTATED))} models"
    return " and ".join(f"{_size_word(size)} models ({', '.join(names)})" for size, names in groups.items())


def _size_word(size: str) -> str:
    return SIZE_WORDS.get(size, f"{size}-size")  # 'mixed-size', or a CSV's own size name


def _left_out(cells: pd.DataFrame, table: int) -> str:
    """'Left out, not in Table 2: backbones vgg13_bn; optimizers lamb.' ('' when the table has all of ours)."""
    paper = _paper_cells(table)
    missing = [f"{kind}s {', '.join(names)}" for kind in ("backbone", "optimizer")
               if (names := [n for n in dict.fromkeys(cells[kind]) if n not in set(paper[kind])])]
    return f"Left out, not in Table {table}: {'; '.join(missing)}." if missing else ""


def paper_text(table: int, fmt: str = "table") -> str:
    """What `bocb paper --table N --format F` prints."""
    check_choice("--format", fmt, FORMATS)
    if check_table(table) == 4:
        return _ranking_text(fmt)
    cells, summary = analyse_table(table)
    rows = cells.rename(columns={"eq1": "flagged"})[["backbone", "optimizer", "top1", "flagged", "top4"]]
    if fmt == "csv":
        return rows.to_csv(index=False)
    if fmt == "markdown":
        return markdown_table(rows, index=False)
    if fmt == "json":
        return json.dumps({"cells": rows.to_dict(orient="records"), "summary": summary.to_dict(orient="records")},
                          indent=2) + "\n"
    return _summary_text(table, summary)


def _summary_text(table: int, summary: pd.DataFrame) -> str:
    lines = [f"{TITLES[table]}; failures by Eq. 1 as printed: r < max(R) - min(IQR(R), gamma), "
             f"gamma = {GAMMA[table]:g}; Mean / Std (sample) / Range after removing the worst result.", ""]
    for row in summary.itertuples():
        lines += [f"{row.backbone}",
                  f"  Eq. 1 threshold {row.eq1_threshold:.2f}; flagged {row.n_eq1}: {row.eq1_flagged or '-'}",
                  f"  (Tukey fence flags {row.n_tukey}; a gap of 3 points flags {row.n_gap})",
                  f"  top-4: {row.top4}",
                  f"  without the worst: mean {row.mean:.2f}, std {row.std:.2f}, range {row.range:.2f}"]
        if table == 1:
            verdict = f"differs from the printed row: {row.differs}" if row.differs else "agrees with the printed row"
            lines.append(f"  printed: mean {row.printed_mean:.2f}, std {row.printed_std:.1f}, "
                         f"range {row.printed_range:.0f} -> {verdict}")
    if table == 1:
        n_differ = int((summary["differs"] != "").sum())
        lines += ["", f"{n_differ} of {len(summary)} backbones' printed summaries differ from the table's own cells."]
    else:
        lines += ["", "The paper prints no summary rows for this table."]
    return "\n".join(lines) + "\n"


def _ranking_text(fmt: str) -> str:
    ranking = table4_ranking()
    if fmt == "csv":
        return ranking.to_csv()
    if fmt == "markdown":
        return markdown_table(ranking)
    if fmt == "json":
        return ranking.reset_index().to_json(orient="records", indent=2) + "\n"
    exact = int((ranking["overall"] == ranking["published"]).sum())
    return (f"{TITLES[4]}: score = 0.4 Performance + 0.2 Hyper-parameter + 0.2 BOCB + 0.2 Computations "
            f"(each as printed), ranked ascending.\n\n{ranking.to_string(float_format=lambda v: f'{v:.2f}')}\n\n"
            f"Kendall tau with the published Overall row: {kendall_tau(ranking):.3f}; "
            f"{exact} of {len(ranking)} ranks identical.\n")


__all__ = ["BACKBONE_NAMES", "GAMMA", "OPTIMIZER_NAMES", "ComparePaper", "PaperComparison", "analyse_table", "compare",
           "kendall_tau", "load_table", "long_table", "paper_comparison", "paper_text", "printed_summary",
           "table4_ranking"]
