"""bambi as the readable cross-check of the hand-written uplift model (slow)."""

import pytest

pytest.importorskip("bambi")

from benchmarks.uplift_cases import bambi_crosscheck


@pytest.mark.slow
def test_bambi_formula_agrees_on_the_overall_uplift():
    res = bambi_crosscheck(10_000)
    assert res["hand_converged"], res["hand_problems"]
    # same cells, same likelihood: the two posteriors of the uplift agree to a point
    assert abs(res["hand_uplift"] - res["bambi_uplift"]) < 0.01
    assert res["hand_hdi"][0] < res["bambi_uplift"] < res["hand_hdi"][1]
