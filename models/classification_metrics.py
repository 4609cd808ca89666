"""Metrics of predicted probabilities for a binary outcome, shared by every classifier.

``binary_metrics`` is what each model comparison in the report shows: ROC-AUC, accuracy
at 0.5, log loss, Brier score and the expected calibration error (ECE).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed - predicted| over equal-width probability bins."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            err += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(err)


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC-AUC, accuracy (threshold 0.5), log loss, Brier score and ECE of ``p``."""
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return {"roc_auc": float(roc_auc_score(y, p)), "accuracy": float(accuracy_score(y, p >= 0.5)),
            "log_loss": float(log_loss(y, p, labels=[0, 1])),
            "brier": float(brier_score_loss(y, p)), "ece": expected_calibration_error(y, p)}


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10,
                strategy: str = "uniform") -> pd.DataFrame:
    """Observed share against mean prediction per bin (a reliability curve)."""
    frac, mean = calibration_curve(np.asarray(y).astype(int), p, n_bins=bins, strategy=strategy)
    return pd.DataFrame({"predicted": mean, "observed": frac})


def top_share_lift(y: np.ndarray, w: np.ndarray, p: np.ndarray, share: float = 0.1) -> float:
    """Buy rate among the top ``share`` of rows by prediction over the overall rate (ties at
    the cut-off are split proportionally)."""
    order = np.argsort(-p, kind="stable")
    y, w = y[order], w[order]
    cum = np.cumsum(w)
    cut = share * cum[-1]
    take = np.clip(cut - (cum - w), 0, w)
    return float((take * y).sum() / take.sum() / ((w * y).sum() / w.sum()))
