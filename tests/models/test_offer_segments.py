import numpy as np
import pandas as pd
import pytest

from models.offer_segments import (
    AT_RISK_CART,
    AT_RISK_HIGH,
    AT_RISK_LOW,
    STABLE_HIGH,
    STABLE_LOW,
    SegmentRules,
    assign_segments,
    offers,
    profile_segments,
    profit_at_risk,
)

NUMERIC = ["promo_share", "unpaid_items", "pages_per_visit", "marketing_6m"]


def _frame(n=400, seed=0):
    rng = np.random.default_rng(seed)
    f = pd.DataFrame({
        "profit": rng.normal(4, 1, n), "promo_share": rng.uniform(0, 1, n),
        "unpaid_items": rng.integers(0, 8, n).astype(float),
        "pages_per_visit": rng.integers(2, 15, n).astype(float),
        "marketing_6m": rng.normal(4, 1, n), "service": rng.choice(["стандарт", "премиум"], n),
        "consent": rng.choice(["да", "нет"], n), "category": rng.choice(["A", "B"], n),
    })
    f["declined"] = (rng.random(n) < 0.4).astype(int)
    return f


def test_rules_are_applied_in_order():
    f = pd.DataFrame({"profit": [5, 5, 1, 5, 1], "promo_share": [0.9, 0.1, 0.1, 0.9, 0.9],
                      "unpaid_items": [9, 9, 9, 9, 9]})
    p = np.array([0.9, 0.9, 0.9, 0.1, 0.1])
    seg, thr = assign_segments(f, p, SegmentRules(profit_quantile=0.4, unpaid_quantile=0.5))
    assert seg.tolist() == [AT_RISK_CART, AT_RISK_HIGH, AT_RISK_LOW, STABLE_HIGH, STABLE_LOW]
    assert thr["p_decline"] == 0.5
    with pytest.raises(ValueError, match="probabilities"):
        assign_segments(f, p[:3])


def test_offers_come_from_the_segment_numbers():
    f = _frame()
    p = np.where(f["pages_per_visit"] < 6, 0.9, 0.1)  # at risk = few pages per visit
    seg, _ = assign_segments(f, p)
    prof, smd = profile_segments(f, seg, p, NUMERIC)
    o = offers(f, seg, smd, prof)
    risk = o[o["segment"].str.startswith("at risk")]
    assert (risk["feature"] == "pages_per_visit").any()
    line = risk[risk["feature"] == "pages_per_visit"]["offer"].iloc[0]
    m = (seg == risk[risk["feature"] == "pages_per_visit"]["segment"].iloc[0]).to_numpy()
    assert f"{f.loc[m, 'pages_per_visit'].mean():.1f} pages per visit" in line
    stable = o[o["segment"].str.startswith("stable")]
    assert stable["offer"].str.startswith("no retention offer").all()


def test_profit_at_risk_interval_brackets_the_mean():
    f = _frame()
    rng = np.random.default_rng(1)
    draws = rng.uniform(0, 1, (200, len(f)))
    seg, _ = assign_segments(f, draws.mean(axis=0))
    par = profit_at_risk(f["profit"].to_numpy(), draws, seg)
    assert (par["profit_at_risk_low"] <= par["profit_at_risk"]).all()
    assert (par["profit_at_risk"] <= par["profit_at_risk_high"]).all()
    total = (draws.mean(axis=0) * f["profit"]).sum()
    assert par["profit_at_risk"].sum() == pytest.approx(total)
