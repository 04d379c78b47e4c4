"""Transfer: does the pre-training optimizer still matter after fine-tuning (the paper's Table 3 question)?

For each backbone and mode (fine-tune, linear probe), the pre-training optimizer x fine-tuning optimizer
matrix of test top-1 (each cell the configuration the protocol chose on the second dataset's validation
split, mean over seeds), and a two-way analysis of variance over the seeds: the pre-training optimizer's
main effect against seed noise (F test), plus the interaction share of bocb's decomposition with bootstrap
intervals. The two-way ANOVA with replicates is the textbook one, written with numpy and scipy's F
distribution (statsmodels is not a dependency); it needs the same number of seeds in every cell.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bocb.analysis._cells import select_cells
from bocb.analysis._decompose import interaction_shares
from bocb.errors import DataError
from bocb.protocol import (
    DEFAULT_GAMMA,
    DIFFERENT_CALL,
    EQUIVALENT_CALL,
    chosen_seeds,
    contrast_call,
    contrast_tests,
    split_transfer_label,
    transfer_cells,
)

GROUP = ["backbone", "mode"]


@dataclass
class TransferAnalysis:
    per_seed: pd.DataFrame  # backbone, pre_optimizer, mode, optimizer (fine-tuning), seed, config, top1, trial_key
    tests: pd.DataFrame     # per backbone and mode: the pre-training optimizer's effect, and a verdict
    alpha: float
    at_edge: int            # chosen fine-tuning configurations at an edge of their searched grid
    n_cells: int            # chosen fine-tuning configurations (source x mode x fine-tuning optimizer)

    def matrix(self, backbone: str, mode: str) -> pd.DataFrame:
        """Mean test top-1: pre-training optimizers as rows, fine-tuning optimizers as columns."""
        rows = self.per_seed[(self.per_seed["backbone"] == backbone) & (self.per_seed["mode"] == mode)]
        means = rows.groupby(["pre_optimizer", "optimizer"], sort=False)["top1"].mean().unstack("optimizer")
        means = means.reindex(index=pd.unique(rows["pre_optimizer"]), columns=pd.unique(rows["optimizer"]))
        return means.rename_axis(index="pre-training", columns="fine-tuning")


def transfer_analysis(trials: pd.DataFrame, sources: pd.DataFrame, alpha: float = 0.05,
                      n_boot: int = 1000, gamma: float = DEFAULT_GAMMA) -> TransferAnalysis:
    """``trials``: a transfer benchmark's trials; ``sources``: its pre-training benchmark's trials; ``gamma``:
    the equivalence margin of "does not change" (the transfer part's rules.gamma)."""
    cells = transfer_cells(trials, sources)
    per_seed = chosen_seeds(cells)
    if per_seed.empty:
        raise DataError("transfer: no fine-tuning trial has a result yet")
    edges = select_cells(cells)["edge"]
    parts = pd.DataFrame([split_transfer_label(label) for label in per_seed["backbone"]],
                         columns=["backbone", "pre_optimizer", "mode"], index=per_seed.index)
    per_seed = pd.concat([per_seed.drop(columns=["backbone", "pre_optimizer", "mode"]), parts], axis=1)
    order = {"backbone": pd.unique(sources["backbone"]), "pre_optimizer": pd.unique(sources["optimizer"]),
             "optimizer": pd.unique(trials["optimizer"])}
    per_seed = per_seed.assign(**{c: pd.Categorical(per_seed[c], categories=v) for c, v in order.items()})
    per_seed = per_seed.sort_values(["backbone", "pre_optimizer", "optimizer", "seed"], kind="stable")
    per_seed = per_seed.assign(**{c: per_seed[c].astype(str) for c in order})  # the planned order, as text
    per_seed = per_seed[GROUP + ["pre_optimizer", "optimizer", "seed", "config", "top1", "trial_key"]]
    per_seed = per_seed.reset_index(drop=True)
    tests = [{"backbone": b, "mode": m, **_pre_optimizer_effect(group, alpha, n_boot, gamma)}
             for (b, m), group in per_seed.groupby(GROUP, sort=False)]
    return TransferAnalysis(per_seed, pd.DataFrame(tests), alpha, int(edges.sum()), len(edges))


def _pre_optimizer_effect(group: pd.DataFrame, alpha: float, n_boot: int, gamma: float) -> dict[str, object]:
    """Two-way ANOVA with replicates (seeds) of one backbone and mode: the pre-training optimizer's main
    effect (F, p), the spread of its marginal means, the interaction share with its interval, and a verdict
    by the protocol's contrast rule (bocb.protocol.contrast_call): each pre-training optimizer's marginal
    mean minus the grand mean, tested against the seed noise with Holm ("changes"), and within ±γ by two
    one-sided tests ("does not change"); neither: not settled by these seeds."""
    from scipy import stats  # here: scipy.stats costs ~0.7 s, and `bocb results` imports this module

    counts = group.groupby(["pre_optimizer", "optimizer"])["top1"].count()
    n_pre, n_fine, n = group["pre_optimizer"].nunique(), group["optimizer"].nunique(), int(counts.min())
    marginal = group.groupby("pre_optimizer")["top1"].mean()
    result: dict[str, object] = {"n_pre": n_pre, "n_fine": n_fine, "n_seeds": n,
                                 "pre_range": float(marginal.max() - marginal.min()), "F": np.nan, "p": np.nan,
                                 "share": np.nan, "lo": np.nan, "hi": np.nan}
    if n_pre < 2:
        return {**result, "verdict": "one pre-training optimizer: nothing to compare"}
    if len(counts) != n_pre * n_fine or counts.nunique() != 1 or n < 2:
        return {**result, "verdict": "not testable: every cell needs the same number of seeds, at least 2"}
    cell = group.groupby(["pre_optimizer", "optimizer"])["top1"].transform("mean")
    ss_pre = n_fine * n * float(((marginal - group["top1"].mean()) ** 2).sum())
    df_pre, df_within = n_pre - 1, n_pre * n_fine * (n - 1)
    ms_within = float(((group["top1"] - cell) ** 2).sum()) / df_within
    f_value = (ss_pre / df_pre) / ms_within if ms_within > 0 else np.inf
    p_value = float(stats.f.sf(f_value, df_pre, df_within))
    result.update(F=f_value, p=p_value)
    if n_fine >= 2:
        shares = interaction_shares(group.rename(columns={"backbone": "_b", "pre_optimizer": "backbone"}),
                                    n_boot=n_boot)
        total = shares[shares["scope"] == "total"].iloc[0]
        result.update(share=float(total["share"]), lo=float(total["lo"]), hi=float(total["hi"]))
    # marginal mean - grand mean: a contrast of n_pre x n_fine cell means, each of n seeds
    variance = ms_within / (n_fine * n) * (1 - 1 / n_pre)
    family = [(str(group["backbone"].iloc[0]), str(pre), float(m - marginal.mean()), variance, float(df_within), n)
              for pre, m in marginal.items()]
    call = contrast_call(contrast_tests(family, gamma), alpha)
    said = {DIFFERENT_CALL: "changes fine-tuned top-1 beyond seed noise",
            EQUIVALENT_CALL: f"does not change fine-tuned top-1 beyond ±γ = {gamma:g} points (equivalence)"}
    unsettled = "is not settled by these seeds: neither beyond seed noise nor within ±γ"
    result["verdict"] = (f"the pre-training optimizer {said.get(call, unsettled)} "
                         f"(F({df_pre}, {df_within}) = {f_value:.2f}, p = {p_value:.3g}; its means span "
                         f"{result['pre_range']:.2f} points)")
    return result


def format_transfer(result: TransferAnalysis, dataset: str) -> str:
    """The transfer matrices and verdicts as text, one block per backbone and mode."""
    lines = [f"transfer to {dataset}: test top-1 after fine-tuning the kept models (rows: pre-training optimizer, "
             "columns: fine-tuning optimizer; mean over seeds; each cell's configuration chosen on the validation "
             f"split of {dataset})"]
    for test in result.tests.itertuples():
        table = result.matrix(test.backbone, test.mode)
        lines += ["", f"  {test.backbone}, {test.mode.replace('_', ' ')}:",
                  *("    " + line for line in table.to_string(float_format="{:.2f}".format).splitlines()),
                  f"    {test.verdict}"]
    edge = (f"{result.at_edge} of {result.n_cells} chosen fine-tuning configurations at an edge of their grid "
            "(the optimum may lie outside: raise transfer.search.extend_edges or lr_step)" if result.at_edge else
            f"none of the {result.n_cells} chosen fine-tuning configurations is at an edge of its grid")
    return "\n".join([*lines, f"transfer grid edges: {edge}"])


def layers_by_pre_optimizer(result: TransferAnalysis, layers: pd.DataFrame) -> pd.DataFrame:
    """The layer tables of the chosen fine-tuned models, with ``optimizer`` = the pre-training optimizer and
    ``backbone`` = 'backbone (mode)': the layer-wise patterns grouped as the paper asks after transfer."""
    if layers is None or layers.empty:
        return pd.DataFrame()
    lineage = result.per_seed[["trial_key", "backbone", "mode", "pre_optimizer"]]
    chosen = layers.drop(columns=["backbone", "optimizer"]).merge(lineage, on="trial_key")
    return chosen.assign(backbone=chosen["backbone"] + " (" + chosen["mode"].str.replace("_", " ") + ")",
                         optimizer=chosen["pre_optimizer"])
