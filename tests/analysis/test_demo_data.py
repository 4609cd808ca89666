import hashlib
import json

import numpy as np
import pandas as pd

from analysis.check_data import check_folder
from analysis.demo_data import DemoSpec, generate, write_demo


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
    assert truth["campaign1"]["tau"] == DemoSpec().tau
    assert truth["n_segments"] == 4


def test_planted_structure_is_visible():
    d = generate(DemoSpec(clients=20_000, seed=3))
    cl, p, t = d["clients"], d["purchases"], d["clients_truth"]
    assert abs(cl.gender.mean() - 0.573) < 0.02
    # product_sex follows the buyer's gender
    merged = p.dropna(subset=["product_sex"]).merge(cl[["id", "gender"]], on="id")
    assert (merged.product_sex == merged.gender).mean() > 0.75
    # campaign 1: treated convert more than matched controls, groups are balanced
    groups = t[t.group != "none"]
    conv = groups.groupby("group").converted.mean()
    assert conv["treated"] > conv["control"]
    bal = groups.groupby("group").bought_pre.mean()
    assert abs(bal["treated"] - bal["control"]) < 0.03
    # campaign 2: city 1134 buys more on days 15 and 45 than on the days around
    city = p.merge(cl[["id", "city"]], on="id")
    daily = city[city.city == 1134].groupby("dt").size().reindex(range(59), fill_value=0)
    assert daily[[15, 45]].mean() > 1.4 * daily[[13, 17, 43, 47]].mean()
    assert np.isclose(p.base_sale.mean(), 0.36, atol=0.06)
    assert pd.Series(d["treated_ids"]).is_unique
