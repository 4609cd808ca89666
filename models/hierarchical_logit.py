"""A hierarchical Bayesian logistic classifier (PyMC): fixed effects of standardised
numeric features and indicators, and partially pooled intercepts for categorical groups.

Model
-----
::

    logit P(y = 1) = alpha + sum_j beta_j * z_j + sum_g u_g[level_g]
    z_j = (x_j - mean_j) / sd_j                (mean, sd from the training rows;
                                                indicators stay 0/1)
    alpha ~ Normal(0, 1.5)
    beta_j ~ Normal(0, 1)                      (log odds per training SD, or log odds
                                                ratio of an indicator)
    u_g = sigma_g * e_g,  e_g ~ ZeroSumNormal(1),  sigma_g ~ HalfNormal(0.5)

The group intercepts are non-centred and sum to zero: with few levels (two service types)
the scale is weakly identified, and free intercepts trade off against ``alpha``; that
ridge, whose width depends on ``sigma_g``, gave divergent transitions even at
``target_accept = 0.99`` on the one-click data (3 of 3 seeds at 0.95; none with the
zero-sum form at 0.9). A level unseen in training gets, per posterior draw, a fresh
intercept from Normal(0, sigma_g): its prediction is the population average with the
between-level uncertainty added, and a warning names it.

The interface follows pymc-marketing / CausalPy: ``fit`` / ``predict_proba`` /
``summary`` / ``plot``; ``fit`` also accepts a :class:`~models.sampling.Sampler` compiled
once so cross-validation folds do not recompile.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import expit

from models.diagnostics import Convergence, check_convergence
from models.sampling import Sampler, SamplerSettings, log_check

if TYPE_CHECKING:
    import arviz as az
    import pymc as pm

DEFAULT_PRIORS: dict[str, tuple[str, float, float]] = {
    "alpha": ("Normal", 0.0, 1.5),
    "beta": ("Normal", 0.0, 1.0),
    "sigma_group": ("HalfNormal", 0.5, 0.0),
}


@dataclass
class Design:
    """Numeric arrays of one data set for the model."""

    z: np.ndarray  # (rows, fixed effects), standardised
    idx: dict[str, np.ndarray]  # group -> level index per row (-1 = unseen level)


@dataclass
class HierarchicalLogit:
    """Hierarchical Bayesian logistic classifier.

    Parameters
    ----------
    numeric
        Numeric columns (standardised with the training mean and SD).
    groups
        Categorical columns with partially pooled intercepts.
    indicators
        Two-level text columns entered as 0/1 fixed effects: ``{column: level_meaning_1}``.
    priors
        Overrides of :data:`DEFAULT_PRIORS`.
    sampler
        MCMC settings.

    Examples
    --------
    >>> m = HierarchicalLogit(["pages"], ["category"], {"consent": "да"})  # doctest: +SKIP
    >>> m.fit(X, y).predict_proba(X_new)  # doctest: +SKIP
    """

    numeric: list[str]
    groups: list[str]
    indicators: dict[str, str] = field(default_factory=dict)
    priors: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)

    def __post_init__(self) -> None:
        self.priors = {**DEFAULT_PRIORS, **self.priors}
        self.idata_: az.InferenceData | None = None
        self.convergence_: Convergence | None = None

    # ---- data -------------------------------------------------------------------------
    @property
    def fixed(self) -> list[str]:
        return list(self.numeric) + list(self.indicators)

    def _check_columns(self, X: pd.DataFrame) -> None:
        missing = [c for c in self.fixed + self.groups if c not in X.columns]
        if missing:
            raise ValueError(f"missing column(s) {missing}")

    def _learn_scaling(self, X: pd.DataFrame) -> None:
        """Mean and SD of the numeric columns (from the rows being fitted)."""
        raw = self._raw_fixed(X)
        k = len(self.numeric)  # indicators stay 0/1: their effect is a log odds ratio
        sd = raw.std(axis=0)
        self.mean_ = np.r_[raw.mean(axis=0)[:k], np.zeros(raw.shape[1] - k)]
        self.sd_ = np.r_[np.where(sd[:k] > 0, sd[:k], 1.0), np.ones(raw.shape[1] - k)]

    def _raw_fixed(self, X: pd.DataFrame) -> np.ndarray:
        cols = [X[c].to_numpy(float) for c in self.numeric]
        cols += [(X[c].astype(str) == level).to_numpy(float)
                 for c, level in self.indicators.items()]
        out = np.column_stack(cols) if cols else np.zeros((len(X), 0))
        if np.isnan(out).any():
            bad = [c for c, v in zip(self.fixed, np.isnan(out).any(axis=0), strict=True) if v]
            raise ValueError(f"missing values in column(s) {bad}")
        return out

    def design(self, X: pd.DataFrame) -> Design:
        """Standardised fixed effects and group indices (``-1`` for an unseen level)."""
        self._check_columns(X)
        z = (self._raw_fixed(X) - self.mean_) / self.sd_
        idx = {}
        for g in self.groups:
            pos = {lv: i for i, lv in enumerate(self.levels_[g])}
            idx[g] = np.array([pos.get(str(v), -1) for v in X[g]], dtype=np.int64)
        return Design(z, idx)

    # ---- model ------------------------------------------------------------------------
    def build_model(self, d: Design, y: np.ndarray) -> pm.Model:
        import pymc as pm

        coords = {"fixed": self.fixed, **{f"{g}_level": self.levels_[g] for g in self.groups}}
        pr = self.priors
        with pm.Model(coords=coords) as model:
            z = pm.Data("z", d.z)
            yy = pm.Data("y", np.asarray(y, dtype=np.int64))
            alpha = pm.Normal("alpha", pr["alpha"][1], pr["alpha"][2])
            beta = pm.Normal("beta", pr["beta"][1], pr["beta"][2], dims="fixed")
            eta = alpha + pm.math.dot(z, beta)
            for g in self.groups:
                i = pm.Data(f"idx_{g}", d.idx[g])
                sigma = pm.HalfNormal(f"sigma_{g}", pr["sigma_group"][1])
                e = pm.ZeroSumNormal(f"e_{g}", 1.0, dims=f"{g}_level")
                u = pm.Deterministic(f"u_{g}", sigma * e, dims=f"{g}_level")
                eta = eta + u[i]
            pm.Bernoulli("obs", logit_p=eta, observed=yy, shape=z.shape[0])
        return model

    def data_for(self, d: Design, y: np.ndarray) -> dict[str, np.ndarray]:
        """Values of the model's ``pm.Data`` containers for one data set."""
        out = {"z": d.z, "y": np.asarray(y, dtype=np.int64)}
        out.update({f"idx_{g}": d.idx[g] for g in self.groups})
        return out

    def compile(self, X: pd.DataFrame, y: np.ndarray) -> Sampler:
        """A sampler compiled once on ``X``'s shape; :meth:`fit` can reuse it on other rows
        (levels are learned from ``X``, so pass the full data)."""
        self._check_columns(X)
        self.levels_ = {g: sorted(map(str, X[g].dropna().unique())) for g in self.groups}
        self._learn_scaling(X)
        return Sampler(self.build_model(self.design(X), y), self.sampler)

    def fit(self, X: pd.DataFrame, y: Any, seed: int = 0,
            sampler: Sampler | None = None) -> HierarchicalLogit:
        """Sample the posterior on ``X``, ``y`` and check convergence (never raises on a
        failed check: read :attr:`convergence_`)."""
        self._check_columns(X)
        y = np.asarray(y).astype(int)
        if set(np.unique(y)) - {0, 1}:
            raise ValueError("y must be 0/1")
        if sampler is None:
            sampler = self.compile(X, y)
            data = None
        else:
            # the compiled model keeps the levels it was built with; refit the scaling only
            self._learn_scaling(X)
            d = self.design(X)
            unseen = {g: int((d.idx[g] < 0).sum()) for g in self.groups}
            if any(unseen.values()):
                raise ValueError(f"levels absent from the compiled model: {unseen}")
            data = self.data_for(d, y)
        checked = ["alpha", "beta"] + [f"sigma_{g}" for g in self.groups] + [
            f"u_{g}" for g in self.groups]
        # draws sized by the checks when the settings ask for it (min_draws)
        self.idata_, self.convergence_ = sampler.sample_until(
            seed, lambda idata: check_convergence(idata, var_names=checked), data)
        log_check(self.convergence_)
        self.n_train_ = len(y)
        self.base_rate_ = float(y.mean())
        return self

    # ---- prediction -------------------------------------------------------------------
    def _draws(self, name: str) -> np.ndarray:
        if self.idata_ is None:
            raise RuntimeError("fit the model first")
        v = self.idata_.posterior[name]
        return v.stack(sample=("chain", "draw")).transpose("sample", ...).to_numpy()

    def linear_draws(self, X: pd.DataFrame, seed: int = 0) -> np.ndarray:
        """Posterior draws of the log odds, shape (draws, rows)."""
        d = self.design(X)
        eta = self._draws("alpha")[:, None] + self._draws("beta") @ d.z.T
        rng = np.random.default_rng(seed)
        for g in self.groups:
            u = self._draws(f"u_{g}")
            idx = d.idx[g]
            eta += u[:, np.maximum(idx, 0)]
            new = idx < 0
            if new.any():
                levels = sorted(set(map(str, X.loc[new, g])))
                warnings.warn(f"{g}: level(s) {levels} not seen in training; their effect "
                              f"is drawn from the population of {g} levels", stacklevel=2)
                sigma = self._draws(f"sigma_{g}")
                fresh = rng.normal(size=(len(sigma), len(levels))) * sigma[:, None]
                col = {lv: j for j, lv in enumerate(levels)}
                j = np.array([col[str(v)] for v in X.loc[new, g]])
                eta[:, new] += fresh[:, j] - u[:, 0][:, None]
        return eta

    def predict_draws(self, X: pd.DataFrame, seed: int = 0) -> np.ndarray:
        """Posterior draws of P(y = 1), shape (draws, rows)."""
        return expit(self.linear_draws(X, seed))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Posterior mean probabilities as an (rows, 2) array, as scikit-learn."""
        p = self.predict_draws(X).mean(axis=0)
        return np.column_stack([1 - p, p])

    # ---- checks and summaries ---------------------------------------------------------
    def prior_predictive(self, X: pd.DataFrame, draws: int = 1000, seed: int = 0
                         ) -> dict[str, float]:
        """What the priors alone imply for P(y = 1) on ``X``'s rows."""
        rng = np.random.default_rng(seed)
        d = self.design(X)
        pr = self.priors
        alpha = rng.normal(pr["alpha"][1], pr["alpha"][2], draws)
        beta = rng.normal(pr["beta"][1], pr["beta"][2], (draws, d.z.shape[1]))
        eta = alpha[:, None] + beta @ d.z.T
        for g in self.groups:
            sigma = np.abs(rng.normal(0, pr["sigma_group"][1], draws))
            u = rng.normal(size=(draws, len(self.levels_[g]))) * sigma[:, None]
            eta += u[:, np.maximum(d.idx[g], 0)]
        p = expit(eta)
        lo, hi = np.quantile(p, [0.03, 0.97])
        return {"p_low_94": float(lo), "p_high_94": float(hi),
                "share_below_0.05": float((p < 0.05).mean()),
                "share_above_0.95": float((p > 0.95).mean()),
                "mean_rate_low_94": float(np.quantile(p.mean(axis=1), 0.03)),
                "mean_rate_high_94": float(np.quantile(p.mean(axis=1), 0.97))}

    def posterior_predictive(self, X: pd.DataFrame, y: Any, by: str, seed: int = 0,
                             p_draws: np.ndarray | None = None) -> pd.DataFrame:
        """Observed rate of ``y`` per level of ``by`` against its posterior predictive
        90% interval (replicated outcomes drawn from the posterior). ``p_draws``: the
        result of :meth:`predict_draws` on ``X`` when the caller already has it."""
        rng = np.random.default_rng(seed)
        p = self.predict_draws(X, seed) if p_draws is None else p_draws
        yrep = rng.random(p.shape) < p
        y = np.asarray(y).astype(int)
        rows = []
        for level, pos in pd.Series(np.arange(len(X)), index=X[by].astype(str).to_numpy()
                                    ).groupby(level=0):
            idx = pos.to_numpy()
            rates = yrep[:, idx].mean(axis=1)
            lo, hi = np.quantile(rates, [0.05, 0.95])
            obs = float(y[idx].mean())
            rows.append({by: level, "clients": len(idx), "observed": obs,
                         "predicted": float(rates.mean()), "low_90": float(lo),
                         "high_90": float(hi), "inside": bool(lo <= obs <= hi)})
        return pd.DataFrame(rows)

    def summary(self, hdi_prob: float = 0.94) -> pd.DataFrame:
        """Posterior of every effect on the log-odds scale: fixed effects per training SD
        (or per indicator), group intercepts, group scales."""
        import arviz as az

        if self.idata_ is None:
            raise RuntimeError("fit the model first")
        names = ["alpha", "beta"] + [f"u_{g}" for g in self.groups] \
            + [f"sigma_{g}" for g in self.groups]
        s = az.summary(self.idata_, var_names=names, hdi_prob=hdi_prob, round_to="none")
        lo, hi = s.columns[2], s.columns[3]
        out = s[["mean", "sd", lo, hi, "r_hat", "ess_bulk", "ess_tail"]].rename(
            columns={lo: "hdi_low", hi: "hdi_high"})
        beta = self._draws("beta")
        p_pos = dict(zip([f"beta[{f}]" for f in self.fixed], (beta > 0).mean(axis=0),
                         strict=True))
        out["p_positive"] = [p_pos.get(i, np.nan) for i in out.index]
        return out.rename_axis("parameter").reset_index()

    def coefficients(self, hdi_prob: float = 0.94) -> pd.DataFrame:
        """Fixed effects only: feature, mean, 94% HDI, P(> 0), the change in log odds per
        training SD (``per`` says what one unit is)."""
        s = self.summary(hdi_prob)
        s = s[s["parameter"].str.startswith("beta[")].copy()
        s["feature"] = s["parameter"].str[5:-1]
        s["per"] = [f"1 SD = {sd:.3g}" if f in self.numeric else f"{f} = {self.indicators[f]}"
                    for f, sd in zip(self.fixed, self.sd_, strict=True)]
        return s[["feature", "mean", "hdi_low", "hdi_high", "p_positive", "per"]] \
            .reset_index(drop=True)

    def plot(self, labels: dict[str, str] | None = None) -> Any:
        """Forest plot of the fixed effects (log odds per SD) with 94% HDIs."""
        import matplotlib.pyplot as plt

        c = self.coefficients().sort_values("mean")
        names = [(labels or {}).get(f, f) for f in c["feature"]]
        fig, ax = plt.subplots(figsize=(9, 0.32 * len(c) + 1.2))
        y = np.arange(len(c))
        ax.hlines(y, c["hdi_low"], c["hdi_high"], color="#1f77b4")
        ax.plot(c["mean"], y, "o", color="#1f77b4")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, names)
        ax.set_xlabel("log odds per SD or per indicator, 94% HDI")
        fig.tight_layout()
        return fig


def simulate(n: int = 2000, n_numeric: int = 4, levels: dict[str, int] | None = None,
             seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Synthetic data from the model with known parameters (for recovery tests).

    Returns ``X`` (numeric columns ``x0..``, one indicator ``flag`` and groups), ``y`` and
    the truth (``alpha``, ``beta`` per standardised column, ``u`` per group level).
    """
    rng = np.random.default_rng(seed)
    levels = levels or {"category": 6, "service": 2}
    X = pd.DataFrame({f"x{j}": rng.normal(10 * j, 1 + j, n) for j in range(n_numeric)})
    X["flag"] = rng.choice(["да", "нет"], n, p=[0.7, 0.3])
    alpha = -0.5
    beta = rng.normal(0, 0.8, n_numeric + 1)
    eta = np.full(n, alpha)
    z = (X[[f"x{j}" for j in range(n_numeric)]] - X.mean(numeric_only=True)) \
        / X.std(numeric_only=True, ddof=0)
    flag = (X["flag"] == "да").to_numpy(float)
    eta += z.to_numpy() @ beta[:n_numeric] + flag * beta[-1]
    u = {}
    for g, k in levels.items():
        names = [f"{g}_{i}" for i in range(k)]
        u[g] = dict(zip(names, rng.normal(0, 0.6, k), strict=True))
        X[g] = rng.choice(names, n)
        eta += X[g].map(u[g]).to_numpy()
    y = (rng.random(n) < expit(eta)).astype(int)
    truth = {"alpha": alpha, "beta": dict(zip([f"x{j}" for j in range(n_numeric)] + ["flag"],
                                              beta, strict=True)), "u": u}
    return X, y, truth
