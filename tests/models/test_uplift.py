import numpy as np
import pandas as pd
import pytest

from models import uplift as U
from models.compiled import uncacheable_constants
from tests.conftest import demo_store_frame


def test_beta_binomial_matches_the_conjugate_posterior():
    r = U.beta_binomial_ab(60, 100, 50, 100, draws=200_000, seed=1)
    assert r["treated_rate"]["mean"] == pytest.approx(61 / 102, abs=2e-3)
    assert r["control_rate"]["mean"] == pytest.approx(51 / 102, abs=2e-3)
    assert 0.9 < r["p_treatment_better"] < 0.95
    assert r["expected_loss"]["launch"] < r["expected_loss"]["stop"]


def test_group_with_zero_conversions_gives_finite_answers():
    r = U.beta_binomial_ab(0, 50, 5, 50)
    assert np.isfinite(r["uplift_abs"]["mean"]) and r["p_treatment_better"] < 0.05


def test_empty_group_is_a_clear_error():
    with pytest.raises(ValueError, match="a group is empty"):
        U.beta_binomial_ab(0, 0, 5, 50)


def test_sample_ratio_mismatch_detected():
    from models.campaign_design import sample_ratio_mismatch

    assert not sample_ratio_mismatch(5000, 5000)["mismatch"]
    assert sample_ratio_mismatch(5000, 4500)["mismatch"]


def test_standardized_mean_differences_flag_imbalance():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"treated": np.repeat([True, False], 500),
                       "same": rng.normal(size=1000),
                       "shifted": np.r_[rng.normal(0.5, 1, 500), rng.normal(0, 1, 500)]})
    smd = U.standardized_mean_differences(df, ["same", "shifted"]).set_index("covariate")
    assert not smd.loc["same", "imbalanced"] and smd.loc["shifted", "imbalanced"]


def test_selection_on_outcome_warns_when_a_group_all_bought():
    assert U.selection_on_outcome({"treated": 0.974, "control": 1.0})[0].startswith("control")


def test_city_with_one_client_is_pooled_not_dropped():
    df = pd.DataFrame({"city": ["a"] * 40 + ["b"], "treated": [True, False] * 20 + [True],
                       "converted": [True] * 41, "revenue": [100.0] * 41,
                       "pre_bought": [False] * 41})
    pooled, small = U.pool_small_cities(df, 30)
    assert U.pool_small_cities(df, 30, counted=df["treated"])[1] == ["a", "b"]
    assert small == ["b"] and (pooled["city"] == "other").sum() == 1
    cells = U.to_cells(pooled)
    assert cells["n"].sum() == 41 and cells["y"].sum() == 41


def test_city_cap_keeps_the_largest_cities_and_the_kept_ones():
    df = pd.DataFrame({"city": ["a"] * 50 + ["b"] * 40 + ["c"] * 40 + ["d"] * 35 + ["e"] * 5})
    pooled, small = U.pool_small_cities(df, 30, max_cities=2)
    # b and c tie at 40: the smaller label keeps its level; e is pooled by the minimum
    assert small == ["c", "d", "e"]
    assert sorted(pooled["city"].unique()) == ["a", "b", "other"]
    _, small = U.pool_small_cities(df, 30, keep=["e"], max_cities=1)
    assert small == ["b", "c", "d"]
    assert U.pool_small_cities(df, 30, max_cities=10)[1] == U.pool_small_cities(df, 30)[1]


def test_profit_formula_is_zero_without_discount_and_equal_arpu():
    assert U.profit_per_treated(np.array([100.0]), np.array([100.0]), 0.3, 0.0)[0] == (
        pytest.approx(0.0, abs=1e-9))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """The randomized demo's two id files (treated and control file) and its truth."""
    from analysis.demo.store import DemoSpec

    df, truth = demo_store_frame(tmp_path_factory.mktemp("c1"),
                                 DemoSpec(clients=25_000, seed=21, design="randomized"))
    return df[df["group"] != "untreated"].reset_index(drop=True), truth


def test_cells_are_exact_sufficient_statistics(campaign):
    df, _ = campaign
    cells = U.to_cells(U.pool_small_cities(df, 30)[0])
    assert cells["n"].sum() == len(df) and cells["y"].sum() == df["converted"].sum()
    buyers = df[df.converted & (df.revenue > 0)]
    assert cells["s1"].sum() == pytest.approx(np.log(buyers.revenue).sum())


# slow (43 s): the fast suite keeps the whole-store recovery test below; `make test-slow`
@pytest.mark.slow
def test_hierarchical_fit_recovers_overall_effect(campaign):
    df, truth = campaign
    att = truth["att"]
    m = U.HierarchicalUplift(sampler_config={"draws": 400, "tune": 400, "chains": 2},
                             seed=3).fit(df)
    eff = m.effects(0.35, 0.15)
    assert eff.notna().all().all()
    row = eff.iloc[0]
    # randomized design: the effect on the treated from the potential outcomes is covered
    for name, key in (("conversion_uplift", "conversion"), ("items_uplift", "items_per_client")):
        assert row[f"{name}_hdi_low"] < att[key] < row[f"{name}_hdi_high"], name
    closed = U.beta_binomial_ab(int(df[df.treated].converted.sum()), int(df.treated.sum()),
                                int(df[~df.treated].converted.sum()), int((~df.treated).sum()))
    # the two answers agree on the overall conversion uplift (within 1.5 points)
    assert abs(eff.iloc[0]["conversion_uplift_mean"] - closed["uplift_abs"]["mean"]) < 0.015
    assert set(m.effects(0.35, 0.15, by="cluster")["level"]) == {"0", "1", "2", "3"}
    # the effects summed over blocks of a few cells equal those of one block of all cells
    assert len(m._treated_cells()) > 3 * 7
    m.CELL_BLOCK = 7
    by_city = m.effects(0.35, 0.15, by="city")
    m.CELL_BLOCK = 10**6
    pd.testing.assert_frame_equal(by_city, m.effects(0.35, 0.15, by="city"), rtol=1e-12)
    text = U.recommend(eff.iloc[0], m.effects(0.35, 0.15, by="city"),
                       m.effects(0.35, 0.15, by="cluster"), 0.35, 0.15)
    assert "Recommendation:" in text and "points" in text and "control file" in text
    # posterior predictive by cluster: the model reproduces its own groups ...
    groups = m.posterior_predictive_groups("cluster")
    assert len(groups) == 8 and set(groups["arm"]) == {"treated", "control"}
    assert groups["inside"].sum() >= 7
    assert groups["clients"].sum() == len(df)
    ax = m.plot_posterior_predictive("cluster")
    assert len(ax.get_yticklabels()) == 4
    # ... and flags a group whose observed conversion the model did not see
    cells = m.cells_.copy()
    hit = (m.cells_["cluster"].astype(str) == "0") & m.cells_["treated"]
    m.cells_.loc[hit, "y"] = m.cells_.loc[hit, "n"]
    flagged = m.posterior_predictive_groups("cluster")
    m.cells_ = cells
    bad = flagged[(flagged["level"] == "0") & (flagged["arm"] == "treated")]
    assert not bad["inside"].item()


@pytest.fixture(scope="module")
def store_design(tmp_path_factory):
    """The store-design demo (25,000 clients): a control file picked among buyers."""
    from analysis.demo.store import DemoSpec

    return demo_store_frame(tmp_path_factory.mktemp("store"), DemoSpec(clients=25_000, seed=22))


def test_the_control_file_gets_the_sign_wrong_and_the_design_check_says_so(store_design):
    """Store design: the control file (all bought) makes the email look harmful; the
    design check finds the control selected on the outcome and turns to the whole store
    (the model's recovery of the planted effect there: the slow test below)."""
    from models.campaign_design import diagnose_design

    df, truth = store_design
    v = diagnose_design(df)
    assert v.primary == "whole store" and v.control_selected_on_outcome
    campaign = df[df.group != "untreated"]
    naive = (campaign[campaign.treated].converted.mean()
             - campaign[~campaign.treated].converted.mean())
    assert naive < 0 < truth["att"]["conversion"]


@pytest.mark.slow
def test_whole_store_comparison_gets_the_planted_sign_where_the_control_file_does_not(
        store_design):
    """Store design: the whole store, adjusted for pre-period behaviour, recovers the
    planted effect on the treated (81 s under xdist, most of it compiling the model)."""
    df, truth = store_design
    att = truth["att"]
    # the pipeline's way of sampling (low-rank mass matrix, draws sized by the checks):
    # converged here in 13 s of sampling where 400 fixed draws failed and were rerun (21 s)
    m = U.HierarchicalUplift(sampler_config={"draws": 1000, "tune": 500, "chains": 2,
                                             "low_rank": True, "target_accept": 0.95,
                                             "min_draws": 300}, seed=3).fit(df)
    row = m.effects(0.35, 0.15).iloc[0]
    # measured: the adjusted estimate sits about 1 point above the planted ATT (13.2
    # points) on this seed; its HDI does not always cover it (see the closing note)
    assert abs(row["conversion_uplift_mean"] - att["conversion"]) < 0.02
    assert row["conversion_uplift_p_positive"] > 0.99
    # revenue per client: the gamma mean, no log-normal variance correction to bias it
    assert row["arpu_uplift_hdi_low"] < att["revenue_per_client"] < row["arpu_uplift_hdi_high"]
    # cells, not rows; comparison clients at pre-period levels no treated client has are
    # left out (common support of the ATT)
    assert m.outside_support_ > 0
    assert m.cells_["n"].sum() + m.outside_support_ == len(df)
    assert len(m.cells_) < len(df) / 5


def test_one_city_one_cluster_one_age_band_drop_their_terms(campaign):
    """Campaign 1 run in a single city, with one cluster and one age band (issue: a
    reshape error after sampling): those terms leave the model, the effects remain."""
    df, truth = campaign
    one = df.assign(city=df["city"].iloc[0], cluster=0, age_band="35-44")
    m = U.HierarchicalUplift(sampler_config={"draws": 300, "tune": 300, "chains": 2},
                             seed=4).fit(one)
    # every array of the cells reaches the compiled code as data, none as a constant
    # Numba would reach through a process address (the spend sums were columns of the
    # cells' 2-D float block): the code is kept, and a rerun loads it
    assert uncacheable_constants(m.model_) == []
    post = m.idata_.posterior
    for name in ("city_z", "tau_city_z", "cluster_effect", "age_effect", "spend_city"):
        assert name not in post, name
    eff = m.effects(0.35, 0.15)
    assert eff.notna().all().all()
    assert eff.iloc[0]["conversion_uplift_hdi_low"] < truth["att"]["conversion"] \
        < eff.iloc[0]["conversion_uplift_hdi_high"]
    by_city = m.effects(0.35, 0.15, by="city")
    assert len(by_city) == 1 and by_city.iloc[0]["treated_clients"] == int(one.treated.sum())
    assert len(m.posterior_predictive_groups("cluster")) == 2
