import math

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_val_predict

from models.cv_checks import (
    auc_interval,
    base_rate_check,
    check_search_scores,
    min_class_members,
    prior_oof,
    too_few_members,
)


def _smallest_training_part(n: int, folds: int) -> tuple[int, int]:
    """(members in the smallest training part, in the smallest test fold) of a class with
    ``n`` members under scikit-learn's StratifiedKFold."""
    y = np.r_[np.ones(n), np.zeros(200)].astype(int)
    parts = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(y, y))
    return min(int(y[tr].sum()) for tr, _ in parts), min(int(y[te].sum()) for _, te in parts)


@pytest.mark.parametrize(("folds", "train", "need"), [(5, 5, 7), (3, 3, 5), (5, 4, 5),
                                                      (5, 1, 5), (2, 2, 4)])
def test_min_class_members_is_the_exact_boundary_of_stratified_k_fold(folds, train, need):
    assert min_class_members(folds, train) == need
    got_train, got_test = _smallest_training_part(need, folds)
    assert got_train >= train and got_test >= 1
    fewer_train, fewer_test = _smallest_training_part(need - 1, folds)
    assert fewer_train < train or fewer_test < 1


def test_too_few_members_counts_absent_classes_and_sorts_fewest_first():
    assert too_few_members([1, 1, 1, 0, 0, 0], 3) == []
    assert too_few_members([1, 1, 0, 0, 0], 3) == [(1, 2)]
    assert too_few_members([0, 0], 3) == [(1, 0), (0, 2)]
    with pytest.raises(ValueError, match="folds >= 2"):
        min_class_members(1)


def test_a_grid_search_with_nan_fold_scores_is_an_error():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    # unshuffled folds: four test folds hold 0s only, the fifth's training part 0s only
    y = np.r_[np.zeros(50), np.ones(10)].astype(int)
    grid = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, scoring="roc_auc",
                        cv=KFold(5)).fit(X, y)
    assert np.isnan(grid.cv_results_["mean_test_score"]).all()  # what sklearn leaves us
    with pytest.raises(ValueError, match=r"scored NaN for 2 of 2 candidates \(folds \[0, 1, "
                                         r"2, 3, 4\] of 5; first: C=0\.1\)"):
        check_search_scores(grid.cv_results_, ["C=0.1", "C=1.0"])
    ok = GridSearchCV(LogisticRegression(), {"C": [1.0]}, scoring="roc_auc",
                      cv=StratifiedKFold(5)).fit(X, y)
    check_search_scores(ok.cv_results_)  # no NaN: passes


def test_auc_interval_follows_hanley_mcneil():
    y = np.r_[np.ones(50), np.zeros(50)].astype(int)
    p = np.r_[np.linspace(0.3, 1, 50), np.linspace(0, 0.7, 50)]
    a, lo, hi = auc_interval(y, p)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + 49 * (q1 - a * a) + 49 * (q2 - a * a)) / 2500)
    assert (lo, hi) == pytest.approx((a - 1.959964 * se, a + 1.959964 * se), abs=1e-6)
    # five positives among a thousand: the interval is wide
    y5 = np.r_[np.ones(5), np.zeros(1000)].astype(int)
    _, lo5, hi5 = auc_interval(y5, np.random.default_rng(0).uniform(size=1005))
    assert hi5 - lo5 > 0.4
    with pytest.raises(ValueError, match="needs both classes"):
        auc_interval(np.zeros(10), np.zeros(10))


def test_base_rate_check_against_the_prior_only_model():
    rng = np.random.default_rng(1)
    n = 2000
    x = rng.normal(size=n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-2 * x))).astype(int)
    splits = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y))
    base = prior_oof(y, splits)
    dummy = cross_val_predict(DummyClassifier(strategy="prior"), x[:, None], y, cv=splits,
                              method="predict_proba")[:, 1]
    assert np.allclose(base, dummy)  # the same baseline as scikit-learn's
    good = cross_val_predict(LogisticRegression(), x[:, None], y, cv=splits,
                             method="predict_proba")[:, 1]
    check = base_rate_check(y, good, base)
    assert check.better and check.auc_low > 0.5 and check.log_loss < check.base_log_loss
    assert check.reason.startswith("better than the base rate: out-of-fold ROC-AUC")
    noise = cross_val_predict(LogisticRegression(), rng.normal(size=(n, 1)), y, cv=splits,
                              method="predict_proba")[:, 1]
    bad = base_rate_check(y, noise, base)
    assert not bad.better and bad.auc_low <= 0.5
    assert bad.reason.startswith("not better than the base rate: its out-of-fold ROC-AUC")
    # ranks well but is certain and wrong for 150 clients: fails on log loss alone
    wrong = y.astype(float)
    wrong[:150] = 1 - y[:150]
    over = base_rate_check(y, wrong, base)
    assert over.auc_low > 0.5 and not over.better
    assert over.reason == (f"not better than the base rate: its log loss {over.log_loss:.4f} "
                           f"is not below the base rate's {over.base_log_loss:.4f}")
    assert over.as_dict()["rule"].startswith("better when the 95% interval")
