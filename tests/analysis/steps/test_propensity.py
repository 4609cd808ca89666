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
                           "propensity": replace(cfg.propensity, score_batch=7,
                                                 fit_not_contacted=300, bootstrap_draws=20)})
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
    gain = targets["expected_profit_gain"]
    assert gain.is_monotonic_decreasing
    ties = targets[gain == gain.iloc[0]]
    assert ties["id"].is_monotonic_increasing  # deterministic order within a tie
    assert (targets["profit_gain_low"] <= gain).all()
    assert (gain <= targets["profit_gain_high"]).all()
    # the best category of a client is the one with the highest expected gain among its rows
    best = scores.loc[scores.groupby("id")["expected_profit_gain"].idxmax(), ["id", "category"]]
    pd.testing.assert_frame_equal(
        targets[["id", "category"]].sort_values("id", ignore_index=True),
        best.sort_values("id", ignore_index=True))
    # the tie statistics and top categories, counted batch by batch, are the whole list's
    score = gain.round(6)
    assert s["distinct_scores"] == score.nunique()
    assert s["distinct_score_share"] == pytest.approx((~score.duplicated(keep=False)).mean())
    assert s["clients_with_history"] == int(targets["has_history"].sum())
    # ties the inputs explain: best rows with the same inputs as the model sees them
    from models.propensity import client_features

    rows = targets[["id", "category"]].merge(scores, on=["id", "category"])
    seen = pd.concat([rows[["city", "cluster", "gender", "contacted", "category",
                            "has_history"]], client_features(rows)], axis=1)
    group = seen.groupby(list(seen.columns), dropna=False).ngroup()
    assert s["own_inputs_share"] == pytest.approx((~group.duplicated(keep=False)).mean())
    unlike = pd.DataFrame({"score": rows["expected_profit_gain"].round(6), "group": group})
    per_score = unlike.groupby("score")["group"].agg(["nunique", "size"])
    assert s["tied_with_other_inputs"] == int(per_score.loc[per_score["nunique"] > 1,
                                                            "size"].sum())
    if s["tied_with_other_inputs"] == 0:  # then every tie is one of identical inputs
        assert s["distinct_score_share"] == pytest.approx(s["own_inputs_share"])
    counts = targets["category"].value_counts()
    assert list(s["best_category_counts"].values()) == list(counts.head(5))
    # the budget curve: cumulative expected gain of the ranked clients, stop where the next
    # contact's expected gain falls below its cost
    curve = pd.read_parquet(out / "budget_curve.parquet")
    assert len(curve) == len(target) and list(curve["id"]) == list(targets["id"])
    assert s["budget"]["recommended_contacts"] == int((curve["expected_gain"] > 0).sum())
    assert (curve["cumulative_low"] <= curve["cumulative_mean"] + 1e-9).all()
    assert {m["model"] for m in s["metrics"]} == {"hierarchical Bayesian (PyMC)",
                                                  "gradient boosting (scikit-learn, tuned)"}
    assert all(0.5 < m["roc_auc"] <= 1 for m in s["metrics"])
    # the AUCs with paired bootstrap intervals: the point values are the metrics table's
    auc = s["roc_auc_intervals"]["all"]
    for m in s["metrics"]:
        assert auc[m["model"]]["mean"] == pytest.approx(m["roc_auc"])
        assert auc[m["model"]]["low"] <= m["roc_auc"] <= auc[m["model"]]["high"]
    names = [m["model"] for m in s["metrics"]]
    diff = auc[f"difference vs {names[1]}"]
    assert diff["mean"] == pytest.approx(auc[names[0]]["mean"] - auc[names[1]]["mean"])
    assert s["truth"]["auc_ceiling"] > 0.5  # the demo's planted ceiling, from truth.json
    # uplift metrics for the Bayesian ranking and the three baselines, with intervals
    u = s["uplift"]["models"]
    assert set(u) == {"hierarchical Bayesian (PyMC)", "S-learner (tuned boosting)",
                      "T-learner (boosting)", "X-learner (boosting)"}
    for r in u.values():
        q = r["qini_coefficient"]
        assert q["low"] <= q["mean"] <= q["high"]
    qini = pd.read_parquet(out / "qini.parquet")
    assert set(qini["model"]) == set(u)
    assert s["clusters_used"] and "no history" in set(scores["cluster"]) | {"no history"}
    # the fit saw exact cells for clients without history and sampled rows for the others
    assert s["data"]["train_cells"] > 0 and s["data"]["train_clients_with_history_sampled"] > 0
    if not s["convergence"]["ok"]:  # 150 draws rarely pass: the failure must be loud
        assert "FAILED" in res[-1]["message"]


def test_distinct_inputs_give_back_every_row_in_its_order():
    """Rows with the same model inputs are scored once; ``distinct.iloc[code]`` is the
    rows' inputs again (other columns, such as the client id, may differ)."""
    import numpy as np

    from analysis.steps.propensity import distinct_inputs
    from models.propensity import BEHAVIOUR, ROW_KEYS

    rng = np.random.default_rng(0)
    n = 500
    rows = pd.DataFrame({"id": np.arange(n), "city": rng.choice(["1188", "other"], n),
                         "cluster": rng.choice(["0", "1"], n), "gender": "1",
                         "contacted": False, "category": rng.choice(["a", "b", "c"], n),
                         "has_history": rng.random(n) < 0.3})
    for c in BEHAVIOUR:
        rows[c] = np.where(rows["has_history"], rng.integers(1, 4, n), 0)
    rows.loc[rows.index[:5], "recency"] = np.nan  # missing values group together
    code, distinct = distinct_inputs(rows)
    keys = ROW_KEYS + BEHAVIOUR
    assert len(distinct) == len(rows[keys].drop_duplicates()) < n
    pd.testing.assert_frame_equal(distinct.iloc[code][keys].reset_index(drop=True),
                                  rows[keys].reset_index(drop=True))


@pytest.mark.parametrize("seed", range(5))
def test_sorted_runs_fed_in_pieces_count_as_pandas_does_on_the_whole(seed):
    import numpy as np

    from analysis.steps.propensity import SortedRuns

    rng = np.random.default_rng(seed)
    x = np.sort(rng.integers(0, 40, 120))[::-1].astype(float)  # ties, runs across pieces
    cuts = np.sort(rng.choice(np.arange(1, len(x)), 6, replace=False))
    runs = SortedRuns()
    for piece in np.split(x, cuts):
        runs.add(piece)
        runs.add(piece[:0])  # an empty piece changes nothing
    got = runs.finish()
    s = pd.Series(x)
    assert got["distinct"] == s.nunique()
    assert got["share"] == pytest.approx((~s.duplicated(keep=False)).mean())
    assert np.isnan(SortedRuns().finish()["share"])
