"""Held-out evaluation of propensity models on binomial cells, and the scikit-learn baseline.

A cell with ``n`` clients and ``k`` buyers stands for ``k`` rows with ``y = 1`` and
``n - k`` rows with ``y = 0`` sharing one prediction, so every metric below is computed
with sample weights and equals the row-level metric exactly (ROC-AUC, log loss, Brier,
calibration, top-decile lift), without materialising millions of rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

FEATURES = ["city", "cluster", "gender", "contacted", "history", "category"]
CATEGORICAL = ["city", "cluster", "gender", "category"]


def _two_rows(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell position, y, weight) of the buyer and non-buyer rows of each cell, without
    rows of weight zero."""
    n, k = cells["n"].to_numpy(float), cells["k"].to_numpy(float)
    pos = np.r_[np.arange(len(cells)), np.arange(len(cells))]
    y = np.r_[np.ones(len(cells)), np.zeros(len(cells))]
    w = np.r_[k, n - k]
    keep = w > 0
    return pos[keep], y[keep], w[keep]


def expand(cells: pd.DataFrame, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, weight, prediction) with two weighted rows per cell (buyers, non-buyers)."""
    pos, y, w = _two_rows(cells)
    return y, w, np.asarray(p)[pos]


def top_share_lift(y: np.ndarray, w: np.ndarray, p: np.ndarray, share: float = 0.1) -> float:
    """Buy rate among the top ``share`` of rows by prediction over the overall rate (ties at
    the cut-off are split proportionally)."""
    order = np.argsort(-p, kind="stable")
    y, w = y[order], w[order]
    cum = np.cumsum(w)
    cut = share * cum[-1]
    take = np.clip(cut - (cum - w), 0, w)
    return float((take * y).sum() / take.sum() / ((w * y).sum() / w.sum()))


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


def baseline_model(random_state: int = 0) -> Pipeline:
    """Gradient boosting on the same features (categorical ones ordinal-encoded)."""
    enc = ColumnTransformer(
        [("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                encoded_missing_value=-1), CATEGORICAL)],
        remainder="passthrough", verbose_feature_names_out=False)
    hgb = HistGradientBoostingClassifier(categorical_features=[0, 1, 2, 3], max_iter=300,
                                         learning_rate=0.08, early_stopping=False,
                                         random_state=random_state)
    return Pipeline([("encode", enc), ("boost", hgb)])


def _features(cells: pd.DataFrame) -> pd.DataFrame:
    X = cells[FEATURES].copy()
    for c in CATEGORICAL:
        X[c] = X[c].astype(str)
    X["contacted"] = X["contacted"].astype(float)
    X["history"] = X["history"].astype(float)
    return X


def fit_baseline(cells: pd.DataFrame, random_state: int = 0) -> Pipeline:
    """Fit :func:`baseline_model` on cells (weighted rows: the row-level fit, exactly)."""
    pos, y, w = _two_rows(cells)
    X = _features(cells).iloc[pos].reset_index(drop=True)
    return baseline_model(random_state).fit(X, y, boost__sample_weight=w)


def predict_baseline(model: Any, cells: pd.DataFrame) -> np.ndarray:
    """P(buy) of each cell from a :func:`fit_baseline` model."""
    return model.predict_proba(_features(cells))[:, 1]
