"""The answer first: per backbone, is it coupled to its optimizer, and which optimizers to use.

Built from the protocol's rules (bocb.protocol): the seed noise (pooled_noise, one wild cell left out),
the coupling rule (interaction_contrasts, contrast_call: a test of "the common optimizer profile" with Holm
over the optimizers, and an equivalence test within ±γ), "below the best beyond seed noise", "still
improving at the last epoch" and the did-not-learn guard. See docs/analysis.md for the nulls and
benchmarks/verdicts.py for the measured error rates.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bocb.protocol import (
    DIFFERENT_CALL,
    EQUIVALENT_CALL,
    UNTESTABLE_CALL,
    backbone_floor,
    below_beyond_noise,
    cell_means,
    climbing_cells,
    contrast_call,
    interaction_contrasts,
    pooled_noise,
    seeds_by_cell,
    seeds_to_settle,
)

DID_NOT_LEARN = "did not learn at this budget"
NOT_COUPLED = "not coupled"
COUPLED = "coupled"
STILL_LEARNING = "coupled at this budget, still learning"
SLOW_CONVERGENCE = "slow convergence, not coupled"
SHARED_EFFECT = "optimizer-sensitive, not coupled"
UNCERTAIN = "coupling uncertain"
NOT_TESTABLE = "coupling not testable"
COLUMNS = ["backbone", "verdict", "recommended", "worse", "unsettled", "best_optimizer", "best_top1", "noise_sd",
           "noise_scope", "unstable", "interaction_optimizer", "interaction", "p_coupled", "seeds_needed",
           "still_learning", "chance", "explanation"]


def verdicts(per_seed: pd.DataFrame, trials: pd.DataFrame, learned: pd.Series, gamma: float,
             alpha: float = 0.05, curves: dict[tuple[str, str], np.ndarray] | None = None,
             rechecked: tuple[pd.DataFrame, int] | None = None) -> pd.DataFrame:
    """One row per backbone: the verdict (coupled, coupled at this budget still learning, not coupled,
    optimizer-sensitive not coupled, coupling uncertain, not testable, did not learn), the recommendation
    (best first: the optimizers not below the best beyond seed noise and within γ of it), those below it
    beyond seed noise, the unsettled ones (more than γ below on average, but too noisy to call), the
    largest interaction and its Holm p, the seeds that would settle an uncertain one, and a sentence saying
    why. The seed noise is pooled over the backbones that learned: a backbone at chance has no spread to
    lend; the coupling rule compares only backbones that learned.

    ``per_seed``: backbone, optimizer, seed, top1 of each cell's chosen configuration. ``learned``: per
    backbone, :func:`bocb.protocol.learned_backbones`. ``curves``: per cell, each seed's validation top-1 over
    the last half of its epochs (:func:`bocb.protocol.late_curves`), or None without curves.
    ``rechecked``: :func:`bocb.protocol.rechecked_seeds`, the results after a budget check re-ran cells.
    """
    means = cell_means(per_seed)
    judged = per_seed[per_seed["backbone"].map(learned).astype(bool)]
    noise = pooled_noise(judged) if len(judged) else pd.DataFrame(columns=["backbone", "sd", "df", "scope", "unstable"])
    contrasts = interaction_contrasts(judged, gamma, noise) if len(judged) else pd.DataFrame()
    noise = noise.set_index("backbone")
    seeds = seeds_by_cell(per_seed)
    floor = backbone_floor(trials)
    rows = []
    for backbone, group in means.groupby("backbone", sort=False):
        group = group.sort_values("top1", ascending=False, kind="stable")
        best = group.iloc[0]
        mine = noise.loc[backbone] if backbone in noise.index else None
        sd, df, scope, unstable = (mine["sd"], int(mine["df"]), mine["scope"], mine["unstable"]) if mine is not None \
            else (math.nan, 0, "none", "")
        top = seeds[(backbone, best.optimizer)]
        worse = [row.optimizer for row in group.iloc[1:].itertuples()
                 if below_beyond_noise(seeds[(backbone, row.optimizer)], top, sd, df, alpha)]
        unsettled = [row.optimizer for row in group.itertuples()
                     if row.optimizer not in worse and best.top1 - row.top1 > gamma]
        tied = [o for o in group["optimizer"] if o not in worse and o not in unsettled]
        row = {"backbone": backbone, "recommended": ", ".join(tied), "worse": ", ".join(worse),
               "unsettled": ", ".join(unsettled), "best_optimizer": best.optimizer, "best_top1": float(best.top1),
               "noise_sd": sd, "noise_scope": scope, "unstable": unstable, "chance": floor.at[backbone, "chance"]}
        mine = contrasts[contrasts["backbone"] == backbone] if len(contrasts) else contrasts
        if learned[backbone]:
            row.update(_coupling(mine, best.optimizer, curves or {}, gamma, alpha))
            row["verdict"], row["explanation"] = _verdict(row, mine, gamma, alpha)
        else:
            row.update(interaction_optimizer="", interaction=math.nan, p_coupled=math.nan, seeds_needed=math.nan,
                       still_learning="", call=UNTESTABLE_CALL)
            row["verdict"], row["explanation"] = DID_NOT_LEARN, _not_learned_text(row)
        if unsettled and learned[backbone]:
            row["explanation"] += (f"; {row['unsettled']}: more than γ = {gamma:g} points below the best on average, "
                                   "but their seeds disagree too much to call")
        rows.append(row)
    result = pd.DataFrame(rows, columns=COLUMNS)
    return _after_recheck(result, rechecked, learned, gamma, alpha) if rechecked and rechecked[1] > 1 else result


def _after_recheck(result: pd.DataFrame, rechecked: tuple[pd.DataFrame, int], learned: pd.Series, gamma: float,
                   alpha: float) -> pd.DataFrame:
    """A "still learning" verdict whose climbing cells were all re-run at k x the epochs (every seed) is
    decided again by the same rule, on the results with those cells at k x: coupled when the gap persists,
    slow convergence when the interaction falls within ±γ, uncertain otherwise."""
    frame, budget = rechecked
    judged = frame[frame["backbone"].map(learned).astype(bool)][["backbone", "optimizer", "seed", "top1"]]
    rerun = frame[frame["budget"] > 1]
    again = set(zip(rerun["backbone"], rerun["optimizer"]))
    contrasts = interaction_contrasts(judged, gamma)
    result = result.copy()
    for index, row in result[result["verdict"] == STILL_LEARNING].iterrows():
        climbing = [o.strip() for o in row["still_learning"].split(",")]
        if any((row["backbone"], o) not in again for o in climbing):
            continue
        mine = contrasts[contrasts["backbone"] == row["backbone"]]
        call = contrast_call(mine, alpha)
        named = mine.set_index("optimizer").loc[row["interaction_optimizer"]]  # the first budget's strongest
        at = (f"at {budget}x the epochs ({', '.join(climbing)} re-run at every seed), the interaction of "
              f"{row['interaction_optimizer']} goes from {row['interaction']:+.1f} to {named.effect:+.1f} points "
              f"(Holm p = {named.p_holm:.2g})")
        if call == DIFFERENT_CALL:
            first = row["explanation"].replace(_still_learning_note(row["still_learning"]), "")
            result.loc[index, ["verdict", "explanation"]] = COUPLED, f"{at}: the gap persists; first budget: {first}"
        elif call == EQUIVALENT_CALL:
            result.loc[index, ["verdict", "explanation"]] = SLOW_CONVERGENCE, (
                f"{at}, within ±γ = {gamma:g}: the gap of the first budget was convergence speed, not coupling")
        else:
            moved = "narrowed" if abs(named.effect) < abs(row["interaction"]) else "did not narrow"
            result.loc[index, ["verdict", "explanation"]] = UNCERTAIN, (
                f"{at}: neither beyond seed noise nor within ±γ = {gamma:g}; the gap {moved} with more epochs")
    return result


def _coupling(contrasts: pd.DataFrame, best: str, curves: dict, gamma: float, alpha: float) -> dict:
    """The coupling rule's call on one backbone, its largest interaction and the cells it rests on that are
    still improving at their last epoch."""
    call = contrast_call(contrasts, alpha)
    if call == UNTESTABLE_CALL:
        return {"call": call, "interaction_optimizer": "", "interaction": math.nan, "p_coupled": math.nan,
                "seeds_needed": math.nan, "still_learning": ""}
    # the interaction the verdict names: the most significant one where coupled, else the largest
    strongest = contrasts["p_holm"].idxmin() if call == DIFFERENT_CALL else contrasts["effect"].abs().idxmax()
    largest = contrasts.loc[strongest]
    climbing = climbing_cells(contrasts, best, curves, gamma, alpha)
    needed = math.nan
    if call not in (DIFFERENT_CALL, EQUIVALENT_CALL):
        open_ = contrasts[contrasts["p_equiv"] >= alpha]
        hardest = open_.loc[open_["p_equiv"].idxmax()]
        settle = seeds_to_settle(hardest, len(contrasts), gamma, alpha)
        needed = math.inf if settle is None else settle
        largest = hardest
    return {"call": call, "interaction_optimizer": largest.optimizer, "interaction": float(largest.effect),
            "p_coupled": float(contrasts["p_holm"].min()), "seeds_needed": needed,
            "still_learning": ", ".join(climbing)}


def _still_learning_note(optimizers: str) -> str:
    return (f"; but {optimizers} still improving at the last epoch: the gap may be convergence speed "
            "(budget_check: auto re-runs these cells at 2x the epochs)")


def _not_learned_text(row: dict) -> str:
    return (f"its best cell ({row['best_top1']:.1f}) is within noise of chance ({row['chance']:.1f}): raise the "
            "epochs or widen the lr range before comparing optimizers; it is left out of failure flags, ranking "
            "and interaction")


def _verdict(row: dict, contrasts: pd.DataFrame, gamma: float, alpha: float) -> tuple[str, str]:
    noise = "no seed noise measured (one seed per cell)" if math.isnan(row["noise_sd"]) else (
        f"seed noise sd {row['noise_sd']:.2f}" + (" pooled over all backbones" if row["noise_scope"] == "all" else "")
        + (f", {row['unstable']} left out as unstable" if row["unstable"] else ""))
    call = row["call"]
    if call == UNTESTABLE_CALL:
        why = ("no seed noise to test against: run at least 2 seeds" if math.isnan(row["noise_sd"])
               else "no other backbone that learned with the same optimizers to compare its optimizer profile with")
        return NOT_TESTABLE, why
    effect = f"{row['interaction_optimizer']} {row['interaction']:+.1f} points against the common profile"
    if call == EQUIVALENT_CALL:
        small = contrasts.loc[contrasts["p_holm"] < alpha, "optimizer"]
        note = f"; a small interaction of {', '.join(small)} is beyond noise but within ±γ" if len(small) else ""
        if row["worse"]:
            return SHARED_EFFECT, (f"every optimizer's interaction is within ±γ = {gamma:g} points (largest: {effect};"
                                   f" {noise}){note}; {row['worse']} below the best beyond seed noise, as on the "
                                   "other backbones")
        return NOT_COUPLED, (f"every optimizer's interaction is within ±γ = {gamma:g} points (largest: {effect}; "
                             f"{noise}){note}")
    if call == DIFFERENT_CALL:
        coupled = contrasts[contrasts["p_holm"] < alpha].sort_values("effect", key=abs, ascending=False)
        first = coupled.iloc[0]
        rest = list(coupled["optimizer"][1:])
        more = f"; {len(rest)} more beyond noise: {', '.join(rest)}" if rest else ""
        named = (f"{first.optimizer} {first.effect:+.1f} points against the common profile "
                 f"(Holm p = {first.p_holm:.2g}){more}")
        text = f"its optimizer profile differs from the common one beyond seed noise: {named} ({noise})"
        if row["still_learning"]:
            return STILL_LEARNING, text + _still_learning_note(row["still_learning"])
        return COUPLED, text
    seeds = ("more than 50 seeds per cell" if math.isinf(row["seeds_needed"])
             else f"about {int(row['seeds_needed'])} seeds per cell")
    return UNCERTAIN, (f"the interaction of {effect} is neither beyond seed noise nor within ±γ = {gamma:g} ({noise}); "
                       f"{seeds} would settle it")
