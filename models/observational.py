"""Cross-check of a non-randomized campaign: the estimated propensity of being treated,
its overlap, and a doubly robust estimate of the effect on the treated (ATT).

scikit-learn does the fitting (logistic regression for the propensity and for conversion,
ridge regression for money and counts); this module only assembles the estimator:

``ATT = mean_T(Y - m0(X)) - sum_C w (Y - m0(X)) / sum_C w``, ``w = e(X) / (1 - e(X))``

with ``e`` the propensity and ``m0`` the outcome regression fitted on the untreated. It is
consistent when either model is right (Sant'Anna & Zhao 2020, J. Econometrics 219:101,
eq. 3.1 for one period). The standard error treats ``e`` and ``m0`` as known (the
variance of the difference of the two weighted means); the 94% interval is normal.

A large store is checked on a sample of its untreated clients: every function takes
``sample_weight`` (clients each row stands for: ``1 / f`` for the untreated drawn with
probability ``f``, 1 for the others), which enters the fits (a weighted likelihood is the
whole store's), the ATT weights and the variance (the linearised variance of a weighted
ratio estimator; Lohr 2019, *Sampling: Design and Analysis*, sec. 9.1). With every weight
1 the estimates are those of the whole store.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

CATEGORICAL = ["city", "cluster", "age_band", "pre_orders_level"]
NUMERIC = ["pre_orders", "log_pre_revenue", "gender_filled", "gender_missing",
           "higher_education"]
Z94 = stats.norm.ppf(0.97)


def covariates(df: pd.DataFrame) -> pd.DataFrame:
    """The adjustment set as model columns (``gender`` may be missing: filled with 0.5 and
    flagged)."""
    g = pd.to_numeric(df["gender"], errors="coerce").astype(float)
    return pd.DataFrame({
        "city": df["city"].astype(str), "cluster": df["cluster"].astype(str),
        "age_band": df["age_band"].astype(str),
        "pre_orders_level": np.minimum(df["pre_orders"], 3).astype(int).astype(str),
        "pre_orders": df["pre_orders"].astype(float),
        "log_pre_revenue": np.log1p(df["pre_revenue"].clip(lower=0).astype(float)),
        "gender_filled": g.fillna(0.5).astype(float), "gender_missing": g.isna().astype(float),
        "higher_education": df["higher_education"].astype(float),
    }, index=df.index)


def _design() -> ColumnTransformer:
    return ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=20), CATEGORICAL),
        ("num", StandardScaler(), NUMERIC)])


def propensity_model(C: float = 1.0) -> Pipeline:
    """Logistic regression of being treated on the adjustment set."""
    return make_pipeline(_design(), LogisticRegression(C=C, max_iter=2000))


def _weights(df: pd.DataFrame, sample_weight: np.ndarray | None) -> np.ndarray:
    if sample_weight is None:
        return np.ones(len(df))
    w = np.asarray(sample_weight, float)
    if w.shape != (len(df),) or not np.all(np.isfinite(w)) or (w <= 0).any():
        raise ValueError(f"sample_weight must hold {len(df)} positive finite weights")
    return w


def _fit_weights(step: str, s: np.ndarray) -> dict[str, np.ndarray]:
    """``fit`` keyword for a pipeline's last ``step``: none when every weight is 1 (the
    unweighted fit, bit for bit)."""
    return {} if np.all(s == 1.0) else {f"{step}__sample_weight": s}


def treatment_propensity(df: pd.DataFrame, seed: int = 0,
                         sample_weight: np.ndarray | None = None) -> np.ndarray:
    """P(treated | X) for every row of ``df`` (``treated`` bool column); ``sample_weight``
    (n_rows,): clients each row stands for."""
    X = covariates(df)
    model = propensity_model().fit(X, df["treated"].astype(int),
                                   **_fit_weights("logisticregression",
                                                  _weights(df, sample_weight)))
    return model.predict_proba(X)[:, 1]


def overlap_summary(e: np.ndarray, treated: np.ndarray,
                    sample_weight: np.ndarray | None = None) -> dict[str, Any]:
    """How well the untreated cover the treated on the propensity scale.

    ``treated_above_95``: share of treated with e > 0.95 (almost no comparable untreated);
    ``ess_untreated``: Kish effective sample size of the ATT-weighted untreated rows
    (``sample_weight`` included); quantiles of e in each group (of the rows).
    """
    t = np.asarray(treated, bool)
    s = np.ones(len(t)) if sample_weight is None else np.asarray(sample_weight, float)
    w = e[~t] / (1 - e[~t]) * s[~t]
    ess = float(w.sum() ** 2 / (w ** 2).sum()) if len(w) else 0.0
    q = [0.01, 0.25, 0.5, 0.75, 0.99]
    return {"treated_above_95": float((e[t] > 0.95).mean()),
            "max_weight_share": float(w.max() / w.sum()) if len(w) else float("nan"),
            "ess_untreated": ess,
            "quantiles_treated": dict(zip(map(str, q), np.quantile(e[t], q).tolist(),
                                          strict=True)),
            "quantiles_untreated": dict(zip(map(str, q), np.quantile(e[~t], q).tolist(),
                                            strict=True)),
            "ok": bool((e[t] > 0.95).mean() < 0.05 and ess >= 10 * t.sum() ** 0.5)}


def doubly_robust_att(df: pd.DataFrame, outcome: str, e: np.ndarray,
                      binary: bool = False, sample_weight: np.ndarray | None = None
                      ) -> dict[str, float]:
    """Doubly robust ATT of ``outcome`` (see module docstring).

    Parameters
    ----------
    df
        Treated and untreated rows with ``treated`` and the adjustment set.
    outcome
        Column name (conversion as bool, money in roubles, items as counts).
    e
        Propensity of each row (from :func:`treatment_propensity`).
    binary
        Fit the outcome regression as a logistic model.
    sample_weight
        Clients each row stands for (n_rows,); all 1 by default.

    Returns
    -------
    dict
        ``mean``, ``se``, ``hdi_low`` / ``hdi_high`` (normal 94% interval), treated mean.
    """
    t = df["treated"].to_numpy(bool)
    y = df[outcome].astype(float).to_numpy()
    X = covariates(df)
    s = _weights(df, sample_weight)
    if binary:
        m0 = make_pipeline(_design(), LogisticRegression(max_iter=2000)).fit(
            X[~t], y[~t].astype(int), **_fit_weights("logisticregression", s[~t])
        ).predict_proba(X)[:, 1]
    else:
        m0 = make_pipeline(_design(), Ridge(alpha=1.0)).fit(
            X[~t], y[~t], **_fit_weights("ridge", s[~t])).predict(X)
    r = y - m0
    w = e[~t] / (1 - e[~t]) * s[~t]
    mu1 = r[t].mean()
    mu0 = float((w * r[~t]).sum() / w.sum())
    var = r[t].var(ddof=1) / t.sum() + float((w ** 2 * (r[~t] - mu0) ** 2).sum()) / w.sum() ** 2
    est, se = float(mu1 - mu0), float(np.sqrt(var))
    return {"mean": est, "se": se, "hdi_low": est - Z94 * se, "hdi_high": est + Z94 * se,
            "treated_mean": float(y[t].mean()), "p_positive": float(stats.norm.cdf(est / se))}


#: the columns :func:`observational_check` reads: a caller may hand it only these
CHECK_COLUMNS = ["treated", "gender", "city", "cluster", "age_band", "pre_orders", "pre_revenue",
                 "higher_education", "converted", "revenue", "items", "placebo_pre_orders",
                 "placebo_pre_revenue", "placebo_orders"]


def observational_check(df: pd.DataFrame, seed: int,
                        sample_weight: np.ndarray | None = None) -> dict[str, Any]:
    """The design-based cross-check of campaign 1: propensity of being treated, overlap,
    doubly robust ATTs, and the placebo (the same adjusted comparison on days 3..4, before
    the email, adjusted for days 0..2).

    Parameters
    ----------
    df
        One row per client (treated and comparison): ``treated``, the adjustment set of
        :func:`covariates`, outcomes ``converted`` / ``revenue`` (money) / ``items``, and
        the placebo columns ``placebo_pre_orders``, ``placebo_pre_revenue``,
        ``placebo_orders``.
    seed
        Kept for a stable signature (the fits are deterministic).
    sample_weight
        Clients each row stands for (n_rows,), when ``df`` holds a sample of the untreated.

    Returns
    -------
    dict
        ``overlap`` (:func:`overlap_summary`), ``att`` per outcome
        (:func:`doubly_robust_att`), ``placebo`` (conversion ATT on days 3..4 and whether
        its interval holds 0, or ``reason`` when a group all bought or none did) and
        ``_e``, the propensity of each row (n_rows,).
    """
    s = _weights(df, sample_weight)
    e = treatment_propensity(df, seed, s)
    t = df["treated"].to_numpy(bool)
    out: dict[str, Any] = {"overlap": overlap_summary(e, t, s), "_e": e}
    out["att"] = {name: doubly_robust_att(df, col, e, binary=(name == "conversion"),
                                          sample_weight=s)
                  for name, col in (("conversion", "converted"), ("revenue_per_client", "revenue"),
                                    ("items_per_client", "items"))}
    placebo = df.assign(pre_orders=df["placebo_pre_orders"],
                        pre_revenue=df["placebo_pre_revenue"],
                        placebo_bought=df["placebo_orders"] > 0)
    out["placebo"] = {"window": [3, 4], "adjusted_for_days": [0, 2]}
    bought = placebo.groupby("treated")["placebo_bought"].agg(["min", "max"])
    if len(bought) < 2 or (bought["min"] == bought["max"]).any():
        # nobody (or everybody) in a group bought on days 3..4: no placebo to compute
        out["placebo"].update(conversion=None, passes=None,
                              reason="no contrast on days 3..4 (a group all bought or none did)")
        return out
    e_pl = treatment_propensity(placebo, seed, s)
    pl = doubly_robust_att(placebo, "placebo_bought", e_pl, binary=True, sample_weight=s)
    out["placebo"].update(conversion=pl, passes=bool(pl["hdi_low"] <= 0 <= pl["hdi_high"]))
    return out


def placebo_bias_bound(placebo: dict[str, Any], window_rate: float) -> float | None:
    """The largest conversion bias in the email window that a placebo leaves plausible.

    A placebo (the adjusted comparison on days before the email, :func:`observational_check`)
    whose interval excludes 0 says the adjustment leaves some bias; with many clients even
    a bias too small to matter is detected. How large could it be in the window? The
    placebo interval's end farthest from 0, as a share of the treated's placebo conversion
    (a bias proportional to how often clients buy), applied to the treated's conversion in
    the window (which is longer, so clients buy more often in it). The decision is robust
    to that bias when the uplift's 94% interval lies above it (the logic of a bias bound:
    Rosenbaum 2002, *Observational Studies*, ch. 4, on a placebo outcome's use; Lipsitch
    et al. 2010, "Negative controls", Epidemiology 21).

    Parameters
    ----------
    placebo
        ``observational_check(...)["placebo"]["conversion"]``: ``hdi_low``, ``hdi_high``
        (share of clients, 0..1) and ``treated_mean`` (the treated's placebo conversion).
    window_rate
        The treated's conversion in the email window (0..1).

    Returns
    -------
    float or None
        The bound, a share of clients (0..1); None when the treated's placebo conversion
        is 0 (no scale to carry the bias over).
    """
    base = float(placebo["treated_mean"])
    if base <= 0:
        return None
    worst = max(abs(float(placebo["hdi_low"])), abs(float(placebo["hdi_high"])))
    return worst / base * float(window_rate)


def plot_overlap(e: np.ndarray, treated: np.ndarray, ax: Any = None) -> Any:
    """Histograms of the logit propensity of treated and untreated clients (density)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    t = np.asarray(treated, bool)
    logit = np.log(np.clip(e, 1e-6, 1 - 1e-6) / np.clip(1 - e, 1e-6, None))
    bins = np.linspace(logit.min(), logit.max(), 60)
    ax.hist(logit[~t], bins=bins, density=True, alpha=0.5, label=f"untreated (n={(~t).sum():,})")
    ax.hist(logit[t], bins=bins, density=True, alpha=0.5, label=f"treated (n={t.sum():,})")
    ax.set_xlabel("estimated propensity of being emailed (log-odds)")
    ax.set_ylabel("density")
    ax.set_title("Overlap: do untreated clients like the treated ones exist?")
    ax.legend(fontsize=8)
    return ax
