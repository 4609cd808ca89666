"""Campaign uplift: trust checks, a closed-form Bayesian A/B test and a hierarchical
PyMC model with partial pooling over cities and clusters, plus the profit decision.

Data contract
-------------
One row per client of the comparison (treated and their comparison group: the control
file, or every untreated client of the store) with columns

``treated`` (bool), ``converted`` (bool: bought in the window), ``revenue`` (money paid in
the window, >= 0), ``city``; optional ``items`` (items bought in the window),
``pre_orders`` (purchase days before the window; else ``pre_bought``, bool),
``pre_revenue`` (money spent before the window), ``cluster`` and ``age_band`` (labels).

Models
------
* :func:`beta_binomial_ab` and :func:`arpu_ab`: conjugate answers (Beta-Binomial
  conversion; conversion x log-normal spend for revenue per client).
* :class:`HierarchicalUplift`: ``logit p = a + city[c] + cluster[k] + age[b] + pre[l]
  + beta_spend * x + treated * (tau + tau_city[c] + tau_cluster[k])`` fitted on exact
  binomial cells (``l``: purchase days in the early and late part of the pre-period,
  :data:`PRE_LEVELS`; ``x``: mean log pre-period spend of the cell, centred within its
  level and standardized); spend per buyer, gamma with mean ``exp(m + ... + treated *
  (kappa + kappa_pre[l] + kappa_cluster[k]))``, and items per buyer (mean ``exp(i + ... +
  treated * (nu + nu_pre[l] + nu_cluster[k]))``), both through their sufficient
  statistics. City, cluster and age effects are zero-sum (city non-centred with a
  learnt scale: small cities shrink to the overall effect; cluster effects at a fixed
  prior scale, as a handful of clusters cannot teach one), so ``tau`` is the uplift
  (log-odds) of the average city and cluster; pre-period levels enter as contrasts with
  the first level. Adjusting for pre-period behaviour this way is CUPED's idea (Deng et
  al. 2013) in a regression on cells.

Decision
--------
Revenue in the data is what clients paid, so treated revenue is net of the discount.
Incremental profit per treated client =
``ARPU_T * (1 - (1 - margin) / (1 - depth)) - ARPU_C * margin``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
from scipy.special import expit

from models.campaign_design import SMD_LIMIT, smd
from models.compiled import fixed_data
from models.diagnostics import check_convergence
from models.sampling import Sampler, SamplerSettings, sample_checked

HDI_PROB = 0.94


# --------------------------------------------------------------------------- summaries
def hdi(draws: np.ndarray, prob: float = HDI_PROB) -> tuple[float, float]:
    lo, hi = az.hdi(np.asarray(draws, dtype=float).ravel(), hdi_prob=prob)
    return float(lo), float(hi)


def describe(draws: np.ndarray, prob: float = HDI_PROB) -> dict[str, float]:
    """Mean, 94% HDI and probability of being above zero of a posterior quantity."""
    d = np.asarray(draws, dtype=float).ravel()
    lo, hi = hdi(d, prob)
    return {"mean": float(d.mean()), "hdi_low": lo, "hdi_high": hi,
            "p_positive": float((d > 0).mean())}


def expected_loss(diff: np.ndarray) -> dict[str, float]:
    """Expected loss of each decision given draws of (treatment - control) value."""
    d = np.asarray(diff, dtype=float).ravel()
    return {"launch": float(np.maximum(-d, 0).mean()), "stop": float(np.maximum(d, 0).mean())}


# --------------------------------------------------------------------------- trust checks
def standardized_mean_differences(df: pd.DataFrame, covariates: list[str],
                                  group: str = "treated") -> pd.DataFrame:
    """SMD of each covariate between treated and control (|SMD| > 0.1 flags imbalance;
    the SMD of :func:`models.campaign_design.smd`, pooled SD)."""
    rows = []
    g = df[group].astype(bool).to_numpy()
    for cov in covariates:
        x = pd.to_numeric(df[cov], errors="coerce").astype(float)
        d = smd(x[g], x[~g])
        d = 0.0 if np.isnan(d) else d
        rows.append({"covariate": cov, "treated_mean": x[g].mean(), "control_mean": x[~g].mean(),
                     "smd": float(d), "imbalanced": bool(abs(d) > SMD_LIMIT)})
    return pd.DataFrame(rows)


def selection_on_outcome(conv_rate: dict[str, float], threshold: float = 0.99) -> list[str]:
    """Warn when a group converts almost entirely: a sign it was picked among buyers."""
    return [f"{g} group: {r:.1%} converted in the window; such a rate suggests the group was "
            "selected among clients who bought, so conversion uplift is not comparable"
            for g, r in conv_rate.items() if r >= threshold]


# --------------------------------------------------------------------------- closed form
def beta_binomial_ab(conv_t: int, n_t: int, conv_c: int, n_c: int, prior: tuple = (1.0, 1.0),
                     draws: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """Beta-Binomial A/B test of conversion.

    Returns posterior summaries of both rates, absolute and relative uplift (94% HDI),
    P(treatment > control) and the expected loss of launching or stopping.
    """
    if n_t == 0 or n_c == 0:
        raise ValueError(f"a group is empty (treated n={n_t}, control n={n_c})")
    rng = np.random.default_rng(seed)
    a, b = prior
    pt = rng.beta(a + conv_t, b + n_t - conv_t, draws)
    pc = rng.beta(a + conv_c, b + n_c - conv_c, draws)
    return {
        "treated_rate": describe(pt), "control_rate": describe(pc),
        "uplift_abs": describe(pt - pc), "uplift_rel": describe(pt / pc - 1),
        "p_treatment_better": float((pt > pc).mean()),
        "expected_loss": expected_loss(pt - pc),
        "prior": {"alpha": a, "beta": b},
        "_draws": {"treated": pt, "control": pc},
    }


def _lognormal_mean_draws(log_spend: np.ndarray, draws: int, rng: np.random.Generator
                          ) -> np.ndarray:
    """Posterior draws of E[spend] for log-normal spend (reference prior on mu, sigma^2)."""
    n = len(log_spend)
    if n < 2:
        return np.full(draws, np.exp(log_spend.mean()) if n else 0.0)
    m, s2 = log_spend.mean(), log_spend.var(ddof=1)
    sigma2 = (n - 1) * s2 / rng.chisquare(n - 1, draws)
    mu = rng.normal(m, np.sqrt(sigma2 / n))
    return np.exp(mu + sigma2 / 2)


def arpu_ab(df: pd.DataFrame, draws: int = 20_000, seed: int = 0,
            counts: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Revenue per client (ARPU) as conversion x log-normal spend, both groups.

    ``df`` has one row per client with ``treated``, ``converted`` and ``revenue``
    (money). ``counts`` (``{"treated": (buyers, clients), "control": ...}``) gives the
    groups' conversion counts when ``df`` holds a uniform sample of them: the conversion
    part then uses every client, the spend part the sampled buyers.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    arpu = {}
    for name, g in (("treated", True), ("control", False)):
        part = df[df["treated"] == g]
        buyers = part.loc[part["converted"] & (part["revenue"] > 0), "revenue"].to_numpy(float)
        k, n = (counts or {}).get(name, (int(part["converted"].sum()), len(part)))
        p = rng.beta(1 + k, 1 + n - k, draws)
        spend = _lognormal_mean_draws(np.log(buyers), draws, rng)
        arpu[name] = p * spend
        out[f"{name}_arpu"] = describe(arpu[name])
        out[f"{name}_observed_arpu"] = float(part["revenue"].mean()) if len(part) else 0.0
    out["arpu_uplift_abs"] = describe(arpu["treated"] - arpu["control"])
    out["arpu_uplift_rel"] = describe(arpu["treated"] / arpu["control"] - 1)
    out["_draws"] = arpu
    return out


def profit_per_treated(arpu_t: np.ndarray, arpu_c: np.ndarray, margin: float, depth: float
                       ) -> np.ndarray:
    """Incremental profit of discounted sales ``arpu_t`` (net of the discount) over
    undiscounted sales ``arpu_c`` (see module docstring); per client or for totals."""
    return arpu_t * (1 - (1 - margin) / (1 - depth)) - arpu_c * margin


# --------------------------------------------------------------------------- cells
CELL_KEYS = ("city", "cluster", "age_band", "pre_level", "treated")
#: purchase days in the early (days 0..2) and late (3..4) part of the pre-period, capped:
#: "early|late"; a store that picked whom to email from either part is adjusted for exactly
PRE_LEVELS = tuple(f"{a}|{b}" for a in ("0", "1", "2", "3") for b in ("0", "1"))


def cities_to_pool(counts: pd.Series, min_clients: int, keep: Collection[Any] = (),
                   max_cities: int | None = None) -> list:
    """The cities (index of ``counts``: clients per city) that lose their own level:
    fewer than ``min_clients`` clients, or beyond the ``max_cities`` with the most clients
    (ties: the smaller label); never those in ``keep``. Sorted."""
    small = counts[(counts < min_clients) & ~counts.index.isin(keep)].index.tolist()
    if max_cities is not None:
        big = counts[(counts >= min_clients) & ~counts.index.isin(keep)]
        order = sorted(big.index, key=lambda c: (-int(big[c]), str(c)))
        small += order[max_cities:]
    return sorted(small, key=str)


def pool_small_cities(df: pd.DataFrame, min_clients: int, keep: Collection[Any] = (),
                      counted: pd.Series | None = None, max_cities: int | None = None
                      ) -> tuple[pd.DataFrame, list]:
    """Cities with fewer than ``min_clients`` clients (of the rows where ``counted`` is
    true, all rows by default) become ``other`` (pooled), except the cities in ``keep``;
    city labels become strings.

    ``max_cities``: at most that many cities keep a level of their own besides ``keep``,
    those with the most counted clients (ties: the smaller label), so that a model's size
    stays flat as a store grows (a 1,000,000-client store has twice the cities above
    ``min_clients`` of a 100,000-client one). Returns the frame and the pooled cities
    (:func:`cities_to_pool`).
    """
    rows = df if counted is None else df[counted.to_numpy(bool)]
    counts = rows["city"].value_counts().reindex(df["city"].unique(), fill_value=0)
    small = cities_to_pool(counts, min_clients, keep, max_cities)
    out = df.copy()
    out["city"] = out["city"].astype(str).where(~df["city"].isin(small), "other")
    return out, small


def pre_period_keys(df: pd.DataFrame) -> pd.DataFrame:
    """Pre-period behaviour as cell keys and a covariate.

    ``pre_level``: purchase days in the early and late part of the pre-period
    (:data:`PRE_LEVELS`; from ``pre_early_orders`` and ``pre_orders``, else ``pre_orders``
    alone, else ``pre_bought``); ``log_pre``: ``log(1 + pre_revenue)`` (0 without
    ``pre_revenue``).
    """
    if "pre_early_orders" in df:
        early = np.minimum(df["pre_early_orders"].to_numpy(int), 3)
        late = np.minimum(df["pre_orders"].to_numpy(int) - df["pre_early_orders"].to_numpy(int),
                          1)
    elif "pre_orders" in df:
        early, late = np.minimum(df["pre_orders"].to_numpy(int), 3), np.zeros(len(df), int)
    else:
        early, late = df["pre_bought"].astype(int).to_numpy(), np.zeros(len(df), int)
    level = 2 * early + late
    rev = df["pre_revenue"].clip(lower=0).astype(float) if "pre_revenue" in df else None
    log_pre = np.zeros(len(df)) if rev is None else np.log1p(rev.to_numpy())
    return pd.DataFrame({"pre_level": np.array(PRE_LEVELS)[level], "log_pre": log_pre},
                        index=df.index)


#: the exact sufficient statistics of a cell (summed over its clients)
CELL_SUMS = ("n", "y", "spenders", "s1", "r1", "i1", "i2", "lp1", "lp2")


def client_cells(df: pd.DataFrame, keys: pd.DataFrame | None = None) -> pd.DataFrame:
    """Client rows (the data contract) to cells of exact sufficient statistics.

    One row per (city, cluster, age band, pre-period level, treated) with :data:`CELL_SUMS`:
    clients ``n``, buyers ``y`` (``spenders``: with revenue > 0), the sums of spend ``r1``
    (money) and of log spend ``s1`` of buyers (the gamma likelihood's), the sum of items
    ``i1`` and of their squares ``i2``, and the sums of the log pre-period spend ``lp1`` and
    of its square ``lp2``. Cities are not pooled (see :func:`merge_cells`), so cells of
    parts of a store add up: what :func:`analysis.store.aggregates.uplift_cells` computes in
    the query engine. ``keys``: :func:`pre_period_keys` of ``df`` when already computed.
    """
    d = df.copy()
    for k in ("cluster", "age_band"):
        if k not in d:
            d[k] = "all"
    keys = pre_period_keys(d) if keys is None else keys
    for col in keys.columns:
        d[col] = keys[col].to_numpy()
    d["city"] = d["city"].astype(str)
    buy = d["converted"] & (d["revenue"] > 0)
    d["log_spend"] = np.where(buy, np.log(d["revenue"].where(buy, 1.0)), 0.0)
    d["spend_b"] = np.where(buy, d["revenue"].astype(float), 0.0)
    d["spenders"] = buy.astype(int)
    items = d["items"].astype(float) if "items" in d else d["converted"].astype(float)
    d["items_b"] = np.where(buy, items, 0.0)
    d["items_b2"] = d["items_b"] ** 2
    d["log_pre2"] = d["log_pre"] ** 2
    cells = d.groupby(list(CELL_KEYS), observed=True).agg(
        n=("converted", "size"), y=("converted", "sum"), spenders=("spenders", "sum"),
        s1=("log_spend", "sum"), r1=("spend_b", "sum"), i1=("items_b", "sum"),
        i2=("items_b2", "sum"), lp1=("log_pre", "sum"), lp2=("log_pre2", "sum")
    ).reset_index()
    return cells.astype({"n": "int64", "y": "int64", "spenders": "int64"})


def merge_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells with the same keys summed (after cities were pooled), with ``log_pre``, the
    mean log pre-period spend of each cell."""
    out = cells.groupby(list(CELL_KEYS), observed=True, as_index=False)[list(CELL_SUMS)].sum()
    out["log_pre"] = out["lp1"] / out["n"]
    return out


def to_cells(df: pd.DataFrame, keys: pd.DataFrame | None = None) -> pd.DataFrame:
    """Client rows to merged cells (:func:`client_cells`, then :func:`merge_cells`)."""
    return merge_cells(client_cells(df, keys))


# --------------------------------------------------------------------------- hierarchical model
#: treated clients in the smallest city (cluster) from which that group's uplift effects
#: are centred: there each effect is pinned down by its own
#: data (posterior SD about 0.05-0.07 on the log-odds scale, well below the prior scale)
#: and the non-centred product sigma * z forms a ridge (r_hat 1.09, ESS ~300 with
#: 1,000,000 clients); below it the non-centred form avoids the funnel of weak data
CENTRED_FROM = 1_500

#: a fit that fails the checks is run once more with these (see ``HierarchicalUplift.fit``);
#: 2,500 draws left sigma_tau_city at tail ESS 386 on a 60,000-client randomized demo
RETRY_DRAWS = 4000
RETRY_TARGET_ACCEPT = 0.95

#: posterior draws behind the posterior predictive checks
PPC_DRAWS = 1_000

DEFAULT_PRIORS: dict[str, Any] = {
    "intercept": ("Normal", 0.0, 1.5),  # log-odds of the first pre-period level
    "pre_effect": ("Normal", 0.0, 2.5),
    "beta_spend": ("Normal", 0.0, 1.0),
    "sigma_city": ("HalfNormal", 0.5),
    # a handful of clusters cannot teach a scale: a fixed one (as for age bands)
    "cluster_effect": ("ZeroSumNormal", 1.0),
    "tau": ("Normal", 0.0, 0.5),
    "sigma_tau_city": ("HalfNormal", 0.3),
    # fixed scale, as for the base cluster effects: a scale learnt from four clusters made
    # a funnel where one of two chains stayed (sigma 0.03 against 0.44, r_hat 2.13 at
    # 1,000,000 clients)
    "tau_cluster": ("ZeroSumNormal", 0.5),
    "spend_intercept": ("Normal", 8.0, 2.0),  # log of mean spend per buyer, money
    "spend_shape": ("LogNormal", 0.0, 1.0),  # gamma shape = 1 / CV^2 of spend per buyer
    "kappa": ("Normal", 0.0, 0.3),
    "items_intercept": ("Normal", 0.7, 1.0),
    "items_sigma": ("HalfNormal", 5.0),
    "nu": ("Normal", 0.0, 0.5),
}


def _zero_sum_effect(name: str, sigma: Any, dim: str, clients: pd.Series) -> Any:
    """Zero-sum group effects on the uplift scaled by ``sigma``; ``clients``: treated
    clients per level.

    Non-centred (``sigma * z``: no funnel where the data are weak) unless every level has
    at least ``CENTRED_FROM`` clients: then each effect is pinned down by its own data and
    the product ``sigma * z`` forms a ridge, so it is centred.
    """
    if clients.fillna(0).min() >= CENTRED_FROM:
        return pm.ZeroSumNormal(name, sigma=sigma, dims=dim)
    return pm.Deterministic(name, sigma * pm.ZeroSumNormal(f"{name}_z", sigma=1.0, dims=dim),
                            dims=dim)


def _contrasts(name: str, sigma: float, levels: list) -> Any:
    """Effects of ``levels`` as contrasts with the first one (fixed at 0), each
    ``Normal(0, sigma)``. A level where nearly everyone buys is bounded only by its prior;
    a zero-sum constraint carried that to every other level (r_hat 1.2, bulk ESS 7 on the
    real-scale demo), contrasts keep it to its own effect."""
    if len(levels) < 2:
        return pm.Deterministic(name, pm.math.zeros(len(levels)), dims="pre_level")
    rest = pm.Normal(f"{name}_contrast", 0.0, sigma, shape=len(levels) - 1)
    return pm.Deterministic(name, pm.math.concatenate([pm.math.zeros(1), rest]),
                            dims="pre_level")


def _effect_by_level(name: str, sigma: float, levels: list, treated: pd.Series) -> Any:
    """Treatment-effect differences across pre-period levels: 0 at the level with the most
    treated clients (``treated``: treated clients per level), ``Normal(0, sigma)`` at the
    other levels with treated clients, 0 where there are none (no treated cell uses it, and
    a free value there would only be its prior). A rate uplift moves spend and items per
    buyer less for rare buyers (one purchase either way) than for frequent ones."""
    n = treated.reindex(levels).fillna(0).to_numpy()
    free = [i for i in np.flatnonzero(n > 0) if i != int(np.argmax(n))]
    if not free:
        return pm.Deterministic(name, pm.math.zeros(len(levels)), dims="pre_level")
    rest = pm.Normal(f"{name}_contrast", 0.0, sigma, shape=len(free))
    return pm.Deterministic(name, pt.zeros(len(levels))[free].set(rest), dims="pre_level")


@dataclass
class HierarchicalUplift:
    """Hierarchical uplift model on binomial cells (``fit`` / ``summary`` / ``plot``).

    Parameters
    ----------
    model_config
        Priors (see :data:`DEFAULT_PRIORS`); stated in the report.
    sampler_config
        MCMC settings (:class:`~models.sampling.SamplerSettings` or dict).
    min_city_clients
        Cities with fewer treated clients are pooled into ``other``.
    max_cities
        At most this many cities (those with the most treated clients) keep a level of
        their own; ``None``: no cap (see :func:`pool_small_cities`).

    Examples
    --------
    >>> m = HierarchicalUplift(sampler_config={"draws": 500, "tune": 500})  # doctest: +SKIP
    >>> m.fit(clients).summary()  # doctest: +SKIP
    """

    model_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PRIORS))
    sampler_config: Any = None
    min_city_clients: int = 30
    max_cities: int | None = None
    seed: int = 0

    def _index(self, cells: pd.DataFrame) -> dict[str, Any]:
        """Level lists (those of the fitted cells), integer codes and covariates of
        ``cells`` (the fitted cells or a subset of them)."""
        lv = {k: sorted(self.cells_[k].unique(), key=str) for k in ("city", "cluster",
                                                                     "age_band")}
        lv["pre_level"] = [p for p in PRE_LEVELS if p in set(self.cells_["pre_level"])]
        codes = {k: pd.Categorical(cells[k], categories=lv[k]).codes for k in lv}
        # centred within each pre-period level: the level effects carry the mean, x only the
        # spend differences among clients with the same purchase days (no ridge between them)
        level_mean = cells["pre_level"].map(self.log_pre_mean_).fillna(0.0).to_numpy()
        x = (cells["log_pre"].to_numpy() - level_mean) / self.log_pre_sd_
        pre = pd.Categorical(cells["pre_level"], categories=lv["pre_level"]).codes
        return {"levels": lv, "codes": codes, "x": x, "pre": pre,
                "trt": cells["treated"].astype(float).to_numpy()}

    def build_model(self, cells: pd.DataFrame) -> pm.Model:
        ix = self._index(cells)
        lv, cd, x, trt = ix["levels"], ix["codes"], ix["x"], ix["trt"]
        self._levels = lv
        pri = self.model_config
        coords = {k: [str(v) for v in vals] for k, vals in lv.items()}
        coords["cell"] = np.arange(len(cells))
        coords["arm"] = ["comparison", "treated"]
        with pm.Model(coords=coords) as model:
            # the cells' arrays as data containers of fixed shape, not constants of the
            # compiled code, so that the code can be kept and a rerun loads it
            # (models.compiled.fixed_data)
            ci, ki, ai, pi = (fixed_data(f"cell_{k}", cd[k].astype("int64"))
                              for k in ("city", "cluster", "age_band", "pre_level"))
            x = fixed_data("cell_spend", x)
            arm = fixed_data("cell_arm", trt.astype("int64"))
            trt = fixed_data("cell_treated", trt)
            a = pm.Normal("intercept", pri["intercept"][1], pri["intercept"][2])
            b_spend = pm.Normal("beta_spend", pri["beta_spend"][1], pri["beta_spend"][2])
            one_city = len(lv["city"]) == 1  # one city (or all pooled): no city terms
            if one_city:
                city = pm.Deterministic("city_effect", pm.math.zeros(1), dims="city")
            else:
                s_city = pm.HalfNormal("sigma_city", pri["sigma_city"][1])
                # non-centred and zero-sum: no funnel for small cities, no ridge with the
                # intercept (centred base effects at 1,000,000 clients: r_hat 1.06,
                # E-BFMI 0.06)
                city = pm.Deterministic(
                    "city_effect", s_city * pm.ZeroSumNormal("city_z", sigma=1.0, dims="city"),
                    dims="city")
            eta = a + city[ci] + b_spend * x
            if len(lv["pre_level"]) > 1:
                # purchase days before the window: what the store's choice of whom to email
                # may rest on, adjusted level by level (no linearity assumed)
                eta = eta + _contrasts("pre_effect", pri["pre_effect"][2], lv["pre_level"])[pi]
            if len(lv["cluster"]) > 1:
                # fixed scale: a learned scale over a handful of clusters made a funnel
                # (divergences at 1,000,000 clients where the effects are pinned down)
                k_eff = pm.ZeroSumNormal("cluster_effect", sigma=pri["cluster_effect"][1],
                                         dims="cluster")
                eta = eta + k_eff[ki]
            if len(lv["age_band"]) > 1:
                eta = eta + pm.ZeroSumNormal("age_effect", sigma=1.0, dims="age_band")[ai]
            tau = pm.Normal("tau", pri["tau"][1], pri["tau"][2])
            treated = cells.loc[cells["treated"].astype(bool)]
            self._treated_by_level = treated.groupby("pre_level")["n"].sum()
            if one_city:
                tau_city = pm.Deterministic("tau_city", pm.math.zeros(1), dims="city")
            else:
                s_tc = pm.HalfNormal("sigma_tau_city", pri["sigma_tau_city"][1])
                # zero-sum: tau is the mean city effect (free city effects' mean traded off
                # against tau: a ridge, tau ESS ~100 at 1,000,000 clients)
                tau_city = _zero_sum_effect(
                    "tau_city", s_tc, "city",
                    treated.groupby("city")["n"].sum().reindex(lv["city"]))
            tau_cell = tau + tau_city[ci]
            if len(lv["cluster"]) > 1:
                tau_cell = tau_cell + pm.ZeroSumNormal(
                    "tau_cluster", sigma=pri["tau_cluster"][1], dims="cluster")[ki]
            else:
                pm.Deterministic("tau_cluster", pm.math.zeros(1), dims="cluster")
            pm.Binomial("buyers", n=fixed_data("cell_clients", cells["n"].to_numpy()),
                        logit_p=eta + trt * tau_cell,
                        observed=fixed_data("cell_buyers", cells["y"].to_numpy()),
                        dims="cell")
            self._spend_block(cells, pi, x, trt, arm, ki, ci, len(lv["cluster"]))
            if getattr(self, "has_items_", True):
                self._items_block(cells, pi, x, trt, arm, ki, ci, len(lv["cluster"]))
        return model

    def _city_term(self, name: str, ci: np.ndarray) -> Any:
        """Zero-sum city effects (scale 1 on the log scale) of an outcome among buyers, 0 with
        one city: the store's city factor moves how often its clients buy, so how much a
        buyer buys."""
        if len(self._levels["city"]) < 2:
            return 0.0
        return pm.ZeroSumNormal(name, sigma=1.0, dims="city")[ci]

    def _spend_block(self, cells: pd.DataFrame, pre: Any, x: Any, trt: Any, arm: Any,
                     ki: Any, ci: Any, n_clusters: int) -> None:
        """Spend per buyer: gamma with log link (mean ``exp(mu)``, money) through its exact
        sufficient statistics (buyers, sum of spend, sum of log spend).

        The gamma score for the mean is that of the quasi-likelihood with variance
        proportional to the squared mean (McCullagh & Nelder 1989, ch. 8-9): the mean is
        estimated consistently whatever the shape of spend. A log-normal read the mean
        from ``exp(mu + sigma^2 / 2)`` and was biased by 8% on the real-scale demo, where
        spend per buyer is a sum of a few purchases. One shape per arm: the email changes
        the spread of spend (more orders per buyer).
        """
        pri = self.model_config
        m0 = pm.Normal("spend_intercept", pri["spend_intercept"][1], pri["spend_intercept"][2])
        b_pre = _contrasts("spend_pre", 1.0, self._levels["pre_level"])
        b_x = pm.Normal("spend_x", 0.0, 1.0)
        kappa = pm.Normal("kappa", pri["kappa"][1], pri["kappa"][2])
        shape_arm = pm.LogNormal("spend_shape", pri["spend_shape"][1], pri["spend_shape"][2],
                                 dims="arm")
        alpha = shape_arm[arm]
        kap = kappa + _effect_by_level("kappa_pre", 0.5, self._levels["pre_level"],
                                       self._treated_by_level)[pre]
        mu = m0 + b_pre[pre] + b_x * x + self._city_term("spend_city", ci)
        if n_clusters > 1:
            kap = kap + pm.ZeroSumNormal("kappa_cluster", sigma=0.3, dims="cluster")[ki]
            mu = mu + pm.ZeroSumNormal("spend_cluster", sigma=1.0, dims="cluster")[ki]
        mu = mu + trt * kap
        k = fixed_data("cell_spenders", cells["spenders"].to_numpy(float))
        s_log = fixed_data("cell_sum_log_spend", cells["s1"].to_numpy(float))
        r = fixed_data("cell_sum_spend", cells["r1"].to_numpy(float))
        # sum over a cell's buyers of log Gamma(y | shape alpha, rate alpha / exp(mu))
        loglik = (k * (alpha * (pm.math.log(alpha) - mu) - pt.gammaln(alpha))
                  + (alpha - 1) * s_log - alpha * r * pm.math.exp(-mu))
        pm.Potential("spend_loglik", pm.math.sum(loglik))

    def _items_block(self, cells: pd.DataFrame, pre: Any, x: Any, trt: Any, arm: Any,
                     ki: Any, ci: Any, n_clusters: int) -> None:
        """Items per buyer: mean ``exp(linear)``, normal errors with one SD, through the
        exact sufficient statistics (count, sum, sum of squares); a quasi-likelihood for
        the mean of a count (McCullagh & Nelder 1989, ch. 9)."""
        pri = self.model_config
        i0 = pm.Normal("items_intercept", pri["items_intercept"][1], pri["items_intercept"][2])
        b_pre = _contrasts("items_pre", 0.5, self._levels["pre_level"])
        b_x = pm.Normal("items_x", 0.0, 0.5)
        nu = pm.Normal("nu", pri["nu"][1], pri["nu"][2])
        sigma = pm.HalfNormal("items_sigma", pri["items_sigma"][1], dims="arm")[arm]
        log_mu = i0 + b_pre[pre] + b_x * x + self._city_term("items_city", ci)
        eff = nu + _effect_by_level("nu_pre", 0.5, self._levels["pre_level"],
                                    self._treated_by_level)[pre]
        if n_clusters > 1:
            log_mu = log_mu + pm.ZeroSumNormal("items_cluster", sigma=1.0, dims="cluster")[ki]
            eff = eff + pm.ZeroSumNormal("nu_cluster", sigma=0.3, dims="cluster")[ki]
        mu = pm.math.exp(log_mu + trt * eff)
        k = pm.modelcontext(None)["cell_spenders"]
        s1 = fixed_data("cell_sum_items", cells["i1"].to_numpy(float))
        s2 = fixed_data("cell_sum_items_sq", cells["i2"].to_numpy(float))
        ss = s2 - 2 * mu * s1 + k * mu**2
        pm.Potential("items_loglik",
                     pm.math.sum(-k * pm.math.log(sigma) - ss / (2 * sigma**2)))

    def fit(self, clients: pd.DataFrame) -> HierarchicalUplift:
        """Aggregate client rows (the data contract) to cells and sample the posterior."""
        _check_contract(clients)
        #: without an ``items`` column every buyer counts one item: no items block
        return self.fit_cells(client_cells(clients), has_items="items" in clients)

    def fit_cells(self, cells: pd.DataFrame, has_items: bool = True) -> HierarchicalUplift:
        """Sample the posterior from cells of exact sufficient statistics.

        Parameters
        ----------
        cells
            :func:`client_cells` of the comparison's clients, cities not pooled (cells may
            repeat keys: they are summed), e.g. from
            :func:`analysis.store.aggregates.uplift_cells` in a query engine, so that no
            client row is ever in memory.
        has_items
            Whether the cells' item sums are real (else every buyer counts one item and
            the items block is left out).

        Raises
        ------
        ValueError
            A column of :data:`CELL_KEYS` or :data:`CELL_SUMS` is missing, a campaign group
            is empty, or a sum is negative.
        """
        _check_cells(cells)
        self.has_items_ = has_items
        # a city's uplift effect is learnt from its treated clients: cities with fewer are
        # pooled (with the whole store as comparison, most cities have none)
        treated = cells["treated"].astype(bool).to_numpy()
        per_city = cells.loc[treated].groupby("city")["n"].sum().reindex(
            cells["city"].unique(), fill_value=0)
        self.pooled_cities_ = cities_to_pool(per_city, self.min_city_clients,
                                             max_cities=self.max_cities)
        cells = cells.assign(city=cells["city"].where(~cells["city"].isin(
            self.pooled_cities_), "other"))
        # the effect on the treated needs comparison clients like them: those at pre-period
        # levels no treated client has (at real scale, 68,000 clients who had not bought
        # in days 0..2) only pull the additive model towards them (common support for the
        # ATT; Imbens & Rubin 2015, ch. 14)
        support = cells["pre_level"].isin(set(cells.loc[treated, "pre_level"]))
        self.outside_support_ = int(cells.loc[~support.to_numpy(), "n"].sum())
        self.cells_ = merge_cells(cells.loc[support.to_numpy()])
        by_level = self.cells_.groupby("pre_level")[["n", "lp1", "lp2"]].sum()
        self.log_pre_mean_ = (by_level["lp1"] / by_level["n"]).to_dict()
        # the SD within levels, so that the centred covariate has unit SD and its N(0, 1)
        # priors mean what they say (the overall SD, between levels included, left a
        # scale the adaptation sometimes took 3 times longer to find at real scale):
        # sum of squares within levels from the cells' sums
        n_all = float(by_level["n"].sum())
        ss = float((by_level["lp2"] - by_level["lp1"] ** 2 / by_level["n"]).sum())
        within = np.sqrt(max(ss, 0.0) / (n_all - 1)) if n_all > 1 else np.nan
        self.log_pre_sd_ = within if np.isfinite(within) and within > 0 else 1.0
        self.model_ = self.build_model(self.cells_)
        t0 = time.perf_counter()
        settings = SamplerSettings.from_any(self.sampler_config)
        sampler = Sampler(self.model_, settings)
        t1 = time.perf_counter()
        # a failed first run is run once more (RETRY_DRAWS, RETRY_TARGET_ACCEPT); the checks
        # of that run are the ones reported
        self.idata_, self.convergence_, self.resampled_with_ = sample_checked(
            sampler, self.seed, lambda idata: check_convergence(
                idata, var_names=self._checked(idata)), RETRY_DRAWS, RETRY_TARGET_ACCEPT)
        #: seconds spent compiling the model and sampling it (all runs)
        self.timings_ = {"compile": round(t1 - t0, 1),
                         "sampling": round(time.perf_counter() - t1, 1)}
        self._param_draws: dict[str, np.ndarray] | None = None
        self._overall_draws: dict[str, np.ndarray] | None = None
        self._rep_cache: np.ndarray | None = None
        return self

    def _checked(self, idata: Any = None) -> list[str]:
        post = (self.idata_ if idata is None else idata).posterior
        names = ["intercept", "beta_spend", "tau", "spend_intercept", "spend_pre", "spend_x",
                 "kappa", "spend_shape"]
        if "items_intercept" in post:
            names += ["items_intercept", "items_pre", "items_x", "nu", "items_sigma"]
        extra = ["sigma_city", "sigma_tau_city", "tau_city", "city_effect", "pre_effect",
                 "cluster_effect", "tau_cluster",
                 "kappa_cluster", "spend_cluster", "age_effect", "items_cluster", "nu_cluster",
                 "kappa_pre", "nu_pre", "spend_city", "items_city"]
        return names + [n for n in extra if n in post and post[n].std() > 0]

    # ---------------------------------------------------------------- posterior quantities
    #: treated cells whose per-cell draws are held at once (draws x block values per
    #: quantity): at 1 million clients, 8,000 draws x 9,000 treated cells held whole took
    #: the step to a 4.7 GiB peak
    CELL_BLOCK = 512

    def _cell_draws(self, rows: slice = slice(None)) -> dict[str, np.ndarray]:
        """Per-cell draws (draws x the treated cells ``rows``, in the order of
        :meth:`_treated_cells`) of conversion, revenue and items per client with and
        without treatment.

        Only the treated clients' cells: every effect is an ATT, averaged over them (the
        comparison cells carry no weight). Callers take a block of cells at a time
        (:meth:`_weighted`), so memory holds draws x :attr:`CELL_BLOCK` values per
        quantity, whatever the number of cells.
        """
        if getattr(self, "_param_draws", None) is None:
            post = az.extract(self.idata_)
            self._param_draws = {
                name: (post[name].values.T if post[name].ndim > 1
                       else post[name].values[:, None])
                for name in post.data_vars if name in _CELL_TERMS}
        par = self._param_draws
        ix = self._index(self._treated_cells().iloc[rows])
        ci, ki, ai, pre, x = (ix["codes"]["city"], ix["codes"]["cluster"],
                              ix["codes"]["age_band"], ix["pre"], ix["x"])

        def v(name: str) -> np.ndarray:
            return par[name]

        def term(name: str, idx: np.ndarray) -> np.ndarray | float:
            """A group effect per cell, 0 where the model has no such term."""
            return par[name][:, idx] if name in par else 0.0

        eta0 = (v("intercept") + v("city_effect")[:, ci] + v("beta_spend") * x
                + term("pre_effect", pre) + term("cluster_effect", ki) + term("age_effect", ai))
        tau = v("tau") + v("tau_city")[:, ci] + v("tau_cluster")[:, ki]
        mu0 = (v("spend_intercept") + v("spend_pre")[:, pre] + v("spend_x") * x
               + term("spend_cluster", ki) + term("spend_city", ci))
        kap = v("kappa") + v("kappa_pre")[:, pre] + term("kappa_cluster", ki)
        p0, p1 = expit(eta0), expit(eta0 + tau)
        items0, items1 = p0, p1  # one item per buyer without an items block
        if "items_intercept" in par:
            li0 = (v("items_intercept") + v("items_pre")[:, pre] + v("items_x") * x
                   + term("items_cluster", ki) + term("items_city", ci))
            nu = v("nu") + v("nu_pre")[:, pre] + term("nu_cluster", ki)
            items0, items1 = p0 * np.exp(li0), p1 * np.exp(li0 + nu)
        return {"conversion": p1 - p0, "arpu1": p1 * np.exp(mu0 + kap),
                "arpu0": p0 * np.exp(mu0), "tau": tau, "items1": items1, "items0": items0,
                "p1": p1, "p0": p0}

    def _treated_cells(self) -> pd.DataFrame:
        """The cells of treated clients (the population every effect is averaged over)."""
        return self.cells_.loc[self.cells_["treated"].astype(bool).to_numpy()]

    def _weighted(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Draws averaged over cells with ``weights`` (cells x groups, columns sum to 1):
        one matrix product per quantity for all groups at once."""
        out: dict[str, np.ndarray] = {}
        for lo in range(0, weights.shape[0], self.CELL_BLOCK):
            rows = slice(lo, lo + self.CELL_BLOCK)
            for k, v in self._cell_draws(rows).items():
                part = v @ weights[rows]
                out[k] = part if k not in out else out[k] + part
        return out

    def weighted_draws(self, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Posterior draws averaged over the treated clients of the cells in ``mask``
        (all cells by default; a boolean over :attr:`cells_`): conversion uplift, ARPU with
        and without treatment, tau."""
        if mask is None and getattr(self, "_overall_draws", None) is not None:
            return self._overall_draws  # every treated client: asked for several times
        treated = self.cells_["treated"].astype(bool).to_numpy()
        w = self.cells_["n"].to_numpy(float)[treated]
        if mask is not None:
            w = w * np.asarray(mask)[treated]
        out = {k: v[:, 0] for k, v in self._weighted((w / w.sum())[:, None]).items()}
        if mask is None:
            self._overall_draws = out
        return out

    def effects(self, margin: float, depth: float, by: str | None = None) -> pd.DataFrame:
        """Effects on the treated (ATT), overall or by ``city``/``cluster``.

        Quantities are averaged over the treated clients' cells (the population the
        campaign reached): conversion uplift (share), revenue per client (ARPU, money),
        items per client, average purchase value (revenue per item, money), conversion
        risk ratio, and incremental profit per treated client (money); each with mean,
        94% HDI and P(> 0).
        """
        c = self._treated_cells()
        treated_n = c["n"].to_numpy(float)
        if by is None:
            labels, member = ["all"], np.ones((len(c), 1))
        else:
            key = c[by].astype(str)
            labels = sorted(key.unique(), key=str)
            member = (key.to_numpy()[:, None] == np.asarray(labels)[None, :]).astype(float)
        n = treated_n @ member
        keep = n > 0
        labels = [lv for lv, k in zip(labels, keep, strict=True) if k]
        weights = member[:, keep] * treated_n[:, None] / n[keep]
        w = self._weighted(weights)
        rows = []
        for j, label in enumerate(labels):
            profit = profit_per_treated(w["arpu1"][:, j], w["arpu0"][:, j], margin, depth)
            row: dict[str, Any] = {"level": label, "treated_clients": int(n[keep][j])}
            aov = w["arpu1"][:, j] / w["items1"][:, j] - w["arpu0"][:, j] / w["items0"][:, j]
            for name, draws in (("conversion_uplift", w["conversion"][:, j]),
                                ("arpu_uplift", w["arpu1"][:, j] - w["arpu0"][:, j]),
                                ("items_uplift", w["items1"][:, j] - w["items0"][:, j]),
                                ("aov_uplift", aov),
                                ("conversion_ratio", w["p1"][:, j] / w["p0"][:, j]),
                                ("profit_per_client", profit), ("tau_logit", w["tau"][:, j])):
                for k, val in describe(draws).items():
                    row[f"{name}_{k}"] = val
            loss = expected_loss(profit)
            row["expected_loss_launch"] = loss["launch"]
            row["expected_loss_stop"] = loss["stop"]
            rows.append(row)
        return pd.DataFrame(rows)

    def profit_draws(self, margin: float, depth: float) -> np.ndarray:
        w = self.weighted_draws()
        return profit_per_treated(w["arpu1"], w["arpu0"], margin, depth)

    def margin_curve(self, depth: float, margins: np.ndarray | None = None) -> pd.DataFrame:
        """P(incremental profit > 0) across gross margins."""
        margins = np.linspace(0.05, 0.8, 31) if margins is None else margins
        w = self.weighted_draws()
        rows = []
        for m in margins:
            p = profit_per_treated(w["arpu1"], w["arpu0"], float(m), depth)
            rows.append({"margin": float(m), "p_profit_positive": float((p > 0).mean()),
                         "profit_mean": float(p.mean())})
        return pd.DataFrame(rows)

    def summary(self, var_names: list[str] | None = None) -> pd.DataFrame:
        """ArviZ summary (94% HDI) of the main parameters."""
        names = var_names or [n for n in ("intercept", "beta_spend", "tau", "sigma_tau_city",
                                           "kappa", "spend_shape", "nu", "items_sigma")
                              if n in self.idata_.posterior]
        return az.summary(self.idata_, var_names=names, hdi_prob=HDI_PROB)

    def prior_predictive(self, draws: int = 500) -> dict[str, Any]:
        """What the priors imply: control conversion rate and uplift in points."""
        with self.model_, warnings.catch_warnings():
            # the spend Potential only concerns spend; conversion priors are sampled exactly
            warnings.filterwarnings("ignore", message=".*Potentials.*")
            pp = pm.sample_prior_predictive(draws=draws, random_seed=self.seed,
                                            var_names=["intercept", "tau", "buyers"])
        a = pp.prior["intercept"].values.ravel()
        t = pp.prior["tau"].values.ravel()
        base, lift = expit(a), expit(a + t) - expit(a)
        return {"control_rate": describe(base), "uplift_points": describe(lift),
                "share_uplift_beyond_30_points": float((np.abs(lift) > 0.3).mean()),
                "_prior": pp}

    def posterior_predictive(self) -> dict[str, Any]:
        """Replicated buyers per group vs observed (Bayesian p-values)."""
        rep = self._replicated_buyers()
        out = {}
        for name, g in (("treated", True), ("control", False)):
            mask = (self.cells_["treated"] == g).to_numpy()
            obs = int(self.cells_.loc[mask, "y"].sum())
            sim = rep[mask].sum(axis=0)
            out[name] = {"observed": obs, "replicated_mean": float(sim.mean()),
                         "p_value": float((sim >= obs).mean())}
        return out

    def _replicated_buyers(self) -> np.ndarray:
        """Posterior predictive buyers per cell (cells x draws), sampled once per fit from at
        most :data:`PPC_DRAWS` evenly thinned draws (enough for 94% intervals of group
        counts; all draws of every cell held 0.5 GB at real scale)."""
        if getattr(self, "_rep_cache", None) is not None:
            return self._rep_cache
        post = self.idata_.posterior
        step = max(1, int(np.ceil(post.sizes["chain"] * post.sizes["draw"] / PPC_DRAWS)))
        thinned = self.idata_.sel(draw=slice(None, None, step), groups="posterior")
        with self.model_, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Potentials.*")
            pp = pm.sample_posterior_predictive(thinned, var_names=["buyers"],
                                                random_seed=self.seed, progressbar=False)
        self.idata_.extend(pp)
        self._rep_cache = pp.posterior_predictive["buyers"].stack(s=("chain", "draw")).values
        return self._rep_cache

    def posterior_predictive_groups(self, by: str = "cluster",
                                    prob: float = HDI_PROB) -> pd.DataFrame:
        """Observed conversion per level of ``by`` and arm against its replicated interval.

        A group whose observed rate falls outside the central ``prob`` interval of the
        replicated rates is one the model does not reproduce.
        """
        rep = self._replicated_buyers()
        c = self.cells_
        rows = []
        for (level, treated), idx in c.groupby([by, "treated"], observed=True).indices.items():
            n = float(c["n"].to_numpy()[idx].sum())
            obs = float(c["y"].to_numpy()[idx].sum()) / n
            sim = rep[idx].sum(axis=0) / n
            lo, hi = np.quantile(sim, [(1 - prob) / 2, (1 + prob) / 2])
            rows.append({"level": str(level), "arm": "treated" if treated else "control",
                         "clients": int(n), "observed_rate": obs,
                         "replicated_mean": float(sim.mean()), "low": float(lo),
                         "high": float(hi), "inside": bool(lo <= obs <= hi)})
        return pd.DataFrame(rows)

    def plot_posterior_predictive(self, by: str = "cluster", ax: Any = None) -> Any:
        """Observed conversion per level of ``by`` and arm (dots) against the model's
        replicated 94% intervals (bars)."""
        import matplotlib.pyplot as plt

        g = self.posterior_predictive_groups(by)
        if ax is None:
            _, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(g) + 1)))
        levels = list(dict.fromkeys(g["level"]))
        pos = {lv: 2 * i for i, lv in enumerate(levels)}
        for j, (arm, part) in enumerate(g.groupby("arm", sort=True)):
            y = part["level"].map(pos).to_numpy() + j * 0.6
            ax.hlines(y, 100 * part["low"], 100 * part["high"], color=f"C{j}", lw=4, alpha=0.4,
                      label=f"{arm}: replicated 94% interval")
            ax.plot(100 * part["observed_rate"], y, "k|", ms=12, mew=2)
        ax.plot([], [], "k|", ms=12, mew=2, label="observed")
        ax.set_yticks([pos[lv] + 0.3 for lv in levels], levels)
        ax.set_ylabel(by)
        ax.set_xlabel("share of clients who bought in the campaign window, %")
        ax.set_title(f"Posterior predictive check by {by}")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
        return ax

    def plot_forest(self, by: str, margin: float, depth: float, ax: Any = None) -> Any:
        """Forest plot of conversion uplift (points) by city or cluster with 94% HDIs."""
        import matplotlib.pyplot as plt

        eff = self.effects(margin, depth, by=by).sort_values("conversion_uplift_mean")
        overall = self.effects(margin, depth).iloc[0]
        if ax is None:
            _, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(eff) + 1)))
        y = np.arange(len(eff))
        ax.hlines(y, 100 * eff["conversion_uplift_hdi_low"],
                  100 * eff["conversion_uplift_hdi_high"], color="C0")
        ax.plot(100 * eff["conversion_uplift_mean"], y, "o", color="C0")
        ax.axvline(0, color="k", lw=0.8)
        ax.axvline(100 * overall["conversion_uplift_mean"], color="C1", ls="--", lw=1,
                   label="overall")
        ax.set_yticks(y, [f"{lv} (n={n})" for lv, n in zip(eff["level"], eff["treated_clients"],
                                                             strict=True)])
        ax.set_ylim(-0.7, len(eff) - 0.3)
        ax.set_xlabel("conversion uplift, percentage points (94% HDI)")
        ax.set_title(f"Campaign 1 uplift by {by}")
        ax.legend(loc="lower right")
        return ax


#: the parameters :meth:`HierarchicalUplift._cell_draws` reads
_CELL_TERMS = frozenset({
    "intercept", "city_effect", "beta_spend", "pre_effect", "cluster_effect", "age_effect",
    "tau", "tau_city", "tau_cluster", "spend_intercept", "spend_pre", "spend_x",
    "spend_cluster", "spend_city", "kappa", "kappa_pre", "kappa_cluster",
    "items_intercept", "items_pre", "items_x", "items_cluster", "items_city", "nu",
    "nu_pre", "nu_cluster"})


def _check_cells(cells: pd.DataFrame) -> None:
    missing = [c for c in (*CELL_KEYS, *CELL_SUMS) if c not in cells]
    if missing:
        raise ValueError(f"uplift cells lack column(s) {missing}")
    treated = cells["treated"].astype(bool)
    n_t, n_c = int(cells.loc[treated, "n"].sum()), int(cells.loc[~treated, "n"].sum())
    if n_t == 0 or n_c == 0:
        raise ValueError(f"a campaign group is empty (treated {n_t}, control {n_c})")
    bad = [c for c in ("n", "y", "spenders", "r1", "i1", "i2", "lp1", "lp2")
           if (cells[c] < 0).any()]
    if bad:
        raise ValueError(f"negative sums in uplift cells: {bad}")


def _check_contract(df: pd.DataFrame) -> None:
    need = ["treated", "converted", "revenue", "city"]
    missing = [c for c in need if c not in df]
    if "pre_orders" not in df and "pre_bought" not in df:
        missing.append("pre_orders (or pre_bought)")
    if missing:
        raise ValueError(f"uplift data lacks column(s) {missing}")
    n_t = int(df["treated"].sum())
    if n_t == 0 or n_t == len(df):
        raise ValueError(f"a campaign group is empty (treated {n_t}, control {len(df) - n_t})")
    if (df["revenue"] < 0).any():
        raise ValueError("negative revenue in uplift data (flagged costs must be removed)")


# --------------------------------------------------------------------------- decision
def recommend(overall: pd.Series, by_city: pd.DataFrame, by_cluster: pd.DataFrame,
              margin: float, depth: float, threshold: float = 0.9,
              comparison: str = "control file") -> str:
    """Plain-language recommendation generated from the posterior (never hand-written).

    ``comparison`` names what the treated were compared with (``control file`` or
    ``whole store``); it is stated in the headline so a reader knows which comparison the
    numbers rest on.
    """
    p_up = overall["conversion_uplift_p_positive"]
    p_profit = overall["profit_per_client_p_positive"]
    pct = 100 * overall["conversion_uplift_mean"]
    against = ("the control file" if comparison == "control file" else
               "similar untreated clients of the whole store (adjusted for pre-period "
               "purchases, demographics, city and cluster)")
    head = (f"Compared with {against}, the email raised the share of treated clients who "
            f"bought by {pct:.1f} points "
            f"(94% HDI {100 * overall['conversion_uplift_hdi_low']:.1f} to "
            f"{100 * overall['conversion_uplift_hdi_high']:.1f}; P(uplift > 0) = {p_up:.2f})"
            + (f" and revenue per treated client by {overall['arpu_uplift_mean']:,.0f} "
               f"({overall['arpu_uplift_hdi_low']:,.0f} to {overall['arpu_uplift_hdi_high']:,.0f})"
               if "arpu_uplift_mean" in overall else "") + ". ")
    money = (f"At a {margin:.0%} margin and a {depth:.0%} discount, profit per treated client "
             f"changes by {overall['profit_per_client_mean']:,.0f} "
             f"(P(profit > 0) = {p_profit:.2f}). ")
    if p_profit >= threshold:
        return head + money + "Recommendation: roll the campaign out."
    winners = []
    for name, df in (("cluster", by_cluster), ("city", by_city)):
        good = df[(df["profit_per_client_p_positive"] >= threshold) & (df["level"] != "other")]
        winners += [f"{name} {lv}" for lv in good["level"]]
    if winners:
        return (head + money + "Recommendation: roll out only to " + ", ".join(winners)
                + f", where P(profit > 0) >= {threshold:.0%}; stop elsewhere.")
    if p_up >= threshold:
        return (head + money + "Recommendation: stop in this form; the email works, but the "
                "discount costs more than the extra purchases bring. Test a smaller discount.")
    return head + money + "Recommendation: stop; there is no reliable evidence of an effect."
