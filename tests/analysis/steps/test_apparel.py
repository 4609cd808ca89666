"""The apparel case: loaders reject broken files naming file, column and rows; the step
compares BG/NBD with boosting on held-out clients against the stand-in's ceiling."""

import json
import shutil
from dataclasses import replace

import pandas as pd
import pytest

from analysis.cli import main
from analysis.config import SamplerConfig, load_config
from analysis.demo.apparel import FILES, write_apparel_demo
from analysis.errors import DataError
from analysis.steps.apparel_data import load_apparel


@pytest.fixture(scope="module")
def apparel_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("apparel")
    write_apparel_demo(out, clients=1500, seed=3)
    return out


@pytest.fixture()
def apparel_copy(apparel_demo, tmp_path):
    dest = tmp_path / "apparel"
    shutil.copytree(apparel_demo, dest)
    return dest


def _edit(folder, key, edit):
    f = folder / FILES[key]
    df = pd.read_csv(f, dtype=str, keep_default_na=False)
    edit(df).to_csv(f, index=False)


def test_stand_in_has_the_documented_schema_and_quirks(apparel_demo):
    pur = pd.read_csv(apparel_demo / FILES["purchases"], dtype=str)
    msg = pd.read_csv(apparel_demo / FILES["messages"], dtype=str)
    tgt = pd.read_csv(apparel_demo / FILES["target"], dtype=str)
    assert list(pur.columns) == ["client_id", "quantity", "price", "category_ids", "date",
                                 "message_id"]
    assert list(msg.columns) == ["bulk_campaign_id", "client_id", "message_id", "event",
                                 "channel", "date", "created_at"]
    assert list(tgt.columns) == ["client_id", "target"]
    assert pur["category_ids"].str.startswith("[").all()
    assert (pur["category_ids"] == "[]").any() and pur["category_ids"].str.contains("None").any()
    assert {"send", "open", "click", "purchase"} <= set(msg["event"])
    assert set(msg["channel"]) == {"email", "mobile_push"}
    assert msg.duplicated().any()
    data = load_apparel(apparel_demo)
    assert data.log["duplicate_message_events_dropped"] == int(msg.duplicated().sum())
    assert len(data.clients) == len(tgt) and data.clients["client_id"].is_unique
    # 19-digit ids survive exactly
    assert set(data.clients["client_id"]) == set(tgt["client_id"].astype("int64"))


@pytest.mark.parametrize("key, edit, column, rows", [
    ("purchases", lambda d: d.assign(price=d["price"].mask(d.index == 2, "abc")), "price",
     "3"),
    ("purchases", lambda d: d.assign(date=d["date"].mask(d.index == 4, "2023-13-45")),
     "date", "5"),
    ("purchases", lambda d: d.assign(category_ids=d["category_ids"].mask(d.index == 1,
                                                                          "[4, 28")),
     "category_ids", "2"),
    ("messages", lambda d: d.assign(channel=d["channel"].mask(d.index == 0, "fax")),
     "channel", "1"),
    ("messages", lambda d: d.drop(columns=["event"]), None, None),
    ("target", lambda d: d.assign(target=d["target"].mask(d.index == 6, "2")), "target",
     "7"),
    ("target", lambda d: pd.concat([d, d.iloc[[0]]]), "client_id", None),
])
def test_loader_names_file_column_and_rows(apparel_copy, key, edit, column, rows):
    _edit(apparel_copy, key, edit)
    with pytest.raises(DataError) as err:
        load_apparel(apparel_copy)
    msg = str(err.value)
    assert FILES[key] in msg
    if column:
        assert f"'{column}'" in msg
    else:
        assert "missing column" in msg
    if rows:
        assert f"data row: {rows}" in msg or f": {rows}" in msg


def test_missing_file_is_named(apparel_copy):
    (apparel_copy / FILES["messages"]).unlink()
    with pytest.raises(DataError, match="apparel-messages.csv: file not found"):
        load_apparel(apparel_copy)


def test_run_next_purchase_on_an_apparel_folder_runs_the_apparel_case(apparel_demo, tmp_path,
                                                                       monkeypatch):
    cfg0 = load_config(None)
    small = replace(cfg0, sampler=SamplerConfig(draws=300, tune=300), sampler_overrides={},
                    apparel=replace(cfg0.apparel, shap_clients=200))
    monkeypatch.setattr("analysis.cli.load_config", lambda *a, **k: replace(
        small, results_dir=tmp_path / "res"))
    code = main(["run", "next-purchase", "--data", str(apparel_demo), "--results",
                 str(tmp_path / "res")])
    s = json.loads((tmp_path / "res" / "apparel" / "summary.json").read_text())
    assert code == (0 if s["convergence"]["ok"] else code)
    assert s["folder"] == str(apparel_demo)
    aucs = [m["roc_auc"] for m in s["metrics"]]
    assert all(0.5 < a <= 1 for a in aucs)
    # nothing beats the planted truth's ceiling by more than noise
    assert max(aucs) < s["truth"]["ceiling_auc"] + 0.05
    scores = pd.read_parquet(tmp_path / "res" / "apparel" / "scores.parquet")
    assert len(scores) == s["clients"]["holdout"]
