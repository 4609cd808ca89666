"""Client behaviour features for segmentation, and their transform for a Gaussian mixture.

:func:`client_behaviour` turns cleaned purchases into one row per client (counts, money,
recency, category counts), measured **outside** the campaign-1 window so that the
clusters used to split the campaign effect are not themselves moved by the campaign.

:class:`BehaviourEncoder` (a scikit-learn transformer) maps those counts to a space where
a Gaussian mixture is a reasonable model:

* ``log_orders``: ``log1p`` of the number of purchase days (frequency is right-skewed);
* ``sale_logit`` and ``kids_logit``: logit of the share of items bought on ``base_sale`` and
  of children's items, shrunk toward the overall share with a Beta prior of strength
  ``prior_strength`` items (a raw share of 0/1 from two items would be an extreme point);
* ``category_pc1..n``: principal components of the centred log-ratio of shrunk category
  shares (the compositional-data transform; raw shares live on a simplex);
* ``age`` (optional);

then every column is standardised. Money (``revenue``) and ``gender_prob`` are *not*
clustering inputs: spend mostly restates frequency, and a near-binary gender probability
makes a mixture split clients by gender rather than by behaviour. Both appear in the
cluster profiles instead.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

#: Words that mark children's products in the store's naming (``детские``, ``для мальчиков``,
#: ``для девочек``).
KIDS_PATTERN = r"детск|мальчик|девоч"
CATEGORY_PREFIX = "cat__"
COUNT_COLUMNS = ["items", "orders", "sale_items", "kids_items"]


def client_behaviour(purchases: pd.DataFrame, exclude_days: tuple[int, int] | None = (5, 16),
                     last_day: int | None = None) -> pd.DataFrame:
    """Per-client purchase behaviour outside ``exclude_days`` (inclusive).

    Parameters
    ----------
    purchases : DataFrame
        Cleaned purchases with ``id``, ``dt``, ``revenue``, ``base_sale``, ``category`` and
        ``product_key``.
    exclude_days : (int, int) or None
        Days left out (the campaign-1 window by default).
    last_day : int, optional
        Day recency is measured from (default: the last day in ``purchases``).

    Returns
    -------
    DataFrame
        Index ``id``; columns ``items``, ``orders`` (distinct purchase days), ``revenue``,
        ``recency`` (days since the last purchase), ``sale_items``, ``kids_items`` and one
        ``cat__<category>`` count per category. Clients without purchases are absent.
    """
    need = {"id", "dt", "revenue", "base_sale", "category", "product_key"}
    missing = need - set(purchases.columns)
    if missing:
        raise ValueError(f"purchases lack column(s) {sorted(missing)}")
    last = int(purchases["dt"].max()) if last_day is None else last_day
    p = purchases
    if exclude_days is not None:
        lo, hi = exclude_days
        p = p[(p["dt"] < lo) | (p["dt"] > hi)]
    p = p.assign(kids=p["product_key"].str.contains(KIDS_PATTERN, regex=True, na=False),
                 base_sale=p["base_sale"].fillna(0).astype(int),
                 category=p["category"].fillna("unknown"))
    g = p.groupby("id")
    out = pd.DataFrame({
        "items": g.size(),
        "orders": g["dt"].nunique(),
        "revenue": g["revenue"].sum().astype(float),
        "recency": last - g["dt"].max().astype(int),
        "sale_items": g["base_sale"].sum(),
        "kids_items": g["kids"].sum(),
    })
    counts = pd.crosstab(p["id"], p["category"])
    counts.columns = [CATEGORY_PREFIX + str(c) for c in counts.columns]
    out = out.join(counts).astype({c: "int64" for c in counts.columns})
    out.index = out.index.astype("int64")
    out.index.name = "id"
    return out


def category_columns(X: pd.DataFrame) -> list[str]:
    """The ``cat__*`` count columns of a behaviour table."""
    return [c for c in X.columns if c.startswith(CATEGORY_PREFIX)]


def _shrunk_logit(k: np.ndarray, n: np.ndarray, p0: float, a: float) -> np.ndarray:
    if p0 <= 0 or p0 >= 1:  # nobody (or everybody) has the trait: no information
        return np.zeros_like(n)
    return np.log((k + a * p0) / (n - k + a * (1 - p0)))


class BehaviourEncoder(TransformerMixin, BaseEstimator):
    """Transform behaviour counts (from :func:`client_behaviour`) for a Gaussian mixture.

    Parameters
    ----------
    prior_strength : float
        Pseudo-items of the Beta/Dirichlet prior that shrinks each client's shares toward
        the overall shares.
    n_category_components : int
        Principal components kept from the category log-ratios.
    use_age : bool
        Add standardised ``age`` (the table must then have an ``age`` column).

    Attributes
    ----------
    feature_names_out_ : list of str
        Output columns, after dropping constant ones.
    dropped_ : list of str
        Columns dropped as constant in the fitting data (a warning says so).
    """

    def __init__(self, prior_strength: float = 2.0, n_category_components: int = 3,
                 use_age: bool = True) -> None:
        self.prior_strength = prior_strength
        self.n_category_components = n_category_components
        self.use_age = use_age

    def _check(self, X: pd.DataFrame) -> None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError("BehaviourEncoder needs a DataFrame from client_behaviour()")
        need = COUNT_COLUMNS + (["age"] if self.use_age else [])
        missing = [c for c in need if c not in X.columns]
        if missing:
            raise ValueError(f"behaviour table lacks column(s) {missing}")
        empty = X.index[X["items"].to_numpy() <= 0]
        if len(empty):
            raise ValueError(f"{len(empty)} client(s) have no purchases (e.g. id "
                             f"{list(empty[:5])}); they cannot be placed by behaviour: "
                             "drop them or assign them a 'no history' group")

    def _clr(self, X: pd.DataFrame, n: np.ndarray) -> np.ndarray:
        """Centred log-ratio of the shrunk category shares (clients x categories)."""
        counts = X.reindex(columns=self.categories_, fill_value=0).to_numpy(float)
        a = self.prior_strength
        clr = np.log((counts + a * self.category_p0_) / (n[:, None] + a))
        return clr - clr.mean(axis=1, keepdims=True)

    def _raw(self, X: pd.DataFrame) -> pd.DataFrame:
        a = self.prior_strength
        n = X["items"].to_numpy(float)
        out = {
            "log_orders": np.log1p(X["orders"].to_numpy(float)),
            "sale_logit": _shrunk_logit(X["sale_items"].to_numpy(float), n, self.sale_p0_, a),
            "kids_logit": _shrunk_logit(X["kids_items"].to_numpy(float), n, self.kids_p0_, a),
        }
        if self.categories_:
            pcs = self.pca_.transform(self.clr_scaler_.transform(self._clr(X, n)))
            for j in range(pcs.shape[1]):
                out[f"category_pc{j + 1}"] = pcs[:, j]
        if self.use_age:
            out["age"] = pd.to_numeric(X["age"], errors="coerce").fillna(self.age_fill_)
        return pd.DataFrame(out, index=X.index)

    def fit(self, X: pd.DataFrame, y: None = None) -> BehaviourEncoder:
        """Learn overall shares, the category components and the scaling from ``X``."""
        self._check(X)
        n = X["items"].to_numpy(float)
        self.sale_p0_ = float(X["sale_items"].sum() / n.sum())
        self.kids_p0_ = float(X["kids_items"].sum() / n.sum())
        cats = category_columns(X)
        totals = X[cats].sum() if cats else pd.Series(dtype=float)
        self.categories_ = [c for c in cats if totals[c] > 0]
        self.age_fill_ = (float(pd.to_numeric(X["age"], errors="coerce").median())
                          if self.use_age else 0.0)
        if self.categories_:
            counts = X[self.categories_].to_numpy(float)
            self.category_p0_ = counts.sum(axis=0) / counts.sum()
            clr = self._clr(X, n)
            self.clr_scaler_ = StandardScaler().fit(clr)
            n_comp = max(1, min(self.n_category_components, len(self.categories_) - 1, len(X)))
            self.pca_ = PCA(n_comp, random_state=0).fit(self.clr_scaler_.transform(clr))
        raw = self._raw(X)
        sd = raw.std(axis=0).to_numpy()
        keep = np.isfinite(sd) & (sd > 1e-9)
        self.dropped_ = [c for c, k in zip(raw.columns, keep, strict=True) if not k]
        if self.dropped_:
            warnings.warn(f"constant feature(s) dropped from the segmentation: {self.dropped_}",
                          stacklevel=2)
        if not keep.any():
            raise ValueError("every segmentation feature is constant: nothing to cluster on")
        self.feature_names_out_ = [c for c, k in zip(raw.columns, keep, strict=True) if k]
        self.scaler_ = StandardScaler().fit(raw[self.feature_names_out_])
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Standardised feature matrix (clients x :attr:`feature_names_out_`)."""
        check_is_fitted(self, "scaler_")
        self._check(X)
        raw = self._raw(X)[self.feature_names_out_]
        return self.scaler_.transform(raw)

    def raw_features(self, X: pd.DataFrame) -> pd.DataFrame:
        """The features before standardisation (for plots and profiles)."""
        check_is_fitted(self, "scaler_")
        return self._raw(X)[self.feature_names_out_]

    def get_feature_names_out(self, input_features: None = None) -> np.ndarray:
        check_is_fitted(self, "scaler_")
        return np.asarray(self.feature_names_out_, dtype=object)
