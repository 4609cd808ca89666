"""Checks around the cross-validation of a binary classifier, shared by every step that
fits one.

* Before: every class needs enough members for the folds asked
  (:func:`min_class_members`, :func:`too_few_members`).
* During: a grid search whose fold scores are NaN is an error, never a silent pick of its
  first candidate (:func:`check_search_scores`).
* After: a classifier that is not better than the base rate says so
  (:func:`base_rate_check`); the steps then assign no labels from it.

The rule for "better than the base rate" (:func:`base_rate_check`) needs both

1. discrimination: the 95% interval of the out-of-fold ROC-AUC lies above 0.5, with the
   standard error of Hanley & McNeil (1982), "The meaning and use of the area under a
   receiver operating characteristic (ROC) curve", *Radiology* 143(1):29-36; and
2. probabilities: the out-of-fold log loss is below that of the prior-only model on the
   same folds, scikit-learn's ``DummyClassifier(strategy="prior")`` (each held-out fold
   gets its training folds' share of class 1). Log loss is a strictly proper scoring rule
   (Gneiting & Raftery 2007, JASA 102:359-378), so beating the prior-only model on it
   means the probabilities carry information beyond the base rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm
from sklearn.metrics import log_loss, roc_auc_score

#: probabilities are clipped as in :func:`models.classification_metrics.binary_metrics`
_EPS = 1e-6


def min_class_members(folds: int, train_members: int = 1) -> int:
    """Fewest members a class needs for stratified ``folds``-fold cross-validation in which
    every training part must also hold at least ``train_members`` of that class.

    scikit-learn's ``StratifiedKFold`` deals a class's ``n`` members round-robin over the
    folds, so its largest test fold holds ``ceil(n / folds)`` of them and its smallest
    training part ``n - ceil(n / folds)``. The answer is the smallest ``n >= folds`` (every
    test fold gets a member, so each fold's ROC-AUC is defined) with
    ``n - ceil(n / folds) >= train_members``.

    Parameters
    ----------
    folds
        Number of (outer) folds, at least 2.
    train_members
        Members of the class each training part needs: the inner folds of a nested
        cross-validation, or what an estimator's own internal splits need.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        ``folds < 2`` or ``train_members < 0``.

    Examples
    --------
    >>> min_class_members(5, 5)  # nested 5 x 5: 7 members leave 5 in every training part
    7
    """
    if folds < 2 or train_members < 0:
        raise ValueError(f"need folds >= 2 and train_members >= 0, got {folds}, "
                         f"{train_members}")
    n = max(folds, train_members)
    while n - math.ceil(n / folds) < train_members:
        n += 1
    return n


def too_few_members(y: Any, needed: int, classes: Sequence[int] = (0, 1)
                    ) -> list[tuple[int, int]]:
    """The classes of ``y`` with fewer than ``needed`` members.

    Parameters
    ----------
    y
        Class labels, shape ``(n,)``.
    needed
        Members each class needs (see :func:`min_class_members`).
    classes
        Every class that must be present; a class absent from ``y`` counts 0 members.

    Returns
    -------
    list of (class, members)
        Short classes, fewest members first; empty when every class has enough.
    """
    y = np.asarray(y)
    counts = [(int(c), int((y == c).sum())) for c in classes]
    return sorted([(c, k) for c, k in counts if k < needed], key=lambda t: t[1])


def check_search_scores(cv_results: dict[str, Any], params: Sequence[str] | None = None
                        ) -> None:
    """Refuse a grid search with a NaN fold score.

    ``GridSearchCV`` ranks NaN means last, and when every candidate is NaN it silently
    takes the first one: that would drive the choice of model by nothing. A NaN comes
    from a test fold holding one class only (ROC-AUC undefined) or a failed scoring.

    Parameters
    ----------
    cv_results
        ``GridSearchCV.cv_results_``.
    params
        A readable description of each candidate (same order), for the message.

    Raises
    ------
    ValueError
        Naming how many candidates and which folds scored NaN.
    """
    splits = sorted(k for k in cv_results if k.startswith("split") and k.endswith("_test_score"))
    scores = np.column_stack([np.asarray(cv_results[k], float) for k in splits])
    bad = np.isnan(scores)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=1))
    folds = sorted({int(j) for j in np.flatnonzero(bad.any(axis=0))})
    first = params[rows[0]] if params is not None else str(cv_results["params"][rows[0]])
    raise ValueError(
        f"the grid search scored NaN for {len(rows)} of {len(scores)} candidates (folds "
        f"{folds} of {len(splits)}; first: {first}): a fold with one class only or a "
        "failed fit; its choice of model would mean nothing")


def prior_oof(y: Any, splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Out-of-fold P(class 1) of the prior-only model, ``DummyClassifier(strategy="prior")``:
    each test fold gets the share of class 1 in its training part.

    Parameters
    ----------
    y
        Labels 0/1, shape ``(n,)``.
    splits
        ``(train, test)`` index arrays covering every row once as test.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)``.
    """
    y = np.asarray(y).astype(int)
    p = np.full(len(y), np.nan)
    for tr, te in splits:
        p[te] = y[tr].mean()
    return p


def auc_interval(y: Any, p: Any, level: float = 0.95) -> tuple[float, float, float]:
    """ROC-AUC of ``p`` with a normal interval from the Hanley & McNeil (1982) standard
    error, ``SE^2 = [A(1-A) + (n1-1)(Q1-A^2) + (n0-1)(Q2-A^2)] / (n1 n0)`` with
    ``Q1 = A/(2-A)`` and ``Q2 = 2A^2/(1+A)``; wide when either class is small.

    Parameters
    ----------
    y
        Labels 0/1, shape ``(n,)``; both classes present.
    p
        Scores or probabilities, shape ``(n,)``.
    level
        Coverage of the interval.

    Returns
    -------
    (auc, low, high)
        The bounds clipped to [0, 1].

    Raises
    ------
    ValueError
        ``y`` holds one class only (the ROC-AUC is undefined).
    """
    y = np.asarray(y).astype(int)
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    if n1 == 0 or n0 == 0:
        raise ValueError(f"ROC-AUC needs both classes; found {n0} of class 0 and {n1} of "
                         "class 1")
    a = float(roc_auc_score(y, np.asarray(p, float)))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt(max(a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a), 0.0)
                   / (n1 * n0))
    z = float(norm.ppf(0.5 + level / 2))
    return a, max(0.0, a - z * se), min(1.0, a + z * se)


@dataclass(frozen=True)
class BaseRateCheck:
    """Whether out-of-fold probabilities beat the base rate (rule in the module docstring).

    Attributes
    ----------
    better
        Both conditions hold.
    roc_auc, auc_low, auc_high
        Out-of-fold ROC-AUC and its 95% interval (Hanley & McNeil 1982).
    log_loss, base_log_loss
        Out-of-fold log loss of the model and of the prior-only model.
    base_rate
        Share of class 1.
    members
        Members of class 0 and class 1.
    reason
        The verdict in plain words, with the numbers.
    """

    better: bool
    roc_auc: float
    auc_low: float
    auc_high: float
    log_loss: float
    base_log_loss: float
    base_rate: float
    members: tuple[int, int]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["members"] = list(self.members)
        d["rule"] = ("better when the 95% interval of the out-of-fold ROC-AUC (Hanley & "
                     "McNeil 1982) lies above 0.5 and the out-of-fold log loss is below the "
                     "prior-only model's (DummyClassifier(strategy='prior'), same folds)")
        return d


def base_rate_check(y: Any, p: Any, p_base: Any, level: float = 0.95) -> BaseRateCheck:
    """Is a classifier better than the base rate? (rule and sources in the module docstring)

    Parameters
    ----------
    y
        Labels 0/1, shape ``(n,)``.
    p
        The classifier's out-of-fold P(class 1), shape ``(n,)``.
    p_base
        The prior-only model's out-of-fold P(class 1) on the same folds, shape ``(n,)``
        (:func:`prior_oof`, or ``cross_val_predict`` of ``DummyClassifier(strategy="prior")``).
    level
        Coverage of the ROC-AUC interval.

    Returns
    -------
    BaseRateCheck

    Raises
    ------
    ValueError
        Shapes differ, a probability is NaN, or ``y`` holds one class only.
    """
    y = np.asarray(y).astype(int)
    p, p_base = np.asarray(p, float), np.asarray(p_base, float)
    if not (p.shape == p_base.shape == y.shape):
        raise ValueError(f"y, p and p_base need one shape; got {y.shape}, {p.shape}, "
                         f"{p_base.shape}")
    if np.isnan(p).any() or np.isnan(p_base).any():
        raise ValueError("out-of-fold probabilities hold NaN: some rows were never scored")
    auc, lo, hi = auc_interval(y, p, level)
    ll = float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1]))
    base_ll = float(log_loss(y, np.clip(p_base, _EPS, 1 - _EPS), labels=[0, 1]))
    ranks, informs = lo > 0.5, ll < base_ll
    interval = f"ROC-AUC {auc:.3f} ({level:.0%} interval {lo:.3f} to {hi:.3f})"
    if ranks and informs:
        reason = (f"better than the base rate: out-of-fold {interval} lies above 0.5 and "
                  f"its log loss {ll:.4f} is below the base rate's {base_ll:.4f}")
    else:
        why = []
        if not ranks:
            why.append(f"its out-of-fold {interval} does not lie above 0.5")
        if not informs:
            why.append(f"its log loss {ll:.4f} is not below the base rate's {base_ll:.4f}")
        reason = "not better than the base rate: " + " and ".join(why)
    n1 = int(y.sum())
    return BaseRateCheck(bool(ranks and informs), auc, lo, hi, ll, base_ll,
                         float(y.mean()), (len(y) - n1, n1), reason)
