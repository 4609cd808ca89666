"""SHAP values add up to the model's log-odds; Kernel SHAP of a linear log-odds model is
its coefficients times the distance to the background; summaries rank and group."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from models.explain import kernel_shap, shap_by_group, shap_importance, tree_shap
from models.next_purchase import fit_classifier


def test_shap_values_add_up_to_the_log_odds():
    rng = np.random.default_rng(0)
    n = 600
    X = pd.DataFrame({"city": rng.choice(["a", "b", "c"], n), "frequency": rng.poisson(3, n),
                      "recency": rng.uniform(0, 30, n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(X["frequency"] - 3) / 2))).astype(int)
    model = fit_classifier(X, y, ["city"], tune=False)
    sv = tree_shap(model, X.iloc[:50])
    assert list(sv.columns) == list(X.columns)
    base = sv.sum(axis=1).to_numpy()
    lo = logit(model.predict_proba(X.iloc[:50])[:, 1])
    # SHAP values plus the expected value are the model's log-odds, row by row
    assert np.allclose(lo - base, (lo - base)[0], atol=1e-6)
    imp = shap_importance(sv)
    assert imp["feature"].iloc[0] == "frequency"
    g = shap_by_group(sv, X["city"].iloc[:50], top=2)
    assert set(g["group"]) <= {"a", "b", "c"} and g["rank"].max() == 2



class _Linear:
    """P(1) = expit(0.5 + 2 x + category effect); categories a / b / c."""

    effect = {"a": 0.0, "b": 1.0, "c": -1.5}

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        assert X["city"].isin(list(self.effect)).all()  # the model sees real categories
        z = 0.5 + 2.0 * X["x"].to_numpy() + X["city"].map(self.effect).to_numpy()
        p = expit(z)
        return np.column_stack([1 - p, p])


def test_kernel_shap_of_a_linear_log_odds_model_is_exact_with_one_background_row():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"city": rng.choice(["a", "b", "c"], 20), "x": rng.normal(size=20),
                      "noise": rng.normal(size=20)})
    ref = pd.DataFrame({"city": ["a"], "x": [0.3], "noise": [0.0]})
    model = _Linear()
    sv, expected = kernel_shap(model.predict_proba, X, ref, categorical=["city"], seed=1)
    assert list(sv.columns) == ["city", "x", "noise"] and (sv.index == X.index).all()
    # log-odds model, one reference row: SHAP = the term's change from the reference
    assert np.allclose(sv["x"], 2.0 * (X["x"] - 0.3), atol=1e-6)
    assert np.allclose(sv["city"], X["city"].map(_Linear.effect), atol=1e-6)
    assert np.allclose(sv["noise"], 0.0, atol=1e-6)
    assert expected == pytest.approx(0.5 + 0.6)
    lo = logit(model.predict_proba(X)[:, 1])
    assert np.allclose(sv.sum(axis=1) + expected, lo, atol=1e-6)
    # same seed, same values; columns must match
    again, _ = kernel_shap(model.predict_proba, X, ref, categorical=["city"], seed=1)
    assert again.equals(sv)
    with pytest.raises(ValueError, match="different columns"):
        kernel_shap(model.predict_proba, X, ref[["x", "city", "noise"]], ["city"])
