"""Uplift metrics (Qini, AUUC, uplift at the top) and the budget curve."""

import numpy as np
import pandas as pd
import pytest

from models.targeting import budget_curve, draw_quantiles, stop_point, uplift_evaluation


def _trial(n=20_000, seed=0):
    """A randomised trial where contact helps only clients with x > 0 (by 20 points)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.random(n) < 0.5
    p = 0.1 + 0.2 * (x > 0) * t
    y = rng.random(n) < p
    return x, t.astype(float), y.astype(float)


def test_a_ranking_that_knows_who_responds_beats_random_order():
    x, t, y = _trial()
    w = np.ones_like(x)
    good = uplift_evaluation(y, t, w, x, draws=50)
    noise = uplift_evaluation(y, t, w, np.random.default_rng(1).normal(size=len(x)), draws=50)
    assert good["qini_coefficient"]["low"] > 0 > noise["qini_coefficient"]["low"]
    assert good["auuc"]["mean"] > noise["auuc"]["mean"]
    # the top 30% are all responders: uplift 20 points, inside the interval
    u = good["uplift_at_30"]
    assert u["low"] < 0.2 < u["high"] and abs(u["mean"] - 0.2) < 0.03
    assert abs(noise["uplift_at_30"]["mean"] - 0.1) < 0.03  # the average effect
    curve = good["curve"]
    assert curve["share"].iloc[0] == 0 and curve["share"].iloc[-1] == pytest.approx(1)
    # at the end every row is contacted: the Qini curve meets the random line
    assert curve["qini"].iloc[-1] == pytest.approx(curve["random"].iloc[-1])


def test_qini_matches_the_hand_computed_definition():
    # ranked rows: (y, t) and unit weights
    y = np.array([1, 0, 1, 0, 0, 1.0])
    t = np.array([1, 0, 1, 1, 0, 0.0])
    score = np.arange(6)[::-1].astype(float)
    res = uplift_evaluation(y, t, np.ones(6), score, draws=5, points=201)
    c = res["curve"].set_index("share")
    # top half (3 rows): treated 2 with 2 buyers, control 1 with 0: Q = 2 - 0 * 2 / 1 = 2
    assert c.loc[0.5, "qini"] == pytest.approx(2 / 6)
    # the top 30% (2 rows: one treated buyer, one control non-buyer): uplift = 1/1 - 0/1
    assert res["uplift_at_30"]["mean"] == pytest.approx(1.0)


def test_weights_stand_for_repeated_rows():
    x, t, y = _trial(4_000, seed=3)
    dup = uplift_evaluation(np.r_[y, y], np.r_[t, t], np.ones(2 * len(x)), np.r_[x, x],
                            draws=5)
    wtd = uplift_evaluation(y, t, np.full(len(x), 2.0), x, draws=5)
    assert wtd["qini_coefficient"]["mean"] == pytest.approx(dup["qini_coefficient"]["mean"],
                                                             rel=0.02)


def test_evaluation_needs_both_arms():
    with pytest.raises(ValueError, match="treated and untreated"):
        uplift_evaluation(np.ones(3), np.ones(3), np.ones(3), np.arange(3.0))


def test_budget_curve_accumulates_in_order_of_expected_gain_and_stops_at_the_cost():
    rng = np.random.default_rng(0)
    gains = np.array([50.0, -10.0, 20.0, 5.0])
    draws = gains + rng.normal(0, 1, (400, 4))
    curve = budget_curve(draws, contact_cost=10.0)
    assert list(curve["client"]) == [0, 2, 3, 1]
    assert curve["cumulative_mean"].iloc[0] == pytest.approx(40, abs=0.5)
    assert stop_point(curve) == 2  # 50 and 20 pay for a contact of 10; 5 and -10 do not
    assert curve["cumulative_mean"].idxmax() == 1  # the cumulative gain peaks there
    assert (curve["cumulative_low"] <= curve["cumulative_mean"]).all()
    assert isinstance(curve, pd.DataFrame) and curve["rank"].tolist() == [1, 2, 3, 4]


def test_budget_curve_in_blocks_equals_the_whole_array_and_reads_at_most_a_block():
    rng = np.random.default_rng(1)
    draws = rng.normal(0, 5, (250, 1_003)) + rng.normal(3, 4, 1_003)
    whole = budget_curve(draws, contact_cost=2.0)
    widths = []

    def gain(idx: np.ndarray) -> np.ndarray:
        widths.append(len(idx))
        return draws[:, idx]

    blocked = budget_curve(gain, contact_cost=2.0, clients=1_003, block=100)
    pd.testing.assert_frame_equal(blocked, whole)  # exactly: the same additions in order
    assert max(widths) == 100 and sum(widths) == 2 * 1_003
    with pytest.raises(ValueError, match="number of clients"):
        budget_curve(gain)


@pytest.mark.parametrize("n", [1, 2, 7, 250, 1001])
def test_draw_quantiles_are_numpys_linear_quantiles(n):
    rng = np.random.default_rng(n)
    draws = rng.standard_normal((n, 40, 3)) * 1e3
    for q in ([0.03, 0.97], [0.0, 1.0], 0.5, [0.25]):
        got = draw_quantiles(draws, q)
        want = np.quantile(draws, q, axis=0)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_draw_quantiles_reject_no_draws_and_quantiles_outside_0_1():
    with pytest.raises(ValueError, match="no draws"):
        draw_quantiles(np.zeros((0, 3)), [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        draw_quantiles(np.zeros((5, 3)), [0.03, 1.5])
