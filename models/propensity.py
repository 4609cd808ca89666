"""Purchase propensity per client and product category, with the effect of being contacted.

Outcome: did a client buy a category in the contact window (campaign 1's days 5..16)?
Inputs: where the client lives (city), their cluster and gender, whether they were
contacted (campaign-1 treatment), and their behaviour **before** the window: purchase
days (frequency), days since the last purchase (recency), price paid per item, share of
items bought on sale, and items of the row's category. The data
(:func:`analysis.store.aggregates.propensity_rows`) are exact binomial cells for the
clients with no purchase before the window (identical inputs) and client x category
rows, sampled by client and case-control sampled by outcome, for the others.

Model (:class:`PropensityModel`), logit scale::

    logit p = a[cat] + city[c] + cluster[k] + cluster_cat[cat, k] + g[cat] * gender
              + history * (b_hist + beta . x) + b_cat * x_cat
              + contacted * (tau[cat] + history * gamma . x)
              - log(negative_rate)                                (case-control offset)

    a[cat]      = mu_a + theta . (log price, sale share)[cat] + sigma_a * z
    city        ~ ZeroSumNormal(sigma_city)        (partial pooling: 1188 borrows)
    cluster, cluster_cat: zero-sum                 (cluster preferences per category)
    g, tau[cat] ~ Normal(mu, sigma)                (category-specific, pooled)
    beta, gamma, b_cat ~ Normal(0, s)              (standardised client behaviour)

``x`` are the client's behaviour features standardised over the training rows with
history (0 for a client without history), ``x_cat`` the standardised log items of the
row's category. ``tau[cat] + gamma . x`` is what a targeting decision needs: how much
contact raises the log-odds of buying that category, for this client. ``gamma`` lets the
effect grow or shrink with behaviour (deal-prone clients may answer a discount more).

Case-control sampling keeps every training row with a purchase and a share ``f`` (the
row's ``negative_rate``) of the others; the log-odds of every kept row of that stratum
are shifted by exactly ``log(1 / f)``, so the offset restores P(buy | inputs)
(Prentice and Pyke 1979; King and Zeng 2001). Predictions leave the offset out.

Handling of awkward input (documented contract):

* a category never bought in the window keeps a propensity from the hierarchical prior
  (shrunk toward categories with similar price and sale share), never NaN;
* a client without history is scored with ``history = 0`` (their cell's propensity);
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

from models.compiled import fixed_data
from models.diagnostics import check_convergence
from models.sampling import Sampler, SamplerSettings, sample_checked
from models.uplift import HDI_PROB, describe

ROW_KEYS = ["city", "cluster", "gender", "contacted", "category", "has_history"]
BEHAVIOUR = ["frequency", "recency", "items", "spend", "sale_items", "category_items"]
GENDER_CODE = {"1": 0.5, "0": -0.5, "unknown": 0.0}
CATEGORY_FEATURES = ["log_price", "sale_share"]
#: client-level features (standardised; 0 for a client without history)
CLIENT_FEATURES = ["log_frequency", "recency", "log_price_paid", "sale_share"]

DEFAULT_PRIORS: dict[str, tuple[Any, ...]] = {
    "mu_a": ("Normal", -4.0, 1.5),
    "theta": ("Normal", 0.0, 0.5),
    "sigma_a": ("HalfNormal", 1.0),
    "sigma_city": ("HalfNormal", 0.5),
    "cluster_effect": ("ZeroSumNormal", 1.0),
    "sigma_cluster_cat": ("HalfNormal", 1.0),
    "mu_gender": ("Normal", 0.0, 1.0),
    "sigma_gender": ("HalfNormal", 1.0),
    "b_history": ("Normal", 0.0, 1.0),
    "beta": ("Normal", 0.0, 1.0),
    "b_cat_items": ("Normal", 0.0, 1.0),
    "mu_tau": ("Normal", 0.0, 0.5),
    # boundary-avoiding (Gamma(2, 10): mode 0.1, mean 0.2): the contact effect may differ
    # by category, and a HalfNormal's mass at 0 made a funnel
    "sigma_tau": ("Gamma", 2.0, 10.0),
    "gamma": ("Normal", 0.0, 0.5),
}


def negative_weights(rows: pd.DataFrame) -> np.ndarray:
    """Clients x categories each row stands for under case-control sampling: ``n`` for a
    buying row, ``n / negative_rate`` for one without a purchase (a cell, or a row outside
    the case-control stratum, has ``negative_rate`` 1)."""
    n = rows["n"].to_numpy(float)
    return np.where(rows["k"].to_numpy() > 0, n, n / rows["negative_rate"].to_numpy(float))


def client_features(rows: pd.DataFrame) -> pd.DataFrame:
    """The raw client features of :data:`CLIENT_FEATURES` and ``log_category_items``
    from the behaviour columns of :func:`analysis.store.aggregates.propensity_rows`
    (frequency in purchase days, recency in days, spend in money); 0 for a row without
    history."""
    h = rows["has_history"].to_numpy(bool)
    items = np.maximum(rows["items"].to_numpy(float), 1.0)
    out = pd.DataFrame({
        "log_frequency": np.log(np.maximum(rows["frequency"].to_numpy(float), 1.0)),
        "recency": rows["recency"].to_numpy(float),
        "log_price_paid": np.log(np.maximum(rows["spend"].to_numpy(float), 1.0) / items),
        "sale_share": rows["sale_items"].to_numpy(float) / items,
        "log_category_items": np.log1p(rows["category_items"].to_numpy(float)),
    }, index=rows.index)
    out[~h] = 0.0
    return out


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
    """Hierarchical Bayesian logistic model of buying a category in the window, fitted on
    exact cells and sampled client x category rows (see the module docstring).

    Parameters
    ----------
    model_config : dict
        Priors (see :data:`DEFAULT_PRIORS`).
    sampler_config : SamplerSettings or dict, optional
    seed : int

    Examples
    --------
    >>> m = PropensityModel(sampler_config={"draws": 1000})  # doctest: +SKIP
    >>> m.fit(rows, category_table).summary()  # doctest: +SKIP
    """

    model_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PRIORS))
    sampler_config: Any = None
    seed: int = 0

    # ------------------------------------------------------------------ data
    def _levels(self, rows: pd.DataFrame) -> None:
        self.categories_ = sorted(rows["category"].astype(str).unique())
        self.cities_ = sorted(rows["city"].astype(str).unique())
        self.clusters_ = sorted(rows["cluster"].astype(str).unique())

    def _standardiser(self, rows: pd.DataFrame,
                      scale: tuple[np.ndarray, np.ndarray] | None) -> None:
        if scale is not None:
            self.feature_mean_ = np.asarray(scale[0], float)
            self.feature_sd_ = np.asarray(scale[1], float)
            return
        x = client_features(rows)
        h = rows["has_history"].to_numpy(bool)
        w = negative_weights(rows)[h]
        if not h.any():
            self.feature_mean_ = np.zeros(x.shape[1])
            self.feature_sd_ = np.ones(x.shape[1])
            return
        xh = x.to_numpy()[h]
        mean = np.average(xh, axis=0, weights=w)
        sd = np.sqrt(np.average((xh - mean) ** 2, axis=0, weights=w))
        self.feature_mean_ = mean
        self.feature_sd_ = np.where(sd > 0, sd, 1.0)

    def design(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """Index and feature arrays of ``rows`` (after :meth:`fit`): category, city and
        cluster codes (-1 when unknown), gender code, history flag, the standardised
        client features (rows x 4, 0 without history) and category items (rows)."""
        cats = rows["category"].astype(str)
        h = rows["has_history"].to_numpy(bool)
        x = (client_features(rows).to_numpy() - self.feature_mean_) / self.feature_sd_
        x[~h] = 0.0
        return {"cat": pd.Categorical(cats, categories=self.categories_).codes.astype(int),
                "city": pd.Categorical(rows["city"].astype(str),
                                       categories=self.cities_).codes.astype(int),
                "cluster": pd.Categorical(rows["cluster"].astype(str),
                                          categories=self.clusters_).codes.astype(int),
                "gender": rows["gender"].astype(str).map(GENDER_CODE).fillna(0.0)
                .to_numpy(float),
                "history": h.astype(float), "x": x[:, :len(CLIENT_FEATURES)],
                "x_cat": x[:, len(CLIENT_FEATURES)],
                "contacted": rows["contacted"].astype(float).to_numpy()}

    def build_model(self, rows: pd.DataFrame, categories: pd.DataFrame) -> Any:
        """The PyMC model on ``rows`` (see the module docstring)."""
        import pymc as pm

        pri = self.model_config
        cat_x = (categories.set_index("category").reindex(self.categories_)
                 [["log_price", "sale_share_std"]].fillna(0.0).to_numpy(float))
        d = self.design(rows)
        n = rows["n"].to_numpy(float)
        k = rows["k"].to_numpy(float)
        offset = -np.log(rows["negative_rate"].to_numpy(float))
        self.has_contact_ = bool(d["contacted"].any() and not d["contacted"].all())
        coords = {"category": self.categories_, "city": self.cities_,
                  "cluster": self.clusters_, "category_feature": CATEGORY_FEATURES,
                  "client_feature": CLIENT_FEATURES}
        ci, hi, tx = d["cat"], d["history"], d["contacted"]
        # the terms shared by a group (city x cluster x gender x contacted) and category
        # are computed on a dense grid of groups x categories and gathered once per row:
        # two gathers per row instead of seven (the gathers' gradients dominate the cost)
        gkey = pd.DataFrame({"city": d["city"], "cluster": d["cluster"],
                             "gender": d["gender"], "contacted": tx})
        groups, gidx = np.unique(gkey.to_numpy(), axis=0, return_inverse=True)
        g_city, g_clu = groups[:, 0].astype(int), groups[:, 1].astype(int)
        g_gx, g_tx = groups[:, 2], groups[:, 3]
        flat = gidx.ravel() * len(self.categories_) + ci
        with pm.Model(coords=coords) as model:
            # every array of the rows, groups and categories as a data container of fixed
            # shape, not a constant of the compiled code (a column of the groups' array
            # was not contiguous), so that the code can be kept and a rerun loads it
            # (models.compiled.fixed_data)
            cat_x = fixed_data("category_x", cat_x)
            g_city, g_clu = fixed_data("group_city", g_city), fixed_data("group_cluster", g_clu)
            g_gx, g_tx = fixed_data("group_gender", g_gx), fixed_data("group_contacted", g_tx)
            mu_a = _prior(pm, "mu_a", pri["mu_a"])
            theta = _prior(pm, "theta", pri["theta"], dims="category_feature")
            s_a = _prior(pm, "sigma_a", pri["sigma_a"])
            a = pm.Normal("a", mu_a + pm.math.dot(cat_x, theta), s_a, dims="category")
            s_c = _prior(pm, "sigma_city", pri["sigma_city"])
            city = pm.ZeroSumNormal("city_effect", sigma=s_c, dims="city")
            grid = a[None, :] + city[g_city][:, None]
            if len(self.clusters_) > 1:
                k_eff = pm.ZeroSumNormal("cluster_effect", sigma=pri["cluster_effect"][1],
                                         dims="cluster")
                s_kc = _prior(pm, "sigma_cluster_cat", pri["sigma_cluster_cat"])
                kc = pm.ZeroSumNormal("cluster_cat", sigma=s_kc, n_zerosum_axes=2,
                                      dims=("category", "cluster"))
                grid = grid + k_eff[g_clu][:, None] + kc.T[g_clu]
            g_cat = self._pooled(pm, "gender", pri, centred=True)
            grid = grid + g_gx[:, None] * g_cat[None, :]
            row_x = None
            if self.has_contact_:
                tau = self._pooled(pm, "tau", pri, centred=False)
                grid = grid + g_tx[:, None] * tau[None, :]
                if hi.any() and (tx * hi).sum() > 0:
                    gamma = _prior(pm, "gamma", pri["gamma"], dims="client_feature")
                    row_x = tx[:, None] * d["x"]
            flat = fixed_data("row_cell", flat)
            offset = fixed_data("row_offset", offset)
            hist = fixed_data("row_history", hi)
            k = fixed_data("row_buyers", k)
            n = fixed_data("row_clients", n)
            x_cat = fixed_data("row_category_items", d["x_cat"])
            eta = grid.flatten()[flat] + offset
            x_rows = fixed_data("client_x", d["x"])
            if row_x is not None:
                row_x = fixed_data("contacted_client_x", row_x)
            if hi.any():
                b_h = _prior(pm, "b_history", pri["b_history"])
                beta = _prior(pm, "beta", pri["beta"], dims="client_feature")
                # one slope for the items of the row's category: with category-specific
                # slopes their spread sat at zero (r_hat 1.02 at sigma at real scale)
                b_ci = _prior(pm, "b_cat_items", pri["b_cat_items"])
                eta = eta + hist * b_h + pm.math.dot(x_rows, beta) + b_ci * x_cat
            if row_x is not None:
                eta = eta + pm.math.dot(row_x, gamma)
            # binomial log-likelihood up to log C(n, k): exact for the cells, Bernoulli for
            # the rows (n = 1), on the case-control scale (the offset)
            pm.Potential("buyers_loglik", pm.math.sum(k * eta - n * pm.math.log1pexp(eta)))
        return model

    @staticmethod
    def _pooled(pm: Any, name: str, pri: dict[str, Any], centred: bool) -> Any:
        mu = _prior(pm, f"mu_{name}", pri[f"mu_{name}"])
        sd = _prior(pm, f"sigma_{name}", pri[f"sigma_{name}"])
        if centred:
            return pm.Normal(f"{name}_cat", mu, sd, dims="category")
        z = pm.Normal(f"{name}_z", 0, 1, dims="category")
        return pm.Deterministic(f"{name}_cat", mu + sd * z, dims="category")

    def prepare(self, rows: pd.DataFrame, categories: pd.DataFrame,
                feature_scale: tuple[np.ndarray, np.ndarray] | None = None) -> Any:
        """Check ``rows``, learn their levels and standardisation and build the PyMC model
        :meth:`fit` samples (kept as ``model_``, also returned); nothing is sampled.

        Parameters and errors: those of :meth:`fit`.
        """
        missing = [c for c in ROW_KEYS + BEHAVIOUR + ["n", "k", "negative_rate"]
                   if c not in rows]
        if missing:
            raise ValueError(f"propensity rows lack column(s) {missing}")
        if len(rows) == 0 or rows["n"].sum() == 0:
            raise ValueError("no client x category rows to fit")
        if (rows["k"] > rows["n"]).any() or (rows["k"] < 0).any():
            raise ValueError("rows with k outside 0..n")
        self.rows_ = rows.reset_index(drop=True)
        self.category_table_ = categories
        self._levels(self.rows_)
        self._standardiser(self.rows_, feature_scale)
        self.model_ = self.build_model(self.rows_, categories)
        return self.model_

    def fit(self, rows: pd.DataFrame, categories: pd.DataFrame,
            feature_scale: tuple[np.ndarray, np.ndarray] | None = None) -> PropensityModel:
        """Sample the posterior on ``rows`` (:func:`analysis.store.aggregates.
        propensity_rows`: cells and sampled rows with ``n``, ``k`` and
        ``negative_rate``), in the model :meth:`prepare` builds.

        ``feature_scale`` (mean, sd of the five raw features of :func:`client_features`)
        fixes the standardisation; by default the mean and SD over the rows with history,
        weighted by :func:`negative_weights` (what the rows stand for before
        case-control sampling).

        Raises
        ------
        ValueError
            If a column is missing, there is nothing to fit, or ``k`` is outside
            ``0..n``.
        """
        self.prepare(rows, categories, feature_scale)
        settings = SamplerSettings.from_any(self.sampler_config)
        self.idata_, self.convergence_, self.resampled_with_ = sample_checked(
            Sampler(self.model_, settings), self.seed,
            lambda idata: check_convergence(idata, var_names=self._checked(idata)),
            retry_draws=2 * settings.draws)
        self._draws: dict[str, np.ndarray] | None = None
        return self

    def _checked(self, idata: Any = None) -> list[str]:
        post = (self.idata_ if idata is None else idata).posterior
        names = ["mu_a", "theta", "sigma_a", "a", "sigma_city", "city_effect", "mu_gender",
                 "sigma_gender", "gender_cat", "b_history", "beta", "b_cat_items", "mu_tau",
                 "sigma_tau", "tau_cat",
                 "gamma", "cluster_effect", "sigma_cluster_cat", "cluster_cat"]
        return [n for n in names if n in post]

    # ------------------------------------------------------------------ prediction
    #: posterior draws used by predictions (evenly spaced over the chains)
    PREDICT_DRAWS = 250

    def _posterior(self) -> dict[str, np.ndarray]:
        if self._draws is None:
            post = az.extract(self.idata_)
            n = post.sizes["sample"]
            idx = np.linspace(0, n - 1, min(self.PREDICT_DRAWS, n)).astype(int)
            d: dict[str, np.ndarray] = {}
            for name in ("a", "city_effect", "cluster_effect", "cluster_cat", "gender_cat",
                         "b_history", "beta", "b_cat_items", "tau_cat", "gamma",
                         "sigma_city"):
                if name in post:
                    d[name] = np.moveaxis(post[name].values, -1, 0)[idx]  # draws first
            self._draws = d
        return self._draws

    def linear_predictor(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Posterior draws of the log-odds without contact and of the contact effect
        (each draws x rows; no case-control offset).

        Raises
        ------
        ValueError
            If a row's category was absent from training.
        """
        d = self._posterior()
        unknown = sorted(set(rows["category"].astype(str)) - set(self.categories_))
        if unknown:
            raise ValueError(f"categories absent from training cannot be scored: {unknown}")
        x = self.design(rows)
        gi, ci, ki = x["cat"], x["city"], x["cluster"]
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
        eta = eta + d["gender_cat"][:, gi] * x["gender"]
        if "beta" in d:
            eta = (eta + d["b_history"][:, None] * x["history"] + d["beta"] @ x["x"].T
                   + d["b_cat_items"][:, None] * x["x_cat"])
        effect = np.zeros_like(eta)
        if "tau_cat" in d:
            effect = d["tau_cat"][:, gi]
            if "gamma" in d:
                effect = effect + d["gamma"] @ x["x"].T
        return eta, effect

    def predict(self, rows: pd.DataFrame, contacted: bool | None = None) -> np.ndarray:
        """Posterior draws (draws x rows) of P(buy the row's category in the window).

        ``contacted`` overrides the rows' ``contacted`` column when given.
        """
        eta, effect = self.linear_predictor(rows)
        tx = (np.full(len(rows), float(contacted)) if contacted is not None
              else rows["contacted"].astype(float).to_numpy())
        return expit(eta + effect * tx)

    #: rows predicted at once by :meth:`predict_mean` and the checks: memory holds
    #: draws x block values
    ROW_BLOCK = 2_000

    def predict_mean(self, rows: pd.DataFrame, contacted: bool | None = None,
                     chunk: int | None = None) -> np.ndarray:
        """Posterior mean of the propensity for each of ``rows`` (shape ``(len(rows),)``),
        ``chunk`` rows at a time (the same numbers as ``predict(...).mean(axis=0)``)."""
        chunk = chunk or self.ROW_BLOCK
        out = np.empty(len(rows))
        for lo in range(0, len(rows), chunk):
            part = rows.iloc[lo:lo + chunk]
            out[lo:lo + len(part)] = self.predict(part, contacted).mean(axis=0)
        return out

    def predict_uplift_mean(self, rows: pd.DataFrame, chunk: int | None = None
                            ) -> np.ndarray:
        """Posterior mean of P(buy | contacted) - P(buy | not contacted) per row."""
        chunk = chunk or self.ROW_BLOCK
        out = np.empty(len(rows))
        for lo in range(0, len(rows), chunk):
            part = rows.iloc[lo:lo + chunk]
            eta, effect = self.linear_predictor(part)
            out[lo:lo + len(part)] = (expit(eta + effect) - expit(eta)).mean(axis=0)
        return out

    # ------------------------------------------------------------------ reporting
    def summary(self, var_names: list[str] | None = None) -> pd.DataFrame:
        """ArviZ summary (94% HDI) of the population-level parameters."""
        names = var_names or [n for n in ("mu_a", "theta", "sigma_a", "sigma_city",
                                          "mu_gender", "b_history", "beta", "b_cat_items",
                                          "mu_tau", "sigma_tau", "gamma",
                                          "sigma_cluster_cat") if n in self.idata_.posterior]
        return az.summary(self.idata_, var_names=names, hdi_prob=HDI_PROB)

    def category_effects(self) -> pd.DataFrame:
        """Per category: contact effect (log-odds and, at an average client without
        history, points of propensity)."""
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
        """What the priors imply for a category's propensity and for the contact effect."""
        import pymc as pm

        names = ["a"] + (["tau_cat"] if self.has_contact_ else [])
        with self.model_, warnings.catch_warnings():
            # the likelihood is a Potential; the priors are sampled exactly without it
            warnings.filterwarnings("ignore", message=".*Potentials.*")
            pp = pm.sample_prior_predictive(draws=draws, random_seed=self.seed,
                                            var_names=names)
        a = pp.prior["a"].values.reshape(-1, len(self.categories_))
        out = {"propensity": describe(expit(a)),
               "share_above_50_percent": float((expit(a) > 0.5).mean())}
        if self.has_contact_:
            t = pp.prior["tau_cat"].values.reshape(-1, len(self.categories_))
            out["contact_uplift_points"] = describe(expit(a + t) - expit(a))
        return out

    def posterior_predictive_check(self) -> dict[str, Any]:
        """Buyers per category in the fitted data (on the sampled scale, offset included):
        observed against replicated (posterior mean and p-value)."""
        rng = np.random.default_rng(self.seed)
        rows = self.rows_
        cats = pd.Categorical(rows["category"].astype(str), categories=self.categories_).codes
        rep_cat = np.zeros((self._posterior()["a"].shape[0], len(self.categories_)))
        offset = -np.log(rows["negative_rate"].to_numpy(float))
        for lo in range(0, len(rows), self.ROW_BLOCK):
            part = rows.iloc[lo:lo + self.ROW_BLOCK]
            eta, effect = self.linear_predictor(part)
            eta = eta + effect * part["contacted"].astype(float).to_numpy()
            p = expit(eta + offset[lo:lo + len(part)])
            rep = rng.binomial(part["n"].to_numpy()[None, :], p)
            np.add.at(rep_cat.T, cats[lo:lo + len(part)], rep.T)
        obs_cat = np.bincount(cats, weights=rows["k"].to_numpy(),
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
        ax.set_title("Contact effect by category (client without history)")
        return ax


# --------------------------------------------------------------------------- simulation
def simulate_rows(n_clients: int = 20_000, n_categories: int = 12, n_cities: int = 8,
                  n_clusters: int = 3, contacted_share: float = 0.1,
                  history_share: float = 0.5, negative_rate: float = 0.2, seed: int = 0
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Rows drawn from the model itself with known parameters (for recovery tests), in
    the form :func:`analysis.store.aggregates.propensity_rows` returns: clients without
    history aggregated into cells, the others' rows case-control sampled.

    The client-feature coefficients (``beta``, ``gamma``, ``b_cat_items``) are on the
    scale of the features standardised over every row with history before the sampling,
    returned as ``truth["feature_scale"]`` for :meth:`PropensityModel.fit`.
    """
    rng = np.random.default_rng(seed)
    cats = [f"cat{j}" for j in range(n_categories)]
    cat_table = pd.DataFrame({"category": cats, "log_price": rng.normal(0, 1, n_categories),
                              "sale_share_std": rng.normal(0, 1, n_categories)})
    truth: dict[str, Any] = {
        "mu_a": -3.0, "theta": np.array([-0.4, 0.3]), "sigma_a": 0.5, "sigma_city": 0.3,
        "mu_gender": 0.0, "sigma_gender": 0.3, "b_history": 0.5,
        "beta_raw": np.array([0.5, -0.2, 0.15, 0.1]), "b_cat_items": 0.6,
        "mu_tau": 0.5, "sigma_tau": 0.2,
        "gamma_raw": np.array([0.0, 0.0, 0.0, 0.35])}
    X = cat_table[["log_price", "sale_share_std"]].to_numpy()
    truth["a"] = truth["mu_a"] + X @ truth["theta"] + rng.normal(0, truth["sigma_a"],
                                                                 n_categories)
    city = rng.normal(0, truth["sigma_city"], n_cities)
    truth["city_effect"] = city - city.mean()
    k_eff = rng.normal(0, 0.4, n_clusters)
    truth["cluster_effect"] = k_eff - k_eff.mean()
    kc = rng.normal(0, 0.5, (n_categories, n_clusters))
    kc = kc - kc.mean(axis=0, keepdims=True)
    truth["cluster_cat"] = kc - kc.mean(axis=1, keepdims=True)
    for name in ("gender", "tau"):
        truth[f"{name}_cat"] = rng.normal(truth[f"mu_{name}"], truth[f"sigma_{name}"],
                                          n_categories)
    n = n_clients
    hist = rng.random(n) < history_share
    freq = np.where(hist, 1 + rng.poisson(0.8, n), 0)
    items = np.where(hist, freq + rng.poisson(0.5 * freq), 0)
    clients = pd.DataFrame({
        "id": np.arange(n), "city": rng.integers(0, n_cities, n).astype(str),
        "cluster": rng.integers(0, n_clusters, n).astype(str),
        "gender": rng.choice(["0", "1", "unknown"], n, p=[0.45, 0.5, 0.05]),
        "contacted": rng.random(n) < contacted_share, "has_history": hist,
        "frequency": freq, "recency": np.where(hist, rng.integers(1, 6, n), 0),
        "items": items,
        "spend": np.where(hist, items * np.exp(rng.normal(8, 0.6, n)), 0.0).round(),
        "sale_items": np.where(hist, rng.binomial(items, rng.beta(2, 3, n)), 0)})
    rows = clients.loc[clients.index.repeat(n_categories)].reset_index(drop=True)
    gi = np.tile(np.arange(n_categories), n)
    rows["category"] = np.asarray(cats)[gi]
    rows["category_items"] = np.where(rows["has_history"],
                                      rng.binomial(rows["items"], 1 / n_categories), 0)
    raw = client_features(rows)
    h = rows["has_history"].to_numpy()
    mean, sd = raw[h].mean().to_numpy(), raw[h].std(ddof=0).to_numpy()
    z = ((raw.to_numpy() - mean) / sd) * h[:, None]
    ci, ki = rows["city"].astype(int).to_numpy(), rows["cluster"].astype(int).to_numpy()
    effect = truth["tau_cat"][gi] + z[:, :4] @ truth["gamma_raw"]
    eta = (truth["a"][gi] + truth["city_effect"][ci] + truth["cluster_effect"][ki]
           + truth["cluster_cat"][gi, ki]
           + truth["gender_cat"][gi] * rows["gender"].map(GENDER_CODE).to_numpy()
           + h * truth["b_history"] + z[:, :4] @ truth["beta_raw"]
           + truth["b_cat_items"] * z[:, 4]
           + rows["contacted"].to_numpy() * effect)
    rows["k"] = (rng.random(len(rows)) < expit(eta)).astype(np.int64)
    rows["n"] = 1
    keep = ~h | (rows["k"].to_numpy() == 1) | (rng.random(len(rows)) < negative_rate)
    rows = rows[keep].copy()
    rows["negative_rate"] = np.where(rows["has_history"], negative_rate, 1.0)
    cell_keys = ["city", "cluster", "gender", "contacted", "category"]
    no_h = rows[~rows["has_history"]]
    cells = no_h.groupby(cell_keys, as_index=False).agg(n=("n", "sum"), k=("k", "sum"))
    for col in BEHAVIOUR:
        cells[col] = 0
    cells = cells.assign(id=-1, has_history=False, negative_rate=1.0)
    out = pd.concat([cells, rows[rows["has_history"]]], ignore_index=True)[
        ["id", *ROW_KEYS, *BEHAVIOUR, "n", "k", "negative_rate"]]
    truth["beta"], truth["gamma"] = truth.pop("beta_raw"), truth.pop("gamma_raw")
    # the standardisation the planted coefficients are on (all rows with history, before
    # the case-control sampling): pass it to fit(feature_scale=...)
    truth["feature_scale"] = (mean, sd)
    return out.reset_index(drop=True), cat_table, truth
