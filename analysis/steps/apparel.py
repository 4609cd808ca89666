"""Step ``apparel``: the apparel store's clients, who buys within 90 days after the data end.

The three files (:mod:`analysis.steps.apparel_data`) become one row per client. A share
of clients is held out (a hash of the id). The BG/NBD model (:class:`models.btyd.
BetaGeoCells`, the textbook form: a client's clock starts at their first purchase, calendar
days) is fitted on the other clients' purchase histories alone and predicts P(at least
one purchase in the next 90 days); tuned gradient boosting learns the target from the
same clients' purchase history and mailing engagement. Both are judged on the held-out
clients against the target (ROC-AUC, log loss, ECE, top-decile lift) and, on the
stand-in, against the planted truth's ceiling; SHAP values explain the boosting model.

Outputs in ``results_dir/apparel/``: ``metrics.parquet``, ``calibration.parquet``,
``by_frequency.parquet``, ``shap_importance.parquet``, ``scores.parquet`` (every client:
both models' P(buy)), ``summary.json`` and figures.

Run alone: ``shopbayes run next-purchase --data DIR`` (a folder with the apparel files)
or ``shopbayes run apparel``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd

from analysis.config import Config
from analysis.io import save_figure, write_json, write_parquet
from analysis.pipeline import StepSkipped, step_dir
from analysis.steps.apparel_data import is_apparel_folder, load_apparel
from analysis.steps.figures import reliability_figure
from analysis.store.aggregates import held_out
from models import btyd, explain
from models import next_purchase as NP
from models.sampling import SamplerSettings

FEATURES = ["frequency", "recency", "T", "days_since_last", "spend", "mean_spend", "items",
            "categories", "mailing_purchases", "sends", "opens", "clicks", "open_rate",
            "click_rate", "opens_30d", "clicks_30d", "opens_90d", "clicks_90d",
            "days_since_open", "unsubscribed", "bounces", "push_share"]


def run(cfg: Config) -> dict[str, Any]:
    ac = cfg.apparel
    folder = cfg.apparel_dir
    if not is_apparel_folder(folder):
        raise StepSkipped(f"no apparel-purchases.csv in {folder} (make the stand-in with "
                          "`shopbayes demo-data --apparel`)")
    t_start = time.perf_counter()
    data = load_apparel(folder)
    df = data.clients
    if df["target"].nunique() < 2:
        raise StepSkipped("apparel: the target has one value only; nothing to judge a "
                          "model on")
    test = held_out(df["client_id"].to_numpy() % (2**31), ac.holdout_share, cfg.seed)
    train, hold = df[~test], df[test]
    y = hold["target"].to_numpy(int)
    t0 = time.perf_counter()
    cells = btyd.rfm_cells(train)
    sampler = SamplerSettings.from_any(cfg.sampler_for("apparel"))
    bg = btyd.BetaGeoCells(sampler=sampler).fit(cells, seed=cfg.seed)
    hold_cells, pos = btyd.client_cells(hold)
    pred = bg.predict_draws(hold_cells, float(ac.horizon_days), 400)
    p_bg = {k: pred[k].mean(1)[pos] for k in ("p_purchase", "expected_purchases")}
    t_bg = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr = NP.subsample(train, ac.classifier_clients, cfg.seed)
    clf = NP.fit_classifier(tr[FEATURES].astype(float), tr["target"].to_numpy(int), [],
                            random_state=cfg.seed % (2**31))
    p_clf = clf.predict_proba(hold[FEATURES].astype(float))[:, 1]
    t_clf = time.perf_counter() - t0
    names = ["BG/NBD (PyMC, purchases only)", "gradient boosting (tuned, purchases + mailings)"]
    preds = {names[0]: p_bg["p_purchase"], names[1]: p_clf}
    metrics, calib = NP.compare(y, preds)
    by_freq = btyd.purchases_by_frequency(hold["frequency"].to_numpy(),
                                          p_bg["expected_purchases"], y, top=3)
    by_freq = by_freq.rename(columns={"actual": "bought_share"})
    rows = hold.sample(min(ac.shap_clients, len(hold)), random_state=cfg.seed % (2**31))
    sv = explain.tree_shap(clf, rows[FEATURES].astype(float))
    truth = _truth(folder)
    out = step_dir(cfg, "apparel")
    out.mkdir(parents=True, exist_ok=True)
    fig = reliability_figure({n: c for n, c in calib.groupby("model")},
                             "predicted P(buy within 90 days)", "observed share who bought",
                             "Calibration on held-out clients (deciles)")
    save_figure(fig, out / "calibration.png")
    fig = explain.shap_summary_plot(sv, rows[FEATURES].astype(float),
                                    xlabel="SHAP value (log-odds of the target)")
    save_figure(fig, out / "shap_summary.png")
    write_parquet(metrics, out / "metrics.parquet")
    write_parquet(calib, out / "calibration.parquet")
    write_parquet(by_freq, out / "by_frequency.parquet")
    write_parquet(explain.shap_importance(sv), out / "shap_importance.parquet")
    write_parquet(pd.DataFrame({"client_id": hold["client_id"].to_numpy(), "target": y,
                                "p_bgnbd": preds[names[0]], "p_boosting": p_clf}),
                  out / "scores.parquet")
    conv = bg.convergence
    m = metrics.set_index("model")
    summary = {
        "folder": str(folder), "log": data.log, "clients": {"train": int(len(train)),
                                                            "holdout": int(len(hold))},
        "horizon_days": ac.horizon_days, "cells": bg.cells_,
        "metrics": metrics.to_dict("records"),
        "auc_gap": float(m["roc_auc"].iloc[0] - m["roc_auc"].iloc[1]),
        "classifier_params": getattr(clf, "best_params_", None),
        "bgnbd_summary": bg.summary().reset_index().to_dict("records"),
        "convergence": {**conv.as_dict(), "resampled_with": bg.resampled_with},
        "truth": truth, "by_frequency": by_freq.to_dict("records"),
        "timings": {"bgnbd": round(t_bg, 1), "classifier": round(t_clf, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
    }
    write_json(summary, out / "summary.json")
    verdict = "converged" if conv.ok else "FAILED CONVERGENCE"
    ceiling = f", ceiling {truth['ceiling_auc']:.3f}" if truth else ""
    return {"message": f"held-out ROC-AUC BG/NBD {m['roc_auc'].iloc[0]:.3f}, boosting "
                       f"{m['roc_auc'].iloc[1]:.3f}{ceiling}; {verdict}"}


def _truth(folder: Any) -> dict[str, Any] | None:
    """The stand-in's planted truth (``truth.json``), or ``None`` for real files."""
    f = folder / "truth.json"
    if not f.exists():
        return None
    t = json.loads(f.read_text(encoding="utf-8"))
    return {"ceiling_auc": t.get("ceiling_auc"), "target_rate": t.get("target_rate"),
            "bgnbd": t.get("bgnbd")}
