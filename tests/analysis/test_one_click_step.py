import json

import pandas as pd
import pytest

from analysis import pipeline
from analysis.cli import main
from analysis.config import load_config
from tests.conftest import quick_one_click


@pytest.fixture(autouse=True)
def one_click_only(monkeypatch):
    monkeypatch.setattr(pipeline, "STEPS", (pipeline.get_step("one_click"),))


def test_one_click_step_compares_models_explains_and_segments(one_click_demo, tmp_path):
    cfg = quick_one_click(load_config(None, results_dir=tmp_path / "res"), one_click_demo)
    res = pipeline.run(cfg)
    assert res[0]["status"] == "ok", res[0]["message"]
    out = tmp_path / "res" / "one_click"
    for f in ("clients.parquet", "metrics.parquet", "calibration.parquet", "offers.parquet",
              "coefficients.parquet", "permutation_importance.parquet", "posterior.nc",
              "segment_profiles.parquet", "calibration.png", "coefficients.png",
              "permutation_importance.png", "segments.png", "model/model.joblib",
              "summary.json"):
        assert (out / f).exists(), f
    s = json.loads((out / "summary.json").read_text())
    m = {r["model"]: r for r in s["metrics"]}
    assert len(m) == 2 and all(r["roc_auc"] > 0.75 for r in m.values())
    assert s["convergence"]["ok"] or "FAILED" in res[0]["message"]
    assert s["clients"] == 1297 and s["cleaning"][-1]["clients"] == 1297
    assert s["demo_truth"]["coverage_94"] >= 0.7
    assert set(s["agreement"]["agree"]) & {"pages_per_visit", "minutes_m0", "promo_share"}
    c = pd.read_parquet(out / "clients.parquet")
    assert c["p_decline"].between(0, 1).all() and c["segment"].notna().all()
    o = pd.read_parquet(out / "offers.parquet")
    assert o["segment"].str.startswith("at risk").any() and o["offer"].str.len().min() > 20
    # unchanged inputs: reused, not refitted
    again = pipeline.run(cfg)
    assert again[0]["reused"]


def test_cli_run_one_click_with_data_dir_and_missing_folder(one_click_demo, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["run", "one-click", "--data", str(tmp_path / "nowhere"),
               "--results", str(tmp_path / "res")])
    assert rc == 0
    assert "no one-click data" in capsys.readouterr().out
    m = json.loads((tmp_path / "res" / "one_click" / "manifest.json").read_text())
    assert m["status"] == "skipped"
