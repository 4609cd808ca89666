import numpy as np
import pytest

from models.next_test import assurance, profit_by_depth
from models.uplift import profit_per_treated


def test_depth_grid_equals_the_profit_formula_at_the_observed_depth():
    rng = np.random.default_rng(0)
    a1, a0 = rng.normal(30_000, 500, 4000), rng.normal(12_000, 300, 4000)
    grid = profit_by_depth(a1, a0, 0.35, 0.15, depths=np.array([0.0, 0.15]))
    assert grid.loc[1, "profit_mean"] == pytest.approx(
        profit_per_treated(a1, a0, 0.35, 0.15).mean(), rel=1e-9)
    assert grid.loc[0, "profit_mean"] == pytest.approx(0.0, abs=1e-6)  # no discount, no lift


def test_assurance_grows_with_the_sample():
    a = assurance(100.0, 400.0, 20_000.0, np.array([100, 10_000, 1_000_000]))
    assert a["assurance"].is_monotonic_increasing and a["assurance"].iloc[-1] > 0.9
