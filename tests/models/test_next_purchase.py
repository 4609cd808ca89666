"""The next-purchase baseline: lift, SHAP additivity, customer value."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from models.classification_metrics import top_share_lift
from models.next_purchase import (
    customer_value,
    fit_classifier,
    shap_by_group,
    shap_importance,
    shap_values,
)


def test_top_decile_lift_counts_the_top_tenth():
    y = np.array([1] * 10 + [0] * 90)
    p = np.linspace(1, 0, 100)  # the buyers first
    w = np.ones(100)
    assert top_share_lift(y, w, p) == pytest.approx(10.0)
    assert top_share_lift(y, w, -p) == pytest.approx(0.0)


def test_shap_values_add_up_to_the_log_odds():
    rng = np.random.default_rng(0)
    n = 600
    X = pd.DataFrame({"city": rng.choice(["a", "b", "c"], n), "frequency": rng.poisson(3, n),
                      "recency": rng.uniform(0, 30, n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(X["frequency"] - 3) / 2))).astype(int)
    model = fit_classifier(X, y, ["city"], tune=False)
    sv = shap_values(model, X.iloc[:50])
    assert list(sv.columns) == list(X.columns)
    base = sv.sum(axis=1).to_numpy()
    lo = logit(model.predict_proba(X.iloc[:50])[:, 1])
    # SHAP values plus the expected value are the model's log-odds, row by row
    assert np.allclose(lo - base, (lo - base)[0], atol=1e-6)
    imp = shap_importance(sv)
    assert imp["feature"].iloc[0] == "frequency"
    g = shap_by_group(sv, X["city"].iloc[:50], top=2)
    assert set(g["group"]) <= {"a", "b", "c"} and g["rank"].max() == 2


def test_customer_value_is_margin_times_purchases_times_spend():
    purchases = np.array([[1.0, 2.0], [0.5, 0.5]])
    spend = np.array([[100.0, 100.0, 7.0], [10.0, 30.0, 7.0]])
    v = customer_value(purchases, spend, 0.3)
    assert v.shape == (2, 2)
    assert v[0, 1] == pytest.approx(0.3 * 2 * 100) and v[1, 1] == pytest.approx(0.3 * 0.5 * 30)
    with pytest.raises(ValueError, match="margin"):
        customer_value(purchases, spend, 1.5)
