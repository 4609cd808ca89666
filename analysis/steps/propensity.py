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
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.config import Config
from analysis.io import atomic_path, save_figure, write_json, write_parquet, write_text
from analysis.pipeline import StepSkipped, optional_table, step_dir, succeeded
from analysis.steps.clean import purchase_ranges, purchases_path, read_campaign_ids
from analysis.steps.figures import reliability_figure
from analysis.store.aggregates import (
    PROPENSITY_COLUMNS,
    category_cells,
    category_table,
    client_categories_before,
    cluster_label,
    held_out,
    id_table,
    window_value,
)
from analysis.store.engine import connect
from analysis.store.tables import engine_batches, materialised, open_table
from models import propensity_eval as E
from models.propensity import PropensityModel, standardise_categories
from models.uplift import HDI_PROB, cities_to_pool

WINDOW = (5, 16)


#: the cleaned clients' columns the propensity step reads
CLIENT_COLUMNS = {"id": "integer", "city": "integer", "country": "integer",
                  "gender": "integer"}


def client_table(cfg: Config, con: Any, treated: list[int]) -> Any:
    """One row per client as an Ibis expression: ``id``, pooled ``city`` (string),
    ``country``, ``cluster`` and ``gender`` labels, ``contacted``, ``split``.

    Cities with fewer than ``min_city_clients`` clients, or beyond the ``max_cities``
    largest, are ``other`` (the target city always keeps its level); gender is the known
    one, else the gender step's label, else ``unknown``; the split is :func:`held_out`'s
    hash of the id. Everything runs in the engine: no client row is in memory.
    """
    pc = cfg.propensity
    clients = open_table(con, step_dir(cfg, "clean") / "clients.parquet", CLIENT_COLUMNS,
                         "clients")
    t = clients.select(id=clients.id.cast("int64"), city=clients.city.cast("int64"),
                       country=clients.country.cast("int64"),
                       gender=clients.gender.cast("int64"))
    counts = t.group_by("city").aggregate(n=t.count()).to_pandas().set_index("city")["n"]
    pooled = cities_to_pool(counts, pc.min_city_clients, keep=[pc.target_city],
                            max_cities=pc.max_cities)
    city = t.city.cast("string")
    if pooled:
        city = t.city.isin([int(c) for c in pooled]).ifelse("other", city)
    t = t.mutate(city=city)
    g = optional_table(cfg, con, "gender", "clients.parquet",
                       {"id": "integer", "gender_label": "integer"})
    if g is not None:
        g = g.select(id=g.id.cast("int64"), gender_label=g.gender_label.cast("int64"))
        t = t.left_join(g, "id").drop("id_right")
        t = t.mutate(gender=t.gender.fill_null(t.gender_label)).drop("gender_label")
    t = t.mutate(gender=ibis.cases((t.gender == 0, "0"), (t.gender == 1, "1"),
                                   else_="unknown"))
    k = optional_table(cfg, con, "segments", "assignments.parquet",
                       {"id": "integer", "cluster": "integer"})
    if k is not None:
        t = t.left_join(k.select(id=k.id.cast("int64"), cluster=k.cluster.cast("int64")),
                        "id").drop("id_right")
        t = t.mutate(cluster=cluster_label(t.cluster))
    else:
        t = t.mutate(cluster=ibis.literal("all"))
    t = t.left_join(id_table(treated).mutate(contacted=ibis.literal(True)), "id").drop(
        "id_right")
    return t.mutate(contacted=t.contacted.fill_null(False),
                    split=held_out(t.id, pc.holdout_share, cfg.seed).ifelse("holdout",
                                                                             "train"))


def _merge_split(cells: pd.DataFrame, split: str) -> pd.DataFrame:
    part = cells[cells["split"] == split].drop(columns="split")
    keys = [c for c in part.columns if c not in ("n", "k")]
    return part.groupby(keys, observed=True, as_index=False)[["n", "k"]].sum()


PROFILE_KEYS = ["city", "cluster", "gender", "history", "category"]


def profile_scores(model: PropensityModel, profiles: pd.DataFrame, value: pd.Series,
                   margin: float, depth: float) -> pd.DataFrame:
    """Propensity with and without contact for each distinct profile (``PROFILE_KEYS``).

    ``value`` is the mean window revenue of a buyer of each category (money); expected
    profit gain of contact with the discount is ``value * (p1 * (margin - depth) - p0 *
    margin)`` (treated buyers pay ``1 - depth`` of the list price), and without a discount
    ``value * margin * (p1 - p0)``. Returns ``profiles`` with the posterior means, the
    94% interval of P(buy | contacted), P(uplift > 0) and the expected gains.
    """
    prof = profiles[PROFILE_KEYS].drop_duplicates().reset_index(drop=True)
    p1 = model.predict(prof, contacted=True)
    p0 = model.predict(prof, contacted=False)
    v = prof["category"].map(value).fillna(0.0).to_numpy()
    lo_q, hi_q = (1 - HDI_PROB) / 2, 1 - (1 - HDI_PROB) / 2
    up = p1 - p0
    gain = v * (p1 * (margin - depth) - p0 * margin)
    return prof.assign(
        p_contacted=p1.mean(axis=0), p_contacted_low=np.quantile(p1, lo_q, axis=0),
        p_contacted_high=np.quantile(p1, hi_q, axis=0), p_not_contacted=p0.mean(axis=0),
        uplift=up.mean(axis=0), p_uplift_positive=(up > 0).mean(axis=0),
        expected_revenue_gain=(v * up).mean(axis=0),
        expected_profit_gain_no_discount=(v * margin * up).mean(axis=0),
        expected_profit_gain_with_discount=gain.mean(axis=0),
        p_profit_positive_with_discount=(gain > 0).mean(axis=0))


def client_rows(clients: pd.DataFrame, hist: pd.DataFrame, categories: list[str]
                ) -> pd.DataFrame:
    """Every client x category of ``clients`` with ``history`` (bought the category
    before the window: the (``id``, ``category``) pairs of ``hist``)."""
    rows = clients[["id", "city", "cluster", "gender"]].merge(
        pd.DataFrame({"category": categories}), how="cross")
    rows = rows.merge(hist.assign(history=True), on=["id", "category"], how="left")
    rows["history"] = rows["history"].notna()
    return rows


def run(cfg: Config) -> dict[str, Any]:
    con = connect(cfg.engine, memory_limit=cfg.engine_memory)
    purchases = open_table(con, purchases_path(cfg), PROPENSITY_COLUMNS, "purchases")
    ids = read_campaign_ids(cfg)
    out = step_dir(cfg, "propensity")
    out.mkdir(parents=True, exist_ok=True)
    with materialised(con, client_table(cfg, con, ids["treated"]), out) as (frame, _):
        return _run(cfg, con, purchases, frame, ids, out)


def _run(cfg: Config, con: Any, purchases: Any, frame: Any, ids: dict[str, list[int]],
         out: Path) -> dict[str, Any]:
    pc = cfg.propensity
    target = frame.filter((frame.city == str(pc.target_city))
                          & (frame.country == pc.target_country))
    n_target = int(target.count().to_pandas())
    if not n_target:
        raise StepSkipped(f"no clients in country {pc.target_country}, city {pc.target_city}")
    cat_table = standardise_categories(category_table(purchases))
    categories = sorted(cat_table["category"].astype(str))
    t0 = time.perf_counter()
    keys = ["city", "cluster", "gender", "contacted", "split"]
    cells = category_cells(purchases, frame, WINDOW, categories, keys,
                           purchase_ranges(cfg, con))
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
    preds = {"hierarchical Bayesian (PyMC)": model.predict_mean(holdout),
             "gradient boosting (scikit-learn)": E.predict_baseline(base, holdout)}
    metrics, calib = [], []
    for name, p in preds.items():
        tab = E.calibration_table(holdout, p)
        metrics.append({"model": name, **E.holdout_metrics(holdout, p),
                        "ece": E.table_calibration_error(tab)})
        calib.append(tab.assign(model=name))
    metrics = pd.DataFrame(metrics)
    calib = pd.concat(calib, ignore_index=True)
    # scoring the target city: every profile once, then the clients in batches
    value = window_value(purchases, WINDOW, ids["treated"])
    b = cfg.business
    t0 = time.perf_counter()
    levels = target.select("cluster", "gender").distinct().to_pandas()
    grid = levels.assign(city=str(pc.target_city)).merge(
        pd.DataFrame({"history": [False, True]}), how="cross").merge(
        pd.DataFrame({"category": categories}), how="cross")
    profiles = profile_scores(model, grid, value, b.margin, b.discount_depth)
    best_parts, sums, n_rows, profitable = [], [], 0, 0
    gain = "expected_profit_gain_no_discount"
    # the target clients' purchases before the window, read from all purchases once (not
    # once per batch)
    before = purchases.filter(purchases.dt < WINDOW[0]).semi_join(target.select("id"), "id")
    with materialised(con, before.select("id", "category", "dt"), out) as (before, _), \
            atomic_path(out / "scores.parquet") as tmp:
        writer = None
        try:
            for batch in engine_batches(con, target.select("id", "city", "cluster", "gender")
                                        .order_by("id"), pc.score_batch, out):
                hist = client_categories_before(before, batch["id"], WINDOW[0])
                scores = client_rows(batch, hist, categories).merge(
                    profiles, on=PROFILE_KEYS, how="left")
                table = pa.Table.from_pandas(scores, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                best_parts.append(scores.sort_values(["id", gain], ascending=[True, False])
                                  .groupby("id").head(1))
                sums.append(scores.groupby(["cluster", "category"])
                            [["p_contacted", "uplift", gain]].agg(["sum", "count"]))
                n_rows += len(scores)
                profitable += int((scores["expected_profit_gain_with_discount"] > 0).sum())
        finally:
            if writer is not None:
                writer.close()
    score_seconds = time.perf_counter() - t0
    best = pd.concat(best_parts, ignore_index=True).sort_values([gain, "id"],
                                                                ascending=[False, True])
    best.insert(0, "rank", np.arange(1, len(best) + 1))
    # clients with the same model inputs share a score: say how coarse the ranking is
    score = best[gain].round(6)
    total = pd.concat(sums).groupby(level=[0, 1]).sum()
    by_cluster = pd.DataFrame({c: total[(c, "sum")] / total[(c, "count")]
                               for c in ("p_contacted", "uplift", gain)}).reset_index()
    by_cluster = by_cluster.sort_values(["cluster", "p_contacted"], ascending=[True, False])
    top_by_cluster = by_cluster.groupby("cluster").head(pc.top_categories)
    effects = model.category_effects()
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
                   "clients": n_target, "rows_scored": n_rows,
                   "score_batch": pc.score_batch},
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
        "share_profitable_with_discount": profitable / n_rows if n_rows else float("nan"),
    }
    write_json(summary, out / "summary.json")
    status = "converged" if conv.ok else "FAILED CONVERGENCE: " + "; ".join(conv.problems)
    return {"message": f"held-out AUC {bayes['roc_auc']:.3f} (boosting "
                       f"{metrics.iloc[1]['roc_auc']:.3f}); {n_target} clients of city "
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
