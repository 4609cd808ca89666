"""Held-out evaluation of propensity models, the tuned scikit-learn baseline and the
meta-learner uplift baselines.

A row with ``n`` clients and ``k`` buyers (a cell, or a sampled client x category row with
``n = 1``) stands for ``k`` rows with ``y = 1`` and ``n - k`` rows with ``y = 0`` sharing one
prediction, times its ``weight`` (1 / sampling share), so every metric below is computed
with sample weights and equals the row-level metric of the population the rows stand for
(ROC-AUC, log loss, Brier, calibration, top-decile lift), without materialising millions of
rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from models.classification_metrics import top_share_lift
from models.propensity import client_features

CATEGORICAL = ["city", "cluster", "gender", "category"]
RAW_FEATURES = ["log_frequency", "recency", "log_price_paid", "sale_share",
                "log_category_items"]
FEATURES = [*CATEGORICAL, "contacted", "has_history", *RAW_FEATURES]


def weighted_rows(cells: pd.DataFrame, case_control: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row position, y, weight) of the buyer and non-buyer parts of each row, without
    parts of weight zero. The weight is the row's ``weight`` column (inverse sampling
    share, 1 if absent) times ``k`` or ``n - k``; with ``case_control`` the non-buyers
    are further divided by the row's ``negative_rate`` (what they stand for before
    case-control sampling)."""
    n, k = cells["n"].to_numpy(float), cells["k"].to_numpy(float)
    base = cells["weight"].to_numpy(float) if "weight" in cells else np.ones(len(cells))
    neg = base * (n - k)
    if case_control and "negative_rate" in cells:
        neg = neg / cells["negative_rate"].to_numpy(float)
    pos = np.r_[np.arange(len(cells)), np.arange(len(cells))]
    y = np.r_[np.ones(len(cells)), np.zeros(len(cells))]
    w = np.r_[base * k, neg]
    keep = w > 0
    return pos[keep], y[keep], w[keep]


def expand(cells: pd.DataFrame, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, weight, prediction) with two weighted rows per cell (buyers, non-buyers)."""
    pos, y, w = weighted_rows(cells)
    return y, w, np.asarray(p)[pos]


def holdout_metrics(cells: pd.DataFrame, p: np.ndarray) -> dict[str, float]:
    """ROC-AUC, log loss, Brier score, top-decile lift and rates on held-out cells."""
    y, w, pp = expand(cells, p)
    pc = np.clip(pp, 1e-9, 1 - 1e-9)
    return {"roc_auc": float(roc_auc_score(y, pp, sample_weight=w)),
            "log_loss": float(log_loss(y, pc, sample_weight=w, labels=[0, 1])),
            "brier": float(brier_score_loss(y, pp, sample_weight=w)),
            "top_decile_lift": top_share_lift(y, w, pp, 0.1),
            "base_rate": float((w * y).sum() / w.sum()),
            "mean_prediction": float((w * pp).sum() / w.sum()),
            "rows": int(w.sum())}


def calibration_table(cells: pd.DataFrame, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Observed buy rate against mean prediction in weighted quantile bins."""
    y, w, pp = expand(cells, p)
    order = np.argsort(pp, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    b = np.minimum((cum * bins).astype(int), bins - 1)
    df = pd.DataFrame({"bin": b, "y": y[order], "w": w[order], "p": pp[order]})
    g = df.assign(wy=df.w * df.y, wp=df.w * df.p).groupby("bin")
    return pd.DataFrame({"predicted": g["wp"].sum() / g["w"].sum(),
                         "observed": g["wy"].sum() / g["w"].sum(),
                         "rows": g["w"].sum()}).reset_index()


def table_calibration_error(table: pd.DataFrame) -> float:
    """ECE from a :func:`calibration_table` (weighted mean |predicted - observed| over bins)."""
    w = table["rows"] / table["rows"].sum()
    return float((w * (table["predicted"] - table["observed"]).abs()).sum())


#: the tuning grid of the boosting baseline (3-fold cross-validation grouped by client,
#: log loss)
PARAM_GRID = {"boost__learning_rate": [0.05, 0.1], "boost__max_leaf_nodes": [15, 31],
              "boost__min_samples_leaf": [40, 200]}


def baseline_model(random_state: int = 0, features: list[str] | None = None) -> Pipeline:
    """Gradient boosting (scikit-learn's HistGradientBoostingClassifier) on the client x
    category features (categorical ones ordinal-encoded, continuous ones as they are)."""
    cats = [c for c in CATEGORICAL if features is None or c in features]
    hgb = HistGradientBoostingClassifier(categorical_features=list(range(len(cats))),
                                         max_iter=200, learning_rate=0.1,
                                         early_stopping=False, random_state=random_state)
    return Pipeline([("encode", ordinal_encoder(cats)), ("boost", hgb)])


def ordinal_encoder(categorical: list[str]) -> ColumnTransformer:
    """Ordinal codes for the ``categorical`` columns (unknown and missing: -1) first, the
    other columns passed through: the boosting models' input."""
    return ColumnTransformer(
        [("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                encoded_missing_value=-1), categorical)],
        remainder="passthrough", verbose_feature_names_out=False)


def features(rows: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The baseline's feature table of ``rows`` (raw behaviour features, no scaling)."""
    X = pd.concat([rows[CATEGORICAL].astype(str),
                   rows[["contacted", "has_history"]].astype(float),
                   client_features(rows)], axis=1)
    X.columns = [*CATEGORICAL, "contacted", "has_history", *RAW_FEATURES]
    return X[columns or FEATURES]


def _groups(rows: pd.DataFrame, pos: np.ndarray) -> np.ndarray:
    """Cross-validation groups: the client of a row; each cell a group of its own."""
    ids = rows["id"].to_numpy() if "id" in rows else np.full(len(rows), -1)
    own = np.where(ids >= 0, ids, -(np.arange(len(rows)) + 1))
    return own[pos]


def fit_baseline(rows: pd.DataFrame, random_state: int = 0, tune: bool = True,
                 columns: list[str] | None = None, params: dict[str, Any] | None = None
                 ) -> Pipeline:
    """Fit :func:`baseline_model` on the training rows (weighted to undo the case-control
    sampling), tuned over :data:`PARAM_GRID` by 3-fold cross-validation grouped by client
    (log loss) unless ``params`` are given or ``tune`` is false."""
    from sklearn.model_selection import GridSearchCV, GroupKFold

    pos, y, w = weighted_rows(rows, case_control=True)
    X = features(rows, columns).iloc[pos].reset_index(drop=True)
    model = baseline_model(random_state, columns)
    if params:
        return model.set_params(**params).fit(X, y, boost__sample_weight=w)
    if not tune:
        return model.fit(X, y, boost__sample_weight=w)
    search = GridSearchCV(model, PARAM_GRID, scoring="neg_log_loss", cv=GroupKFold(3),
                          n_jobs=1, refit=True)
    search.fit(X, y, groups=_groups(rows, pos), boost__sample_weight=w)
    best = search.best_estimator_
    best.best_params_ = search.best_params_
    return best


def predict_baseline(model: Any, rows: pd.DataFrame, contacted: bool | None = None,
                     columns: list[str] | None = None) -> np.ndarray:
    """P(buy) of each row from a :func:`fit_baseline` model (``contacted`` overrides the
    rows' column when given)."""
    X = features(rows, columns)
    if contacted is not None and "contacted" in X:
        X["contacted"] = float(contacted)
    return model.predict_proba(X)[:, 1]


@dataclass
class MetaLearners:
    """Fitted T- and X-learners (:func:`meta_learners`): the response model of each arm
    (``m1`` contacted, ``m0`` not) and the X-learner's effect regressions of each arm
    (``tau1``, ``tau0``), all on the features ``columns``. Picklable, so they can be
    fitted in another process."""

    m1: Pipeline
    m0: Pipeline
    tau1: Pipeline
    tau0: Pipeline
    columns: list[str]

    def predict_t(self, rows: pd.DataFrame) -> np.ndarray:
        """T-learner uplift per row: P(buy | contacted) - P(buy | not), shape (rows,)."""
        X = features(rows, self.columns)
        return self.m1.predict_proba(X)[:, 1] - self.m0.predict_proba(X)[:, 1]

    def predict_x(self, rows: pd.DataFrame, propensity: np.ndarray) -> np.ndarray:
        """X-learner uplift per row, the arms' effect regressions weighted by
        P(contacted) (``propensity``, shape (rows,)): ``e * tau0 + (1 - e) * tau1``."""
        X = features(rows, self.columns)
        e = np.asarray(propensity, float)
        return e * self.tau0.predict(X) + (1 - e) * self.tau1.predict(X)


def meta_learners(rows: pd.DataFrame, propensity: np.ndarray, params: dict[str, Any],
                  random_state: int = 0) -> MetaLearners:
    """T- and X-learner uplift models from scikit-learn's gradient boosting (Kunzel et
    al. 2019, "Metalearners for estimating heterogeneous treatment effects using machine
    learning", PNAS 116).

    Parameters
    ----------
    rows
        Training rows (as for :func:`fit_baseline`).
    propensity
        P(contacted | client) of each row (the X-learner's weights), shape ``(rows,)``.
    params
        Boosting parameters (the tuned response model's).

    Returns
    -------
    MetaLearners
        ``predict_t(rows)`` and ``predict_x(rows, propensity)`` give the predicted uplift
        per row (points of probability).

    Raises
    ------
    ValueError
        When the rows are all contacted or all not.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    cols = [c for c in FEATURES if c != "contacted"]
    treated = rows["contacted"].to_numpy(bool)
    if treated.all() or not treated.any():
        raise ValueError("meta-learners need contacted and not-contacted training rows")
    m1 = fit_baseline(rows[treated], random_state, columns=cols, params=params)
    m0 = fit_baseline(rows[~treated], random_state, columns=cols, params=params)
    pos, y, w = weighted_rows(rows, case_control=True)
    X = features(rows, cols).iloc[pos].reset_index(drop=True)
    t = treated[pos]
    # X-learner, stage 2: imputed effects regressed on the features, per arm
    d = np.where(t, y - m0.predict_proba(X)[:, 1], m1.predict_proba(X)[:, 1] - y)
    reg_params = {k.replace("boost__", ""): v for k, v in params.items()}
    enc_cols = [c for c in CATEGORICAL if c in cols]

    def regressor() -> Pipeline:
        boost = HistGradientBoostingRegressor(
            categorical_features=list(range(len(enc_cols))), max_iter=200,
            random_state=random_state, **reg_params)
        return Pipeline([("encode", ordinal_encoder(enc_cols)), ("boost", boost)])

    tau1 = regressor().fit(X[t], d[t], boost__sample_weight=w[t])
    tau0 = regressor().fit(X[~t], d[~t], boost__sample_weight=w[~t])
    return MetaLearners(m1, m0, tau1, tau0, cols)
