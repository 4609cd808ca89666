"""The next-purchase baseline: lift, customer value."""

import numpy as np
import pytest

from models.classification_metrics import top_share_lift
from models.next_purchase import customer_value


def test_top_decile_lift_counts_the_top_tenth():
    y = np.array([1] * 10 + [0] * 90)
    p = np.linspace(1, 0, 100)  # the buyers first
    w = np.ones(100)
    assert top_share_lift(y, w, p) == pytest.approx(10.0)
    assert top_share_lift(y, w, -p) == pytest.approx(0.0)


def test_customer_value_is_margin_times_purchases_times_spend():
    purchases = np.array([[1.0, 2.0], [0.5, 0.5]])
    spend = np.array([[100.0, 100.0, 7.0], [10.0, 30.0, 7.0]])
    v = customer_value(purchases, spend, 0.3)
    assert v.shape == (2, 2)
    assert v[0, 1] == pytest.approx(0.3 * 2 * 100) and v[1, 1] == pytest.approx(0.3 * 0.5 * 30)
    with pytest.raises(ValueError, match="margin"):
        customer_value(purchases, spend, 1.5)
