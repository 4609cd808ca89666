"""Gender imputer: a scikit-learn classifier of P(gender = 1) with honest evaluation.

Data contract
-------------
One row per client: ``age``, ``education``, ``city``, ``country``, ``personal_coef``
(may be missing), and optional purchase features built by :func:`purchase_features`
(clients without purchases get ``n_items = 0`` and missing shares, which the gradient
boosting handles natively).

All preprocessing (target encoding of the city, one-hot of education and country) sits
inside the pipeline, so cross-validation refits it in every fold and nothing leaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler, TargetEncoder
from sklearn.utils.validation import check_is_fitted

from models.classification_metrics import binary_metrics, reliability
from models.cv_checks import BaseRateCheck, base_rate_check, min_class_members, too_few_members

DEMOGRAPHICS = ["age", "education", "city", "country"]
CATEGORICAL = ["education", "country"]
#: Members of each gender every training part of the evaluation needs: the calibrated
#: candidate splits it in two (``CalibratedClassifierCV(cv=2)``) and the booster's early
#: stopping holds out a stratified 10% of each half, which needs 2 members of each class.
TRAIN_MEMBERS = 4


def purchase_features(purchases: pd.DataFrame, colours: pd.DataFrame | None = None,
                      top_categories: int = 20, top_colours: int = 8) -> pd.DataFrame:
    """Per-client purchase behaviour: product_sex shares, category and colour shares,
    spend, discount share. One row per client with purchases (index ``id``)."""
    p = purchases.assign(sex_1=(purchases["product_sex"] == 1).astype(float),
                         sex_0=(purchases["product_sex"] == 0).astype(float))
    g = p.groupby("id")
    feats = pd.DataFrame({
        "n_items": g.size(),
        "share_sex_1": g["sex_1"].mean(),
        "share_sex_0": g["sex_0"].mean(),
        "log_spend": np.log1p(g["revenue"].sum().clip(lower=0)),
        "discount_share": g["base_sale"].mean(),
    })
    feats = feats.join(_shares(p["id"].to_numpy(), p["category"], top_categories, "cat_"))
    if colours is not None and len(colours):
        feats = feats.join(_shares(colours["id"].to_numpy(), colours["colour"], top_colours,
                                   "colour_"))
    return feats


def _shares(ids: np.ndarray, values: pd.Series, top: int, prefix: str) -> pd.DataFrame:
    """Share of each client's rows in each of the ``top`` most common values (+ other)."""
    keep = values.value_counts().index[:top]
    v = values.where(values.isin(keep), "other").to_numpy()
    counts = pd.Series(1, index=pd.MultiIndex.from_arrays([ids, v])).groupby(level=[0, 1]).size()
    table = counts.unstack(fill_value=0)
    return table.div(table.sum(axis=1), axis=0).add_prefix(prefix)


def _preprocessor(numeric: list[str], city: bool = True) -> ColumnTransformer:
    parts: list[tuple[str, Any, list[str]]] = [
        ("cat", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20,
                              sparse_output=False), CATEGORICAL),
        ("num", "passthrough", numeric),
    ]
    if city:
        parts.append(("city", TargetEncoder(target_type="binary", random_state=0), ["city"]))
    return ColumnTransformer(parts, verbose_feature_names_out=False)


class GenderImputer(ClassifierMixin, BaseEstimator):
    """Gradient boosting on demographics, ``personal_coef`` and purchase behaviour,
    optionally calibrated (isotonic, cross-fitted).

    Parameters
    ----------
    calibrate
        Wrap the booster in ``CalibratedClassifierCV(method="isotonic", cv=2)``.
    max_iter, learning_rate
        Booster settings.
    random_state
        Seed of the booster, the encoder and the calibration folds.

    Examples
    --------
    >>> imp = GenderImputer(random_state=0).fit(X, y)  # doctest: +SKIP
    >>> imp.predict_proba(X_lost)[:, 1]  # doctest: +SKIP
    """

    def __init__(self, calibrate: bool = False, max_iter: int = 100, learning_rate: float = 0.2,
                 random_state: int | None = None) -> None:
        self.calibrate = calibrate
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.random_state = random_state

    def _pipeline(self, X: pd.DataFrame) -> Pipeline:
        numeric = [c for c in X.columns if c not in CATEGORICAL + ["city"]]
        pre = _preprocessor(numeric)
        pre.set_params(city__random_state=self.random_state)
        booster = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, early_stopping=True,
            random_state=self.random_state)
        model: Any = booster
        if self.calibrate:
            model = CalibratedClassifierCV(booster, method="isotonic", cv=2)
        return Pipeline([("pre", pre), ("model", model)])

    def fit(self, X: pd.DataFrame, y: Any) -> GenderImputer:
        X = _check_features(X)
        y = np.asarray(y).astype(int)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"training labels hold one class only ({classes.tolist()}); "
                             "gender cannot be learned")
        self.feature_names_in_ = np.array(X.columns)
        self.classes_ = classes
        self.pipeline_ = self._pipeline(X).fit(X, y)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "pipeline_")
        X = _check_features(X)
        missing = [c for c in self.feature_names_in_ if c not in X]
        if missing:
            raise ValueError(f"features missing at predict time: {missing}")
        return self.pipeline_.predict_proba(X[list(self.feature_names_in_)])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def _check_features(X: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TypeError("GenderImputer needs a DataFrame with named columns")
    need = [c for c in DEMOGRAPHICS if c not in X]
    if need:
        raise ValueError(f"missing demographic column(s) {need}")
    empty = [c for c in X.columns if X[c].isna().all()]
    if empty:
        raise ValueError(f"feature column(s) entirely missing: {empty}; drop them or fill them")
    X = X.copy()
    X["city"] = X["city"].astype(str)  # unseen cities fall back to the prior via TargetEncoder
    X["education"] = X["education"].astype(str)
    X["country"] = X["country"].astype(str)
    for col in X.columns.difference(CATEGORICAL + ["city"]):
        X[col] = pd.to_numeric(X[col]).astype("float64")  # pandas NA -> NaN for the booster
    return X


def demographics_baseline(random_state: int | None = None) -> Pipeline:
    """Logistic regression on demographics only (age, education, city, country); other
    columns of the frame are dropped by its column transformer."""
    pre = _preprocessor(["age"])
    pre.set_params(city__random_state=random_state)
    return make_pipeline(pre, StandardScaler(), LogisticRegression(max_iter=1000))


@dataclass
class Evaluation:
    """Cross-validated metrics of the imputer and its baselines."""

    table: pd.DataFrame  # one row per model
    oof: dict[str, np.ndarray]  # out-of-fold P(gender = 1) per model
    y: np.ndarray
    chosen: str

    def reliability(self, model: str | None = None, bins: int = 10) -> pd.DataFrame:
        return reliability(self.y, self.oof[model or self.chosen], bins)

    def base_rate(self, model: str | None = None) -> BaseRateCheck:
        """Whether ``model`` (default: the chosen one) beats the base rate out of fold,
        against the "majority class" baseline, ``DummyClassifier(strategy="prior")`` on
        the same folds (rule and sources: :mod:`models.cv_checks`)."""
        return base_rate_check(self.y, self.oof[model or self.chosen],
                               self.oof["majority class"])


def min_members(folds: int = 5) -> int:
    """Fewest clients of each gender :func:`evaluate` needs for ``folds``-fold CV: every
    test fold gets one, every training part keeps :data:`TRAIN_MEMBERS` (5 for 5 folds).

    Parameters
    ----------
    folds
        Stratified folds of the evaluation.

    Returns
    -------
    int
    """
    return min_class_members(folds, TRAIN_MEMBERS)


def evaluate(X: pd.DataFrame, y: Any, folds: int = 5, random_state: int = 0) -> Evaluation:
    """Stratified k-fold CV of the imputer (raw and calibrated) and two baselines.

    Parameters
    ----------
    X
        Features of the clients with known gender, shape ``(n, features)``.
    y
        Known gender 0/1, shape ``(n,)``.
    folds, random_state
        Stratified folds and the seed of folds and models.

    Returns
    -------
    Evaluation
        Out-of-fold probabilities and metrics of each model; ``base_rate()`` says whether
        the chosen model beats the base rate.

    Raises
    ------
    ValueError
        A gender has fewer than :func:`min_members` ``(folds)`` clients (scikit-learn
        would otherwise fail inside a fold with "least populated class has only 1
        member", or score a fold holding one gender only).
    """
    y = np.asarray(y).astype(int)
    need = min_members(folds)
    short = too_few_members(y, need)
    if short:
        cls, k = short[0]
        raise ValueError(f"gender {cls} has {k} clients; {folds}-fold cross-validation of "
                         f"the gender imputer needs at least {need} of each gender")
    cv = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    candidates: dict[str, Any] = {
        "majority class": DummyClassifier(strategy="prior"),
        "logistic, demographics only": demographics_baseline(random_state),
        "boosting": GenderImputer(random_state=random_state),
        "boosting + isotonic calibration": GenderImputer(calibrate=True,
                                                         random_state=random_state),
    }
    oof, rows = {}, []
    for name, est in candidates.items():
        p = cross_val_predict(est, X, y, cv=cv, method="predict_proba")[:, 1]
        oof[name] = p
        rows.append({"model": name, **binary_metrics(y, p)})
    table = pd.DataFrame(rows)
    t = table.set_index("model")
    raw, cal = t.loc["boosting"], t.loc["boosting + isotonic calibration"]
    # calibrate only when it improves both log loss and ECE out of fold
    better = cal["log_loss"] < raw["log_loss"] and cal["ece"] < raw["ece"]
    chosen = "boosting + isotonic calibration" if better else "boosting"
    table["chosen"] = table["model"] == chosen
    return Evaluation(table, oof, y, chosen)


def confidence_threshold(y: np.ndarray, p: np.ndarray, target_accuracy: float = 0.95,
                         width: float = 0.05) -> float:
    """Confidence above which a hard label is assigned, read off the calibration.

    Out-of-fold predictions are binned by confidence ``max(p, 1 - p)`` (bins of ``width``
    from 0.5 to 1). The threshold is the lower edge of the lowest bin from which every
    higher bin labels at least ``target_accuracy`` correctly. Clients below it stay
    "uncertain" rather than receiving a forced label.
    """
    conf = np.maximum(p, 1 - p)
    correct = (p >= 0.5).astype(int) == y
    edges = np.arange(0.5, 1.0 + 1e-9, width)
    threshold = 1.0
    for lo in edges[::-1][1:]:
        m = (conf >= lo) & (conf < lo + width + (1e-9 if lo + width >= 1 else 0))
        if m.sum() and correct[m].mean() < target_accuracy:
            break
        threshold = float(lo)
    return threshold
