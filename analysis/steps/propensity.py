"""Step ``propensity``: who in country 32, city 1188 is likely to buy which category when
contacted.

Builds client x category binomial cells (outcome: bought the category in campaign 1's
window, days 5..16; history: bought it before), holds out a share of clients, fits the
hierarchical :class:`~models.propensity.PropensityModel` on the rest, compares it on the
held-out clients with gradient boosting on the same features, then scores every client of
the target city with and without contact.

Outputs in ``results_dir/propensity/``: ``scores.parquet`` (client x category: propensity
when contacted with a 94% HDI, without contact, uplift, expected gain), ``targets.csv``
(ranked: each client's best category), ``top_categories_by_cluster.parquet``,
``metrics.parquet``, ``calibration.parquet``, ``category_effects.parquet``,
``summary.json`` and figures.

Run alone: ``python -m analysis.steps.propensity`` or ``shopbayes run propensity``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import ibis
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.config import Config
from analysis.io import save_figure, write_json, write_parquet, write_text
from analysis.pipeline import StepSkipped, optional_result, step_dir, succeeded
from analysis.steps.clean import purchases_path, read_campaign_ids, read_clients
from analysis.steps.figures import reliability_figure
from analysis.store.aggregates import (
    PROPENSITY_COLUMNS,
    category_cells,
    category_table,
    client_categories_before,
    held_out,
    window_value,
)
from analysis.store.engine import connect
from analysis.store.tables import open_table
from models import propensity_eval as E
from models.propensity import PropensityModel, standardise_categories
from models.segments import cluster_labels
from models.uplift import HDI_PROB, pool_small_cities

WINDOW = (5, 16)


def client_frame(cfg: Config, clients: pd.DataFrame, treated: list[int]) -> pd.DataFrame:
    """One row per client: pooled city, cluster, gender level, contacted, split."""
    pc = cfg.propensity
    df, _ = pool_small_cities(clients[["id", "city", "country"]], pc.min_city_clients,
                              keep=[pc.target_city], max_cities=pc.max_cities)
    df["id"] = df["id"].astype("int64")
    gender = clients.set_index("id")["gender"]
    g = optional_result(cfg, "gender", "clients.parquet", ["id", "gender_label"])
    if g is not None:
        gender = gender.fillna(g.set_index("id")["gender_label"].reindex(gender.index))
    df["gender"] = df["id"].map(gender).map({0: "0", 1: "1"}).fillna("unknown").astype(str)
    a = optional_result(cfg, "segments", "assignments.parquet", ["id", "cluster"])
    if a is not None:
        a = a.set_index("id")["cluster"]
        df["cluster"] = cluster_labels(df["id"].map(a))
    else:
        df["cluster"] = "all"
    df["contacted"] = df["id"].isin(set(treated))
    df["split"] = np.where(held_out(df["id"].to_numpy(), pc.holdout_share, cfg.seed),
                           "holdout", "train")
    return df


def _merge_split(cells: pd.DataFrame, split: str) -> pd.DataFrame:
    part = cells[cells["split"] == split].drop(columns="split")
    keys = [c for c in part.columns if c not in ("n", "k")]
    return part.groupby(keys, observed=True, as_index=False)[["n", "k"]].sum()


def score_clients(model: PropensityModel, clients: pd.DataFrame, hist: pd.DataFrame,
                  categories: list[str], value: pd.Series, margin: float,
                  depth: float) -> pd.DataFrame:
    """Propensity with and without contact for every client x category of ``clients``.

    Predictions are computed once per distinct (city, cluster, gender, history, category)
    profile and mapped back to clients. ``value`` is the mean window revenue of a buyer of
    each category; expected profit gain of contact with the discount is
    ``value * (p1 * (margin - depth) - p0 * margin)`` (treated buyers pay ``1 - depth`` of
    the list price), and without a discount ``value * margin * (p1 - p0)``. ``hist``
    holds the (``id``, ``category``) pairs the clients bought before the window.
    """
    rows = clients[["id", "city", "cluster", "gender"]].merge(
        pd.DataFrame({"category": categories}), how="cross")
    rows = rows.merge(hist.assign(history=True), on=["id", "category"], how="left")
    rows["history"] = rows["history"].notna()
    keys = ["city", "cluster", "gender", "history", "category"]
    prof = rows[keys].drop_duplicates().reset_index(drop=True)
    p1 = model.predict(prof, contacted=True)
    p0 = model.predict(prof, contacted=False)
    v = prof["category"].map(value).fillna(0.0).to_numpy()
    lo_q, hi_q = (1 - HDI_PROB) / 2, 1 - (1 - HDI_PROB) / 2
    up = p1 - p0
    gain = v * (p1 * (margin - depth) - p0 * margin)
    prof = prof.assign(
        p_contacted=p1.mean(axis=0), p_contacted_low=np.quantile(p1, lo_q, axis=0),
        p_contacted_high=np.quantile(p1, hi_q, axis=0), p_not_contacted=p0.mean(axis=0),
        uplift=up.mean(axis=0), p_uplift_positive=(up > 0).mean(axis=0),
        expected_revenue_gain=(v * up).mean(axis=0),
        expected_profit_gain_no_discount=(v * margin * up).mean(axis=0),
        expected_profit_gain_with_discount=gain.mean(axis=0),
        p_profit_positive_with_discount=(gain > 0).mean(axis=0))
    return rows.merge(prof, on=keys, how="left")


def run(cfg: Config) -> dict[str, Any]:
    pc = cfg.propensity
    clients = read_clients(cfg)
    con = connect(cfg.engine, memory_limit=cfg.engine_memory)
    purchases = open_table(con, purchases_path(cfg), PROPENSITY_COLUMNS, "purchases")
    ids = read_campaign_ids(cfg)
    frame = client_frame(cfg, clients, ids["treated"])
    target = frame[(frame["city"] == str(pc.target_city))
                   & (frame["country"] == pc.target_country)]
    if target.empty:
        raise StepSkipped(f"no clients in country {pc.target_country}, city {pc.target_city}")
    cat_table = standardise_categories(category_table(purchases))
    categories = sorted(cat_table["category"].astype(str))
    t0 = time.perf_counter()
    keys = ["city", "cluster", "gender", "contacted", "split"]
    cells = category_cells(purchases, ibis.memtable(frame[["id", *keys]]), WINDOW,
                           categories, keys)
    cells_seconds = time.perf_counter() - t0
    train = _merge_split(cells, "train")
    holdout = _merge_split(cells, "holdout")
    model = PropensityModel(sampler_config=cfg.sampler_for("propensity"), seed=cfg.seed)
    t0 = time.perf_counter()
    model.fit(train, cat_table)
    fit_seconds = time.perf_counter() - t0
    conv = model.convergence_
    # held-out comparison with the scikit-learn baseline
    t0 = time.perf_counter()
    base = E.fit_baseline(train, random_state=cfg.seed)
    base_seconds = time.perf_counter() - t0
    preds = {"hierarchical Bayesian (PyMC)": model.predict(holdout).mean(axis=0),
             "gradient boosting (scikit-learn)": E.predict_baseline(base, holdout)}
    metrics, calib = [], []
    for name, p in preds.items():
        tab = E.calibration_table(holdout, p)
        metrics.append({"model": name, **E.holdout_metrics(holdout, p),
                        "ece": E.table_calibration_error(tab)})
        calib.append(tab.assign(model=name))
    metrics = pd.DataFrame(metrics)
    calib = pd.concat(calib, ignore_index=True)
    # scoring the target city
    value = window_value(purchases, WINDOW, ids["treated"])
    hist = client_categories_before(purchases, target["id"], WINDOW[0])
    b = cfg.business
    t0 = time.perf_counter()
    scores = score_clients(model, target, hist, categories, value, b.margin,
                           b.discount_depth)
    score_seconds = time.perf_counter() - t0
    best = (scores.sort_values(["id", "expected_profit_gain_no_discount"],
                               ascending=[True, False]).groupby("id").head(1)
            .sort_values(["expected_profit_gain_no_discount", "id"], ascending=[False, True]))
    best.insert(0, "rank", np.arange(1, len(best) + 1))
    # clients with the same model inputs share a score: say how coarse the ranking is
    score = best["expected_profit_gain_no_discount"].round(6)
    by_cluster = (scores.groupby(["cluster", "category"])
                  [["p_contacted", "uplift", "expected_profit_gain_no_discount"]].mean()
                  .reset_index().sort_values(["cluster", "p_contacted"],
                                             ascending=[True, False]))
    top_by_cluster = by_cluster.groupby("cluster").head(pc.top_categories)
    effects = model.category_effects()
    out = step_dir(cfg, "propensity")
    write_parquet(scores, out / "scores.parquet")
    csv_cols = ["rank", "id", "cluster", "category", "p_contacted", "p_contacted_low",
                "p_contacted_high", "p_not_contacted", "uplift",
                "expected_profit_gain_no_discount", "expected_profit_gain_with_discount"]
    write_text(best[csv_cols].round(5).to_csv(index=False), out / "targets.csv")
    write_parquet(top_by_cluster, out / "top_categories_by_cluster.parquet")
    write_parquet(metrics, out / "metrics.parquet")
    write_parquet(calib, out / "calibration.parquet")
    write_parquet(effects, out / "category_effects.parquet")
    _figures(model, calib, out)
    bayes = metrics.iloc[0]
    summary: dict[str, Any] = {
        "target": {"country": pc.target_country, "city": pc.target_city,
                   "clients": int(len(target)), "rows_scored": int(len(scores))},
        "window": list(WINDOW), "categories": len(categories),
        "clusters_used": succeeded(cfg, "segments"), "gender_source": "gender step"
        if succeeded(cfg, "gender") else "known gender only",
        "cells": {"all": len(cells), "train": len(train), "holdout": len(holdout),
                  "client_category_rows": int(cells["n"].sum())},
        "holdout_share": pc.holdout_share,
        "metrics": metrics.to_dict("records"),
        "timings_seconds": {"cells": round(cells_seconds, 1), "fit": round(fit_seconds, 1),
                            "baseline_fit": round(base_seconds, 1),
                            "score_target_city": round(score_seconds, 2)},
        "parameters": model.summary().reset_index(names="parameter").to_dict("records"),
        "priors": {k: list(v) for k, v in model.model_config.items()},
        "prior_predictive": model.prior_predictive(),
        "posterior_predictive": model.posterior_predictive_check(),
        "convergence": conv.as_dict(),
        "resampled_with": model.resampled_with_,
        "contact_effect_positive_categories": int(
            (effects.get("uplift_points_p_positive", pd.Series(dtype=float)) > 0.9).sum()),
        "distinct_scores": int(score.nunique()),
        "top_score_ties": int((score == score.iloc[0]).sum()) if len(score) else 0,
        "best_category_counts": best["category"].value_counts().head(5).to_dict(),
        "expected_gain_top_100_no_discount": float(
            best["expected_profit_gain_no_discount"].head(100).sum()),
        "share_profitable_with_discount": float(
            (scores["expected_profit_gain_with_discount"] > 0).mean()),
    }
    write_json(summary, out / "summary.json")
    status = "converged" if conv.ok else "FAILED CONVERGENCE: " + "; ".join(conv.problems)
    return {"message": f"held-out AUC {bayes['roc_auc']:.3f} (boosting "
                       f"{metrics.iloc[1]['roc_auc']:.3f}); {len(target)} clients of city "
                       f"{pc.target_city} scored; {status}",
            "convergence_ok": conv.ok}


def _figures(model: PropensityModel, calib: pd.DataFrame, out: Path) -> None:
    if model.has_contact_:
        ax = model.plot_contact_effects()
        save_figure(ax.figure, out / "contact_effects.png")
    fig = reliability_figure(dict(tuple(calib.groupby("model"))),
                             "predicted P(buy the category in the window)",
                             "observed share that bought",
                             "Calibration on held-out clients (deciles)")
    save_figure(fig, out / "calibration.png")
    plt.close("all")


if __name__ == "__main__":
    # the same as `shopbayes run propensity [--data DIR] [--results DIR] [--force]`
    from analysis.cli import main

    sys.exit(main(["run", "propensity", *sys.argv[1:]]))
