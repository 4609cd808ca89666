"""Propensity model: cells are exact, parameters are recovered, awkward input is handled."""

import numpy as np
import pandas as pd
import pytest

from models.propensity import (
    PropensityModel,
    category_features,
    client_category_cells,
    simulate_cells,
)
from models.propensity_eval import calibration_table, holdout_metrics, top_share_lift


def test_cells_count_clients_and_buyers_exactly():
    clients = pd.DataFrame({"id": [1, 2, 3, 4], "city": ["a", "a", "a", "b"],
                            "cluster": ["0"] * 4, "gender": ["1", "1", "1", "0"],
                            "contacted": [True, True, True, False]})
    purchases = pd.DataFrame({"id": [1, 1, 2, 3, 4], "dt": [0, 6, 7, 20, 5],
                              "category": ["x", "x", "x", "x", "y"]})
    cells = client_category_cells(clients, purchases, (5, 16), ["x", "y", "z"])
    assert cells["n"].sum() == 4 * 3  # every client once per category
    a_x = cells[(cells.city == "a") & (cells.category == "x")].set_index("history")
    assert a_x.loc[True, "n"] == 1 and a_x.loc[True, "k"] == 1  # client 1: before and in
    assert a_x.loc[False, "n"] == 2 and a_x.loc[False, "k"] == 1  # client 2 in, 3 after
    assert cells[cells.category == "z"]["k"].sum() == 0  # a category never bought: k = 0


@pytest.fixture(scope="module")
def fitted():
    cells, cats, truth = simulate_cells(seed=1)
    m = PropensityModel(sampler_config={"draws": 1500, "tune": 1000}, seed=1).fit(cells, cats)
    return m, cells, cats, truth


def test_planted_coefficients_are_recovered(fitted, capsys):
    m, _, _, truth = fitted
    assert m.convergence_.ok, m.convergence_.problems
    post = m.idata_.posterior
    inside = {}
    for name in ("mu_a", "mu_history", "mu_tau", "sigma_city"):
        d = post[name].values.ravel()
        lo, hi = np.quantile(d, [0.03, 0.97])
        inside[name] = bool(lo < truth[name] < hi)
    th = post["theta"].values.reshape(-1, 2)
    lo, hi = np.quantile(th, [0.03, 0.97], axis=0)
    inside["theta"] = bool(((lo < truth["theta"]) & (truth["theta"] < hi)).all())
    cover = {}
    for name in ("a", "tau_cat", "history_cat", "gender_cat"):
        d = post[name].values.reshape(-1, len(m.categories_))
        lo, hi = np.quantile(d, [0.03, 0.97], axis=0)
        order = [int(c.removeprefix("cat")) for c in m.categories_]
        t = np.asarray(truth[name])[order]
        cover[name] = float(((lo < t) & (t < hi)).mean())
    with capsys.disabled():
        print(f"\n  propensity recovery: {inside}; per-category coverage {cover}")
    assert all(inside.values()), inside
    assert np.mean(list(cover.values())) >= 0.8


def test_prediction_handles_new_city_and_unknown_cluster_but_not_new_category(fitted):
    m, cells, _, _ = fitted
    row = cells.iloc[[0]].copy()
    known = m.predict(row)
    row["city"] = "never seen"
    row["cluster"] = "no history"
    new = m.predict(row)
    assert np.isfinite(new).all() and new.std() > known.std()  # wider, not a crash
    row["category"] = "surfboards"
    with pytest.raises(ValueError, match="surfboards"):
        m.predict(row)
    up = m.predict(row.assign(category=m.categories_[0]), contacted=True) - m.predict(
        row.assign(category=m.categories_[0]), contacted=False)
    assert up.shape == (1000, 1)  # at most 1,000 posterior draws are used


def test_prior_predictive_is_plausible(fitted):
    pp = fitted[0].prior_predictive(draws=200)
    assert pp["propensity"]["mean"] < 0.3 and pp["share_above_50_percent"] < 0.15


def test_weighted_metrics_equal_row_level_metrics():
    from sklearn.metrics import log_loss, roc_auc_score

    cells = pd.DataFrame({"n": [10, 5, 8], "k": [3, 0, 8]})
    p = np.array([0.3, 0.1, 0.9])
    y = np.r_[np.ones(3), np.zeros(7), np.zeros(5), np.ones(8)]
    pr = np.r_[np.full(10, 0.3), np.full(5, 0.1), np.full(8, 0.9)]
    m = holdout_metrics(cells, p)
    assert np.isclose(m["roc_auc"], roc_auc_score(y, pr))
    assert np.isclose(m["log_loss"], log_loss(y, pr))
    assert m["rows"] == 23 and np.isclose(m["base_rate"], 11 / 23)
    tab = calibration_table(cells, p, bins=3)
    assert np.isclose(tab["rows"].sum(), 23)
    # top 8 of 23 rows are the p = 0.9 cell (all buyers): lift = 1 / (11 / 23)
    assert np.isclose(top_share_lift(np.r_[1.0, 0.0, 0.0], np.r_[8, 10, 5.0],
                                     np.r_[0.9, 0.3, 0.1], 8 / 23), 23 / 8)


def test_category_features_standardise_price_and_sale_share():
    p = pd.DataFrame({"category": ["a", "a", "b", "c"], "revenue": [100, 300, 5000, 50],
                      "base_sale": [1, 0, 0, 1]})
    t = category_features(p).set_index("category")
    assert t.loc["a", "median_price"] == 200 and t.loc["c", "sale_share"] == 1
    assert np.isclose(t["log_price"].mean(), 0)


def test_predict_mean_in_chunks_equals_the_mean_of_the_draws(fitted):
    m, cells, _, _ = fitted
    rows = cells.iloc[:257].copy()
    rows.loc[rows.index[:3], "city"] = "never seen"  # the fresh city draw is the same per chunk
    expected = m.predict(rows, contacted=True).mean(axis=0)
    np.testing.assert_allclose(m.predict_mean(rows, contacted=True, chunk=50), expected,
                               rtol=0, atol=1e-12)


def test_posterior_predictive_check_counts_every_cell(fitted):
    m = fitted[0]
    ppc = m.posterior_predictive_check()
    assert ppc["observed_total"] == int(m.cells_["k"].sum())
    # the replicated buyers are close to the observed ones when the model fits its cells
    assert abs(ppc["replicated_total_mean"] / ppc["observed_total"] - 1) < 0.05
