import json

import numpy as np
import pandas as pd
import pytest

from analysis import pipeline
from analysis.config import load_config
from analysis.steps.segments import load_segmenter
from models.segment_features import client_behaviour


@pytest.fixture(autouse=True)
def clean_and_segments_only(monkeypatch):
    monkeypatch.setattr(pipeline, "STEPS",
                        tuple(pipeline.get_step(n) for n in ("clean", "segments")))


def test_segments_step_assigns_every_client_and_saves_a_model(small_demo, tmp_path):
    cfg = load_config(None, data_dir=small_demo, results_dir=tmp_path / "res")
    res = pipeline.run(cfg)
    assert [r["status"] for r in res] == ["ok", "ok"], res[-1]["message"]
    out = tmp_path / "res" / "segments"
    for f in ("assignments.parquet", "selection.parquet", "profiles.parquet",
              "categories.parquet", "stability.parquet", "selection.png", "projection.png",
              "profiles.png", "model.joblib", "summary.json"):
        assert (out / f).exists(), f
    s = json.loads((out / "summary.json").read_text())
    a = pd.read_parquet(out / "assignments.parquet")
    clients = pd.read_parquet(tmp_path / "res" / "clean" / "clients.parquet")
    assert len(a) == len(clients) == s["clients"] and a["id"].is_unique
    none = a["history"] == "none"
    assert (a.loc[none, "cluster"] == -1).all() and a.loc[~none, "cluster"].between(
        0, s["n_clusters"] - 1).all()
    assert s["fit_clients"] + s["thin_history_clients"] + s["no_history_clients"] == len(a)
    assert "demo_truth" in s and s["demo_truth"]["planted_k"] == 4
    # the saved model assigns new clients exactly as the step did
    model = load_segmenter(cfg)
    purchases = pd.read_parquet(tmp_path / "res" / "clean" / "purchases.parquet")
    b = client_behaviour(purchases).join(clients.set_index("id")["age"].astype(float)).head(50)
    p = model.predict_proba(b)
    stored = a.set_index("id").loc[b.index, [f"p_{k}" for k in range(s["n_clusters"])]]
    assert np.allclose(p, stored.to_numpy())


def test_segments_are_skipped_with_a_reason_without_purchases(tmp_path, small_demo):
    from tests.conftest import read_table

    read_table(small_demo / "shop_database.db", "personal_data").to_csv(
        tmp_path / "personal_data.csv", index=False)
    cfg = load_config(None, data_dir=tmp_path, results_dir=tmp_path / "res")
    res = pipeline.run(cfg)
    assert res[1]["status"] == "skipped" and "no purchases table" in res[1]["message"]


def test_a_store_larger_than_the_fit_sample_is_assigned_in_batches(small_demo, tmp_path):
    from dataclasses import replace

    from models.segments import profile_clusters

    cfg = load_config(None, data_dir=small_demo, results_dir=tmp_path / "res")
    # and aggregated in client-id ranges (about 5 parts of the small store's purchases)
    cfg = replace(cfg, segments=replace(cfg.segments, fit_sample=900, assign_batch=700,
                                        k_max=3, stability_seeds=(1,)), engine_part_rows=5000)
    res = pipeline.run(cfg)
    assert [r["status"] for r in res] == ["ok", "ok"], res[-1]["message"]
    out = tmp_path / "res" / "segments"
    s = json.loads((out / "summary.json").read_text())
    assert s["fit_sample"]["eligible"] > 900 and s["fit_sample"]["size"] < s["fit_clients"]
    a = pd.read_parquet(out / "assignments.parquet")
    clients = pd.read_parquet(tmp_path / "res" / "clean" / "clients.parquet")
    assert s["assign_batches"] == -(-len(clients) // 700) > 1
    assert len(a) == len(clients) and a["id"].is_monotonic_increasing
    # the profiles summed over batches are those of every assigned client at once
    purchases = pd.read_parquet(tmp_path / "res" / "clean" / "purchases.parquet")
    labels = a.set_index("id")["cluster"]
    demo = clients.set_index("id")[["age", "personal_coef"]].astype(float)
    demo["higher_education"] = (clients.set_index("id")["education"] == "высшее").astype(float)
    demo["gender_prob"] = clients.set_index("id")["gender"].astype(float)
    expected, cats = profile_clusters(client_behaviour(purchases), labels[labels >= 0], demo)
    got = pd.read_parquet(out / "profiles.parquet")
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "categories.parquet"), cats,
                                  check_exact=False, rtol=1e-12)
