import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import pipeline
from analysis.config import load_config
from analysis.steps.gender import load_model
from tests.conftest import SKILLBOX, needs_shared, read_table, write_tables

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture()
def gender_results(demo_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "STEPS", tuple(pipeline.get_step(n) for n in ("clean", "gender")))
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    res = pipeline.run(cfg)
    assert [r["status"] for r in res] == ["ok", "ok"], res[-1]["message"]
    return tmp_path / "res" / "gender"


def test_every_lost_client_gets_a_probability_and_no_forced_label(gender_results):
    t = pd.read_parquet(gender_results / "clients.parquet")
    s = json.loads((gender_results / "summary.json").read_text())
    lost = t[t.gender_source != "known"]
    assert len(lost) == s["lost_clients"] > 0 and lost.gender_prob.notna().all()
    unc = t[t.gender_source == "uncertain"]
    assert unc.gender_label.isna().all()
    conf = lost.gender_prob.where(lost.gender_prob >= 0.5, 1 - lost.gender_prob)
    assert (conf[lost.gender_source == "imputed"] >= s["threshold"]).all()
    chosen = {r["model"]: r for r in s["metrics"]}[s["chosen_model"]]
    base = {r["model"]: r for r in s["metrics"]}["logistic, demographics only"]
    assert chosen["roc_auc"] > base["roc_auc"] + 0.2
    assert s["demo_truth_lost"]["roc_auc"] > 0.95


def test_saved_model_refuses_another_schema_or_a_modified_file(gender_results):
    meta = json.loads((gender_results / "model.json").read_text())
    assert load_model(gender_results, meta["features"]) is not None
    with pytest.raises(ValueError, match="trained on features"):
        load_model(gender_results, meta["features"][:-1])
    shutil.copy(gender_results / "model.joblib", gender_results / "backup")
    with open(gender_results / "model.joblib", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ValueError, match="do not match model.json"):
        load_model(gender_results)


@needs_shared("skillbox", "personal_data.csv")
def test_real_client_table_cross_validated_quality(tmp_path, capsys):
    cfg = load_config(None, data_dir=SKILLBOX, results_dir=tmp_path / "res")
    res = pipeline.run(cfg, only="clean"), pipeline.run(cfg, only="gender")
    assert res[1][0]["status"] == "ok", res[1][0]["message"]
    s = json.loads((tmp_path / "res" / "gender" / "summary.json").read_text())
    t = {r["model"]: r for r in s["metrics"]}
    chosen = t[s["chosen_model"]]
    with capsys.disabled():
        base = t["logistic, demographics only"]["roc_auc"]
        base = t["logistic, demographics only"]["roc_auc"]
        print(f"\nreal client table (demographics only): CV ROC-AUC {chosen['roc_auc']:.3f}, "
              f"ECE {chosen['ece']:.3f}, baseline logistic {base:.3f}, "
              f"uncertain {s['uncertain']} of {s['lost_clients']}")
    assert s["features"] == ["age", "education", "city", "country"]
    assert 0.55 < chosen["roc_auc"] < 0.9 and chosen["ece"] < 0.05


def _one_gender_but(folder, minority: int) -> int:
    """Set every known gender in the demo database to 1 except ``minority`` clients drawn
    at random (so no feature predicts them); return the number of known clients."""
    db = folder / "shop_database.db"
    known = read_table(db, "personal_data")
    gender = np.ones(len(known), int)
    gender[np.random.default_rng(0).choice(len(known), minority, replace=False)] = 0
    write_tables(db, {"personal_data": known.assign(gender=gender)})
    return len(known)


def _run_clean_and_gender(data, results, monkeypatch):
    monkeypatch.setattr(pipeline, "STEPS", tuple(pipeline.get_step(n) for n in ("clean", "gender")))
    cfg = load_config(None, data_dir=data, results_dir=results)
    return pipeline.run(cfg)


def test_a_gender_with_fewer_known_clients_than_folds_stops_with_a_clear_error(
        demo_copy, tmp_path, monkeypatch):
    n_known = _one_gender_but(demo_copy, 3)
    res = _run_clean_and_gender(demo_copy, tmp_path / "res", monkeypatch)
    assert [r["status"] for r in res] == ["ok", "failed"]
    assert res[1]["message"] == (
        f"DataError: {demo_copy / 'shop_database.db'}:personal_data, column 'gender': gender 0 "
        f"has 3 clients with known gender (gender 1: {n_known - 3:,}); the gender model's "
        "5-fold cross-validation needs at least 5 of each gender. Add clients of gender 0 "
        "with known gender to the table; until then no gender is restored and later steps "
        "use known gender only")
    assert not (tmp_path / "res" / "gender" / "clients.parquet").exists()


def test_a_model_no_better_than_the_base_rate_restores_no_gender(demo_copy, tmp_path,
                                                                monkeypatch):
    from analysis.render.report import render_project

    n_known = _one_gender_but(demo_copy, 12)
    res = _run_clean_and_gender(demo_copy, tmp_path / "res", monkeypatch)
    assert [r["status"] for r in res] == ["ok", "ok"], res[-1]["message"]
    out = tmp_path / "res" / "gender"
    s = json.loads((out / "summary.json").read_text())
    check = s["base_rate_check"]
    assert s["better_than_base_rate"] is False and check["better"] is False
    assert check["members"] == [12, n_known - 12]
    assert check["auc_low"] <= 0.5 or check["log_loss"] >= check["base_log_loss"]
    assert res[1]["message"] == (
        f"gender model {check['reason']}; no gender restored for the {s['lost_clients']:,} "
        "lost clients (gender 1 is 99.5% of known)")
    assert s["labels_withheld"].endswith(
        f"No gender is restored: the {s['lost_clients']:,} lost clients keep a missing "
        "gender and later steps use known gender only.")
    assert s["imputed_confident"] == s["uncertain"] == 0
    assert s["not_restored"] == s["lost_clients"] > 0 and s["mean_prob_lost"] is None
    t = pd.read_parquet(out / "clients.parquet")
    lost = t[t.gender_source != "known"]
    assert len(lost) == s["lost_clients"] and (lost.gender_source == "not restored").all()
    assert lost.gender_prob.isna().all() and lost.gender_label.isna().all()
    assert not (out / "model.joblib").exists()
    # the report shows the verdict as a warning box, not labels
    shutil.copytree(ROOT / "report", tmp_path / "report",
                    ignore=shutil.ignore_patterns("_site"))
    html = render_project(tmp_path / "report", {"results_dir": str(tmp_path / "res")},
                          to="html")[0].read_text()
    # the section itself (the table of contents above names the sections too)
    body = html[html.index('id="Gender-restoration"'):
                html.index('id="Segments:-who-the-clients-are"')]
    assert "<strong>Warning:</strong> The gender model (" in body
    assert "is not better than the base rate" in body and "got a label" not in body


def test_a_store_larger_than_the_fit_sample_is_sampled_and_scored_in_batches(
        small_demo, tmp_path, monkeypatch):
    from dataclasses import replace

    from analysis.store.aggregates import held_out

    monkeypatch.setattr(pipeline, "STEPS", tuple(pipeline.get_step(n) for n in ("clean", "gender")))
    cfg = load_config(None, data_dir=small_demo, results_dir=tmp_path / "res")
    # and its features aggregated in client-id ranges (about 5 parts)
    cfg = replace(cfg, gender=replace(cfg.gender, fit_sample=1200, score_batch=100),
                  engine_part_rows=5000)
    res = pipeline.run(cfg)
    assert [r["status"] for r in res] == ["ok", "ok"], res[-1]["message"]
    out = tmp_path / "res" / "gender"
    s = json.loads((out / "summary.json").read_text())
    sample = s["fit_sample"]
    assert sample["known_clients"] > 2000 and sample["share"] < 0.6
    assert sample["rule"].startswith("hash sample")
    # the sample is the hash rule's: the same clients on every engine and run
    clients = pd.read_parquet(tmp_path / "res" / "clean" / "clients.parquet")
    known = clients.loc[clients["gender"].notna(), "id"].to_numpy(dtype="int64")
    assert sample["size"] == int(held_out(known, sample["share"], cfg.seed).sum())
    t = pd.read_parquet(out / "clients.parquet")
    lost = t[t.gender_source != "known"]
    assert s["score_batches"] == -(-len(lost) // 100) > 1  # ceil: every batch scored
    assert len(lost) == s["lost_clients"] and lost.gender_prob.notna().all()
    assert s["demo_truth_lost"]["roc_auc"] > 0.9
