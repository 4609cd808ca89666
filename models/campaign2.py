"""Campaign 2: billboards in one city announcing a discount on given days.

Data contract
-------------
A city x day panel (:func:`build_panel`): ``city``, ``day``, ``orders`` (client-days with
a purchase), ``buyers`` (distinct clients), ``revenue``.

Model (difference in differences on counts)
-------------------------------------------
For orders and for buyers, separately parameterised in one PyMC model::

    count[c, d] ~ NegativeBinomial(mu, alpha)
    log mu[c, d] = city[c] + day[d] + effect * campaign[c, d]
                   + near * around[c, d] + sum_j placebo_j * placebo_j[c, d]

City effects are partially pooled (``Normal(m, s)``, non-centred), day effects are shared
by all cities (``ZeroSumNormal``), so the campaign city's own trend is compared with the
other cities' on the same days. ``around`` marks the neighbouring days (shifted or
pulled-forward buying). Placebo terms are the same indicator for other large cities on
the campaign days and for the campaign city on other days: their effects should be near
zero. Revenue is modelled on the log scale as the average order value of city-days with
orders (Normal, standard error shrinking with the number of orders), so the revenue effect
is ``exp(effect_orders + effect_aov) - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm

from models.compiled import fixed_data
from models.diagnostics import check_convergence
from models.sampling import Sampler, SamplerSettings, sample_checked
from models.uplift import describe, profit_per_treated

N_DAYS = 59


def build_panel(purchases: pd.DataFrame, clients: pd.DataFrame, exclude_ids: set[int] | None = None,
                days: int = N_DAYS) -> pd.DataFrame:
    """City x day panel of orders, buyers and revenue for every city and day (zeros kept).

    ``exclude_ids`` (campaign 1's treated and control clients) are left out entirely so
    campaign 1's window does not contaminate the comparison.
    """
    p = purchases
    if exclude_ids:
        p = p[~p["id"].isin(exclude_ids)]
    bad = p[(p["dt"] < 0) | (p["dt"] >= days)]
    if len(bad):
        raise ValueError(f"purchases hold days outside 0..{days - 1} "
                         f"(e.g. {bad['dt'].head(3).tolist()}, rows {bad.index[:5].tolist()})")
    p = p.merge(clients[["id", "city"]], on="id")
    per_client_day = p.groupby(["city", "dt", "id"])["revenue"].sum().reset_index()
    g = per_client_day.groupby(["city", "dt"])
    panel = pd.DataFrame({"orders": g.size(), "buyers": g["id"].nunique(),
                          "revenue": g["revenue"].sum()})
    cities = np.sort(clients["city"].unique())
    full = pd.MultiIndex.from_product([cities, np.arange(days)], names=["city", "dt"])
    panel = panel.reindex(full, fill_value=0).reset_index().rename(columns={"dt": "day"})
    return panel.astype({"orders": "int64", "buyers": "int64", "revenue": "float64"})


def pool_cities(panel: pd.DataFrame, keep: int = 40, must_keep: tuple = ()) -> pd.DataFrame:
    """Keep the ``keep`` largest cities (by orders) and ``must_keep``; sum the rest per day
    into city ``-1`` ("other"). Comparable, data-rich cities make the day effects."""
    size = panel.groupby("city")["orders"].sum().sort_values(ascending=False)
    kept = set(size.index[:keep]) | set(must_keep)
    city = panel["city"].where(panel["city"].isin(kept), -1)
    out = panel.assign(city=city).groupby(["city", "day"], as_index=False)[
        ["orders", "buyers", "revenue"]].sum()
    return out


#: the day effects shared across cities need more than one city beside the campaign's
MIN_COMPARISON_CITIES = 2


def check_design(panel: pd.DataFrame, city: Any, days: tuple[int, ...]) -> None:
    """Clear errors for a city absent from the panel, too few comparison cities, or
    campaign days without data around.

    Raises
    ------
    ValueError
        Naming what is missing.
    """
    if city not in set(panel["city"]):
        raise ValueError(f"campaign city {city} is not in the data")
    others = panel.loc[panel["city"] != city, "city"].nunique()
    if others < MIN_COMPARISON_CITIES:
        raise ValueError(f"{others} comparison cit{'y' if others == 1 else 'ies'} besides "
                         f"city {city}: the days without the campaign cannot be predicted "
                         f"without at least {MIN_COMPARISON_CITIES} other cities with "
                         "purchases (add the other cities' clients and purchases)")
    lo, hi = int(panel["day"].min()), int(panel["day"].max())
    out = [d for d in days if d < lo or d > hi]
    if out:
        raise ValueError(f"campaign day(s) {out} outside the panel's days {lo}..{hi}")
    if max(days) >= hi:
        raise ValueError(f"no day after the last campaign day {max(days)} (panel ends at {hi}): "
                         "there is no post-period to compare with")


@dataclass
class Campaign2Model:
    """Bayesian difference-in-differences for a one-city, few-day campaign."""

    city: Any = 1134
    days: tuple[int, ...] = (15, 45)
    placebo_cities: tuple[Any, ...] = ()
    placebo_days: tuple[int, ...] = ()
    sampler_config: Any = None
    seed: int = 0
    priors: dict[str, Any] = field(default_factory=lambda: {
        "effect": ("Normal", 0.0, 0.5), "near": ("Normal", 0.0, 0.5),
        "placebo": ("Normal", 0.0, 0.5), "city_sd": ("HalfNormal", 2.0),
        "day_sd": ("HalfNormal", 0.5), "alpha": ("Gamma", 2.0, 0.1)})

    def indicators(self, panel: pd.DataFrame) -> dict[str, np.ndarray]:
        c, d = panel["city"].to_numpy(), panel["day"].to_numpy()
        near = sorted({x for day in self.days for x in (day - 1, day + 1)} - set(self.days))
        ind = {"campaign": (c == self.city) & np.isin(d, self.days),
               "around": (c == self.city) & np.isin(d, near)}
        for pc in self.placebo_cities:
            ind[f"placebo_city_{pc}"] = (c == pc) & np.isin(d, self.days)
        if self.placebo_days:
            ind["placebo_days"] = (c == self.city) & np.isin(d, self.placebo_days)
        return {k: v.astype(float) for k, v in ind.items()}

    def build_model(self, panel: pd.DataFrame) -> pm.Model:
        cities = np.sort(panel["city"].unique())
        ci = np.searchsorted(cities, panel["city"].to_numpy())
        di = panel["day"].to_numpy()
        ind = self.indicators(panel)
        placebo_names = [k for k in ind if k.startswith("placebo")]
        coords = {"city": [str(c) for c in cities], "day": np.arange(int(di.max()) + 1),
                  "placebo": placebo_names}
        pri = self.priors
        has = panel["orders"].to_numpy() > 0
        aov = np.log(panel.loc[has, "revenue"].clip(lower=1) / panel.loc[has, "orders"])
        with pm.Model(coords=coords) as model:
            # the panel's arrays as data containers of fixed shape, not constants of the
            # compiled code, so that the code can be kept and a rerun loads it
            # (models.compiled.fixed_data)
            ci_d, di_d = fixed_data("panel_city", ci), fixed_data("panel_day", di)
            x = {k: fixed_data(f"panel_{k}", v) for k, v in ind.items()}
            for outcome in ("orders", "buyers"):
                y = fixed_data(f"panel_{outcome}", panel[outcome].to_numpy())
                m = pm.Normal(f"{outcome}_city_mean", 0, 5)
                s = pm.HalfNormal(f"{outcome}_city_sd", pri["city_sd"][1])
                # centred: every city has hundreds of orders, so the data pin each effect
                city = pm.Normal(f"{outcome}_city", m, s, dims="city")
                day = pm.ZeroSumNormal(f"{outcome}_day", sigma=pri["day_sd"][1], dims="day")
                eff = pm.Normal(f"{outcome}_effect", pri["effect"][1], pri["effect"][2])
                near = pm.Normal(f"{outcome}_near", pri["near"][1], pri["near"][2])
                eta = city[ci_d] + day[di_d] + eff * x["campaign"] + near * x["around"]
                if placebo_names:
                    plc = pm.Normal(f"{outcome}_placebo", pri["placebo"][1], pri["placebo"][2],
                                    dims="placebo")
                    eta = eta + pm.math.stack([x[k] for k in placebo_names]).T @ plc
                alpha = pm.Gamma(f"{outcome}_alpha", pri["alpha"][1], pri["alpha"][2])
                pm.NegativeBinomial(f"{outcome}_obs", mu=pm.math.exp(eta), alpha=alpha,
                                    observed=y)
            k = fixed_data("aov_orders", panel.loc[has, "orders"].to_numpy(float))
            m_a = pm.Normal("aov_mean", 8, 2)
            s_c = pm.HalfNormal("aov_city_sd", 0.5)
            a_city = pm.Normal("aov_city", m_a, s_c, dims="city")
            a_day = pm.ZeroSumNormal("aov_day", sigma=0.3, dims="day")
            a_eff = pm.Normal("aov_effect", 0, 0.3)
            sig = pm.HalfNormal("aov_sigma", 1.0)
            mu = (a_city[fixed_data("aov_city_index", ci[has])]
                  + a_day[fixed_data("aov_day_index", di[has])]
                  + a_eff * fixed_data("aov_campaign", ind["campaign"][has]))
            pm.Normal("aov_obs", mu=mu, sigma=sig / pm.math.sqrt(k),
                      observed=fixed_data("aov_log_value", aov.to_numpy()))
        return model

    def fit(self, panel: pd.DataFrame) -> Campaign2Model:
        check_design(panel, self.city, self.days)
        self.panel_ = panel.reset_index(drop=True)
        self.model_ = self.build_model(self.panel_)
        names = [f"{o}_{p}" for o in ("orders", "buyers")
                 for p in ("effect", "near", "city", "city_sd", "day", "alpha")]
        names += ["aov_effect", "aov_city", "aov_sigma", "aov_day"]
        if any(k.startswith("placebo") for k in self.indicators(self.panel_)):
            names += ["orders_placebo", "buyers_placebo"]
        settings = SamplerSettings.from_any(self.sampler_config)
        # a failed first run is run once more, twice as long (and with smaller steps after
        # divergences): a demo store with client-level purchase propensities left 10
        # divergences and tail ESS 267 with 1,500 draws; the second run's checks are reported
        self.idata_, self.convergence_, self.resampled_with_ = sample_checked(
            Sampler(self.model_, settings), self.seed,
            lambda idata: check_convergence(idata, var_names=names),
            retry_draws=2 * settings.draws)
        return self

    def effects(self) -> dict[str, Any]:
        """Effects on the campaign days (ratio - 1) with 94% HDIs and P(effect > 0)."""
        post = az.extract(self.idata_)
        out: dict[str, Any] = {}
        for name in ("orders", "buyers"):
            out[name] = describe(np.expm1(post[f"{name}_effect"].values))
            out[f"{name}_around"] = describe(np.expm1(post[f"{name}_near"].values))
        out["aov"] = describe(np.expm1(post["aov_effect"].values))
        out["revenue"] = describe(np.expm1(post["orders_effect"].values
                                           + post["aov_effect"].values))
        return out

    def placebo(self) -> pd.DataFrame:
        post = az.extract(self.idata_)
        rows = []
        if "orders_placebo" not in post:
            return pd.DataFrame()
        for name in post["placebo"].values:
            for outcome in ("orders", "buyers"):
                d = describe(np.expm1(post[f"{outcome}_placebo"].sel(placebo=name).values))
                rows.append({"placebo": name, "outcome": outcome, **d,
                             "hdi_includes_zero": d["hdi_low"] <= 0 <= d["hdi_high"]})
        return pd.DataFrame(rows)

    def _no_campaign_log_rate(self, post: Any, param: str, days: np.ndarray) -> np.ndarray:
        """Campaign city's ``city + day`` effects of ``param`` (orders or aov): days x draws."""
        ci = list(post["city"].values).index(str(self.city))
        return post[f"{param}_city"].values[ci][None, :] + post[f"{param}_day"].values[days]

    def counterfactual(self) -> pd.DataFrame:
        """Campaign city per day: observed orders and revenue and the no-campaign posterior."""
        post = az.extract(self.idata_)
        p = self.panel_[self.panel_["city"] == self.city].sort_values("day")
        ind = self.indicators(self.panel_)
        near = ind["around"][p.index.to_numpy()][:, None] * post["orders_near"].values[None, :]
        mu_cf = np.exp(self._no_campaign_log_rate(post, "orders", p["day"].to_numpy()) + near)
        lo, hi = np.quantile(mu_cf, [0.03, 0.97], axis=1)
        aov_obs = (p["revenue"] / p["orders"].clip(lower=1)).to_numpy()
        return pd.DataFrame({"day": p["day"].to_numpy(), "orders": p["orders"].to_numpy(),
                             "revenue": p["revenue"].to_numpy(),
                             "counterfactual_orders": mu_cf.mean(axis=1),
                             "cf_low": lo, "cf_high": hi, "aov": aov_obs,
                             "campaign_day": np.isin(p["day"], self.days)})

    def incremental(self, margin: float, depth: float) -> dict[str, Any]:
        """Incremental orders, revenue and profit over the campaign days (posterior)."""
        post = az.extract(self.idata_)
        days = np.asarray(self.days)
        eff, aov_eff = post["orders_effect"].values, post["aov_effect"].values
        mu0 = np.exp(self._no_campaign_log_rate(post, "orders", days))
        aov0 = np.exp(self._no_campaign_log_rate(post, "aov", days))
        rev0 = (mu0 * aov0).sum(axis=0)
        rev1 = rev0 * np.exp(eff + aov_eff)
        profit = profit_per_treated(rev1, rev0, margin, depth)
        return {"incremental_orders": describe((mu0 * np.expm1(eff)).sum(axis=0)),
                "incremental_revenue": describe(rev1 - rev0),
                "incremental_profit": describe(profit), "margin": margin, "depth": depth}
