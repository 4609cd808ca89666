"""The default demo reproduces the figures published from the real tables."""

import pandas as pd
import pytest

from analysis.demo.published import TOLERANCES, compare, demo_figures, load_published
from analysis.demo.store import DemoSpec, generate


def test_every_tolerance_names_a_published_figure():
    pub = load_published()
    assert {name for name, _, _ in TOLERANCES} <= set(pub)


@pytest.fixture(scope="module")
def real_scale_table() -> pd.DataFrame:
    return compare(demo_figures(generate(DemoSpec())))


def test_real_scale_demo_matches_the_published_figures(real_scale_table, capsys):
    with capsys.disabled():
        print("\n" + real_scale_table[["figure", "published", "demo", "tolerance",
                                       "ok"]].to_string())
    bad = real_scale_table[~real_scale_table["ok"]]
    assert bad.empty, bad.to_string()


def test_the_comparison_fails_when_a_figure_is_off():
    figs = demo_figures(generate(DemoSpec(clients=5000, seed=1)))
    figs["campaign1.control_conversion"] = 0.487  # a randomized control, not the store's
    table = compare(figs).set_index("figure")
    assert not table.loc["campaign1.control_conversion", "ok"]
