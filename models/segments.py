"""Client segmentation with Gaussian mixtures, the number of clusters chosen from evidence.

* :class:`GaussianMixtureSegmenter`: a scikit-learn clusterer. It encodes behaviour with
  :class:`~models.segment_features.BehaviourEncoder`, fits ``GaussianMixture`` for every
  ``k`` in ``k_range`` and every covariance type, and keeps the one with the best
  criterion. Labels are ordered by cluster size (0 = largest), so the same seed gives the
  same labels.
* :func:`stability`: adjusted Rand index between refits with other seeds.
* :func:`profile_clusters` / :func:`cluster_actions`: what each cluster buys, how it
  reacts to discounts, and a recommendation generated from those numbers.

Choosing ``k``
--------------
BIC (``-2 log L + p log n``) estimates how many Gaussian *components* the density needs;
with features built from small counts the density is lumpy and BIC keeps adding
components long after the clusters stop being distinct. The default criterion is
therefore ICL (Biernacki, Celeux & Govaert 2000): BIC plus twice the entropy of the
membership probabilities, i.e. BIC penalised for clusters that overlap. Both curves are
kept in :attr:`GaussianMixtureSegmenter.selection_` (with silhouette, Calinski-Harabasz and
Davies-Bouldin) and ``criterion="bic"`` selects on BIC alone.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted

from models.segment_features import CATEGORY_PREFIX, BehaviourEncoder, category_columns

CRITERIA = ("icl", "bic")
#: cluster number of clients without purchases outside the campaign window, and its label
NO_HISTORY = -1
NO_HISTORY_LABEL = "no history"


def cluster_labels(cluster: pd.Series) -> pd.Series:
    """Cluster numbers as the labels the Bayesian models group by.

    A client without an assignment, or in cluster ``NO_HISTORY``, is ``"no history"``.

    Examples
    --------
    >>> cluster_labels(pd.Series([0, 2, -1, None])).tolist()
    ['0', '2', 'no history', 'no history']
    """
    labels = cluster.fillna(NO_HISTORY).astype(int).astype(str)
    return labels.replace(str(NO_HISTORY), NO_HISTORY_LABEL)


class GaussianMixtureSegmenter(ClusterMixin, BaseEstimator):
    """Gaussian mixture clustering of clients with ``k`` chosen by an information criterion.

    Parameters
    ----------
    k_range : (int, int)
        Smallest and largest number of clusters tried (inclusive).
    covariance_types : tuple of str
        ``GaussianMixture`` covariance types tried.
    criterion : {"icl", "bic"}
        What selects ``k`` and the covariance type (lower is better).
    n_init : int
        EM restarts of the final model (the search uses one start per candidate).
    max_iter : int
        EM iterations per fit.
    metrics_sample : int
        Clients used for the silhouette (quadratic cost).
    prior_strength, n_category_components, use_age
        Passed to :class:`~models.segment_features.BehaviourEncoder`.
    random_state : int
        Seed of EM initialisation and of the silhouette sample.

    Attributes
    ----------
    encoder_ : BehaviourEncoder
    gmm_ : GaussianMixture
        The selected mixture (components ordered by size).
    n_clusters_ : int
    covariance_type_ : str
    selection_ : DataFrame
        One row per (covariance type, k): ``bic``, ``icl``, ``silhouette``,
        ``calinski_harabasz``, ``davies_bouldin``, ``converged``.
    labels_ : ndarray
        Cluster of each fitted client.
    notes_ : list of str
        What was adjusted (k range clipped, features dropped).
    """

    def __init__(self, k_range: tuple[int, int] = (2, 10),
                 covariance_types: tuple[str, ...] = ("full", "diag"), criterion: str = "icl",
                 n_init: int = 2, max_iter: int = 300, metrics_sample: int = 4000,
                 prior_strength: float = 2.0, n_category_components: int = 3,
                 use_age: bool = True, random_state: int = 0) -> None:
        self.k_range = k_range
        self.covariance_types = covariance_types
        self.criterion = criterion
        self.n_init = n_init
        self.max_iter = max_iter
        self.metrics_sample = metrics_sample
        self.prior_strength = prior_strength
        self.n_category_components = n_category_components
        self.use_age = use_age
        self.random_state = random_state

    # -- fitting -----------------------------------------------------------------------
    def _k_values(self, Z: np.ndarray) -> list[int]:
        lo, hi = (int(v) for v in self.k_range)
        if lo < 1 or hi < lo:
            raise ValueError(f"k_range must be (lo, hi) with 1 <= lo <= hi, got {self.k_range}")
        distinct = len(np.unique(np.round(Z, 9), axis=0))
        allowed = min(hi, distinct, len(Z) - 1)
        if allowed < lo:
            raise ValueError(f"k_range {self.k_range} needs at least {lo + 1} clients with "
                             f"{lo} distinct behaviour profiles; the data has {len(Z)} clients "
                             f"and {distinct} distinct profiles")
        if allowed < hi:
            self.notes_.append(f"k range clipped to {lo}..{allowed}: the data has {len(Z)} "
                               f"clients and {distinct} distinct behaviour profiles")
            warnings.warn(self.notes_[-1], stacklevel=3)
        return list(range(lo, allowed + 1))

    def _score(self, gm: GaussianMixture, Z: np.ndarray, sample: np.ndarray) -> dict[str, Any]:
        bic = gm.bic(Z)
        prob = gm.predict_proba(Z)
        entropy = -float(np.sum(prob * np.log(np.clip(prob, 1e-300, 1.0))))
        labels = prob.argmax(axis=1)
        row = {"bic": bic, "icl": bic + 2 * entropy, "converged": bool(gm.converged_),
               "silhouette": np.nan, "calinski_harabasz": np.nan, "davies_bouldin": np.nan}
        if len(np.unique(labels)) > 1:
            row["calinski_harabasz"] = calinski_harabasz_score(Z, labels)
            row["davies_bouldin"] = davies_bouldin_score(Z, labels)
            if len(np.unique(labels[sample])) > 1:
                row["silhouette"] = silhouette_score(Z[sample], labels[sample])
        return row

    def fit(self, X: pd.DataFrame, y: None = None) -> GaussianMixtureSegmenter:
        """Encode ``X`` (a :func:`~models.segment_features.client_behaviour` table, plus
        ``age``), search ``k`` x covariance type, keep the best by :attr:`criterion`."""
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        self.notes_: list[str] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.encoder_ = BehaviourEncoder(self.prior_strength, self.n_category_components,
                                             self.use_age).fit(X)
        self.notes_ += [str(w.message) for w in caught]
        Z = self.encoder_.transform(X)
        ks = self._k_values(Z)
        rng = np.random.default_rng(self.random_state)
        sample = rng.choice(len(Z), size=min(self.metrics_sample, len(Z)), replace=False)
        rows = []
        for cov in self.covariance_types:
            for k in ks:
                gm = GaussianMixture(k, covariance_type=cov, n_init=1, max_iter=self.max_iter,
                                     random_state=self.random_state, reg_covar=1e-5).fit(Z)
                rows.append({"covariance_type": cov, "k": k, **self._score(gm, Z, sample)})
        self.selection_ = pd.DataFrame(rows)
        best = self.selection_.loc[self.selection_[self.criterion].idxmin()]
        self.n_clusters_ = int(best["k"])
        self.covariance_type_ = str(best["covariance_type"])
        gm = GaussianMixture(self.n_clusters_, covariance_type=self.covariance_type_,
                             n_init=self.n_init, max_iter=self.max_iter, reg_covar=1e-5,
                             random_state=self.random_state).fit(Z)
        self.gmm_ = _order_by_size(gm, Z)
        self.labels_ = self.gmm_.predict(Z)
        self.n_features_in_ = X.shape[1]
        return self

    # -- prediction --------------------------------------------------------------------
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Membership probabilities (clients x clusters)."""
        check_is_fitted(self, "gmm_")
        return self.gmm_.predict_proba(self.encoder_.transform(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Most probable cluster of each client."""
        return self.predict_proba(X).argmax(axis=1)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """The standardised features the mixture sees."""
        check_is_fitted(self, "gmm_")
        return self.encoder_.transform(X)

    # -- reporting ---------------------------------------------------------------------
    def summary(self) -> pd.DataFrame:
        """The model-selection table with the chosen row flagged."""
        check_is_fitted(self, "gmm_")
        s = self.selection_.copy()
        s["chosen"] = (s["k"] == self.n_clusters_) & (s["covariance_type"]
                                                     == self.covariance_type_)
        return s

    def plot_selection(self, axes: Any = None) -> Any:
        """BIC / ICL curves and the three internal indices against ``k``."""
        import matplotlib.pyplot as plt

        check_is_fitted(self, "gmm_")
        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        s = self.selection_
        for cov, g in s.groupby("covariance_type"):
            axes[0].plot(g["k"], g["bic"] / 1e3, "o-", ms=3, label=f"BIC ({cov})")
            axes[0].plot(g["k"], g["icl"] / 1e3, "s--", ms=3, label=f"ICL ({cov})")
        axes[0].axvline(self.n_clusters_, color="k", lw=0.8, ls=":")
        axes[0].set_xlabel("number of clusters k")
        axes[0].set_ylabel("criterion / 1000 (lower is better)")
        axes[0].set_title(f"Chosen: k = {self.n_clusters_} ({self.covariance_type_}, "
                          f"{self.criterion.upper()})")
        axes[0].legend(fontsize=7)
        g = s[s["covariance_type"] == self.covariance_type_]
        axes[1].plot(g["k"], g["silhouette"], "o-", ms=3, label="silhouette (higher better)")
        axes[1].plot(g["k"], g["davies_bouldin"], "s-", ms=3,
                     label="Davies-Bouldin (lower better)")
        ax2 = axes[1].twinx()
        ax2.plot(g["k"], g["calinski_harabasz"] / 1e3, "^-", ms=3, color="C2",
                 label="Calinski-Harabasz / 1000 (higher better)")
        axes[1].axvline(self.n_clusters_, color="k", lw=0.8, ls=":")
        axes[1].set_xlabel("number of clusters k")
        axes[1].set_title(f"Internal indices ({self.covariance_type_} covariance)")
        h1, l1 = axes[1].get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        axes[1].legend(h1 + h2, l1 + l2, fontsize=7)
        return axes

    def plot_projection(self, X: pd.DataFrame, max_points: int = 6000, ax: Any = None) -> Any:
        """Clients on the first two principal components of the model's features."""
        import matplotlib.pyplot as plt
        from sklearn.decomposition import PCA

        Z = self.transform(X)
        labels = self.gmm_.predict(Z)
        rng = np.random.default_rng(self.random_state)
        idx = rng.choice(len(Z), size=min(max_points, len(Z)), replace=False)
        pca = PCA(2, random_state=0).fit(Z)
        P = pca.transform(Z[idx])
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 5))
        for k in range(self.n_clusters_):
            sel = labels[idx] == k
            ax.scatter(P[sel, 0], P[sel, 1], s=4, alpha=0.4, label=f"cluster {k}")
        ev = pca.explained_variance_ratio_
        ax.set_xlabel(f"PC1 ({ev[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({ev[1]:.0%} of variance)")
        ax.set_title("Clients in the first two principal components")
        ax.legend(markerscale=3, fontsize=8)
        return ax


def _order_by_size(gm: GaussianMixture, Z: np.ndarray) -> GaussianMixture:
    """Reorder components so that 0 is the largest cluster (ties by mean of column 0)."""
    counts = np.bincount(gm.predict(Z), minlength=gm.n_components)
    order = np.lexsort((gm.means_[:, 0], -counts))
    gm.weights_ = gm.weights_[order]
    gm.means_ = gm.means_[order]
    if gm.covariance_type in ("full", "diag", "spherical"):
        gm.covariances_ = gm.covariances_[order]
        gm.precisions_ = gm.precisions_[order]
        gm.precisions_cholesky_ = gm.precisions_cholesky_[order]
    return gm


def stability(model: GaussianMixtureSegmenter, X: pd.DataFrame,
              seeds: tuple[int, ...] = (1, 2, 3)) -> pd.DataFrame:
    """Adjusted Rand index between ``model``'s labels and refits with other seeds.

    The refits keep the chosen ``k`` and covariance type (the question is whether the
    *partition* is stable, not the search).
    """
    check_is_fitted(model, "gmm_")
    Z = model.transform(X)
    ref = model.gmm_.predict(Z)
    rows = []
    for s in seeds:
        gm = GaussianMixture(model.n_clusters_, covariance_type=model.covariance_type_,
                             n_init=model.n_init, max_iter=model.max_iter, reg_covar=1e-5,
                             random_state=s).fit(Z)
        rows.append({"seed": s, "ari": adjusted_rand_score(ref, gm.predict(Z))})
    return pd.DataFrame(rows)


#: demographics averaged per cluster by :func:`profile_clusters` when present
PROFILE_DEMOGRAPHICS = ("age", "gender_prob", "higher_education", "personal_coef")


def profile_sums(behaviour: pd.DataFrame, labels: pd.Series,
                 demographics: pd.DataFrame | None = None) -> pd.DataFrame:
    """Sufficient statistics of :func:`profile_clusters` for one batch of clients.

    Sums are additive, so a store streamed in batches is profiled by adding the batches'
    tables (``pd.concat(...).groupby(level=0).sum()``) and calling
    :func:`profiles_from_sums`.

    Parameters
    ----------
    behaviour, labels, demographics
        As in :func:`profile_clusters`.

    Returns
    -------
    DataFrame
        Index cluster; ``clients`` and the sums of ``orders``, ``items``, ``revenue``,
        ``recency``, ``sale_items``, ``kids_items``, each category count and, per
        demographic column, its sum (``<col>_sum``) and non-missing count (``<col>_n``).
    """
    b = behaviour.join(labels.rename("cluster"), how="inner")
    cats = category_columns(b)
    g = b.groupby("cluster")
    out = g[["orders", "items", "revenue", "recency", "sale_items", "kids_items", *cats]].sum()
    out.insert(0, "clients", g.size())
    if demographics is not None:
        d = demographics.reindex(b.index)
        for col in PROFILE_DEMOGRAPHICS:
            if col in d:
                v = pd.to_numeric(d[col], errors="coerce").astype(float)
                out[f"{col}_sum"] = v.groupby(b["cluster"]).sum()
                out[f"{col}_n"] = v.notna().groupby(b["cluster"]).sum()
    return out


def profiles_from_sums(sums: pd.DataFrame, top: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`profile_clusters`' tables from the (summed) :func:`profile_sums`."""
    cats = category_columns(sums)
    n = sums["clients"]
    prof = pd.DataFrame({
        "clients": n,
        "share_of_clients": n / n.sum(),
        "orders_mean": sums["orders"] / n,
        "items_mean": sums["items"] / n,
        "revenue_mean": sums["revenue"] / n,
        "recency_mean": sums["recency"] / n,
        "discount_share": sums["sale_items"] / sums["items"],
        "kids_share": sums["kids_items"] / sums["items"],
    })
    for col in PROFILE_DEMOGRAPHICS:
        if f"{col}_sum" in sums:
            prof[col] = sums[f"{col}_sum"] / sums[f"{col}_n"].where(sums[f"{col}_n"] > 0)
    counts = sums[cats]
    share = counts.div(counts.sum(axis=1), axis=0)
    overall = counts.sum() / counts.to_numpy().sum()
    lift = share / overall
    long = pd.DataFrame({"share": share.stack(), "lift": lift.stack()}).reset_index()
    long.columns = ["cluster", "category", "share", "lift"]
    long["category"] = long["category"].str.removeprefix(CATEGORY_PREFIX)
    # preferred: highest lift among categories that are at least 2% of the cluster's items
    pref = long[long["share"] >= 0.02].sort_values(["cluster", "lift"], ascending=[True, False])
    prof["top_categories"] = pref.groupby("cluster")["category"].apply(
        lambda s: ", ".join(s.head(top)))
    prof["top_lifts"] = pref.groupby("cluster")["lift"].apply(
        lambda s: ", ".join(f"{v:.1f}x" for v in s.head(top)))
    items = sums["items"].sum()
    prof["overall_discount_share"] = float(sums["sale_items"].sum() / items)
    prof["overall_orders_mean"] = float(sums["orders"].sum() / n.sum())
    prof["overall_kids_share"] = float(sums["kids_items"].sum() / items)
    prof.index.name = "cluster"
    return prof.reset_index(), long


def profile_clusters(behaviour: pd.DataFrame, labels: pd.Series,
                     demographics: pd.DataFrame | None = None,
                     top: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Describe each cluster: size, RFM, discount share, demographics, preferred categories.

    Parameters
    ----------
    behaviour : DataFrame
        :func:`~models.segment_features.client_behaviour` table (index ``id``).
    labels : Series
        Cluster per client id (clients absent from ``behaviour`` are ignored).
    demographics : DataFrame, optional
        Index ``id``; any of ``age``, ``gender_prob``, ``higher_education``,
        ``personal_coef`` are averaged per cluster (over clients where known).
    top : int
        Preferred categories listed per cluster.

    Returns
    -------
    profiles : DataFrame
        One row per cluster: ``clients``, ``share_of_clients``, means of orders, items,
        revenue (money) and recency (days), discount and kids shares of items,
        demographics, ``top_categories`` with their ``top_lifts``, and the overall
        discount share, orders mean and kids share.
    categories : DataFrame
        Cluster x category: ``share`` of the cluster's items and ``lift`` versus all clients.
    """
    return profiles_from_sums(profile_sums(behaviour, labels, demographics), top)


def cluster_actions(profiles: pd.DataFrame, uplift: pd.DataFrame | None = None) -> pd.DataFrame:
    """A recommendation per cluster generated from its profile (and campaign-1 response).

    Parameters
    ----------
    profiles : DataFrame
        From :func:`profile_clusters`.
    uplift : DataFrame, optional
        Per-cluster effects of the campaign-1 model with ``cluster``,
        ``conversion_uplift_mean``, ``conversion_uplift_p_positive`` and
        ``profit_per_client_p_positive``.

    Returns
    -------
    DataFrame
        ``cluster``, ``name`` (from its top category and discount stance) and ``action``.
    """
    rows = []
    up = None
    if uplift is not None and len(uplift):
        up = uplift.assign(cluster=uplift["cluster"].astype(str)).set_index("cluster")
    for _, r in profiles.iterrows():
        parts = []
        ratio = r["discount_share"] / max(r["overall_discount_share"], 1e-9)
        freq = r["orders_mean"] / max(r["overall_orders_mean"], 1e-9)
        first = str(r["top_categories"]).split(", ")[0] if r["top_categories"] else "mixed"
        if ratio >= 1.3:
            stance = "discount-driven"
            parts.append(f"{r['discount_share']:.0%} of items bought on sale ({ratio:.1f}x the "
                         "average): reach them with sales and personal discounts")
        elif ratio <= 0.75:
            stance = "full-price"
            parts.append(f"only {r['discount_share']:.0%} of items on sale ({ratio:.1f}x the "
                         "average): do not discount; promote new arrivals and assortment")
        else:
            stance = "average on price"
            parts.append(f"{r['discount_share']:.0%} of items on sale, close to the average")
        if freq >= 1.25:
            parts.append(f"buy often ({freq:.1f}x the average frequency): loyalty offers")
        elif freq <= 0.8:
            parts.append(f"buy rarely ({freq:.1f}x the average frequency): reactivation "
                         "reminders")
        if r["kids_share"] >= 2 * r["overall_kids_share"] and r["kids_share"] >= 0.15:
            parts.append(f"{r['kids_share']:.0%} of items are for children: family offers")
        parts.append(f"lead with {r['top_categories']} ({r['top_lifts']} the average share)")
        key = str(r["cluster"])
        if up is not None and key in up.index:
            u = up.loc[key]
            pu, pp = u["conversion_uplift_p_positive"], u["profit_per_client_p_positive"]
            if pu >= 0.9 and pp >= 0.8:
                parts.append(f"the campaign-1 email paid off here (P(uplift>0) = {pu:.2f}, "
                             f"P(profit>0) = {pp:.2f}): include in the next discount mailing")
            elif pp < 0.5:
                parts.append(f"the campaign-1 email did not pay off here (P(profit>0) = "
                             f"{pp:.2f}): leave out of discount mailings")
            else:
                parts.append(f"campaign-1 response uncertain (P(uplift>0) = {pu:.2f}, "
                             f"P(profit>0) = {pp:.2f}): test before rolling out")
        rows.append({"cluster": r["cluster"], "name": f"{first}, {stance}",
                     "action": "; ".join(parts) + "."})
    return pd.DataFrame(rows)
