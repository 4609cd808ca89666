import pandas as pd

from analysis import pipeline
from analysis.config import load_config
from analysis.io import write_json


def _propensity_result(results, recommended: int = 2) -> None:
    out = results / "propensity"
    out.mkdir(parents=True)
    pd.DataFrame({"rank": [1, 2, 3], "id": [30, 10, 20], "category": ["a", "b", "a"],
                  "expected_profit_gain": [9.0, 5.0, 1.0]}).to_csv(out / "targets.csv",
                                                                   index=False)
    write_json({"budget": {"recommended_contacts": recommended}}, out / "summary.json")
    write_json({"status": "ok", "input_hash": "p"}, out / "manifest.json")


def _next_purchase_result(results) -> None:
    out = results / "next_purchase"
    out.mkdir(parents=True)
    pd.DataFrame({"id": [10, 30, 99], "p_alive": [0.9, 0.5, 1.0], "value": [100.0, 50.0, 7.0],
                  "value_low": [90.0, 40.0, 6.0], "value_high": [110.0, 60.0, 8.0]}
                 ).to_parquet(out / "clients.parquet")
    write_json({"status": "ok", "input_hash": "n"}, out / "manifest.json")


def test_the_contact_list_gets_each_clients_value_when_next_purchase_ran(demo_copy, tmp_path):
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    _propensity_result(cfg.results_dir)
    res = pipeline.run(cfg, only="targets", echo=lambda s: None)[0]
    assert res["status"] == "ok" and "without values" in res["message"]
    listed = pd.read_csv(cfg.results_dir / "targets" / "contact_list.csv")
    assert list(listed.columns) == ["rank", "id", "category", "expected_profit_gain"]
    _next_purchase_result(cfg.results_dir)
    res = pipeline.run(cfg, only="targets", echo=lambda s: None)[0]
    listed = pd.read_csv(cfg.results_dir / "targets" / "contact_list.csv")
    assert list(listed["id"]) == [30, 10, 20]  # the ranking's order is kept
    assert listed["value_90d"].tolist()[:2] == [50.0, 100.0] and pd.isna(listed["value_90d"][2])
    assert listed["p_alive"].tolist()[:2] == [0.5, 0.9]
    s = pipeline.read_json(cfg.results_dir / "targets" / "summary.json")
    # the two recommended clients (ranks 1 and 2) are worth 50 + 100 over 90 days
    assert s["client_value"] == {"clients_with_value": 2, "recommended_value_90d": 150.0,
                                 "recommended_with_value": 2}
    assert "2 with their 90-day value" in res["message"]


def test_without_a_propensity_result_the_contact_list_is_skipped(demo_copy, tmp_path):
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    res = pipeline.run(cfg, only="targets", echo=lambda s: None)[0]
    assert res["status"] == "skipped" and "propensity" in res["message"]


def test_propensity_no_longer_waits_for_next_purchase():
    """The value join is the targets step's: propensity and next_purchase can run at once."""
    assert "next_purchase" not in pipeline.get_step("propensity").uses
    t = pipeline.get_step("targets")
    assert t.needs == ("propensity",) and t.uses == ("next_purchase",)
