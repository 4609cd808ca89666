import json
from dataclasses import replace

import pandas as pd
import pytest

from analysis import pipeline
from analysis.config import SamplerConfig, load_config


@pytest.fixture(autouse=True)
def steps_for_propensity(monkeypatch):
    monkeypatch.setattr(pipeline, "STEPS", tuple(pipeline.get_step(n) for n in
                                                 ("clean", "segments", "propensity")))


def test_propensity_step_scores_the_target_city_and_compares_with_a_baseline(demo_copy,
                                                                            tmp_path):
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    # tiny batches: the target city is scored 7 clients at a time
    cfg = cfg.__class__(**{**cfg.__dict__, "sampler": SamplerConfig(draws=150, tune=150),
                           "sampler_overrides": {},
                           "propensity": replace(cfg.propensity, score_batch=7)})
    res = pipeline.run(cfg)
    assert [r["status"] for r in res] == ["ok", "ok", "ok"], res[-1]["message"]
    out = tmp_path / "res" / "propensity"
    s = json.loads((out / "summary.json").read_text())
    clients = pd.read_parquet(tmp_path / "res" / "clean" / "clients.parquet")
    target = clients[(clients.country == 32) & (clients.city == 1188)]
    scores = pd.read_parquet(out / "scores.parquet")
    assert scores["id"].nunique() == len(target) == s["target"]["clients"]
    assert len(scores) == len(target) * s["categories"]
    assert scores[["p_contacted", "p_not_contacted"]].notna().all().all()
    assert (scores["p_contacted_low"] <= scores["p_contacted"]).all()
    assert (scores["p_contacted"] <= scores["p_contacted_high"]).all()
    # the per-cluster means summed batch by batch are those of all scores at once
    top = pd.read_parquet(out / "top_categories_by_cluster.parquet")
    means = scores.groupby(["cluster", "category"])["p_contacted"].mean()
    got = top.set_index(["cluster", "category"])["p_contacted"]
    pd.testing.assert_series_equal(got, means.loc[got.index], check_names=False)
    targets = pd.read_csv(out / "targets.csv")
    assert targets["id"].is_unique and len(targets) == len(target)
    assert targets["expected_profit_gain_no_discount"].is_monotonic_decreasing
    gain = targets["expected_profit_gain_no_discount"]
    assert s["distinct_scores"] == gain.round(5).nunique()
    assert s["top_score_ties"] == (gain.round(5) == gain.round(5).iloc[0]).sum()
    ties = targets[gain.round(5) == gain.round(5).iloc[0]]
    assert ties["id"].is_monotonic_increasing  # deterministic order within a tie
    assert {m["model"] for m in s["metrics"]} == {"hierarchical Bayesian (PyMC)",
                                                  "gradient boosting (scikit-learn)"}
    assert all(0.5 < m["roc_auc"] <= 1 for m in s["metrics"])
    assert s["clusters_used"] and "no history" in set(scores["cluster"]) | {"no history"}
    if not s["convergence"]["ok"]:  # 150 draws rarely pass: the failure must be loud
        assert "FAILED" in res[-1]["message"]
