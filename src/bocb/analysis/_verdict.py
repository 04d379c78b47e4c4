"""The answer first: per backbone, is it coupled to its optimizer, and which optimizers to use.

Built from the protocol's rules (bocb.protocol): the seed noise pooled over replicated cells, "below the
best beyond seed noise", and the did-not-learn guard; and from the interaction share of
:func:`bocb.analysis.interaction_shares` with its bootstrap interval. See docs/analysis.md.
"""
from __future__ import annotations

import math

import pandas as pd

from bocb.protocol import (
    below_beyond_noise,
    cell_means,
    chance_level,
    detectable_gap,
    did_not_learn,
    pooled_noise,
    seeds_by_cell,
)

DID_NOT_LEARN = "did not learn at this budget"
NOT_DISTINGUISHABLE = "not distinguishable at this budget"
NOT_COUPLED = "not coupled"
COUPLED = "coupled"
SHARED_EFFECT = "optimizer-sensitive, not coupled"
UNCERTAIN = "coupling uncertain"
SHARE_LINE = 0.5  # an interaction share above it: the backbone's own ranking of optimizers dominates
COLUMNS = ["backbone", "verdict", "recommended", "worse", "unsettled", "best_optimizer", "best_top1", "noise_sd",
           "noise_scope", "detectable_gap", "share", "share_lo", "share_hi", "chance", "explanation"]


def backbone_floor(trials: pd.DataFrame) -> pd.DataFrame:
    """Per backbone: chance top-1 and the test set's size (NaN when the frame does not say)."""
    chance = chance_level(trials)
    size = pd.to_numeric(trials["test_size"], errors="coerce") if "test_size" in trials else chance * math.nan
    frame = pd.DataFrame({"backbone": trials["backbone"], "chance": chance, "test_size": size})
    return frame.groupby("backbone", sort=False).agg(chance=("chance", "max"), test_size=("test_size", "max"))


def learned_backbones(per_seed: pd.DataFrame, trials: pd.DataFrame) -> pd.Series:
    """True per backbone whose best cell is beyond noise of chance (protocol.did_not_learn)."""
    means = cell_means(per_seed)
    noise = pooled_noise(per_seed).set_index("backbone")
    floor = backbone_floor(trials)
    best = means.groupby("backbone", sort=False)["top1"].max()
    return pd.Series({b: not did_not_learn(top, floor.at[b, "chance"], floor.at[b, "test_size"],
                                           noise.at[b, "sd"]) for b, top in best.items()}, name="learned")


def verdicts(per_seed: pd.DataFrame, trials: pd.DataFrame, learned: pd.Series, shares: pd.DataFrame | None,
             gamma: float, alpha: float = 0.05) -> pd.DataFrame:
    """One row per backbone: the verdict (coupled, not coupled, optimizer-sensitive, uncertain, not
    distinguishable, did not learn), the recommendation (best first: the optimizers not below the best
    beyond seed noise and within γ of it), those below it beyond seed noise, the unsettled ones (more than γ
    below on average, but too noisy to call), and a sentence saying why. The seed noise is pooled over the
    backbones that learned: a backbone at chance has no spread to lend.

    ``per_seed``: backbone, optimizer, seed, top1 of each cell's chosen configuration. ``learned``: per
    backbone, :func:`learned_backbones`. ``shares``: the
    interaction shares (scope 'backbone') of the learned backbones, or None.
    """
    means = cell_means(per_seed)
    judged = per_seed[per_seed["backbone"].map(learned).astype(bool)]
    noise = pooled_noise(judged).set_index("backbone") if len(judged) else pd.DataFrame(columns=["sd", "df", "scope"])
    seeds = seeds_by_cell(per_seed)
    floor = backbone_floor(trials)
    by_share = shares[shares["scope"] == "backbone"].set_index("name") if shares is not None else pd.DataFrame()
    rows = []
    for backbone, group in means.groupby("backbone", sort=False):
        group = group.sort_values("top1", ascending=False, kind="stable")
        best = group.iloc[0]
        sd, df, scope = (noise.at[backbone, "sd"], int(noise.at[backbone, "df"]), noise.at[backbone, "scope"]) \
            if backbone in noise.index else (math.nan, 0, "none")
        top = seeds[(backbone, best.optimizer)]
        worse = [row.optimizer for row in group.iloc[1:].itertuples()
                 if below_beyond_noise(seeds[(backbone, row.optimizer)], top, sd, df, alpha)]
        unsettled = [row.optimizer for row in group.itertuples()
                     if row.optimizer not in worse and best.top1 - row.top1 > gamma]
        tied = [o for o in group["optimizer"] if o not in worse and o not in unsettled]
        share = by_share.loc[backbone] if backbone in by_share.index else None
        row = {"backbone": backbone, "recommended": ", ".join(tied), "worse": ", ".join(worse),
               "unsettled": ", ".join(unsettled),
               "best_optimizer": best.optimizer, "best_top1": float(best.top1), "noise_sd": sd, "noise_scope": scope,
               "detectable_gap": detectable_gap(sd, df, int(best.n_seeds), alpha),
               "share": share["share"] if share is not None else math.nan,
               "share_lo": share["lo"] if share is not None else math.nan,
               "share_hi": share["hi"] if share is not None else math.nan,
               "chance": floor.at[backbone, "chance"]}
        row["verdict"], row["explanation"] = _verdict(row, bool(learned[backbone]), gamma)
        if unsettled and learned[backbone]:
            row["explanation"] += (f"; {row['unsettled']}: more than γ = {gamma:g} points below the best on average, "
                                   "but their seeds disagree too much to call")
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _verdict(row: dict, learned: bool, gamma: float) -> tuple[str, str]:
    if not learned:
        return DID_NOT_LEARN, (f"its best cell ({row['best_top1']:.1f}) is within noise of chance "
                               f"({row['chance']:.1f}): raise the epochs or widen the lr range before comparing "
                               "optimizers; it is left out of failure flags, ranking and interaction")
    noise = "no seed noise measured (one seed per cell)" if math.isnan(row["noise_sd"]) else (
        f"seed noise sd {row['noise_sd']:.2f}" + (" pooled over all backbones" if row["noise_scope"] == "all" else ""))
    if not row["worse"]:
        if row["detectable_gap"] > gamma or row["unsettled"]:
            return NOT_DISTINGUISHABLE, (f"no optimizer is below the best beyond seed noise, but with {noise} a gap "
                                         f"under {row['detectable_gap']:.1f} points would go unseen (γ = {gamma:g}): "
                                         "add seeds or a larger validation/test set")
        return NOT_COUPLED, f"every optimizer is within seed noise of the best ({noise})"
    share = _share_text(row)
    if math.isnan(row["share"]):
        return UNCERTAIN, f"{row['worse']} below the best beyond seed noise ({noise}); no interaction share"
    low, high = (row["share_lo"], row["share_hi"]) if not math.isnan(row["share_lo"]) else (row["share"],) * 2
    if low > SHARE_LINE:
        return COUPLED, (f"{row['worse']} below the best beyond seed noise ({noise}), and most of its spread is its "
                         f"own ranking of optimizers, not the common one ({share})")
    if high < SHARE_LINE:
        return SHARED_EFFECT, (f"{row['worse']} below the best beyond seed noise ({noise}), but these optimizers "
                               f"lag on the other backbones too ({share})")
    return UNCERTAIN, (f"{row['worse']} below the best beyond seed noise ({noise}); its {share} straddles "
                       f"{SHARE_LINE:g}")


def _share_text(row: dict) -> str:
    if math.isnan(row["share"]):
        return "no interaction share"
    interval = "" if math.isnan(row["share_lo"]) else f", 95% CI {row['share_lo']:.2f}-{row['share_hi']:.2f}"
    return f"interaction share {row['share']:.2f}{interval}"
