import hashlib
import json

import numpy as np
import pandas as pd

from analysis.demo.store import DemoSpec, generate, write_demo
from analysis.store.check_data import check_folder


def _digests(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_demo(a, DemoSpec(clients=800, seed=5))
    write_demo(b, DemoSpec(clients=800, seed=5))
    assert _digests(a) == _digests(b)
    write_demo(b, DemoSpec(clients=800, seed=6))
    assert _digests(a)["shop_database.db"] != _digests(b)["shop_database.db"]


def test_generated_data_passes_the_same_validation_as_real_data(small_demo):
    problems, sizes = check_folder(small_demo)
    assert [p for p in problems if p.severity == "fatal"] == []
    assert sizes["campaign1_treated_ids"] == sizes["campaign1_control_ids"] > 0


def test_real_messiness_is_present(small_demo):
    raw_ids = (small_demo / "ids_first_company_positive.txt").read_text()
    assert raw_ids.startswith("Ids of positive AB people ")
    lines = raw_ids.rstrip("\n").split("\n")
    assert all(len(line) == 1000 for line in lines[:-1]) and len(lines[-1]) <= 1000
    truth = json.loads((small_demo / "truth.json").read_text())
    assert truth["campaign1"]["tau_log_rate"] == DemoSpec().tau
    assert truth["campaign1"]["design"] == "store"
    assert truth["n_segments"] == 4


def test_planted_structure_is_visible():
    d = generate(DemoSpec(clients=20_000, seed=3))
    cl, p, t = d["clients"], d["purchases"], d["clients_truth"]
    assert abs(cl.gender.mean() - 0.573) < 0.02
    # product_sex follows the buyer's gender
    merged = p.dropna(subset=["product_sex"]).merge(cl[["id", "gender"]], on="id")
    assert (merged.product_sex == merged.gender).mean() > 0.75
    # campaign 1 as the store ran it: controls picked among window buyers, so all bought
    groups = t[t.group != "none"]
    conv = groups.groupby("group").bought_window.mean()
    assert conv["control"] == 1.0 and 0.9 < conv["treated"] < 1.0
    att = d["truth"]["campaign1"]["att"]
    assert att["conversion"] > 0.05 and att["revenue_per_client"] > 0
    # campaign 2: city 1134 buys more on days 15 and 45 than on the days around
    city = p.merge(cl[["id", "city"]], on="id")
    daily = city[city.city == 1134].groupby("dt").size().reindex(range(59), fill_value=0)
    # (published: 21% of city 1134 bought on day 15 or 45 against 18% elsewhere: a modest lift)
    assert daily[[15, 45]].mean() > 1.08 * daily[[13, 17, 43, 47]].mean()
    assert np.isclose(p.base_sale.mean(), 0.36, atol=0.06)
    assert pd.Series(d["treated_ids"]).is_unique


def test_randomized_design_gives_comparable_groups():
    d = generate(DemoSpec(clients=20_000, seed=3, design="randomized"))
    t = d["clients_truth"]
    groups = t[t.group != "none"]
    assert (groups.group == "treated").sum() == (groups.group == "control").sum()
    conv = groups.groupby("group").bought_window.mean()
    assert conv["treated"] > conv["control"]
    pre = groups.groupby("group").pre_orders.mean()
    assert abs(pre["treated"] - pre["control"]) < 0.15


def test_unknown_design_is_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown campaign-1 design"):
        DemoSpec(design="abtest")


def test_a_killed_generators_temporary_folder_goes_with_the_next_run(tmp_path):
    import os

    from tests.conftest import ended_process_id

    out = tmp_path / "demo"
    dead = out / f".demo.pid{ended_process_id()}.abc123"
    live = out / f".demo.pid{os.getpid()}.def456"  # another run writing now: kept
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / "purchases.parquet").write_bytes(b"half written")
    written = write_demo(out, DemoSpec(clients=300, seed=1))
    assert not dead.exists() and live.exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [live.name]
    assert "shop_database.db" in written
