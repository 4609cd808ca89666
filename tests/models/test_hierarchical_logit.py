import numpy as np
import pytest

from models.hierarchical_logit import HierarchicalLogit, simulate
from models.sampling import SamplerSettings

NUMERIC = ["x0", "x1", "x2", "x3"]


def _model(draws=1500):
    return HierarchicalLogit(NUMERIC, ["category", "service"], {"flag": "да"},
                             sampler=SamplerSettings(draws=draws, tune=800))


@pytest.fixture(scope="module")
def fitted():
    X, y, truth = simulate(1500, seed=3)
    return _model().fit(X, y, seed=1), X, y, truth


def test_fit_converges_and_recovers_signs(fitted):
    m, X, y, truth = fitted
    assert m.convergence_.ok, m.convergence_.problems
    c = m.coefficients().set_index("feature")
    for f, b in truth["beta"].items():
        if abs(b) > 0.4:
            assert np.sign(c.loc[f, "mean"]) == np.sign(b), f
    assert c.loc["flag", "per"] == "flag = да"


def test_predictions_and_unseen_level(fitted):
    m, X, y, _ = fitted
    p = m.predict_proba(X)[:, 1]
    assert p.shape == (len(X),) and ((p > 0) & (p < 1)).all()
    new = X.head(50).assign(category="never seen")
    with pytest.warns(UserWarning, match="never seen"):
        d_new = m.predict_draws(new)
    d_old = m.predict_draws(X.head(50))
    # the unseen level carries the between-level uncertainty: wider intervals
    assert d_new.std(axis=0).mean() > d_old.std(axis=0).mean()


def test_checks_priors_and_posterior_predictive(fitted):
    m, X, y, _ = fitted
    pp = m.prior_predictive(X)
    assert 0 < pp["mean_rate_low_94"] < 0.5 < pp["mean_rate_high_94"] < 1
    ppc = m.posterior_predictive(X, y, "category")
    assert ppc["inside"].mean() >= 0.8


def test_bad_input():
    X, y, _ = simulate(200, seed=0)
    with pytest.raises(ValueError, match="missing column"):
        _model().fit(X.drop(columns=["x1"]), y)
    with pytest.raises(ValueError, match="0/1"):
        _model().fit(X, y + 1)


def test_compiled_once_refits_on_other_rows():
    from models.sampling import reset_log, summarize_log

    X, y, _ = simulate(800, seed=2)
    m = _model(draws=400)
    reset_log()
    sampler = m.compile(X, y)
    a = m.fit(X.iloc[:600], y[:600], seed=1, sampler=sampler).coefficients()
    b = m.fit(X.iloc[200:], y[200:], seed=1, sampler=sampler).coefficients()
    assert not np.allclose(a["mean"], b["mean"])
    again = m.fit(X.iloc[200:], y[200:], seed=1, sampler=sampler).coefficients()
    assert np.allclose(b["mean"], again["mean"])  # same seed, same numbers
    # one compilation, three sampling runs, each fit's checks recorded for the run log
    log = summarize_log()
    assert (log["compiles"], log["runs"], log["checked_fits"]) == (1, 3, 3)
    assert 0 < log["min_ess_bulk"] <= m.convergence_.min_ess_bulk


@pytest.mark.slow
def test_parameter_recovery_over_seeds():
    """94% HDIs of the coefficients and category contrasts cover the truth at roughly the
    nominal rate over seeds."""
    hits, contrast_hits = [], []
    for seed in range(4):
        X, y, truth = simulate(2500, seed=10 + seed)
        m = _model(draws=1500).fit(X, y, seed=seed)
        assert m.convergence_.ok, m.convergence_.problems
        c = m.coefficients().set_index("feature")
        for f, b in truth["beta"].items():
            hits.append(c.loc[f, "hdi_low"] <= b <= c.loc[f, "hdi_high"])
        u = m._draws("u_category")
        levels = m.levels_["category"]
        t = np.array([truth["u"]["category"][lv] for lv in levels])
        d, td = u[:, 1:] - u[:, [0]], t[1:] - t[0]
        lo, hi = np.quantile(d, [0.03, 0.97], axis=0)
        contrast_hits += list((lo <= td) & (td <= hi))
    print(f"\n  hierarchical logit recovery: coefficient coverage {np.mean(hits):.2f} "
          f"({len(hits)}), category contrast coverage {np.mean(contrast_hits):.2f} "
          f"({len(contrast_hits)})")
    assert np.mean(hits) >= 0.8 and np.mean(contrast_hits) >= 0.8
