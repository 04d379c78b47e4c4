"""The paper's published tables (Li et al. 2024, arXiv 2410.06373) and our analysis of them.

Shipped as package data: Table 1 (CIFAR-100 top-1, 20 optimizers x 20 backbones, plus its printed
Mean and Std/Range rows), Table 2 (ImageNet-1K), Table 3 (COCO transfer), Table 4 (rankings).
"""
from __future__ import annotations

import json
from importlib import resources
from io import StringIO

import pandas as pd
from scipy import stats

from bocb.analysis import FORMATS, backbone_summary, flag_cells, markdown_table, weighted_ranking
from bocb.analysis._frame import check_choice
from bocb.errors import SpecError
from bocb.protocol import GAMMA as PAPER_GAMMA

FILES = {1: "table1_cifar100_top1.csv", 2: "table2_imagenet1k_top1.csv", 3: "table3_coco_transfer.csv",
         4: "table4_optimizer_rankings.csv"}
TITLES = {1: "Table 1: CIFAR-100 top-1 (%)", 2: "Table 2: ImageNet-1K top-1 (%)",
          3: "Table 3: COCO transfer (pose AP / detection mAP)", 4: "Table 4: optimizer rankings"}
# paper §3.2: gamma 3 on CIFAR-100 and COCO, 1 on ImageNet (bocb.protocol.GAMMA)
GAMMA = {1: PAPER_GAMMA["cifar100"], 2: PAPER_GAMMA["imagenet1k"], 3: PAPER_GAMMA["coco"]}

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


def check_table(table: int, allowed: tuple[int, ...] = (1, 2, 3, 4)) -> int:
    if table not in allowed:
        raise SpecError("--table", f"unknown table {table}; valid choices: {', '.join(map(str, allowed))}")
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


def compare(cells: pd.DataFrame, table: int = 1) -> pd.DataFrame:
    """Our test top-1 beside the paper's for the (backbone, optimizer) pairs both have (our names)."""
    paper = long_table(table).assign(backbone=lambda f: f["backbone"].map(BACKBONE_NAMES),
                                     optimizer=lambda f: f["optimizer"].map(OPTIMIZER_NAMES))
    joined = cells[["backbone", "optimizer", "test_top1"]].rename(columns={"test_top1": "ours"}).merge(
        paper.rename(columns={"top1": "paper"}), on=["backbone", "optimizer"])
    joined["difference"] = joined["ours"] - joined["paper"]
    return joined


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


__all__ = ["BACKBONE_NAMES", "GAMMA", "OPTIMIZER_NAMES", "analyse_table", "compare", "kendall_tau",
           "load_table", "long_table", "paper_text", "printed_summary", "table4_ranking"]
