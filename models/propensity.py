"""Purchase propensity per client and product category, with the effect of being contacted.

Outcome: did a client buy a category in the contact window (campaign 1's days 5..16)?
Every input is discrete, so the client x category table (about 3 million rows at real
scale) collapses **exactly** into binomial cells keyed by city, cluster, gender, whether
the client was contacted (campaign-1 treatment), whether they bought the category before
the window (history), and category.

Model (:class:`PropensityModel`), logit scale::

    logit p = a[cat] + city[c] + cluster[k] + cluster_cat[cat, k]
              + g[cat] * gender + h[cat] * history + contacted * tau[cat]

    a[cat]   = mu_a + theta . (log price, sale share)[cat] + sigma_a * z     (product data)
    city     ~ Normal(0, sigma_city)                     (partial pooling: 1188 borrows)
    cluster, cluster_cat: zero-sum                       (cluster preferences per category)
    g, h, tau[cat] ~ Normal(mu, sigma)                   (category-specific, pooled)

``gender`` is +0.5 / -0.5 for gender 1 / 0 (known or confidently imputed) and 0 when
uncertain. ``tau[cat]`` is what a targeting decision needs: how much contact raises the
propensity to buy that category. Campaign 2's exposure (city 1134, day 15) cannot be told
apart from city 1134's own effect in a window model; the ``campaign2`` step measures it.

Handling of awkward input (documented contract):

* a category never bought in the window keeps a propensity from the hierarchical prior
  (shrunk toward categories with similar price and sale share), never NaN;
* a client without history is scored with ``history = 0`` and the "no history" cluster;
* a city absent from training gets a city effect drawn from ``Normal(0, sigma_city)``
  per posterior draw (wider intervals, not a crash); an unknown cluster gets 0;
* a category absent from training cannot be scored: :meth:`PropensityModel.predict`
  raises naming it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
from scipy.special import expit

from models.diagnostics import check_convergence
from models.sampling import Sampler, SamplerSettings, sample_checked
from models.uplift import HDI_PROB, describe

CELL_KEYS = ["city", "cluster", "gender", "contacted", "history", "category"]
GENDER_CODE = {"1": 0.5, "0": -0.5, "unknown": 0.0}
CATEGORY_FEATURES = ["log_price", "sale_share"]

#: clients with history in every category from which the history effects are centred:
#: there each effect is pinned down by its own data and the non-centred product
#: ``sigma * z`` forms a ridge (r_hat 1.062, bulk ESS 76 at mu_history with 10,000,000
#: clients, 200,000 with history in the rarest category); the real-scale demo has about
#: 1,700 in its rarest category and keeps the non-centred form
HISTORY_CENTRED_FROM = 10_000

DEFAULT_PRIORS: dict[str, tuple[Any, ...]] = {
    "mu_a": ("Normal", -4.0, 1.5),
    "theta": ("Normal", 0.0, 0.5),
    "sigma_a": ("HalfNormal", 1.0),
    "sigma_city": ("HalfNormal", 0.5),
    "cluster_effect": ("ZeroSumNormal", 1.0),
    "sigma_cluster_cat": ("HalfNormal", 1.0),
    "mu_gender": ("Normal", 0.0, 1.0),
    "sigma_gender": ("HalfNormal", 1.0),
    "mu_history": ("Normal", 0.0, 1.0),
    "sigma_history": ("HalfNormal", 0.5),
    "mu_tau": ("Normal", 0.0, 0.5),
    # boundary-avoiding (Gamma(2, 10): mode 0.1, mean 0.2): the contact effect may differ
    # by category, and a HalfNormal's mass at 0 made a funnel that two chains of 2,500
    # draws could not cross (r_hat 1.014 at real scale)
    "sigma_tau": ("Gamma", 2.0, 10.0),
}


# --------------------------------------------------------------------------- data
def category_features(purchases: pd.DataFrame) -> pd.DataFrame:
    """Per category: median paid price (log, standardised), share sold on sale, items.

    Parameters
    ----------
    purchases : DataFrame
        Cleaned purchases with ``category``, ``revenue`` and ``base_sale``.
    """
    p = purchases[purchases["revenue"] > 0]
    g = p.groupby("category")
    out = pd.DataFrame({"median_price": g["revenue"].median().astype(float),
                        "sale_share": g["base_sale"].mean().astype(float),
                        "items": g.size()})
    return standardise_categories(out)


def standardise_categories(out: pd.DataFrame) -> pd.DataFrame:
    """Add ``log_price`` and ``sale_share_std`` (standardised over categories) to a table
    indexed by category with ``median_price`` (money) and ``sale_share`` (0..1), as
    :func:`category_features` and the engine's
    :func:`analysis.store.aggregates.category_table` build it."""
    out = out.copy()
    lp = np.log(out["median_price"])
    out["log_price"] = (lp - lp.mean()) / (lp.std() if lp.std() > 0 else 1.0)
    s = out["sale_share"]
    out["sale_share_std"] = (s - s.mean()) / (s.std() if s.std() > 0 else 1.0)
    return out.reset_index()


def category_history(purchases: pd.DataFrame, before_day: int) -> pd.DataFrame:
    """Distinct (``id``, ``category``) pairs bought before ``before_day``."""
    return purchases.loc[purchases["dt"] < before_day, ["id", "category"]].drop_duplicates()


def client_category_cells(clients: pd.DataFrame, purchases: pd.DataFrame,
                          window: tuple[int, int], categories: list[str]) -> pd.DataFrame:
    """Exact binomial cells of "bought the category in ``window``".

    Parameters
    ----------
    clients : DataFrame
        One row per client: ``id``, ``city``, ``cluster``, ``gender`` ("0"/"1"/"unknown"),
        ``contacted`` (bool) and optionally ``split`` (e.g. "train"/"holdout").
    purchases : DataFrame
        ``id``, ``dt``, ``category``.
    window : (int, int)
        First and last day of the outcome window; ``history`` is any purchase of the
        category before ``window[0]``.
    categories : list of str
        Categories to model (every client gets one row per category).

    Returns
    -------
    DataFrame
        :data:`CELL_KEYS` (+ ``split``) with ``n`` clients and ``k`` buyers per cell.
    """
    keys = [c for c in ["city", "cluster", "gender", "contacted", "split"] if c in clients]
    cl = clients[["id"] + keys].drop_duplicates("id")
    lo, hi = window
    p = purchases[purchases["category"].isin(categories) & purchases["id"].isin(cl["id"])]
    hist = category_history(p, lo)
    buy = p.loc[(p["dt"] >= lo) & (p["dt"] <= hi), ["id", "category"]].drop_duplicates()
    group_n = cl.groupby(keys, observed=True).size().rename("group_n").reset_index()
    # clients with history, per group x category
    h = hist.merge(cl, on="id").groupby(keys + ["category"], observed=True).size()
    h = h.rename("n_hist").reset_index()
    # buyers per group x category x history
    b = buy.merge(cl, on="id").merge(hist.assign(history=True), on=["id", "category"],
                                     how="left")
    b["history"] = b["history"].notna()
    k = b.groupby(keys + ["category", "history"], observed=True).size().rename("k").reset_index()
    full = group_n.merge(pd.DataFrame({"category": categories}), how="cross")
    full = full.merge(h, on=keys + ["category"], how="left")
    full["n_hist"] = full["n_hist"].fillna(0).astype(int)
    with_h = full.assign(history=True, n=full["n_hist"])
    without = full.assign(history=False, n=full["group_n"] - full["n_hist"])
    cells = pd.concat([with_h, without], ignore_index=True)
    cells = cells[cells["n"] > 0].drop(columns=["group_n", "n_hist"])
    cells = cells.merge(k, on=keys + ["category", "history"], how="left")
    cells["k"] = cells["k"].fillna(0).astype(int)
    return cells.reset_index(drop=True)


# --------------------------------------------------------------------------- model
def _prior(pm: Any, name: str, spec: tuple[Any, ...], **kw: Any) -> Any:
    kind, *args = spec
    if kind == "Normal":
        return pm.Normal(name, args[0], args[1], **kw)
    if kind == "HalfNormal":
        return pm.HalfNormal(name, args[0], **kw)
    if kind == "Gamma":
        return pm.Gamma(name, alpha=args[0], beta=args[1], **kw)
    raise ValueError(f"unknown prior {kind} for {name}")


@dataclass
class PropensityModel:
    """Hierarchical Bayesian logistic model of buying a category, fitted on binomial cells.

    Parameters
    ----------
    model_config : dict
        Priors (see :data:`DEFAULT_PRIORS`).
    sampler_config : SamplerSettings or dict, optional
    seed : int

    Examples
    --------
    >>> m = PropensityModel(sampler_config={"draws": 1000})  # doctest: +SKIP
    >>> m.fit(cells, category_table).summary()  # doctest: +SKIP
    """

    model_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PRIORS))
    sampler_config: Any = None
    seed: int = 0

    def _levels(self, cells: pd.DataFrame) -> None:
        self.categories_ = sorted(cells["category"].astype(str).unique())
        self.cities_ = sorted(cells["city"].astype(str).unique())
        self.clusters_ = sorted(cells["cluster"].astype(str).unique())

    def build_model(self, cells: pd.DataFrame, categories: pd.DataFrame) -> Any:
        """The PyMC model on ``cells`` (see the module docstring)."""
        import pymc as pm

        self._levels(cells)
        pri = self.model_config
        cat_x = (categories.set_index("category").reindex(self.categories_)
                 [["log_price", "sale_share_std"]].fillna(0.0).to_numpy(float))
        # dense grid: group (city x cluster x gender x contacted) x category x history;
        # group-level terms are gathered over a few hundred groups, then broadcast, which
        # is much cheaper than gathering over tens of thousands of cells (absent
        # combinations have n = 0 and add nothing to the likelihood)
        gkeys = ["city", "cluster", "gender", "contacted"]
        gcodes = cells[gkeys].astype(str).agg("|".join, axis=1)
        groups, gidx = np.unique(gcodes.to_numpy(), return_inverse=True)
        first = pd.Series(np.arange(len(cells))).groupby(gidx).first().to_numpy()
        g = cells.iloc[first]
        g_city = pd.Categorical(g["city"].astype(str), categories=self.cities_).codes
        g_clu = pd.Categorical(g["cluster"].astype(str), categories=self.clusters_).codes
        g_gx = g["gender"].astype(str).map(GENDER_CODE).fillna(0.0).to_numpy(float)
        g_tx = g["contacted"].astype(float).to_numpy()
        ci = pd.Categorical(cells["category"].astype(str), categories=self.categories_).codes
        hi = cells["history"].astype(int).to_numpy()
        shape = (len(groups), len(self.categories_), 2)
        N = np.zeros(shape, dtype=np.int64)
        K = np.zeros(shape, dtype=np.int64)
        np.add.at(N, (gidx, ci, hi), cells["n"].to_numpy())
        np.add.at(K, (gidx, ci, hi), cells["k"].to_numpy())
        hx = np.array([0.0, 1.0])[None, None, :]
        coords = {"category": self.categories_, "city": self.cities_,
                  "cluster": self.clusters_, "category_feature": CATEGORY_FEATURES}
        self.has_contact_ = bool(g_tx.any() and not g_tx.all())
        with pm.Model(coords=coords) as model:
            mu_a = _prior(pm, "mu_a", pri["mu_a"])
            theta = _prior(pm, "theta", pri["theta"], dims="category_feature")
            s_a = _prior(pm, "sigma_a", pri["sigma_a"])
            a = pm.Normal("a", mu_a + pm.math.dot(cat_x, theta), s_a, dims="category")
            s_c = _prior(pm, "sigma_city", pri["sigma_city"])
            # centred and zero-sum: every city has many client x category cells, and the
            # zero-sum removes the ridge between the intercepts and the mean city effect
            city = pm.ZeroSumNormal("city_effect", sigma=s_c, dims="city")
            eta = a[None, :, None] + city[g_city][:, None, None]
            if len(self.clusters_) > 1:
                k_eff = pm.ZeroSumNormal("cluster_effect", sigma=pri["cluster_effect"][1],
                                         dims="cluster")
                s_kc = _prior(pm, "sigma_cluster_cat", pri["sigma_cluster_cat"])
                kc = pm.ZeroSumNormal("cluster_cat", sigma=s_kc, n_zerosum_axes=2,
                                      dims=("category", "cluster"))
                eta = eta + k_eff[g_clu][:, None, None] + kc.T[g_clu][:, :, None]
            for name, x in (("gender", g_gx[:, None, None]), ("history", hx),
                            ("tau", g_tx[:, None, None])):
                if name == "tau" and not self.has_contact_:
                    continue
                mu = _prior(pm, f"mu_{name}", pri[f"mu_{name}"])
                sd = _prior(pm, f"sigma_{name}", pri[f"sigma_{name}"])
                centred = name == "gender" or (
                    name == "history" and N[:, :, 1].sum(axis=0).min() >= HISTORY_CENTRED_FROM)
                if not centred:
                    # few contacted buyers / few clients with history per category: a
                    # centred parametrisation makes a funnel with sigma; non-centred
                    z = pm.Normal(f"{name}_z", 0, 1, dims="category")
                    eff = pm.Deterministic(f"{name}_cat", mu + sd * z, dims="category")
                else:  # thousands of client cells behind each category: centred
                    eff = pm.Normal(f"{name}_cat", mu, sd, dims="category")
                eta = eta + eff[None, :, None] * x
            # binomial log-likelihood up to the constant log C(n, k): the cells' exact
            # sufficient statistics, without evaluating log-gamma terms at every step
            pm.Potential("buyers_loglik", pm.math.sum(K * eta - N * pm.math.log1pexp(eta)))
        return model

    def fit(self, cells: pd.DataFrame, categories: pd.DataFrame) -> PropensityModel:
        """Sample the posterior on ``cells`` (from :func:`client_category_cells`)."""
        missing = [c for c in CELL_KEYS + ["n", "k"] if c not in cells]
        if missing:
            raise ValueError(f"propensity cells lack column(s) {missing}")
        if len(cells) == 0 or cells["n"].sum() == 0:
            raise ValueError("no client x category cells to fit")
        if (cells["k"] > cells["n"]).any() or (cells["k"] < 0).any():
            raise ValueError("cells with k outside 0..n")
        self.cells_ = cells.reset_index(drop=True)
        self.category_table_ = categories
        self.model_ = self.build_model(self.cells_, categories)
        settings = SamplerSettings.from_any(self.sampler_config)
        # a failed first run is run once more, twice as long and with smaller steps (at
        # real scale r_hat of sigma_tau reached 1.0104 with 1,500 draws on one demo); the
        # checks of that run are the ones reported
        self.idata_, self.convergence_, self.resampled_with_ = sample_checked(
            Sampler(self.model_, settings), self.seed,
            lambda idata: check_convergence(idata, var_names=self._checked(idata)),
            retry_draws=2 * settings.draws)
        self._draws: dict[str, np.ndarray] | None = None
        return self

    def _checked(self, idata: Any = None) -> list[str]:
        post = (self.idata_ if idata is None else idata).posterior
        names = ["mu_a", "theta", "sigma_a", "a", "sigma_city", "city_effect", "mu_gender",
                 "sigma_gender", "gender_cat", "mu_history", "sigma_history", "history_cat",
                 "mu_tau", "sigma_tau", "tau_cat", "cluster_effect", "sigma_cluster_cat",
                 "cluster_cat"]
        return [n for n in names if n in post]

    # ------------------------------------------------------------------ prediction
    def _posterior(self, max_draws: int = 1000) -> dict[str, np.ndarray]:
        if self._draws is None:
            post = az.extract(self.idata_)
            n = post.sizes["sample"]
            idx = np.linspace(0, n - 1, min(max_draws, n)).astype(int)
            d: dict[str, np.ndarray] = {}
            for name in ("a", "city_effect", "cluster_effect", "cluster_cat", "gender_cat",
                         "history_cat", "tau_cat", "sigma_city"):
                if name in post:
                    v = post[name].values
                    d[name] = np.moveaxis(v, -1, 0)[idx]  # draws first
            self._draws = d
        return self._draws

    def predict(self, rows: pd.DataFrame, contacted: bool | None = None,
                max_draws: int = 1000) -> np.ndarray:
        """Posterior draws (draws x rows) of the propensity for ``rows``.

        ``rows`` has ``city``, ``cluster``, ``gender``, ``history``, ``category`` and, unless
        ``contacted`` is given (which overrides it for every row), ``contacted``.
        """
        d = self._posterior(max_draws)
        cats = rows["category"].astype(str)
        unknown = sorted(set(cats) - set(self.categories_))
        if unknown:
            raise ValueError(f"categories absent from training cannot be scored: {unknown}")
        gi = pd.Categorical(cats, categories=self.categories_).codes
        ci = pd.Categorical(rows["city"].astype(str), categories=self.cities_).codes
        ki = pd.Categorical(rows["cluster"].astype(str), categories=self.clusters_).codes
        n_draws = d["a"].shape[0]
        eta = d["a"][:, gi]
        city = np.where(ci[None, :] >= 0, d["city_effect"][:, np.maximum(ci, 0)], 0.0)
        new_city = ci < 0
        if new_city.any():  # a city never seen: a fresh draw from the population
            rng = np.random.default_rng(self.seed)
            fresh = rng.normal(0, 1, (n_draws, 1)) * d["sigma_city"][:, None]
            city = np.where(new_city[None, :], fresh, city)
        eta = eta + city
        if "cluster_effect" in d:
            kk = np.maximum(ki, 0)
            known = (ki >= 0)[None, :]
            eta = eta + np.where(known, d["cluster_effect"][:, kk], 0.0)
            eta = eta + np.where(known, d["cluster_cat"][:, gi, kk], 0.0)
        gx = rows["gender"].astype(str).map(GENDER_CODE).fillna(0.0).to_numpy(float)
        eta = eta + d["gender_cat"][:, gi] * gx
        eta = eta + d["history_cat"][:, gi] * rows["history"].astype(float).to_numpy()
        if "tau_cat" in d:
            tx = (np.full(len(rows), float(contacted)) if contacted is not None
                  else rows["contacted"].astype(float).to_numpy())
            eta = eta + d["tau_cat"][:, gi] * tx
        return expit(eta)

    #: rows (cells or clients) predicted at once by :meth:`predict_mean` and
    #: :meth:`posterior_predictive_check`: memory holds draws x block values
    ROW_BLOCK = 2_000

    def predict_mean(self, rows: pd.DataFrame, contacted: bool | None = None,
                     chunk: int | None = None) -> np.ndarray:
        """Posterior mean of the propensity for each of ``rows`` (shape ``(len(rows),)``).

        The same numbers as ``predict(rows, contacted).mean(axis=0)``, computed ``chunk``
        rows at a time (default :attr:`ROW_BLOCK`) so that memory holds draws x ``chunk``
        values, not draws x rows (at 10 million clients the held-out cells alone are tens
        of thousands of rows).
        """
        chunk = chunk or self.ROW_BLOCK
        out = np.empty(len(rows))
        for lo in range(0, len(rows), chunk):
            part = rows.iloc[lo:lo + chunk]
            out[lo:lo + len(part)] = self.predict(part, contacted).mean(axis=0)
        return out

    # ------------------------------------------------------------------ reporting
    def summary(self, var_names: list[str] | None = None) -> pd.DataFrame:
        """ArviZ summary (94% HDI) of the population-level parameters."""
        names = var_names or [n for n in ("mu_a", "theta", "sigma_a", "sigma_city",
                                          "mu_gender", "mu_history", "mu_tau", "sigma_tau",
                                          "sigma_cluster_cat") if n in self.idata_.posterior]
        return az.summary(self.idata_, var_names=names, hdi_prob=HDI_PROB)

    def category_effects(self) -> pd.DataFrame:
        """Per category: contact effect (logit and, at the average client, points)."""
        d = self._posterior()
        rows = []
        for j, cat in enumerate(self.categories_):
            base = expit(d["a"][:, j])
            row: dict[str, Any] = {"category": cat}
            if "tau_cat" in d:
                t = d["tau_cat"][:, j]
                for k, v in describe(t).items():
                    row[f"tau_{k}"] = v
                for k, v in describe(expit(d["a"][:, j] + t) - base).items():
                    row[f"uplift_points_{k}"] = v
            row["baseline_mean"] = float(base.mean())
            rows.append(row)
        return pd.DataFrame(rows)

    def prior_predictive(self, draws: int = 500) -> dict[str, Any]:
        """What the priors imply for a cell's propensity and for the contact effect."""
        import pymc as pm

        with self.model_, warnings.catch_warnings():
            # the likelihood is a Potential; the priors are sampled exactly without it
            warnings.filterwarnings("ignore", message=".*Potentials.*")
            pp = pm.sample_prior_predictive(draws=draws, random_seed=self.seed,
                                            var_names=["a"] + (["tau_cat"] if self.has_contact_
                                                               else []))
        a = pp.prior["a"].values.reshape(-1, len(self.categories_))
        out = {"propensity": describe(expit(a)),
               "share_above_50_percent": float((expit(a) > 0.5).mean())}
        if self.has_contact_:
            t = pp.prior["tau_cat"].values.reshape(-1, len(self.categories_))
            out["contact_uplift_points"] = describe(expit(a + t) - expit(a))
        return out

    def posterior_predictive_check(self) -> dict[str, Any]:
        """Buyers per category: observed against replicated (posterior mean and p-value)."""
        rng = np.random.default_rng(self.seed)
        cells = self.cells_
        cats = pd.Categorical(cells["category"].astype(str), categories=self.categories_).codes
        rep_cat = np.zeros((self._posterior()["a"].shape[0], len(self.categories_)))
        # replicated buyers summed per category, a block of cells at a time (memory holds
        # draws x block, not draws x cells)
        for lo in range(0, len(cells), self.ROW_BLOCK):
            part = cells.iloc[lo:lo + self.ROW_BLOCK]
            rep = rng.binomial(part["n"].to_numpy()[None, :],
                               self.predict(part))
            np.add.at(rep_cat.T, cats[lo:lo + len(part)], rep.T)
        obs_cat = np.bincount(cats, weights=cells["k"].to_numpy(),
                              minlength=len(self.categories_))
        pval = (rep_cat >= obs_cat[None, :]).mean(axis=0)
        return {"categories_outside_90": int(((pval < 0.05) | (pval > 0.95)).sum()),
                "categories": len(self.categories_),
                "observed_total": int(obs_cat.sum()),
                "replicated_total_mean": float(rep_cat.sum(axis=1).mean())}

    def plot_contact_effects(self, ax: Any = None) -> Any:
        """Forest plot of the contact effect per category (points of propensity)."""
        import matplotlib.pyplot as plt

        eff = self.category_effects().sort_values("uplift_points_mean")
        if ax is None:
            _, ax = plt.subplots(figsize=(7, max(3, 0.25 * len(eff) + 1)))
        y = np.arange(len(eff))
        ax.hlines(y, 100 * eff["uplift_points_hdi_low"], 100 * eff["uplift_points_hdi_high"])
        ax.plot(100 * eff["uplift_points_mean"], y, "o")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, eff["category"])
        ax.set_xlabel("change in P(buy the category in the window) when contacted, points "
                      "(94% HDI)")
        ax.set_title("Contact effect by category (average client)")
        return ax


# --------------------------------------------------------------------------- simulation
def simulate_cells(n_clients: int = 30_000, n_categories: int = 15, n_cities: int = 12,
                   n_clusters: int = 3, contacted_share: float = 0.05, seed: int = 0
                   ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Cells drawn from the model itself with known parameters (for recovery tests).

    The defaults mimic the store's proportions: rare purchases (a few percent per
    category and window), about 5% of clients contacted, few clients with history.
    """
    rng = np.random.default_rng(seed)
    cats = [f"cat{j}" for j in range(n_categories)]
    cat_table = pd.DataFrame({"category": cats, "log_price": rng.normal(0, 1, n_categories),
                              "sale_share_std": rng.normal(0, 1, n_categories)})
    truth = {"mu_a": -3.0, "theta": np.array([-0.4, 0.3]), "sigma_a": 0.5,
             "sigma_city": 0.3, "mu_gender": 0.0, "sigma_gender": 0.5, "mu_history": 1.0,
             "sigma_history": 0.3, "mu_tau": 0.4, "sigma_tau": 0.2}
    X = cat_table[["log_price", "sale_share_std"]].to_numpy()
    truth["a"] = truth["mu_a"] + X @ truth["theta"] + rng.normal(0, truth["sigma_a"],
                                                                 n_categories)
    city = rng.normal(0, truth["sigma_city"], n_cities)
    truth["city_effect"] = city - city.mean()  # the model's city effects are zero-sum
    k_eff = rng.normal(0, 0.4, n_clusters)
    truth["cluster_effect"] = k_eff - k_eff.mean()
    kc = rng.normal(0, 0.5, (n_categories, n_clusters))
    kc = kc - kc.mean(axis=0, keepdims=True)
    truth["cluster_cat"] = kc - kc.mean(axis=1, keepdims=True)
    for name in ("gender", "history", "tau"):
        truth[f"{name}_cat"] = rng.normal(truth[f"mu_{name}"], truth[f"sigma_{name}"],
                                          n_categories)
    clients = pd.DataFrame({
        "city": rng.integers(0, n_cities, n_clients), "cluster": rng.integers(0, n_clusters,
                                                                             n_clients),
        "gender": rng.choice(["0", "1", "unknown"], n_clients, p=[0.45, 0.5, 0.05]),
        "contacted": rng.random(n_clients) < contacted_share})
    rows = clients.loc[clients.index.repeat(n_categories)].reset_index(drop=True)
    rows["cat_idx"] = np.tile(np.arange(n_categories), n_clients)
    rows["history"] = rng.random(len(rows)) < 0.02
    gi, ci, ki = rows["cat_idx"].to_numpy(), rows["city"].to_numpy(), rows["cluster"].to_numpy()
    eta = (truth["a"][gi] + truth["city_effect"][ci] + truth["cluster_effect"][ki]
           + truth["cluster_cat"][gi, ki]
           + truth["gender_cat"][gi] * rows["gender"].map(GENDER_CODE).to_numpy()
           + truth["history_cat"][gi] * rows["history"].to_numpy()
           + truth["tau_cat"][gi] * rows["contacted"].to_numpy())
    rows["y"] = rng.random(len(rows)) < expit(eta)
    rows["category"] = np.asarray(cats)[gi]
    rows["city"] = rows["city"].astype(str)
    rows["cluster"] = rows["cluster"].astype(str)
    cells = (rows.groupby(CELL_KEYS, observed=True)["y"].agg(n="size", k="sum").reset_index())
    return cells, cat_table, truth
