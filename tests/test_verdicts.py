"""The verdict rule (bocb.protocol's coupling rule through bocb.analysis.verdicts) on fixed synthetic
matrices: a null, a planted interaction, a wild cell, a curve still climbing, an unresolved gap.
Its error rates over many random matrices are benchmarks/verdicts.py's (docs/analysis.md)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bocb.analysis import verdicts
from bocb.analysis._verdict import COUPLED, NOT_COUPLED, SHARED_EFFECT, STILL_LEARNING, UNCERTAIN
from bocb.protocol import (
    DIFFERENT_CALL,
    contrast_call,
    holm_adjusted,
    interaction_contrasts,
    pooled_noise,
    seeds_to_settle,
    still_improving,
)

GAMMA = 3.0
BACKBONE = {"b0": 80.0, "b1": 70.0, "b2": 60.0, "b3": 75.0}
OPTIMIZER = {"sgd": -6.0, "adamw": 0.0, "lamb": 1.0, "adagrad": -2.0}
SPREAD = np.array([-1.0, 0.0, 1.0])  # three seeds of every cell: mean exact, sd exactly the spread


def results(change: dict[tuple[str, str], float] | None = None, spread: float = 0.5,
            wild: dict[tuple[str, str], float] | None = None, optimizer: dict[str, float] = OPTIMIZER) -> pd.DataFrame:
    """Per-seed top-1 of an additive benchmark (backbone + optimizer effect), plus ``change`` on some cells'
    means and a ``wild`` seed spread on some cells."""
    rows = []
    for b, base in BACKBONE.items():
        for o, effect in optimizer.items():
            mean = base + effect + (change or {}).get((b, o), 0.0)
            for seed, offset in enumerate(SPREAD * (wild or {}).get((b, o), spread)):
                rows.append({"backbone": b, "optimizer": o, "seed": seed, "top1": mean + offset})
    return pd.DataFrame(rows)


def judged(per_seed: pd.DataFrame, curves: dict | None = None,
           rechecked: tuple[pd.DataFrame, int] | None = None) -> pd.DataFrame:
    trials = per_seed.assign(num_classes=10, test_size=10_000)
    learned = pd.Series(True, index=pd.unique(per_seed["backbone"]))
    return verdicts(per_seed, trials, learned, GAMMA, curves=curves, rechecked=rechecked).set_index("backbone")


def test_an_additive_benchmark_is_not_coupled_anywhere_and_names_the_optimizers_that_lag_everywhere() -> None:
    result = judged(results())
    assert set(result["verdict"]) == {SHARED_EFFECT}  # sgd is 6 points behind on every backbone: not coupling
    assert all("sgd" in worse for worse in result["worse"])
    assert np.allclose(result["interaction"], 0.0)


def test_a_planted_drop_of_three_gamma_is_coupled_on_its_backbone_only() -> None:
    result = judged(results({("b1", "lamb"): -3 * GAMMA}))
    assert result.at["b1", "verdict"] == COUPLED
    assert result.at["b1", "interaction_optimizer"] == "lamb"
    assert result.at["b1", "interaction"] == pytest.approx(-3 * GAMMA * (1 - 1 / len(OPTIMIZER)))
    assert "lamb -6.8 points against the common profile" in result.at["b1", "explanation"]
    # the common profile is the median of the others: the coupled backbone lends them no interaction
    assert set(result.drop(index="b1")["verdict"]) == {SHARED_EFFECT}


def test_a_gap_the_seeds_cannot_settle_is_uncertain_and_says_how_many_seeds_would() -> None:
    result = judged(results({("b2", "adagrad"): -GAMMA}, spread=2.0))
    assert result.at["b2", "verdict"] == UNCERTAIN
    assert result.at["b2", "interaction_optimizer"] == "adagrad"
    needed = result.at["b2", "seeds_needed"]
    assert 3 < needed <= 50 and f"about {int(needed)} seeds per cell" in result.at["b2", "explanation"]


def test_one_wild_cell_is_left_out_of_its_backbones_noise_and_does_not_make_it_coupled() -> None:
    per_seed = results(wild={("b0", "sgd"): 17.0})
    noise = pooled_noise(per_seed).set_index("backbone")
    assert noise.at["b0", "unstable"] == "sgd"
    assert noise.at["b0", "sd"] == pytest.approx(0.5)  # the other cells' spread, not the wild one's
    result = judged(per_seed)
    assert result.at["b0", "verdict"] != COUPLED and "sgd left out as unstable" in result.at["b0", "explanation"]


def test_a_coupled_cell_still_climbing_at_its_last_epoch_is_coupled_at_this_budget_still_learning() -> None:
    per_seed = results({("b1", "sgd"): -4 * GAMMA})
    # per seed, validation top-1 over the last half of the epochs: the DeiT-S + SGD-M curves of the quick preset
    climbing = {("b1", "sgd"): np.array([[18.8, 22.2, 24.3], [17.4, 18.1, 21.5]])}
    flat = {("b1", "sgd"): np.array([[24.1, 24.4, 24.3], [21.6, 21.3, 21.5]])}
    assert judged(per_seed, climbing).at["b1", "verdict"] == STILL_LEARNING
    assert "sgd still improving" in judged(per_seed, climbing).at["b1", "explanation"]
    assert judged(per_seed, flat).at["b1", "verdict"] == COUPLED


def test_still_improving_needs_a_rise_beyond_the_curves_noise_and_of_half_gamma() -> None:
    assert still_improving(np.array([[18.8, 22.2, 24.3], [17.4, 18.1, 21.5]]), GAMMA)  # a steady climb, both seeds
    assert still_improving(np.array([[50.0, 52.0, 54.0]]), GAMMA)  # one seed, exactly linear
    assert not still_improving(np.array([[90.0, 90.4, 90.8], [91.0, 91.3, 91.7]]), GAMMA)  # steady, under γ/2
    assert not still_improving(np.array([[60.0, 70.0, 61.0], [66.0, 58.0, 69.0]]), GAMMA)  # noise, no trend
    assert not still_improving(np.array([[50.0, 55.0]]), GAMMA)  # two epochs: no noise to judge a slope by


def test_the_rule_is_untestable_with_one_seed_and_with_one_backbone() -> None:
    one_seed = results()
    one_seed = one_seed[one_seed["seed"] == 0]
    assert set(judged(one_seed)["verdict"]) == {"coupling not testable"}
    one_backbone = results()
    one_backbone = one_backbone[one_backbone["backbone"] == "b0"]
    assert judged(one_backbone).at["b0", "verdict"] == "coupling not testable"


def test_holm_and_the_equivalence_test_by_hand() -> None:
    assert np.allclose(holm_adjusted(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    contrasts = interaction_contrasts(results({("b3", "adamw"): 2 * GAMMA}), GAMMA)
    b3 = contrasts[contrasts["backbone"] == "b3"]
    assert contrast_call(b3) == DIFFERENT_CALL
    assert (b3["p_holm"] >= b3["p"]).all()
    null = contrasts[contrasts["backbone"] != "b3"]
    assert (null["p_equiv"] < 0.05).all()  # exact zero interactions, seed sd 0.5: within ±γ
    assert seeds_to_settle(b3.iloc[0], 4, GAMMA) is not None


def test_not_coupled_without_any_lagging_optimizer() -> None:
    assert set(judged(results(optimizer={o: 0.0 for o in OPTIMIZER}))["verdict"]) == {NOT_COUPLED}


def _rechecked(per_seed: pd.DataFrame, cell: tuple[str, str], change: float) -> tuple[pd.DataFrame, int]:
    """The results after a 2x budget check of ``cell`` at every seed: its seeds moved by ``change``."""
    frame = per_seed.assign(budget=1)
    rerun = (frame["backbone"] == cell[0]) & (frame["optimizer"] == cell[1])
    frame.loc[rerun, "top1"] += change
    frame.loc[rerun, "budget"] = 2
    return frame, 2


def test_a_budget_check_that_closes_the_gap_calls_it_slow_convergence_and_one_that_does_not_coupled() -> None:
    per_seed = results({("b1", "sgd"): -4 * GAMMA})
    climbing = {("b1", "sgd"): np.array([[18.8, 22.2, 24.3], [17.4, 18.1, 21.5]])}
    closed = judged(per_seed, climbing, _rechecked(per_seed, ("b1", "sgd"), 4 * GAMMA))
    assert closed.at["b1", "verdict"] == "slow convergence, not coupled"
    assert "at 2x the epochs (sgd re-run at every seed)" in closed.at["b1", "explanation"]
    held = judged(per_seed, climbing, _rechecked(per_seed, ("b1", "sgd"), 0.5))
    assert held.at["b1", "verdict"] == COUPLED and "the gap persists" in held.at["b1", "explanation"]
    elsewhere = judged(per_seed, climbing, _rechecked(per_seed, ("b2", "sgd"), 0.5))  # not the climbing cell
    assert elsewhere.at["b1", "verdict"] == STILL_LEARNING
