"""The analysis by optimizer category (the paper's Section 4 families): (a) fixed learning rate with momentum,
(b) adaptive learning rate with momentum, (c) estimated learning rate with momentum, (d) adaptive learning rate on
the current gradient, and bocb's 'new' optimizers beyond the paper. The category of each optimizer comes with the
trials (column ``optimizer_category``, recorded from the optimizer registry in each trial's provenance)."""
from __future__ import annotations

import pandas as pd

CATEGORY_COLUMN = "optimizer_category"
COLUMNS = ["backbone", "category", "optimizers", "n", "mean_rank", "failures", "spread"]
ALL_BACKBONES = "all backbones"


def optimizer_categories(trials: pd.DataFrame) -> pd.Series:
    """optimizer -> category letter, for the optimizers whose trials recorded one (empty if none did)."""
    if CATEGORY_COLUMN not in trials:
        return pd.Series(dtype=str)
    known = trials[["optimizer", CATEGORY_COLUMN]].dropna()
    known = known[known[CATEGORY_COLUMN].astype(str).str.len() > 0]
    return known.drop_duplicates("optimizer").set_index("optimizer")[CATEGORY_COLUMN].astype(str)


def category_table(cells: pd.DataFrame, categories: pd.Series) -> pd.DataFrame:
    """Per backbone (in the cells' order, then all backbones together) and category: its optimizers, their
    mean rank among the backbone's optimizers (1 = best test top-1, ties share the mean rank), how many fail
    Eq. 1, and the spread of their top-1 (max - min, points; '-' for a family of one). ``cells`` are judged
    cells (backbones that learned) with test_top1 and eq1; optimizers without a category are left out."""
    ranked = cells.assign(rank=cells.groupby("backbone", sort=False)["test_top1"].rank(ascending=False),
                          category=cells["optimizer"].map(categories))
    ranked = ranked.dropna(subset=["category"])
    order = sorted(ranked["category"].unique())
    rows = [_row(backbone, category, group)
            for backbone, per_backbone in ranked.groupby("backbone", sort=False)
            for category in order if not (group := per_backbone[per_backbone["category"] == category]).empty]
    for category in order:
        group = ranked[ranked["category"] == category]
        row = _row(ALL_BACKBONES, category, group)
        row["spread"] = float(group.groupby("backbone")["test_top1"].agg(lambda v: v.max() - v.min()).mean()) \
            if group["optimizer"].nunique() > 1 else float("nan")  # the mean over backbones of each one's spread
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(backbone: str, category: str, group: pd.DataFrame) -> dict[str, object]:
    optimizers = list(dict.fromkeys(group["optimizer"]))
    return {"backbone": backbone, "category": category, "optimizers": ", ".join(optimizers), "n": len(optimizers),
            "mean_rank": float(group["rank"].mean()), "failures": int(group["eq1"].sum()),
            "spread": float(group["test_top1"].max() - group["test_top1"].min()) if len(group) > 1 else float("nan")}
