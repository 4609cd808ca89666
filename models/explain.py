"""Why a classifier scores a client as it does: SHAP values (Lundberg and Lee 2017, "A
unified approach to interpreting model predictions", NeurIPS), from the ``shap`` package.

Two explainers, by what the model is:

- :func:`tree_shap`: a fitted gradient-boosting pipeline (an encoder, then scikit-learn's
  ``HistGradientBoostingClassifier``): ``shap.TreeExplainer``, exact for trees, in
  log-odds.
- :func:`kernel_shap`: any classifier with ``predict_proba`` (an SVM, k-NN, a pipeline
  chosen by a search across families): ``shap.KernelExplainer`` (Kernel SHAP, a weighted
  linear regression over feature coalitions, features missing from a coalition taken from
  a background sample as if independent), on the raw columns, explained in log-odds
  (``link="logit"``). Categorical columns are coded for the explainer and decoded before
  the model sees them, so a masked category is always one the model knows.

The values are in log-odds for both, so their summaries read alike: mean |SHAP| per
feature (:func:`shap_importance`), the top features within each group of clients
(:func:`shap_by_group`) and shap's beeswarm summary plot (:func:`shap_summary_plot`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline


def tree_shap(model: Pipeline, X: pd.DataFrame) -> pd.DataFrame:
    """SHAP values (log-odds) of a fitted boosting pipeline for the rows of ``X``.

    Parameters
    ----------
    model : Pipeline
        Steps ``encode`` (a column transformer whose output columns are named after
        ``X``'s) and ``boost`` (a tree ensemble ``shap.TreeExplainer`` reads), as
        :func:`models.next_purchase.classifier` builds.
    X : DataFrame (rows x features)
        The raw features.

    Returns
    -------
    DataFrame (rows x features), ``X``'s index and columns: each row plus the explainer's
    expected value is the model's log-odds for that row.

    Raises
    ------
    ImportError
        When the ``shap`` package is not installed.
    """
    import shap

    enc = model.named_steps["encode"]
    Z = enc.transform(X)
    names = list(enc.get_feature_names_out())
    explainer = shap.TreeExplainer(model.named_steps["boost"])
    vals = np.asarray(explainer.shap_values(Z))
    if vals.ndim == 3:  # (rows, features, classes) in some shap versions
        vals = vals[..., -1]
    return pd.DataFrame(vals, columns=names, index=X.index)[list(X.columns)]


def kernel_shap(predict_proba: Callable[[pd.DataFrame], np.ndarray], X: pd.DataFrame,
                background: pd.DataFrame, categorical: list[str] | None = None,
                nsamples: int = 300, seed: int = 0) -> tuple[pd.DataFrame, float]:
    """Kernel SHAP values (log-odds) of any classifier for the rows of ``X``.

    Parameters
    ----------
    predict_proba : callable
        Takes a DataFrame with ``X``'s columns and dtypes, returns (rows x 2)
        probabilities (a fitted scikit-learn classifier's ``predict_proba``).
    X : DataFrame (rows x features)
        The rows to explain (raw features).
    background : DataFrame (background rows x features)
        Rows standing in for a feature left out of a coalition (a sample of the training
        rows: its size multiplies the cost).
    categorical : list of str, optional
        Columns of strings (or other non-numbers): coded for the explainer, decoded for the
        model.
    nsamples : int
        Coalitions evaluated per row (shap's ``nsamples``; all ``2^M`` of them when ``M``
        features allow fewer). Cost: ``len(X) * nsamples * len(background)`` predictions.
    seed : int
        Seed of the coalitions drawn (numpy's global generator, restored afterwards).

    Returns
    -------
    (values, expected_value)
        ``values``: DataFrame (rows x features) with ``X``'s index and columns, whose row
        sums plus ``expected_value`` are the logit of the model's probability averaged over
        the background (``link="logit"``).

    Raises
    ------
    ImportError
        When the ``shap`` package is not installed.
    ValueError
        When ``X`` and ``background`` have different columns, or a category of ``X`` is
        not in ``background`` or ``X`` itself.
    """
    import shap

    if list(X.columns) != list(background.columns):
        raise ValueError(f"X and background have different columns: {list(X.columns)} vs "
                         f"{list(background.columns)}")
    cats = list(categorical or [])
    codes = {c: pd.Index(pd.unique(pd.concat([background[c], X[c]]).astype(str)))
             for c in cats}
    columns, dtypes = list(X.columns), X.dtypes

    def encode(df: pd.DataFrame) -> np.ndarray:
        out = df.copy()
        for c in cats:
            out[c] = codes[c].get_indexer(df[c].astype(str))
        return out.to_numpy(float)

    def decode(Z: np.ndarray) -> pd.DataFrame:
        df = pd.DataFrame(Z, columns=columns)
        for c in columns:
            if c in codes:
                df[c] = codes[c][np.rint(df[c].to_numpy()).astype(int)]
            df[c] = df[c].astype(dtypes[c])
        return df

    def f(Z: np.ndarray) -> np.ndarray:
        return np.asarray(predict_proba(decode(Z)))[:, 1]

    explainer = shap.KernelExplainer(f, encode(background), link="logit")
    # shap's KernelExplainer draws its coalitions from numpy's global generator: seed it
    # for the call and give the caller's state back
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed % (2**32))  # noqa: NPY002
    try:
        vals = explainer.shap_values(encode(X), nsamples=nsamples, silent=True)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    vals = np.asarray(vals)
    if vals.ndim == 3:
        vals = vals[..., -1]
    return (pd.DataFrame(vals, columns=columns, index=X.index),
            float(np.ravel(explainer.expected_value)[-1]))


def shap_importance(values: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| per feature (log-odds), largest first: columns ``feature``,
    ``mean_abs_shap``."""
    imp = values.abs().mean().sort_values(ascending=False)
    return pd.DataFrame({"feature": imp.index, "mean_abs_shap": imp.to_numpy()})


def shap_by_group(values: pd.DataFrame, groups: pd.Series, top: int = 3) -> pd.DataFrame:
    """The ``top`` features by mean |SHAP| within each group (e.g. cluster, segment), with
    the mean signed SHAP value (does the feature raise or lower the group's odds on
    average). ``groups`` has one label per row of ``values``."""
    rows = []
    for g, idx in values.groupby(np.asarray(groups)).groups.items():
        v = values.loc[idx]
        imp = v.abs().mean().sort_values(ascending=False).head(top)
        for rank, (feat, m) in enumerate(imp.items(), start=1):
            rows.append({"group": str(g), "rank": rank, "feature": feat,
                         "mean_abs_shap": float(m), "mean_shap": float(v[feat].mean()),
                         "clients": int(len(v))})
    return pd.DataFrame(rows)


def shap_summary_plot(values: pd.DataFrame, X: pd.DataFrame, max_display: int = 12,
                      xlabel: str = "SHAP value (log-odds)") -> Any:
    """shap's beeswarm summary plot (one dot per row and feature, coloured by the
    feature's value; categories by their codes) on a new figure."""
    import matplotlib.pyplot as plt
    import shap

    num = X.copy()
    for c in num.columns:
        if not pd.api.types.is_numeric_dtype(num[c]):
            num[c] = pd.Categorical(num[c]).codes
    shap.summary_plot(values.to_numpy(), num, max_display=max_display, show=False,
                      plot_size=(7.5, 0.35 * min(max_display, values.shape[1]) + 1.5),
                      rng=np.random.default_rng(0))  # the dots' jitter: same plot each run
    fig = plt.gcf()
    fig.axes[0].set_xlabel(xlabel)
    return fig
