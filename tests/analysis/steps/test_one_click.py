import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from analysis import pipeline
from analysis.cli import main
from analysis.config import load_config
from analysis.steps.one_click_data import load_one_click
from tests.conftest import copy_one_click, quick_one_click, rewrite_csv


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
    # out-of-fold SHAP of each fold's winner: 20 clients per outer fold, a planted driver
    # among the top five, the top drivers of every action segment explained
    assert s["shap"]["clients"] == 2 * 20
    assert set(s["shap"]["top"]) & {"pages_per_visit", "minutes_m0", "promo_share"}
    by_seg = pd.read_parquet(out / "shap_by_segment.parquet")
    assert by_seg["rank"].max() == 3
    assert by_seg.groupby("group")["clients"].first().sum() == 2 * 20
    assert (out / "shap_summary.png").exists()
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


def _few_declined(src, tmp_path, k: int):
    """A copy of the stand-in where only ``k`` clients (all kept by the cleaning) declined;
    returns the folder and the number of clients kept."""
    kept = load_one_click(src).clients
    declined = kept.index[kept["declined"] == 1][:k]
    folder = copy_one_click(src, tmp_path)

    def edit(df):
        col = "Покупательская активность"
        df[col] = "Прежний уровень"
        df.loc[df["id"].astype(int).isin(declined), col] = "Снизилась"
        return df

    rewrite_csv(folder, "market_file.csv", edit)
    return folder, len(kept)


def test_too_few_declined_for_the_nested_folds_stops_before_any_fit(one_click_demo, tmp_path):
    folder, n = _few_declined(one_click_demo, tmp_path, 5)
    cfg = load_config(None, results_dir=tmp_path / "res")
    cfg = replace(cfg, one_click=replace(cfg.one_click, data_dir=str(folder)))
    assert (cfg.one_click.outer_folds, cfg.one_click.inner_folds) == (5, 5)  # the defaults
    res = pipeline.run(cfg)
    assert res[0]["status"] == "failed"
    assert res[0]["message"] == (
        f"DataError: {folder / 'market_file.csv'}, column 'Покупательская активность': "
        f"'Снизилась' (activity declined) has 5 clients ('Прежний уровень': {n - 5:,}); "
        "nested cross-validation with 5 outer and 5 inner folds needs at least 7 of each "
        "level (5 in every outer training part). Add clients of that level, or set "
        "outer_folds = inner_folds = 3 under [one_click] in the config (the most that run "
        "on 5 clients; so few rarely beat the base rate, which the step then reports)")
    # stopped before any fit: nothing but the manifest was written
    assert [p.name for p in (tmp_path / "res" / "one_click").iterdir()] == ["manifest.json"]


def test_segment_model_is_the_best_of_those_better_than_the_base_rate():
    from analysis.steps.one_click import segment_model
    from models.cv_checks import BaseRateCheck

    def check(better):
        return BaseRateCheck(better, 0.5, 0.4, 0.6, 0.1, 0.1, 0.1, (9, 1), "")

    metrics = pd.DataFrame({"model": ["a", "b"], "log_loss": [0.2, 0.3]})
    assert segment_model(metrics, {"a": check(True), "b": check(True)}) == "a"
    assert segment_model(metrics, {"a": check(False), "b": check(True)}) == "b"
    assert segment_model(metrics, {"a": check(False), "b": check(False)}) is None


@pytest.mark.slow
def test_five_declined_with_three_folds_builds_no_segments_and_says_why(one_click_demo,
                                                                        tmp_path):
    """The step runs (3 x 3 folds need 5 per level) and finds no model better than the base
    rate: no segments, no offers, and the report shows warning boxes. About a minute."""
    from analysis.render.report import render_project

    folder, n = _few_declined(one_click_demo, tmp_path, 5)
    cfg = quick_one_click(load_config(None, results_dir=tmp_path / "res"), folder)
    res = pipeline.run(cfg)
    assert res[0]["status"] == "ok", res[0]["message"]
    assert (f"NOT BETTER THAN THE BASE RATE (5 of {n} declined): no segments or offers"
            in res[0]["message"])
    out = tmp_path / "res" / "one_click"
    s = json.loads((out / "summary.json").read_text())
    assert s["better_than_base_rate"] == {"scikit-learn search (nested CV)": False,
                                          "hierarchical Bayesian logistic": False}
    assert s["chosen_for_segments"] is None and s["segments"] == []
    assert s["segments_withheld"].startswith(
        f"Neither model is better than the base rate (5 of {n} clients declined, 0.4%)")
    for f in ("offers.parquet", "segment_profiles.parquet", "segments.png", "model"):
        assert not (out / f).exists(), f
    c = pd.read_parquet(out / "clients.parquet")
    assert c["segment"].isna().all() and c["p_decline"].isna().all()
    root = Path(__file__).resolve().parents[3]
    shutil.copytree(root / "report", tmp_path / "report",
                    ignore=shutil.ignore_patterns("_site"))
    pages = render_project(tmp_path / "report", {"results_dir": str(tmp_path / "res")},
                           to="html")
    html = next(p for p in pages if p.name == "one_click.html").read_text()
    assert "<strong>Warning:</strong> No segments or offers: Neither model" in html
    assert "What to offer" not in html and "Action segments" not in html
