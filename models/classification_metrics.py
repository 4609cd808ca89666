"""Metrics of predicted probabilities for a binary outcome, shared by every classifier.

``binary_metrics`` is what each model comparison in the report shows: ROC-AUC, accuracy
at 0.5, log loss, Brier score and the expected calibration error (ECE).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from models.bootstrap import ClientBootstrap


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


def _grouped_auc(y: np.ndarray, w: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Weighted ROC-AUC of rows sorted by prediction (``starts``: first row of each run of
    equal predictions; ties count one half), for each row of ``w`` (shape (..., rows))."""
    pos = np.add.reduceat(w * y, starts, axis=-1)
    neg = np.add.reduceat(w * (1 - y), starts, axis=-1)
    below = np.cumsum(neg, axis=-1) - neg
    return (pos * (below + 0.5 * neg)).sum(axis=-1) / (pos.sum(axis=-1) * neg.sum(axis=-1))


#: memory of one bootstrap replicate's temporaries per row in :func:`auc_bootstrap`
#: (measured: 25 replicates of 1.5 million rows, two models, took 996 MiB above the inputs)
BYTES_PER_ROW_REPLICATE = 28
#: what :func:`auc_bootstrap`'s replicates computed at once may hold (the held-out rows of
#: a 10-million-client store are 1.5 million weighted rows: 6 replicates at a time, 309 MiB
#: measured against 996 at 25, and no slower)
BLOCK_BYTES = 256 * 2**20


def auc_bootstrap(y: np.ndarray, w: np.ndarray, predictions: dict[str, np.ndarray],
                  unit: np.ndarray | None = None, draws: int = 200, seed: int = 0,
                  prob: float = 0.94, block: int | None = None) -> dict[str, dict[str, float]]:
    """ROC-AUC of each model's predictions with a Bayesian-bootstrap interval, and the
    difference of the first model's AUC from each other's, paired (every model reweighted
    by the same draws).

    The replicates' weights are :class:`models.bootstrap.ClientBootstrap`'s (Rubin's
    Bayesian bootstrap: every client an Exp(1) weight shared by all of its rows, a cell
    row of ``w`` clients Gamma(``w``, 1)), as in :func:`models.targeting.
    uplift_evaluation`. The AUC is the weighted Mann-Whitney statistic (ties count one half), equal
    to scikit-learn's ``roc_auc_score`` with ``sample_weight``.

    Parameters
    ----------
    y : array of shape (rows,)
        Outcome, 0/1.
    w : array of shape (rows,)
        Weights (clients each row stands for).
    predictions : dict of name -> array of shape (rows,)
        Predicted probabilities (or any scores) per model.
    unit : array of shape (rows,), optional
        Client of each row; negative for a cell row. Default: every row its own client.
    draws, seed, prob
        Bootstrap replicates, their seed and the interval's probability.
    block
        Replicates computed at once (memory: about :data:`BYTES_PER_ROW_REPLICATE` x
        ``block`` x rows bytes). Default: as many as keep that within
        :data:`BLOCK_BYTES`, at most 25. The numbers do not depend on it (the replicates
        are drawn one after another from ``rng`` either way).

    Returns
    -------
    dict
        Per model name ``{"mean", "low", "high"}`` (the AUC on ``w`` and the interval of
        the replicates); ``"difference vs <name>"`` the same for the first model's AUC
        minus that model's.

    Raises
    ------
    ValueError
        If the arrays differ in length, no prediction is given, or one class has no
        weight.
    """
    y, w = np.asarray(y, float), np.asarray(w, float)
    if not predictions:
        raise ValueError("no predictions to score")
    if any(len(np.asarray(p)) != len(y) for p in predictions.values()) or len(w) != len(y):
        raise ValueError("y, w and every prediction must have the same length")
    if (w * y).sum() <= 0 or (w * (1 - y)).sum() <= 0:
        raise ValueError("the AUC needs rows of both outcomes with positive weight")
    sorted_by = {}
    for name, p in predictions.items():
        p = np.asarray(p, float)
        order = np.argsort(p, kind="stable")
        ps = p[order]
        sorted_by[name] = (order, np.r_[0, np.flatnonzero(ps[1:] != ps[:-1]) + 1])
    point = {n: float(_grouped_auc(y[o], w[o], s)) for n, (o, s) in sorted_by.items()}
    if block is None:
        block = int(np.clip(BLOCK_BYTES // (BYTES_PER_ROW_REPLICATE * max(len(y), 1)), 1, 25))
    rng = np.random.default_rng(seed)
    boot = ClientBootstrap(w, unit)
    # the replicates in float32 (half the memory traffic; the point AUC above is float64)
    y_sorted = {n: y[o].astype(np.float32) for n, (o, _) in sorted_by.items()}
    reps: dict[str, list[np.ndarray]] = {n: [] for n in predictions}
    for lo in range(0, draws, block):
        bw = boot.draw(rng, min(block, draws - lo)).astype(np.float32)
        for name, (order, starts) in sorted_by.items():
            reps[name].append(_grouped_auc(y_sorted[name], bw[:, order], starts)
                              .astype(float))
    rep = {n: np.concatenate(v) for n, v in reps.items()}
    q = [(1 - prob) / 2, 1 - (1 - prob) / 2]

    def summary(value: float, r: np.ndarray) -> dict[str, float]:
        lo_, hi_ = np.quantile(r, q)
        return {"mean": value, "low": float(lo_), "high": float(hi_)}

    out = {n: summary(point[n], rep[n]) for n in predictions}
    first = next(iter(predictions))
    for name in list(predictions)[1:]:
        out[f"difference vs {name}"] = summary(point[first] - point[name],
                                               rep[first] - rep[name])
    return out
