"""Propensity model: planted parameters are recovered, the case-control offset is exact,
awkward input is handled, and the held-out metrics equal their row-level versions."""

import numpy as np
import pandas as pd
import pytest

from models.propensity import (
    PropensityModel,
    category_features,
    client_features,
    negative_weights,
    simulate_rows,
)
from models.propensity_eval import calibration_table, holdout_metrics, top_share_lift


@pytest.fixture(scope="module")
def fitted():
    rows, cats, truth = simulate_rows(n_clients=3_000, n_categories=6, seed=2)
    m = PropensityModel(sampler_config={"draws": 300, "tune": 300}, seed=2)
    m.fit(rows, cats, truth["feature_scale"])
    return m, rows, cats, truth


def _by_name(m, post, name, truth):
    """HDI coverage of a per-category parameter, matched by category name."""
    import arviz as az

    h = az.hdi(post[name], hdi_prob=0.94)[name].to_pandas()
    t = {f"cat{j}": v for j, v in enumerate(truth[name])}
    return float(np.mean([h.loc[c].iloc[0] <= t[c] <= h.loc[c].iloc[1]
                          for c in m.categories_]))


@pytest.mark.slow
def test_planted_client_and_contact_effects_are_recovered(capsys):
    import arviz as az

    rows, cats, truth = simulate_rows(seed=1)
    m = PropensityModel(sampler_config={"draws": 1000, "tune": 1000}, seed=1)
    m.fit(rows, cats, truth["feature_scale"])
    assert m.convergence_.ok, m.convergence_.problems
    post = m.idata_.posterior
    inside = {}
    for name in ("mu_a", "b_history", "mu_tau", "sigma_tau", "b_cat_items", "beta", "gamma",
                 "theta"):
        h = az.hdi(post[name], hdi_prob=0.94)[name].values.reshape(-1, 2)
        t = np.atleast_1d(truth[name])
        for j, (lo, hi) in enumerate(h):
            inside[f"{name}[{j}]" if len(h) > 1 else name] = bool(lo <= t[j] <= hi)
    cover = {n: _by_name(m, post, n, truth) for n in ("tau_cat", "gender_cat", "a")}
    with capsys.disabled():
        print(f"\n  propensity recovery: {inside}; per-category coverage {cover}")
    # 15 scalars, each inside its 94% HDI with probability 0.94 when the model is right:
    # fewer than 12 inside happens about 1% of the time (one run had beta[0] and gamma[3]
    # just outside, another every one inside)
    assert sum(inside.values()) >= 12, inside
    assert inside["mu_tau"], inside
    # the planted deal-proneness interaction is found with the right sign
    assert float(post["gamma"].sel(client_feature="sale_share").quantile(0.03)) > 0
    assert np.mean(list(cover.values())) >= 0.8


def test_the_case_control_offset_restores_the_buying_rate(fitted):
    m, rows, _, _ = fitted
    hist = rows[rows["has_history"]]
    # buyers are all kept, non-buyers at the negative rate: undone by the weights...
    kept = hist["k"].sum() / len(hist)
    w = negative_weights(hist)
    assert (hist["k"] * 1.0 / 1).sum() / w.sum() < kept
    # ...and by the offset: the model's mean prediction matches the weighted rate
    p = m.predict_mean(hist)
    assert np.average(p, weights=w) == pytest.approx((hist["k"]).sum() / w.sum(), rel=0.1)


def test_prediction_handles_new_city_and_unknown_cluster_but_not_new_category(fitted):
    m, rows, _, _ = fitted
    row = rows.iloc[[0]].copy()
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
    assert up.shape == (min(m.PREDICT_DRAWS, 600), 1)


def test_clients_with_history_get_their_own_scores(fitted):
    m, rows, _, _ = fitted
    hist = rows[rows["has_history"] & (rows["category"] == m.categories_[0])].head(200)
    p = m.predict_mean(hist, contacted=True)
    assert pd.Series(p).round(8).nunique() > 150  # continuous behaviour separates clients
    none = rows[~rows["has_history"]].head(1)
    x = client_features(none)
    assert (x.to_numpy() == 0).all()  # no history: every behaviour feature is 0


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
    # a sampled row stands for 1 / share rows: weight 2 counts it twice
    w2 = holdout_metrics(cells.assign(weight=[2.0, 1.0, 1.0]), p)
    assert w2["rows"] == 33


def test_category_features_standardise_price_and_sale_share():
    p = pd.DataFrame({"category": ["a", "a", "b", "c"], "revenue": [100, 300, 5000, 50],
                      "base_sale": [1, 0, 0, 1]})
    t = category_features(p).set_index("category")
    assert t.loc["a", "median_price"] == 200 and t.loc["c", "sale_share"] == 1
    assert np.isclose(t["log_price"].mean(), 0)


def test_predict_mean_in_chunks_equals_the_mean_of_the_draws(fitted):
    m, rows, _, _ = fitted
    part = rows.iloc[:257].copy()
    part.loc[part.index[:3], "city"] = "never seen"  # the fresh city draw is the same per chunk
    expected = m.predict(part, contacted=True).mean(axis=0)
    np.testing.assert_allclose(m.predict_mean(part, contacted=True, chunk=50), expected,
                               rtol=0, atol=1e-12)
    up = (m.predict(part, contacted=True) - m.predict(part, contacted=False)).mean(axis=0)
    np.testing.assert_allclose(m.predict_uplift_mean(part, chunk=64), up, atol=1e-12)


def test_posterior_predictive_check_counts_every_row(fitted):
    m = fitted[0]
    ppc = m.posterior_predictive_check()
    assert ppc["observed_total"] == int(m.rows_["k"].sum())
    assert abs(ppc["replicated_total_mean"] / ppc["observed_total"] - 1) < 0.05


def test_fit_rejects_rows_without_their_columns(fitted):
    _, rows, cats, _ = fitted
    with pytest.raises(ValueError, match="negative_rate"):
        PropensityModel().fit(rows.drop(columns="negative_rate"), cats)
    with pytest.raises(ValueError, match="outside 0..n"):
        PropensityModel().fit(rows.assign(k=rows["n"] + 1), cats)


def test_meta_learners_survive_pickling_for_a_second_process():
    """The T- and X-learners are fitted in a background process and sent back: pickled
    and restored they predict the same uplift."""
    import pickle

    from models.propensity_eval import meta_learners

    rows, _, _ = simulate_rows(n_clients=1_500, n_categories=4, seed=5)
    e = np.full(len(rows), 0.1)
    params = {"boost__learning_rate": 0.1, "boost__max_leaf_nodes": 15,
              "boost__min_samples_leaf": 40}
    learners = meta_learners(rows, e, params)
    back = pickle.loads(pickle.dumps(learners))
    part = rows.head(200)
    np.testing.assert_array_equal(back.predict_t(part), learners.predict_t(part))
    np.testing.assert_array_equal(back.predict_x(part, e[:200]),
                                  learners.predict_x(part, e[:200]))
    assert np.isfinite(learners.predict_x(part, e[:200])).all()
    with pytest.raises(ValueError, match="contacted and not-contacted"):
        meta_learners(rows.assign(contacted=True), e, params)


def test_the_compiled_model_can_be_kept_for_the_next_run(fitted):
    """Every array of the rows reaches the compiled code as data, none as a constant
    Numba would reach through a process address (a column of the groups' 2-D array
    was one): the code is kept, and a rerun loads it instead of compiling."""
    from models.compiled import uncacheable_constants

    m, _, _, _ = fitted
    assert uncacheable_constants(m.model_) == []


def test_the_compiled_models_key_is_the_same_in_another_process(fitted, tmp_path):
    """Another process builds the same model from the same rows: same key, so a rerun
    loads what this run compiled (the data containers' lengths were unknown to PyTensor,
    whose run-time length checks then compared arrays picked by a set's order: the key
    changed from one process to the next)."""
    import pickle

    from models.compiled import model_key
    from tests.conftest import run_python

    m, rows, cats, truth = fitted
    (tmp_path / "rows.pkl").write_bytes(pickle.dumps((rows, cats, truth["feature_scale"])))
    code = ("import pickle\nfrom models.compiled import model_key\n"
            "from models.propensity import PropensityModel\n"
            f"rows, cats, scale = pickle.loads(open(r'{tmp_path / 'rows.pkl'}', 'rb').read())\n"
            "print(model_key(PropensityModel(seed=2).prepare(rows, cats, scale)))\n")
    run = run_python(code)
    assert run.stdout.strip().splitlines()[-1] == model_key(m.model_)
