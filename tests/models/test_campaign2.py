import json

import numpy as np
import pandas as pd
import pytest

from analysis.demo.store import DemoSpec, write_demo
from analysis.store.id_files import campaign_groups
from analysis.store.loaders import load_folder
from analysis.store.rules import clean
from models.campaign2 import Campaign2Model, build_panel, check_design, pool_cities
from models.compiled import uncacheable_constants


def _toy():
    purchases = pd.DataFrame({"id": [1, 1, 1, 2, 3], "dt": [0, 0, 5, 5, 58],
                              "revenue": [100, 50, 30, 20, 10]})
    clients = pd.DataFrame({"id": [1, 2, 3, 4], "city": [10, 10, 20, 30]})
    return purchases, clients


def test_panel_counts_orders_buyers_revenue_and_keeps_zeros():
    panel = build_panel(*_toy())
    assert len(panel) == 3 * 59
    row = panel[(panel.city == 10) & (panel.day == 5)].iloc[0]
    assert (row.orders, row.buyers, row.revenue) == (2, 2, 50)
    day0 = panel[(panel.city == 10) & (panel.day == 0)].iloc[0]
    assert (day0.orders, day0.revenue) == (1, 150)  # two items of one client: one order
    assert panel[panel.city == 30].orders.sum() == 0


def test_excluded_clients_are_left_out():
    panel = build_panel(*_toy(), exclude_ids={1})
    assert panel.orders.sum() == 2


def test_days_out_of_range_city_absent_and_no_post_period_are_clear_errors():
    purchases, clients = _toy()
    with pytest.raises(ValueError, match="days outside 0..58"):
        build_panel(purchases.assign(dt=[0, 0, 5, 5, 70]), clients)
    panel = build_panel(purchases, clients)
    with pytest.raises(ValueError, match="campaign city 999 is not in the data"):
        check_design(panel, 999, (15, 45))
    with pytest.raises(ValueError, match="no post-period"):
        check_design(panel[panel.day <= 45], 10, (15, 45))
    with pytest.raises(ValueError, match="outside the panel"):
        check_design(panel, 10, (15, 80))


def test_one_city_alone_is_refused_with_what_is_missing():
    """Every client in the campaign city (or one other city): nothing predicts its days
    without the campaign."""
    purchases, clients = _toy()
    panel = build_panel(purchases, clients)
    check_design(panel, 10, (15, 45))  # two comparison cities: fine
    with pytest.raises(ValueError, match=r"^1 comparison city besides city 10: .*at least 2"):
        check_design(panel[panel.city != 30], 10, (15, 45))
    with pytest.raises(ValueError, match=r"^0 comparison cities besides city 10"):
        check_design(panel[panel.city == 10], 10, (15, 45))


def test_pool_cities_sums_the_rest():
    panel = build_panel(*_toy())
    pooled = pool_cities(panel, keep=1, must_keep=(20,))
    assert set(pooled.city) == {10, 20, -1}
    assert pooled.orders.sum() == panel.orders.sum()


def test_recovers_planted_effect_and_placebos_find_nothing(tmp_path):
    write_demo(tmp_path, DemoSpec(clients=12_000, seed=4))
    raw = load_folder(tmp_path)
    data = clean(raw)
    g = campaign_groups(raw.positive, raw.negative)
    panel = pool_cities(build_panel(data.purchases, data.clients, set(g.treated) | set(g.control)),
                        keep=15, must_keep=(1134, 1188))
    m = Campaign2Model(placebo_cities=(1188,), placebo_days=(25, 35), seed=2,
                       sampler_config={"draws": 600, "tune": 600}).fit(panel)
    truth = json.loads((tmp_path / "truth.json").read_text())["campaign2"]
    eff = m.effects()["orders"]
    assert eff["hdi_low"] < truth["orders_ratio_expected"] - 1 < eff["hdi_high"]
    assert uncacheable_constants(m.model_) == []  # the compiled code is kept for reruns
    assert m.placebo()["hdi_includes_zero"].all()
    cf = m.counterfactual()
    assert len(cf) == 59 and np.isfinite(cf["counterfactual_orders"]).all()
    assert m.incremental(0.35, 0.1)["incremental_orders"]["mean"] > 0
