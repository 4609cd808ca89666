"""Buy-till-you-die models: cells give the clients' likelihood exactly, the predictions are
the library's formulas under a given posterior, planted parameters are recovered."""

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from models.btyd import (
    BetaGeoCells,
    SpendModel,
    cell_positions,
    check_rfm,
    client_cells,
    hdi_rows,
    purchases_by_frequency,
    rfm_cells,
    simulate_bgnbd,
)
from models.sampling import SamplerSettings


def _posterior(**values):
    """A fake posterior: 2 chains x 3 draws of each value (group dim ``all``)."""
    return az.InferenceData(posterior=xr.Dataset(
        {k: (("chain", "draw", "group"), np.full((2, 3, 1), v)) for k, v in values.items()},
        coords={"group": ["all"]}))


def test_cells_count_clients_and_reject_impossible_histories():
    sim = simulate_bgnbd(500, 30, r=1.0, alpha=5.0, a=1.0, b=4.0, seed=1, whole_days=True)
    sim["cluster"] = np.where(np.arange(500) % 3 == 0, "a", "b")
    cells = rfm_cells(sim, "cluster")
    assert cells["n"].sum() == 500 and len(cells) < 500
    assert set(cells["group"]) == {"a", "b"}
    bad = pd.DataFrame({"frequency": [1, 0, 2], "recency": [5, 3, 40], "T": [10, 10, 30]})
    with pytest.raises(ValueError, match=r"2 impossible .* positions \[1, 2\]"):
        check_rfm(bad)


def test_cell_likelihood_equals_the_clients_likelihood():
    sim = simulate_bgnbd(300, 30, r=1.0, alpha=5.0, a=1.0, b=4.0, seed=2, whole_days=True)
    cells = rfm_cells(sim)
    rows = sim.assign(group="all", n=1)
    point = {"alpha_all_log__": np.log(4.0), "r_all_log__": np.log(0.9),
             "phi_all_interval__": 0.3, "log_kappa_all_interval__": -2.0}
    lp = [BetaGeoCells().build_model(d).compile_logp(vars=None, jacobian=False)(point)
          for d in (cells, rows)]
    assert len(cells) < len(rows)
    assert lp[0] == pytest.approx(lp[1], rel=1e-9)


def test_predictions_follow_the_bgnbd_formulas():
    m = BetaGeoCells()
    m.idata = _posterior(alpha=5.0, r=1.0, a=2.0, b=4.0)
    cells = pd.DataFrame({"group": "all", "frequency": [0, 3, 3], "recency": [0, 29, 5],
                          "T": [30.0, 30.0, 30.0], "n": 1})
    p = m.predict(cells, horizon=10)
    assert p.loc[0, "p_alive"] == pytest.approx(1.0)  # no repeat purchase: no dropout yet
    # x = 0: no purchase in the horizon is the Poisson-gamma zero, ((alpha+T)/(alpha+T+t))^r
    assert p.loc[0, "p_purchase"] == pytest.approx(1 - (35 / 45) ** 1.0)
    # the same frequency with a long silence since the last purchase: less likely alive
    assert p.loc[2, "p_alive"] < p.loc[1, "p_alive"] < 1
    # P(alive | x, t_x, T) of Fader, Hardie and Lee (2005), eq. (A.8)
    a, b, r, alpha, x, tx, T = 2.0, 4.0, 1.0, 5.0, 3, 5.0, 30.0
    odds = a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x)
    assert p.loc[2, "p_alive"] == pytest.approx(1 / (1 + odds), rel=1e-6)
    assert ((p["p_purchase"] > 0) & (p["p_purchase"] < 1)).all()
    assert (p["expected_purchases"] >= p["p_purchase"]).all()


def test_no_repeat_purchase_predictions_match_simulation_where_the_library_fails():
    m = BetaGeoCells()
    m.idata = _posterior(alpha=120.0, r=0.5, a=3.0, b=0.9)  # b < 1: the library's x = 0 bug
    cells = pd.DataFrame({"group": "all", "frequency": [0, 0], "recency": [0.0, 0.0],
                          "T": [100.0, 400.0], "n": 1})
    p = m.predict(cells, horizon=90, draws=None)
    rng = np.random.default_rng(0)
    for i, T in enumerate((100.0, 400.0)):
        # clients with no purchase after their first in T days: lambda | data ~ Gamma(r, alpha + T)
        lam = rng.gamma(0.5, 1 / (120.0 + T), 400_000)
        n90 = rng.poisson(lam * 90)  # alive until a purchase: the first one is certain
        assert p.loc[i, "p_purchase"] == pytest.approx((n90 > 0).mean(), abs=0.003)
    assert (p["expected_purchases"] >= p["p_purchase"]).all()
    assert np.isfinite(p["expected_purchases"]).all()


def test_hdi_rows_matches_arviz():
    rng = np.random.default_rng(0)
    d = rng.gamma(2.0, 1.0, (3, 4000))
    lo, hi = hdi_rows(d)
    for i in range(3):
        ref = az.hdi(d[i], hdi_prob=0.94)
        assert lo[i] == pytest.approx(ref[0], abs=1e-9) and hi[i] == pytest.approx(ref[1], abs=1e-9)


def test_purchases_by_frequency_groups_the_tail():
    t = purchases_by_frequency(np.array([0, 1, 8, 9]), np.array([1.0, 2.0, 3.0, 5.0]),
                               np.array([0, 2, 4, 4]), top=7)
    assert list(t["frequency_group"]) == ["0", "1", "7+"]
    assert t.set_index("frequency_group").loc["7+", "expected"] == 4.0


def test_expected_spend_is_the_gamma_gamma_conditional_mean():
    s = SpendModel()

    class _Fit:
        idata = az.InferenceData(posterior=xr.Dataset(
            {k: (("chain", "draw"), np.full((1, 2), v)) for k, v in
             {"p": 3.0, "q": 4.0, "v": 900.0}.items()}))

    s.model_ = _Fit()
    d = s.expected_spend_draws(np.array([0, 4]), np.array([0.0, 500.0]), draws=2)
    p, q, v = 3.0, 4.0, 900.0
    assert d[0, 0] == pytest.approx(p * v / (q - 1))
    assert d[1, 0] == pytest.approx(p * (v + 4 * 500.0) / (p * 4 + q - 1))
    with pytest.raises(ValueError, match="mean_spend must be positive"):
        SpendModel._data(pd.DataFrame({"frequency": [1, 2], "mean_spend": [10.0, 0.0]}))


def test_expected_spend_equals_pymc_marketings_expected_customer_spend():
    """The NumPy arithmetic gives the library's values, draw for draw and in its order."""
    from pymc_marketing.clv import GammaGammaModel

    rng = np.random.default_rng(4)
    post = xr.Dataset({k: (("chain", "draw"), rng.gamma(5.0, 1.0, (2, 30)) + 1.5)
                       for k in ("p", "q", "v")})
    s = SpendModel()

    class _Fit:
        idata = az.InferenceData(posterior=post)

    s.model_ = _Fit()
    x = rng.integers(0, 6, 300).astype(float)
    m = np.where(rng.random(300) < 0.1, 0.0, rng.gamma(2.0, 800.0, 300))
    got = s.expected_spend_draws(x, m, draws=60)
    use = (x > 0) & (m > 0)
    data = pd.DataFrame({"customer_id": np.arange(300), "frequency": np.where(use, x, 0.0),
                         "monetary_value": np.where(use, m, 1.0)})
    gg = GammaGammaModel(data=data)
    gg.idata = az.InferenceData(posterior=post)
    ref = gg.expected_customer_spend(data).stack(sample=("chain", "draw")).transpose(
        "customer_id", "sample").values
    assert got.shape == (300, 60)
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    assert not np.allclose(got[use], got[use].mean(axis=0))  # clients differ


def test_prior_predictive_gives_plausible_histories():
    pp = BetaGeoCells().prior_predictive(T=39, clients=1000, seed=1)
    assert 0 < pp["share_no_repeat"] < 1 and pp["frequency_q50"] <= pp["frequency_q99"]
    sp = SpendModel().prior_predictive(seed=1)
    assert 0 < sp["mean_spend_q5"] < sp["mean_spend_q50"] < sp["mean_spend_q95"]


def test_one_for_all_is_the_pooled_structure_with_spread_zero():
    """Without sampling: what lets the three fits share one compiled model."""
    sim = simulate_bgnbd(300, 30, r=1.0, alpha=5.0, a=1.0, b=4.0, seed=4, whole_days=True)
    sim["city"] = np.where(np.arange(300) % 3 == 0, "a", "b")
    one, pooled = BetaGeoCells(groups=["a", "b"]), BetaGeoCells(pooled=True, groups=["a", "b"])
    assert one._structure() == pooled._structure()
    d_one, d_pooled = one._data(rfm_cells(sim)), pooled._data(rfm_cells(sim, "city"))
    assert float(d_one["group_spread"]) == 0.0 and float(d_pooled["group_spread"]) == 1.0
    assert (d_one["group_index"] == 0).all() and set(d_pooled["group_index"]) == {0, 1}
    assert "group_spread" not in BetaGeoCells()._data(rfm_cells(sim))  # one group: none
    with pytest.raises(ValueError, match="not in the fitted cells"):
        BetaGeoCells(pooled=True, groups=["a"])._data(rfm_cells(sim, "city"))


@pytest.mark.slow  # one nutpie compilation and three short samplings: 20 s
def test_one_compiled_model_serves_one_for_all_the_pooled_fit_and_new_cells():
    sims = [simulate_bgnbd(400, 30, r=r, alpha=5.0, a=1.0, b=4.0, seed=i, whole_days=True)
            .assign(city=c) for i, (r, c) in enumerate(((0.5, "a"), (1.0, "b"), (2.0, "c")))]
    sim = pd.concat(sims, ignore_index=True)
    groups = ["a", "b", "c"]
    fast = SamplerSettings(draws=200, tune=300, low_rank=True)
    one = BetaGeoCells(groups=groups, sampler=fast).fit(rfm_cells(sim), seed=1)
    pooled = BetaGeoCells(pooled=True, groups=groups, sampler=fast).fit(
        rfm_cells(sim, "city"), seed=1, reuse=one)
    later = BetaGeoCells(pooled=True, groups=groups, sampler=fast).fit(
        rfm_cells(sim.iloc[::2], "city"), seed=1, reuse=pooled)
    assert one.timings_["compile"] > 0
    assert pooled.timings_["compile"] == later.timings_["compile"] == 0
    assert pooled.sampler_ is one.sampler_ is later.sampler_
    assert later.cells_ < pooled.cells_
    # one for all: spread 0, every group holds the store's parameters, shown once
    r_one = one.idata.posterior["r"].values
    assert np.array_equal(r_one[..., 0], r_one[..., 2])
    assert list(one.group_table()["group"]) == ["all"]
    # pooled: the planted order of the groups' purchase rates r / alpha
    rates = pooled.group_table().set_index("group")["purchase_rate"]
    assert rates["a"] < rates["b"] < rates["c"]
    # another structure (other groups, truncation) would compile its own model
    assert BetaGeoCells(groups=["a", "b"])._structure() != one._structure()
    assert BetaGeoCells(groups=groups, truncated=True)._structure() != one._structure()


@pytest.mark.slow
def test_planted_bgnbd_and_gamma_gamma_parameters_are_recovered():
    truth = {"r": 0.8, "alpha": 8.0, "a": 0.6, "b": 3.0}
    sim = simulate_bgnbd(4000, 60, seed=3, **truth)
    m = BetaGeoCells(sampler=SamplerSettings(draws=1000, tune=1000)).fit(rfm_cells(sim), seed=1)
    assert m.convergence.ok, m.convergence.problems
    s = m.summary()
    for k, v in truth.items():
        row = s.loc[f"{k}[all]"]
        assert row["hdi_3%"] <= v <= row["hdi_97%"], (k, v, row.to_dict())
    # Gamma-Gamma: spend per purchase day z ~ Gamma(p, nu), nu ~ Gamma(q, v); p, q and v
    # are strongly correlated, so three data sets: at least 8 of the 9 (parameter, data
    # set) pairs inside the 94% HDI (one seed alone had q = 3.0 at 0.02 outside)
    p, q, v, n = 4.0, 3.0, 2000.0, 3000
    inside = []
    for seed in (4, 5, 6):
        rng = np.random.default_rng(seed)
        x = rng.integers(1, 8, n)
        nu = rng.gamma(q, 1 / v, n)
        mean = np.array([rng.gamma(p, 1 / nu[i], x[i]).mean() for i in range(n)])
        sm = SpendModel(sampler=SamplerSettings(draws=1000, tune=1000)).fit(
            pd.DataFrame({"frequency": x, "mean_spend": mean}), seed=2)
        assert sm.convergence.ok, sm.convergence.problems
        ss = sm.summary()
        inside += [ss.loc[k, "hdi_3%"] <= val <= ss.loc[k, "hdi_97%"]
                   for k, val in {"p": p, "q": q, "v": v}.items()]
    assert sum(inside) >= 8, inside


def test_cell_positions_index_a_batch_into_the_cells_of_all_clients():
    every = pd.DataFrame({"g": ["a", "a", "b", "b"], "frequency": [1, 2, 1, 1],
                          "recency": [1.0, 2.0, 1.0, 0.5], "T": [5.0, 5.0, 5.0, 5.0]})
    cells, pos = client_cells(every, "g")
    batch = every.iloc[[3, 0]]
    assert cell_positions(batch, cells, "g").tolist() == [pos[3], pos[0]]
    with pytest.raises(ValueError, match="1 clients have a cell that is not among"):
        cell_positions(batch.assign(recency=[0.25, 1.0]), cells, "g")
