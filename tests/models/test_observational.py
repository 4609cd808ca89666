import numpy as np
import pandas as pd
import pytest

from models.observational import (
    CHECK_COLUMNS,
    doubly_robust_att,
    observational_check,
    overlap_summary,
    placebo_bias_bound,
    treatment_propensity,
)


def _confounded(seed: int = 0, n: int = 30_000) -> tuple[pd.DataFrame, float]:
    """Treatment picked on pre-period orders, which also drive buying; planted ATT."""
    rng = np.random.default_rng(seed)
    pre = rng.poisson(0.7, n)
    t = rng.random(n) < 1 / (1 + np.exp(-(-3 + 1.2 * pre)))
    base = 1 / (1 + np.exp(-(-0.5 + 0.6 * pre)))
    lift = 1 / (1 + np.exp(-(-0.5 + 0.6 * pre + 0.5))) - base
    y = rng.random(n) < base + t * lift
    df = pd.DataFrame({"treated": t, "converted": y, "pre_orders": pre,
                       "pre_revenue": pre * 2500.0, "city": "1", "cluster": "0",
                       "age_band": "25-34", "gender": rng.integers(0, 2, n).astype(float),
                       "higher_education": 0.0})
    return df, float(lift[t].mean())


def test_doubly_robust_att_recovers_a_confounded_effect():
    df, truth = _confounded()
    naive = df[df.treated].converted.mean() - df[~df.treated].converted.mean()
    e = treatment_propensity(df)
    att = doubly_robust_att(df, "converted", e, binary=True)
    assert att["hdi_low"] < truth < att["hdi_high"]
    assert abs(naive - truth) > 3 * att["se"]  # the naive difference is off
    ov = overlap_summary(e, df.treated.to_numpy())
    assert ov["ok"] and ov["treated_above_95"] < 0.05


def test_no_effect_gives_an_interval_around_zero():
    df, _ = _confounded(seed=1)
    rng = np.random.default_rng(2)
    df["converted"] = rng.random(len(df)) < 0.3 + 0.1 * (df.pre_orders > 0)
    att = doubly_robust_att(df, "converted", treatment_propensity(df), binary=True)
    assert att["hdi_low"] < 0 < att["hdi_high"]


def test_placebo_bias_bound_carries_the_placebo_interval_over_to_the_window():
    # placebo: +0.8 points (0.03 to 1.57) on a placebo conversion of 31%; in the window
    # the treated convert at 96%: the farthest end, 1.57 / 31 of buying, is 4.86 points
    pl = {"mean": 0.008, "hdi_low": 0.0003, "hdi_high": 0.0157, "treated_mean": 0.31}
    assert placebo_bias_bound(pl, 0.96) == pytest.approx(0.0157 / 0.31 * 0.96)
    # a negative placebo: its farthest end from 0 is the lower one
    neg = {**pl, "hdi_low": -0.03, "hdi_high": -0.001}
    assert placebo_bias_bound(neg, 0.5) == pytest.approx(0.03 / 0.31 * 0.5)
    assert placebo_bias_bound({**pl, "treated_mean": 0.0}, 0.96) is None


def test_observational_check_reads_only_its_declared_columns():
    # the uplift step hands the cross-check's process only CHECK_COLUMNS (a smaller
    # pickle and worker): the result must be the one on the whole frame
    df, _ = _confounded(seed=3, n=4_000)
    rng = np.random.default_rng(4)
    df = df.assign(revenue=df.converted * 3000.0, items=df.converted * 2.0,
                   placebo_pre_orders=rng.poisson(0.4, len(df)),
                   placebo_pre_revenue=rng.gamma(2.0, 900.0, len(df)),
                   placebo_orders=rng.poisson(0.3, len(df)),
                   unrelated=rng.normal(size=len(df)), group="x")
    full = observational_check(df, 0)
    only = observational_check(df[CHECK_COLUMNS], 0)
    np.testing.assert_array_equal(full.pop("_e"), only.pop("_e"))
    assert full == only
    with pytest.raises(KeyError):
        observational_check(df[CHECK_COLUMNS[1:]], 0)
