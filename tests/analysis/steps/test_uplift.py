import json

import pandas as pd
import pytest

from analysis import pipeline
from analysis.config import SamplerConfig, load_config
from analysis.steps.campaign1_data import campaign_frame
from analysis.store.id_files import read_id_file
from analysis.store.loaders import load_folder
from tests.conftest import SKILLBOX, needs_shared


@pytest.fixture(autouse=True)
def clean_and_uplift_only(monkeypatch):
    monkeypatch.setattr(pipeline, "STEPS", tuple(pipeline.get_step(n) for n in ("clean", "uplift")))


def test_uplift_step_writes_results_and_states_convergence(demo_copy, tmp_path):
    """Every group larger than ``uplift_store_sample`` (100 here) is read as a hash
    sample; counts and conversion rates stay the whole groups' (aggregated in client-id
    ranges of about 5,000 purchases)."""
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    cfg = cfg.__class__(**{**cfg.__dict__, "sampler": SamplerConfig(draws=150, tune=150),
                           "uplift_store_sample": 100, "engine_part_rows": 5000})
    res = pipeline.run(cfg)
    assert [r["status"] for r in res] == ["ok", "ok"]
    out = tmp_path / "res" / "uplift"
    for f in ("summary.json", "posterior.nc", "forest_city.png", "margin_curve.png",
              "effects_city.parquet", "balance.parquet", "uplift_posterior.png", "ppc.png",
              "posterior_predictive_groups.parquet"):
        assert (out / f).exists(), f
    s = json.loads((out / "summary.json").read_text())
    assert s["trust"]["srm"]["n_treated"] == s["trust"]["srm"]["n_control"]
    # every id of both files is a client: the sampled-out ones are not "unknown"
    assert s["trust"]["ids"]["dropped_unknown_treated"] == 0
    assert s["trust"]["ids"]["dropped_unknown_control"] == 0
    clean = tmp_path / "res" / "clean"
    whole, _ = campaign_frame(pd.read_parquet(clean / "clients.parquet"),
                              pd.read_parquet(clean / "purchases.parquet"), read_id_file(
        demo_copy / "ids_first_company_positive.txt").ids, read_id_file(
        demo_copy / "ids_first_company_negative.txt").ids)
    groups = s["design"]["store_sample"]["groups"]
    metrics = pd.read_parquet(out / "group_metrics.parquet").set_index("group")
    for name, rows in (("treated", whole[whole.treated]), ("control", whole[~whole.treated])):
        assert groups[name]["clients"] == len(rows) == metrics.loc[name, "clients"]
        assert 0 < groups[name]["sampled"] < len(rows)
        assert groups[name]["weight"] == pytest.approx(len(rows) / groups[name]["sampled"])
        assert metrics.loc[name, "conversion"] == pytest.approx(rows.converted.mean())
        assert s["trust"]["conversion_rates"][name] == pytest.approx(rows.converted.mean())
    t = whole[whole.treated]
    exact = (t.converted.sum() + 1) / (len(t) + 2)  # the Beta(1, 1) posterior mean
    assert s["closed_form"]["conversion"]["treated_rate"]["mean"] == pytest.approx(exact,
                                                                                   abs=2e-3)
    assert "Recommendation:" in s["recommendation"]
    ppc = s["hierarchical"]["posterior_predictive_groups"]
    assert 0 <= ppc["city"]["inside_94"] <= ppc["city"]["groups"]
    cities = pd.read_parquet(out / "effects_city.parquet")["level"].nunique()
    assert ppc["city"]["groups"] == 2 * cities  # each city, treated and control
    if not s["convergence"]["ok"]:  # 150 draws rarely pass: the failure must be loud
        assert s["recommendation"].startswith("WARNING") and "FAILED" in res[1]["message"]


def test_clusters_of_a_failed_segments_run_are_not_used(tmp_path):
    from analysis.io import write_json, write_parquet
    from analysis.pipeline import optional_table
    from analysis.store.engine import connect

    con = connect("duckdb")

    def _clusters(cfg):
        table = optional_table(cfg, con, "segments", "assignments.parquet",
                               {"id": "integer", "cluster": "integer"})
        return None if table is None else table.order_by("id").to_pandas()

    cfg = load_config(None, data_dir=tmp_path, results_dir=tmp_path / "res")
    seg = tmp_path / "res" / "segments"
    write_parquet(pd.DataFrame({"id": [1, 2], "cluster": [0, 1]}), seg / "assignments.parquet")
    write_json({"step": "segments", "status": "ok"}, seg / "manifest.json")
    assert _clusters(cfg)["cluster"].tolist() == [0, 1]
    # a later run failed: its earlier files are still there, but stale
    write_json({"step": "segments", "status": "failed"}, seg / "manifest.json")
    assert _clusters(cfg) is None


def test_uplift_is_skipped_with_a_reason_without_purchases(tmp_path, small_demo):
    import shutil

    from tests.conftest import read_table

    read_table(small_demo / "shop_database.db", "personal_data").to_csv(
        tmp_path / "personal_data.csv", index=False)
    for f in ("ids_first_company_positive.txt", "ids_first_company_negative.txt"):
        shutil.copy(small_demo / f, tmp_path)
    cfg = load_config(None, data_dir=tmp_path, results_dir=tmp_path / "res")
    res = pipeline.run(cfg)
    assert res[0]["status"] == "ok" and res[1]["status"] == "skipped"
    assert "no purchases table" in res[1]["message"]


def test_no_pre_period_days_stop_the_step_naming_the_table_and_column(demo_copy, tmp_path):
    import sqlite3

    con = sqlite3.connect(demo_copy / "shop_database.db")
    con.execute("DELETE FROM purchases WHERE dt < 5")
    con.commit()
    con.close()
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    res = pipeline.run(cfg)
    assert res[0]["status"] == "ok" and res[1]["status"] == "failed"
    assert "shop_database.db:purchases" in res[1]["message"] and "'dt'" in res[1]["message"]
    assert "days 0..4" in res[1]["message"]


def test_treated_ids_absent_from_purchases_stop_the_step_naming_the_file(demo_copy, tmp_path):
    from tests.conftest import read_table

    buyers = set(read_table(demo_copy / "shop_database.db", "purchases")["id"])
    clients = read_table(demo_copy / "shop_database.db", "personal_data")["id"]
    never = [i for i in clients if i not in buyers][:50]
    assert never
    (demo_copy / "ids_first_company_positive.txt").write_text(
        "id\n" + "\n".join(map(str, never)) + "\n")
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    res = pipeline.run(cfg)
    assert res[1]["status"] == "failed"
    assert "ids_first_company_positive.txt" in res[1]["message"]
    assert f"none of its {len(never)} clients has a purchase" in res[1]["message"]


@needs_shared("skillbox", "ids_first_company_positive.txt")
def test_real_groups_are_built_from_exactly_5000_and_5000_ids():
    raw = load_folder(SKILLBOX)
    clients = pd.concat([raw.clients, raw.lost.assign(gender=pd.NA)], ignore_index=True)
    clients["personal_coef"] = float("nan")
    pos = read_id_file(SKILLBOX / "ids_first_company_positive.txt")
    neg = read_id_file(SKILLBOX / "ids_first_company_negative.txt")
    empty = pd.DataFrame({"id": pd.Series(dtype="int64"), "dt": [], "revenue": [],
                          "base_sale": []})
    df, report = campaign_frame(clients, empty, list(pos.ids), list(neg.ids))
    assert report["dropped_unknown_treated"] == report["dropped_unknown_control"] == 0
    assert df.treated.sum() == 5000 and (~df.treated).sum() == 5000


@pytest.mark.parametrize(("kept", "problem"), [
    (0.2, "sample-ratio mismatch (" ),
    (0.0, "control file empty: none of its "),
])
def test_trust_failures_reach_the_cli_line_and_the_recommendation(demo_copy, tmp_path, kept,
                                                                  problem):
    """Most (or all) control ids unknown to the client tables: the step runs on the whole
    store, and the CLI line and the recommendation say why the control file is not used."""
    neg = demo_copy / "ids_first_company_negative.txt"
    ids = read_id_file(neg).ids
    n_keep = int(kept * len(ids))
    unknown = [10**9 + i for i in range(len(ids) - n_keep)]  # ids of no client
    neg.write_text("\n".join(str(i) for i in [*ids[:n_keep], *unknown]) + "\n")
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    cfg = cfg.__class__(**{**cfg.__dict__, "sampler": SamplerConfig(draws=100, tune=100)})
    res = pipeline.run(cfg)
    assert [r["status"] for r in res] == ["ok", "ok"], res
    assert f"control file not used: {problem}" in res[1]["message"]
    s = json.loads((tmp_path / "res" / "uplift" / "summary.json").read_text())
    assert s["hierarchical"]["comparison"] == "whole store"
    assert f"The control file was not used ({problem}" in s["recommendation"]


def test_a_failed_placebo_keeps_the_recommendation_only_when_its_bias_cannot_explain_it():
    from analysis.steps.uplift import _placebo_caveat
    from models.observational import placebo_bias_bound

    sentence = ("Compared with similar untreated clients ..., the email raised ... . "
                "Recommendation: roll the campaign out.")
    conv = {"mean": 0.008, "hdi_low": 0.0003, "hdi_high": 0.0157, "treated_mean": 0.31}
    # bias bound 0.0157 / 0.31 * 0.96 = 4.9 points, under an uplift bounded below by 12.7
    pl = {"conversion": conv, "bias_bound": placebo_bias_bound(conv, 0.96)}
    kept = _placebo_caveat(pl, pd.Series({"conversion_uplift_hdi_low": 0.127}), sentence)
    assert "at most 4.9 points" in kept and kept.endswith("roll the campaign out.")
    assert not kept.startswith("WARNING")
    # the same placebo under an uplift bounded below by 3 points: withheld
    held = _placebo_caveat(pl, pd.Series({"conversion_uplift_hdi_low": 0.03}), sentence)
    assert held.startswith("WARNING") and "roll the campaign out" not in held
    assert held.endswith("Recommendation withheld: the comparison it would rest on failed "
                         "its placebo.")
