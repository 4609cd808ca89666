import numpy as np
import pandas as pd
import pytest

from models.campaign_design import diagnose_design, e_value, lee_bounds


def _store(control_picked_among_buyers: bool, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 40_000
    pre = rng.poisson(0.6, n)
    converted = rng.random(n) < 0.5 + 0.1 * np.minimum(pre, 3)
    group = np.array(["untreated"] * n, dtype=object)
    group[:5000] = "treated"
    if control_picked_among_buyers:
        buyers = np.flatnonzero(converted[5000:]) + 5000
        group[rng.choice(buyers, 5000, replace=False)] = "control"
    else:
        group[5000:10000] = "control"
    return pd.DataFrame({"group": group, "converted": converted, "pre_orders": pre,
                         "pre_revenue": pre * 3000.0, "age": rng.integers(18, 70, n),
                         "gender": rng.integers(0, 2, n), "higher_education":
                         rng.integers(0, 2, n)})


def test_control_picked_among_buyers_is_not_the_primary_comparison():
    v = diagnose_design(_store(True))
    assert v.control_selected_on_outcome and not v.control_valid_for_conversion
    assert v.primary == "whole store" and "picked among buyers" in v.sentence()


def test_control_of_clients_who_never_bought_is_not_the_primary_comparison():
    df = _store(False)
    never = np.flatnonzero(~df["converted"].to_numpy()[10_000:]) + 10_000
    df.loc[df["group"] == "control", "group"] = "untreated"
    df.loc[never[:3000], "group"] = "control"
    v = diagnose_design(df)
    assert v.control_selected_on_outcome and v.primary == "whole store"
    assert "did not buy" in v.sentence() and "also" not in v.sentence().split(".")[2]


def test_random_control_is_valid():
    v = diagnose_design(_store(False))
    assert v.control_valid_for_conversion and v.primary == "control file"
    assert set(v.balance["covariate"]) >= {"pre_orders", "pre_revenue", "age"}


def test_empty_treated_group_is_a_clear_error():
    df = _store(False)
    df.loc[df.group == "treated", "group"] = "untreated"
    with pytest.raises(ValueError, match="treated group is empty"):
        diagnose_design(df)


def test_control_file_without_store_clients_says_so():
    df = _store(False)
    df.loc[df.group == "control", "group"] = "untreated"
    v = diagnose_design(df)
    assert v.primary == "whole store" and "no client of the store" in v.sentence()


def test_lee_bounds_trim_the_group_with_more_buyers():
    y_t = np.arange(1, 101, dtype=float)  # 100 buyers of 100
    y_c = np.arange(1, 81, dtype=float)  # 80 buyers of 100
    b = lee_bounds(y_t, y_c, 100, 100)
    assert b["trimmed_group"] == "treated" and b["trim_share"] == pytest.approx(0.2)
    assert b["lower"] == pytest.approx(np.arange(1, 81).mean() - y_c.mean())
    assert b["upper"] == pytest.approx(np.arange(21, 101).mean() - y_c.mean())
    assert b["lower"] <= b["naive"] <= b["upper"]
    with pytest.raises(ValueError, match="buyers in both groups"):
        lee_bounds(y_t, np.array([]), 100, 100)


def test_e_value_matches_vanderweele_ding():
    assert e_value(1.0) == 1.0
    assert e_value(2.0) == pytest.approx(2 + np.sqrt(2))
    assert e_value(0.5) == pytest.approx(e_value(2.0))


def test_sample_ratio_mismatch_makes_the_control_file_invalid():
    """A random control that lost 80% of its clients (ids unknown to the client tables):
    balanced, converting like the store, but not the planned size: not used."""
    df = _store(False)
    control = np.flatnonzero(df["group"].to_numpy() == "control")
    df.loc[control[1000:], "group"] = "untreated"
    ids = {"treated_ids": 5000, "control_ids": 5000, "dropped_unknown_treated": 0,
           "dropped_unknown_control": 4000}
    v = diagnose_design(df, ids)
    assert v.srm is not None and v.srm["mismatch"]
    assert not v.control_valid_for_conversion and v.primary == "whole store"
    assert v.control_problems == ["sample-ratio mismatch (5,000 treated vs 1,000 control "
                                  f"clients, p = {v.srm['p_value']:.2g})"]
    assert "4,000 control" in v.sentence()
    # the same control with its planned size is valid
    assert diagnose_design(_store(False), {**ids, "dropped_unknown_control": 0}
                           ).control_valid_for_conversion


def test_control_file_of_unknown_ids_says_why_it_is_empty():
    df = _store(False)
    df.loc[df["group"] == "control", "group"] = "untreated"
    v = diagnose_design(df, {"treated_ids": 5000, "control_ids": 5000,
                             "dropped_unknown_treated": 0, "dropped_unknown_control": 5000})
    assert v.primary == "whole store"
    assert v.control_problems == ["control file empty: none of its 5,000 ids is a client"]
    assert "none of its 5,000 ids is a client of the store" in v.sentence()
