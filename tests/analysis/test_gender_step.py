import json
import shutil

import pandas as pd
import pytest

from analysis import pipeline
from analysis.config import load_config
from analysis.gender import load_model
from tests.conftest import SKILLBOX, needs_shared


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
