"""Which clients' purchasing activity will decline: a scikit-learn search across model
families, evaluated with nested cross-validation.

Data contract
-------------
One row per client with categorical columns ``categorical`` (text) and numeric columns
``numeric``; ``y`` is 1 when activity declined. All preprocessing (one-hot encoding of the
categories, scaling of the numbers) sits inside the pipeline, so every cross-validation
fold refits it on its own training rows and nothing leaks. A category unseen in training
is encoded as all zeros (``handle_unknown="ignore"``): the client gets the baseline of
that feature, which is documented in the report.

The search (``GridSearchCV``, ROC-AUC, stratified folds) runs over logistic regression,
an SVM, k-nearest neighbours, a decision tree and gradient boosting, with the scaler as a
search dimension too. The search's best score is optimistic (it is the maximum over many
candidates), so :func:`nested_cv` runs the whole search inside each outer fold and scores
the winner on the outer fold's held-out rows: that is the honest estimate, comparable with
any other model scored on the same outer folds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from models.cv_checks import check_search_scores, too_few_members
from models.explain import kernel_shap

FAMILIES = {
    LogisticRegression: "logistic regression", SVC: "SVM", KNeighborsClassifier: "k-NN",
    DecisionTreeClassifier: "decision tree",
    HistGradientBoostingClassifier: "gradient boosting",
}


def family(estimator: Any) -> str:
    """The model family of a pipeline (or of a bare estimator)."""
    model = estimator.named_steps["model"] if isinstance(estimator, Pipeline) else estimator
    return FAMILIES.get(type(model), type(model).__name__)


def base_pipeline(categorical: list[str], numeric: list[str]) -> Pipeline:
    """One-hot encoding + scaling inside the pipeline, then a model (set by the search)."""
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
         ("num", StandardScaler(), numeric)], verbose_feature_names_out=False)
    return Pipeline([("pre", pre), ("model", LogisticRegression(max_iter=2000))])


def search_space(random_state: int = 0) -> list[dict[str, list[Any]]]:
    """The candidates: five families, each with a small grid (scalers for the distance- and
    margin-based models). 56 candidates."""
    scalers = [StandardScaler(), MinMaxScaler()]
    return [
        # liblinear shuffles the data: without a seed it draws from numpy's global state,
        # which differs from process to process (same seed, same numbers)
        {"model": [LogisticRegression(max_iter=2000, solver="liblinear",
                                      random_state=random_state)],
         "model__C": [0.01, 0.1, 1.0, 10.0], "model__penalty": ["l1", "l2"],
         "pre__num": scalers},
        {"model": [SVC(random_state=random_state)], "model__C": [0.1, 1.0, 10.0],
         "model__kernel": ["rbf", "linear"], "pre__num": scalers},
        {"model": [KNeighborsClassifier()], "model__n_neighbors": [5, 15, 30, 50],
         "model__weights": ["uniform", "distance"], "pre__num": scalers},
        {"model": [DecisionTreeClassifier(random_state=random_state)],
         "model__max_depth": [2, 4, 6, 8], "model__min_samples_leaf": [5, 20]},
        {"model": [HistGradientBoostingClassifier(max_iter=150, early_stopping=False,
                                                  random_state=random_state)],
         "model__learning_rate": [0.03, 0.1], "model__max_depth": [2, 3]},
    ]


def with_probabilities(estimator: Pipeline) -> Pipeline:
    """A copy that can give ``predict_proba`` (an SVM gets Platt scaling, fitted by an
    internal 5-fold CV; the search itself ranks by the decision function, which is cheaper
    and gives the same ROC-AUC ranking)."""
    est = clone(estimator)
    if isinstance(est.named_steps["model"], SVC):
        est.set_params(model__probability=True)
    return est


@dataclass
class SearchResult:
    """A fitted search: the best pipeline (refitted with probabilities) and the table of
    every candidate's cross-validated ROC-AUC."""

    best: Pipeline
    best_family: str
    best_params: str
    best_score: float
    candidates: pd.DataFrame

    def by_family(self) -> pd.DataFrame:
        """The best candidate of each family (inner-CV ROC-AUC, optimistic)."""
        best = (self.candidates.sort_values("mean_auc", ascending=False)
                .groupby("family", sort=False).head(1))
        return best.reset_index(drop=True)


def _describe(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        if k == "model":
            continue
        name = type(v).__name__ if hasattr(v, "fit") else repr(v)
        parts.append(f"{k.replace('model__', '').replace('pre__num', 'scaler')}={name}")
    return ", ".join(parts)


def search(X: pd.DataFrame, y: np.ndarray, categorical: list[str], numeric: list[str],
           folds: int = 5, random_state: int = 0, n_jobs: int | None = None) -> SearchResult:
    """Grid search across families by stratified ``folds``-fold ROC-AUC; refit the best
    on all of ``X`` (with probabilities).

    Parameters
    ----------
    X
        Features, shape ``(n, len(categorical) + len(numeric))``.
    y
        1 = activity declined, shape ``(n,)``.
    categorical, numeric
        Column names of ``X`` by kind.
    folds
        Stratified folds of the search.
    random_state, n_jobs
        Seed of the folds and the models; parallel jobs.

    Returns
    -------
    SearchResult

    Raises
    ------
    ValueError
        A class has fewer than ``folds`` members (some test fold would hold one class
        only, so its ROC-AUC is undefined), a candidate fails to fit, or any fold score is
        NaN: a search ranked by NaN would silently return its first candidate.
    """
    y = np.asarray(y).astype(int)
    short = too_few_members(y, folds)
    if short:
        cls, k = short[0]
        raise ValueError(f"class {cls} has {k} members; a {folds}-fold search needs at "
                         f"least {folds} of each class")
    cv = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    grid = GridSearchCV(base_pipeline(categorical, numeric), search_space(random_state),
                        scoring="roc_auc", cv=cv, refit=False, n_jobs=n_jobs,
                        error_score="raise")
    grid.fit(X, y)
    check_search_scores(grid.cv_results_, [f"{family(p['model'])} ({_describe(p)})"
                                           for p in grid.cv_results_["params"]])
    res = grid.cv_results_
    cand = pd.DataFrame({
        "family": [family(p["model"]) for p in res["params"]],
        "params": [_describe(p) for p in res["params"]],
        "mean_auc": res["mean_test_score"], "sd_auc": res["std_test_score"],
    })
    best = base_pipeline(categorical, numeric).set_params(**grid.best_params_)
    best = with_probabilities(best).fit(X, y)
    return SearchResult(best, family(best), _describe(grid.best_params_),
                        float(grid.best_score_), cand)


@dataclass
class NestedCV:
    """Out-of-fold probabilities of the whole search procedure, and what each fold chose."""

    oof: np.ndarray
    folds: pd.DataFrame  # fold, family, params, inner_auc, outer_auc
    importance: pd.DataFrame  # feature, mean, sd (drop in ROC-AUC when permuted)
    #: Kernel SHAP values (log-odds; explained rows x raw features, ``X``'s index) of each
    #: outer fold's winner on rows of its test fold; empty without ``shap_rows``
    shap: pd.DataFrame = field(default_factory=pd.DataFrame)


def outer_folds(y: np.ndarray, folds: int = 5, random_state: int = 0
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stratified outer folds every compared model is scored on."""
    cv = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    return list(cv.split(np.zeros(len(y)), y))


def nested_cv(X: pd.DataFrame, y: np.ndarray, categorical: list[str], numeric: list[str],
              splits: list[tuple[np.ndarray, np.ndarray]], inner_folds: int = 5,
              random_state: int = 0, n_jobs: int | None = None,
              permutation_repeats: int = 10, shap_rows: int = 0,
              shap_background: int = 20, shap_nsamples: int = 200) -> NestedCV:
    """Run :func:`search` in each outer split and score its winner on the held-out rows.

    Permutation importance (drop in held-out ROC-AUC when one raw column is shuffled) is
    computed on each outer test fold with that fold's winner, then averaged: the importance
    of the features to the procedure, measured on rows it did not see.

    SHAP values (:func:`models.explain.kernel_shap`, model-agnostic since the winner may be
    any family; log-odds) of each fold's winner for ``shap_rows`` seeded random rows of its
    test fold, against ``shap_background`` rows of its training part and
    ``shap_nsamples`` coalitions per row: out-of-fold explanations, as the importance is.
    Cost per fold: ``shap_rows * shap_nsamples * shap_background`` predictions (SVM with
    Platt scaling on the one-click data, 19 features: about 0.1 s per row).

    Raises
    ------
    ValueError
        An outer test fold holds one class only (its ROC-AUC is undefined), or a search
        fails (see :func:`search`: too few members of a class in an outer training part for
        ``inner_folds``, a failed fit, a NaN fold score). :func:`models.cv_checks.
        min_class_members` ``(len(splits), inner_folds)`` members of each class avoid both.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    for i, (_, te) in enumerate(splits):
        if len(np.unique(y[te])) < 2:
            raise ValueError(f"outer fold {i} holds class {int(y[te][0])} only; its "
                             "ROC-AUC is undefined")
    oof = np.full(len(y), np.nan)
    rows, imps, shaps = [], [], []
    rng = np.random.default_rng(random_state)
    for i, (tr, te) in enumerate(splits):
        res = search(X.iloc[tr], y[tr], categorical, numeric, inner_folds, random_state, n_jobs)
        p = res.best.predict_proba(X.iloc[te])[:, 1]
        oof[te] = p
        rows.append({"fold": i, "family": res.best_family, "params": res.best_params,
                     "inner_auc": res.best_score, "outer_auc": float(roc_auc_score(y[te], p))})
        pi = permutation_importance(res.best, X.iloc[te], y[te], scoring="roc_auc",
                                    n_repeats=permutation_repeats, random_state=random_state,
                                    n_jobs=n_jobs)
        imps.append(pi.importances_mean)
        if shap_rows > 0:
            explain = te[np.sort(rng.choice(len(te), min(shap_rows, len(te)), replace=False))]
            bg = tr[rng.choice(len(tr), min(shap_background, len(tr)), replace=False)]
            sv, _ = kernel_shap(res.best.predict_proba, X.iloc[explain], X.iloc[bg],
                                categorical, shap_nsamples, seed=random_state + i)
            shaps.append(sv)
    imp = np.vstack(imps)
    importance = pd.DataFrame({"feature": list(X.columns), "mean": imp.mean(axis=0),
                               "sd": imp.std(axis=0, ddof=1) if len(imps) > 1 else 0.0})
    importance = importance.sort_values("mean", ascending=False).reset_index(drop=True)
    return NestedCV(oof, pd.DataFrame(rows), importance,
                    pd.concat(shaps) if shaps else pd.DataFrame())
