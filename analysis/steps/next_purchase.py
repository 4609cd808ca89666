"""Step ``next_purchase``: who buys again soon, and what each client is worth.

The 59 days are split into a calibration period (days ``0..calibration_end``, 0..38 by
default) and a holdout period (39..58). On the calibration period the data layer builds
each client's frequency / recency / T / spend summary (:func:`analysis.store.aggregates.
rfm_table`, in the engine); the BG/NBD purchase model (:class:`models.btyd.BetaGeoCells`,
cells, pymc-marketing's density and predictions) is fitted on the training clients, once
with one set of parameters and once pooled by city, and predicts for the held-out
clients P(at least one purchase day in the holdout period) and the number of them. The
boosting baseline (:mod:`models.next_purchase`) learns the same outcome from the training
clients' features. Both are judged on the held-out clients (ROC-AUC, log loss, ECE,
top-decile lift, reliability) and the BTYD check compares expected with actual holdout
purchases by calibration frequency. SHAP values explain the baseline. That baseline learns
from other clients' holdout days, which no forecast has when it is made, so the same
boosting is also trained as it could be deployed: on the period one holdout length earlier
(features on days ``0..calibration_end - 20``, labels in the next 20 days, the tuned
settings) and applied to the held-out clients' calibration days. And BG/NBD predicts a
second time with the holdout days' activity as the training clients showed it (what that
baseline learns from them; :func:`holdout_activity`), which splits its error into the
store's activity, which it forecasts, and the clients.

The deployed fit then uses every day: P(alive) at the last day, P(buy) in the next
``calibration_end``-to-``last_day`` horizon, and, with the Gamma-Gamma spend model, each
client's expected margin over ``value_horizon_days`` with a 94% interval, summarised by
cluster.

Outputs in ``results_dir/next_purchase/``: ``clients.parquet`` (per client),
``metrics.parquet``, ``calibration.parquet``, ``by_frequency.parquet``,
``pooling.parquet``, ``groups.parquet``, ``value_by_cluster.parquet``,
``shap_importance.parquet``, ``shap_by_cluster.parquet``, ``summary.json`` and figures.

Run alone: ``python -m analysis.steps.next_purchase`` or ``shopbayes run next_purchase``.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.config import Config
from analysis.io import atomic_path, save_figure, write_json, write_parquet
from analysis.pipeline import StepSkipped, step_dir
from analysis.steps.clean import purchase_ranges, purchases_path
from analysis.steps.client_labels import with_clusters, with_gender_labels
from analysis.steps.figures import reliability_figure
from analysis.store.aggregates import RFM_COLUMNS, daily_buyers, held_out, rfm_table
from analysis.store.engine import connect
from analysis.store.tables import materialised, open_table, parquet_batches
from models import btyd, explain
from models import next_purchase as NP
from models.sampling import SamplerSettings
from models.uplift import HDI_PROB, hdi

CLIENT_COLUMNS = {"id": "integer", "city": "integer", "gender": "integer", "age": "integer"}
NUMERIC = ["frequency", "recency_days", "T_days", "days_since_last", "spend", "mean_spend",
           "items", "sale_share", "categories", "age"]
#: the clusters are not a feature here: the segments step clusters behaviour over all 59
#: days, holdout included (its "no history" cluster bought nothing in the holdout by
#: construction), so a model judged on the holdout must not see them
CATEGORICAL = ["gender", "city"]
#: the cities with the most clients keep their own level in the baseline; others: "other"
TOP_CITIES = 20
SHAP_LABEL = "SHAP value (log-odds of buying in the holdout period)"


def client_table(cfg: Config, con: Any, calibration: tuple[int, int],
                 holdout: tuple[int, int]) -> Any:
    """One row per client with a calibration purchase, as an Ibis expression:
    :func:`rfm_table`'s columns joined with ``city``, ``gender`` (known, else the gender
    step's label, else null), ``age`` and ``cluster`` (without the segments step: no
    column). Nothing of it is in memory; :func:`label` finishes a part that is."""
    purchases = open_table(con, purchases_path(cfg), RFM_COLUMNS, "purchases")
    t = rfm_table(purchases, calibration, holdout)
    clients = open_table(con, step_dir(cfg, "clean") / "clients.parquet", CLIENT_COLUMNS,
                         "clients")
    c = clients.select(id=clients.id.cast("int64"), city=clients.city.cast("int64"),
                       gender=clients.gender.cast("int64"), age=clients.age.cast("float64"))
    c = with_gender_labels(cfg, con, c)
    k = with_clusters(cfg, con, c)
    c = c if k is None else k
    return t.left_join(c, "id").drop("id_right")


@dataclass(frozen=True)
class CityGroups:
    """The city labels of a client table: the cities that keep a level of their own in
    the baseline (``top``, the :data:`TOP_CITIES` with the most clients) and in the
    pooled BG/NBD (``pool``, as strings); every other city is ``other``."""

    top: frozenset[int]
    pool: frozenset[str]


def city_groups(table: Any, pool_cities: int = 8, pool_groups: list[str] | None = None
                ) -> CityGroups:
    """:class:`CityGroups` of ``table`` (:func:`client_table`), from its clients per
    city counted in the engine (most first; a tie goes to the lower city number); ``pool``
    is the ``pool_cities`` largest, or the cities in ``pool_groups`` (a fitted model's
    groups)."""
    known = table.filter(table.city.notnull())
    counts = known.group_by("city").aggregate(n=known.count()).to_pandas()
    cities = counts.sort_values(["n", "city"], ascending=[False, True])["city"].astype(int)
    pool = ([str(c) for c in cities.iloc[:pool_cities]] if pool_groups is None
            else [g for g in pool_groups if g != "other"])
    return CityGroups(frozenset(cities.iloc[:TOP_CITIES].tolist()), frozenset(pool))


def label(df: pd.DataFrame, groups: CityGroups) -> pd.DataFrame:
    """Rows of :func:`client_table` (in memory) with the models' labels: ``gender`` as
    ``"0"``, ``"1"`` or ``"unknown"``; ``cluster`` as a string (``"no history"``, ``"not
    assigned"``; ``"all"`` without the segments step); ``city`` (``"other"`` outside
    ``groups.top``) and ``pool_group``; ``sale_share``; ``recency_days``, ``T_days`` and
    ``repeat_days``, the calendar values that :meth:`models.btyd.ActivityClock.transform`
    leaves alone."""
    df = df.copy()
    if "gender" in df:
        df["gender"] = df["gender"].map({0: "0", 1: "1"}).fillna("unknown")
    df["cluster"] = (df["cluster"].astype("Int64").astype(str).replace(
        {"<NA>": "not assigned", "-1": "no history"}) if "cluster" in df else "all")
    city = df["city"].astype("Int64").astype(str)
    df["city"] = np.where(df["city"].isin(groups.top), city, "other")
    df["pool_group"] = np.where(city.isin(groups.pool), city, "other")
    if "items" in df:
        df["sale_share"] = df["sale_items"] / df["items"].clip(lower=1)
    if "recency" in df:
        df["recency_days"], df["T_days"] = df["recency"], df["T"]
    df["repeat_days"] = df["frequency"]
    return df


def cell_counts(table: Any, groups: CityGroups, clock: btyd.ActivityClock,
                window_birth: bool) -> pd.DataFrame:
    """The clients of ``table`` counted in the engine by city and the days their
    purchase-process cell is made of (frequency, first and last purchase day), labelled and
    put on ``clock``: :func:`models.btyd.rfm_cells` input with ``n``, the same cells as
    from one row per client."""
    keys = ["city", "frequency", "first_day", "last_day"]
    c = table.group_by(keys).aggregate(n=table.count()).order_by(keys).to_pandas()
    return clock.transform(label(c, groups), window_birth)


def rows(table: Any, keep: Any, groups: CityGroups) -> pd.DataFrame:
    """The clients of ``table`` where ``keep`` (an Ibis boolean), in id order, labelled."""
    return label(table.filter(keep).order_by("id").to_pandas(), groups)


def _share(n: int, size: int) -> float:
    """Share of ``n`` clients a hash sample of about ``size`` of them keeps (at most 1)."""
    return 1.0 if n <= size else size / n


def hash_sample(ids: Any, n: int, size: int, seed: int, after: float = 0.0,
                width: float = 1.0) -> Any:
    """About ``size`` of the ``n`` clients whose id hash (:func:`held_out`'s, ``seed``)
    lies in the part ``[after, after + width)`` of the hash range (the held-out part:
    ``after`` 0, ``width`` the held-out share; the training part: the rest), all of them
    when ``n <= size``: the first ``size / n`` of that part, so the same clients in every
    period and on every engine. An Ibis boolean (or NumPy array) like ``ids``."""
    keep = held_out(ids, after + width * _share(n, size), seed)
    return keep & ~held_out(ids, after, seed) if after else keep


def buyers_per_day(con: Any, cfg: Config, last_day: int, training_only: bool = False
                   ) -> np.ndarray:
    """Clients buying on each of days ``0..last_day`` (0 on a day without any), from the
    engine; ``training_only``: the clients outside the held-out part only."""
    purchases = open_table(con, purchases_path(cfg), RFM_COLUMNS, "purchases")
    if training_only:
        npc = cfg.next_purchase
        purchases = purchases.filter(~held_out(purchases.id, npc.holdout_share, cfg.seed))
    d = daily_buyers(purchases, last_day).to_pandas()
    buyers = np.zeros(last_day + 1)
    buyers[d["dt"].astype(int).to_numpy()] = d["buyers"].to_numpy(float)
    return buyers


def activity_clock(con: Any, cfg: Config, last_day: int) -> btyd.ActivityClock:
    """The :class:`models.btyd.ActivityClock` of days ``0..last_day`` (clients buying per
    day, from the engine)."""
    return btyd.ActivityClock.from_buyers(buyers_per_day(con, cfg, last_day),
                                          cfg.next_purchase.forecast_days)


def holdout_activity(con: Any, cfg: Config) -> float:
    """The operational length of the holdout days (days ``calibration_end + 1 ..
    last_day``) as the training clients bought in them: their clients buying per day,
    relative to their mean over the calibration days, summed over the holdout days (the
    units of :func:`activity_clock`). This is the store-level information the same-period
    boosting baseline learns from the training clients' holdout labels; BG/NBD predicting
    with it instead of the forecast of :meth:`models.btyd.ActivityClock.horizon` separates
    its error in the store's activity from its error about clients. The held-out clients'
    own purchases are never read."""
    npc = cfg.next_purchase
    buyers = buyers_per_day(con, cfg, npc.last_day, training_only=True)
    calibration = buyers[:npc.calibration_end + 1].mean()
    if calibration <= 0:
        raise ValueError("no training client bought in the calibration days")
    return float(buyers[npc.calibration_end + 1:].sum() / calibration)


def _features(df: pd.DataFrame) -> pd.DataFrame:
    """The baseline's inputs; ``frequency`` is the calendar count of repeat purchase days
    (``repeat_days``), whether or not the rows were put on the activity clock (which
    counts every purchase day): the previous period's rows, which are not, and the
    held-out rows they are applied to, which are, read the same quantity."""
    X = pd.concat([df[CATEGORICAL].astype(str), df[NUMERIC].astype(float)], axis=1)
    X["frequency"] = df["repeat_days"].astype(float)
    return X


def _sampler(cfg: Config) -> SamplerSettings:
    return SamplerSettings.from_any(cfg.sampler_for("next_purchase"))


def _fit_bgnbd(cfg: Config, counts: pd.DataFrame, pooled: bool, groups: list[str],
               reuse: btyd.BetaGeoCells | None = None) -> btyd.BetaGeoCells:
    """BG/NBD on the cells of ``counts`` (:func:`cell_counts`); one compiled model serves
    every fit with the same ``groups`` (``reuse``: one for all is the pooled model with the
    groups' spread 0)."""
    cells = btyd.rfm_cells(counts, "pool_group" if pooled else None)
    return btyd.BetaGeoCells(pooled=pooled, sampler=_sampler(cfg), groups=groups,
                             truncated=cfg.next_purchase.window_birth
                             ).fit(cells, seed=cfg.seed, reuse=reuse)


def _pool(model: btyd.BetaGeoCells) -> str | None:
    """The clients' column of a fit's groups."""
    return "pool_group" if model.pooled else None


def _boosting(cfg: Config, train: pd.DataFrame, hold: pd.DataFrame,
              params: dict[str, Any] | None = None) -> tuple[Any, np.ndarray, int]:
    """Boosting on (a sample of) ``train`` (label: a purchase day in its holdout period),
    tuned unless ``params`` are given; its predictions for ``hold`` and the number of
    clients it learned from."""
    tr = NP.subsample(train, cfg.next_purchase.classifier_clients, cfg.seed)
    clf = NP.fit_classifier(_features(tr), (tr["holdout_days"] > 0).to_numpy(int), CATEGORICAL,
                            random_state=cfg.seed % (2**31), params=params)
    return clf, clf.predict_proba(_features(hold))[:, 1], int(len(tr))


def _baseline(cfg: Config, train: pd.DataFrame, hold: pd.DataFrame,
              previous: pd.DataFrame | None) -> dict[str, Any]:
    """The tuned boosting baseline on the training clients, its held-out predictions and
    the SHAP values of ``shap_clients`` held-out clients; with ``previous`` (the training
    clients' frame one holdout length earlier) also the previous-period boosting's
    predictions for the same held-out clients (with the tuned model's settings).

    Runs beside the BG/NBD compilation on one core: scikit-learn's OpenMP threads limited
    to one (threadpoolctl), so neither oversubscribes the two cores."""
    from threadpoolctl import threadpool_limits

    npc = cfg.next_purchase
    with threadpool_limits(1):
        t0 = time.perf_counter()
        clf, p_clf, n_train = _boosting(cfg, train, hold)
        timings = {"classifier": time.perf_counter() - t0}
        out: dict[str, Any] = {"model": clf, "p": p_clf, "train_clients": n_train}
        if previous is not None:
            t0 = time.perf_counter()
            _, out["p_previous"], out["previous_train_clients"] = _boosting(
                cfg, previous, hold, params=getattr(clf, "best_params_", None))
            timings["classifier previous period"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = hold.sample(min(npc.shap_clients, len(hold)), random_state=cfg.seed % (2**31))
    X = _features(rows)
    out.update({"shap": explain.tree_shap(clf, X), "shap_X": X, "shap_groups": rows["cluster"]})
    timings["shap"] = time.perf_counter() - t0
    return {**out, "timings": timings}


#: days of history the previous-period baseline needs before its labels begin
MIN_PREVIOUS_DAYS = 7
#: the models compared on the held-out clients, as the metrics name them
SAME_PERIOD = "gradient boosting (tuned)"
PREVIOUS_PERIOD = "gradient boosting, trained on the previous period"
#: BG/NBD predicting with the holdout days' activity as the training clients showed it
KNOWN_ACTIVITY = "BG/NBD, holdout activity known"


def evaluate(cfg: Config, table: Any, clock: btyd.ActivityClock,
             previous: Any | None = None, known_horizon: float | None = None
             ) -> dict[str, Any]:
    """Fit on the training clients' calibration period, judge on the held-out clients.

    ``table``: :func:`client_table` of the calibration and holdout periods. The BG/NBD
    fits read the training clients' cells, counted in the engine (of a hash sample of
    about ``bgnbd_fit_clients`` when there are more); the boosting baseline
    learns from a hash sample of about ``classifier_clients`` of them and both are judged
    on the held-out clients (about ``holdout_clients`` of them, a hash sample when there
    are more), so memory holds those rows whatever the store's size. ``previous``: the
    :func:`client_table` of the period one holdout length earlier (features up to its end,
    labels in the days after); the boosting trained on its training clients is what could
    be deployed (the held-out clients' own period has no labels yet when a forecast is
    made). ``known_horizon`` (:func:`holdout_activity`): the chosen BG/NBD fit also
    predicts with the holdout days' activity as the training clients showed it, what the
    same-period baseline knows (:data:`KNOWN_ACTIVITY`).

    The boosting baseline runs in a second thread while the BG/NBD model compiles (numba's
    compilation holds one core for 10-15 s; boosting's tree building releases the GIL):
    the same numbers as one after the other, measured 3 s less at real scale."""
    npc = cfg.next_purchase
    days = float(npc.last_day - npc.calibration_end)
    horizon = clock.horizon(days)
    share, seed = npc.holdout_share, cfg.seed
    test = held_out(table.id, share, seed)
    n = table.aggregate(hold=test.cast("int64").sum(), all=table.count()).to_pandas().iloc[0]
    n_hold, n_train = int(n["hold"] or 0), int(n["all"] - (n["hold"] or 0))
    groups = city_groups(table, npc.pool_cities)
    def training(t: Any, n: int, size: int) -> Any:
        return hash_sample(t.id, n, size, seed, after=share, width=1 - share)

    hold = clock.transform(rows(table, hash_sample(
        table.id, n_hold, npc.holdout_clients, seed, width=share), groups), npc.window_birth)
    train = clock.transform(rows(table, training(table, n_train, npc.classifier_clients),
                                 groups), npc.window_birth)
    counts = cell_counts(table.filter(training(table, n_train, npc.bgnbd_fit_clients)),
                         groups, clock, npc.window_birth)
    y = (hold["holdout_days"] > 0).to_numpy(int)
    timings: dict[str, float] = {}
    fits: dict[str, btyd.BetaGeoCells] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    # each fit's distinct held-out cells and every held-out client's position among them
    cells_of: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}
    pool = sorted(set(counts["pool_group"]))
    variants = [False] + ([True] if npc.pool_by_city and len(pool) > 1 else [])
    prev = None
    if previous is not None:  # the same clients learn, the held-out ones never do
        n_prev = int(previous.filter(~held_out(previous.id, share, seed)).count().to_pandas())
        prev = rows(previous, training(previous, n_prev, npc.classifier_clients),
                    city_groups(previous, npc.pool_cities))
    with ThreadPoolExecutor(1) as executor:
        baseline = executor.submit(_baseline, cfg, train, hold, prev)
        for pooled in variants:
            name = "by city" if pooled else "one for all"
            t0 = time.perf_counter()
            fits[name] = _fit_bgnbd(cfg, counts, pooled, pool,
                                    reuse=next(iter(fits.values()), None))
            cells_of[name] = cells, pos = btyd.client_cells(hold, _pool(fits[name]))
            d = fits[name].predict_draws(cells, horizon, npc.predict_draws)
            preds[name] = {k: v.mean(1)[pos] for k, v in d.items()}
            timings[f"bgnbd {name}"] = time.perf_counter() - t0
        base = baseline.result()
    timings.update(base["timings"])
    pooling = pd.DataFrame([{"variant": n, **NP.response_metrics(y, p["p_purchase"]),
                             "converged": fits[n].convergence.ok} for n, p in preds.items()])
    ok = pooling[pooling["converged"]]
    chosen = (ok.sort_values("log_loss")["variant"].iloc[0] if len(ok)
              else pooling["variant"].iloc[0])
    p_bg = preds[chosen]["p_purchase"]
    preds_all = {f"BG/NBD ({chosen}, PyMC)": p_bg, SAME_PERIOD: base["p"]}
    if "p_previous" in base:
        preds_all[PREVIOUS_PERIOD] = base["p_previous"]
    known: dict[str, np.ndarray] | None = None
    if known_horizon is not None:
        cells, pos = cells_of[chosen]
        d = fits[chosen].predict_draws(cells, known_horizon, npc.predict_draws)
        known = {k: v.mean(1)[pos] for k, v in d.items()}
        preds_all[KNOWN_ACTIVITY] = known["p_purchase"]
    metrics, calib = NP.compare(y, preds_all)
    by_freq = btyd.purchases_by_frequency(hold["repeat_days"].to_numpy() + 1,
                                          preds[chosen]["expected_purchases"],
                                          hold["holdout_days"].to_numpy())
    if known is not None:
        by_freq["expected_activity_known"] = btyd.purchases_by_frequency(
            hold["repeat_days"].to_numpy() + 1, known["expected_purchases"],
            hold["holdout_days"].to_numpy())["expected"].to_numpy()
    return {"fits": fits, "chosen": chosen, "pooling": pooling, "metrics": metrics,
            "calibration": calib, "by_frequency": by_freq, "shap": base["shap"],
            "shap_X": base["shap_X"], "shap_groups": base["shap_groups"], "timings": timings,
            "cells": {n: f.cells_ for n, f in fits.items()},
            "clients": {"train": n_train, "holdout": n_hold, "holdout_judged": int(len(hold)),
                        "bgnbd_fit": int(counts["n"].sum()),
                        "classifier_train": base["train_clients"],
                        "previous_period_train": base.get("previous_train_clients")},
            "best_params": getattr(base["model"], "best_params_", None), "horizon_days": days,
            "horizon_operational": horizon, "horizon_known": known_horizon}


def deploy(cfg: Config, table: Any, path: Any, clock: btyd.ActivityClock,
           chosen: btyd.BetaGeoCells, out_dir: Any) -> dict[str, Any]:
    """Refit the ``chosen`` evaluation model's form (its groups; its compiled model) on
    every day of ``table`` (:func:`client_table`, opened from the Parquet ``path`` it was
    written to in id order) and predict each client's next period and value, written to
    ``out_dir / "clients.parquet"`` a batch of ``score_batch`` clients at a time (read
    from ``path``): the purchase process per cell (cells counted in the engine; the fit
    reads those of a hash sample of about ``bgnbd_fit_clients`` when there are more),
    spend and value per client; the cluster totals add up the batches' value draws."""
    npc = cfg.next_purchase
    groups = city_groups(table, pool_groups=chosen.groups_)
    counts = cell_counts(table, groups, clock, npc.window_birth)
    n_all = int(counts["n"].sum())
    fit_counts = (counts if n_all <= npc.bgnbd_fit_clients else cell_counts(
        table.filter(hash_sample(table.id, n_all, npc.bgnbd_fit_clients, cfg.seed)),
        groups, clock, npc.window_birth))
    model = _fit_bgnbd(cfg, fit_counts, chosen.pooled, chosen.groups_, reuse=chosen)
    # the spend model: repeat purchase days and the mean spend on them, of a hash sample
    rep = table.filter((table.frequency > 0) & (table.mean_spend > 0))
    n_rep = int(rep.count().to_pandas())
    sample = rep.filter(hash_sample(rep.id, n_rep, npc.spend_fit_clients, cfg.seed)
                        ).select("id", "frequency", "mean_spend").order_by("id").to_pandas()
    spend = btyd.SpendModel(sampler=replace(_sampler(cfg), draws=npc.spend_draws)).fit(
        sample, seed=cfg.seed)
    cells = btyd.rfm_cells(counts, _pool(model))[["group", *btyd.CELL_KEYS]]
    near = model.predict_draws(cells, clock.horizon(float(npc.last_day - npc.calibration_end)),
                               npc.predict_draws)
    far = model.predict_draws(cells, clock.horizon(npc.value_horizon_days), npc.predict_draws)
    near_mean = {k: near[k].mean(1) for k in ("p_alive", "p_purchase")}
    expected = far["expected_purchases"]
    p_low, p_high = btyd.hdi_rows(near["p_purchase"])
    sums: dict[str, dict[str, float]] = {}
    totals: dict[str, np.ndarray] = {}
    n_clients, value_total = 0, 0.0
    with atomic_path(out_dir / "clients.parquet") as tmp:
        writer = None
        try:
            for batch in parquet_batches(path, npc.score_batch):
                df = clock.transform(label(batch, groups), npc.window_birth)
                pos = btyd.cell_positions(df, cells, _pool(model))
                out = _client_values(cfg, df, pos, near_mean, (p_low, p_high), expected,
                                     spend, totals)
                for g, part in out.groupby("cluster"):
                    acc = sums.setdefault(str(g), {"clients": 0, "p_alive": 0.0,
                                                   "p_purchase": 0.0})
                    acc["clients"] += len(part)
                    acc["p_alive"] += float(part["p_alive"].sum())
                    acc["p_purchase"] += float(part["p_purchase"].sum())
                n_clients += len(out)
                value_total += float(out["value"].sum())
                arrow = pa.Table.from_pandas(out, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, arrow.schema)
                writer.write_table(arrow)
        finally:
            if writer is not None:
                writer.close()
    # Pearson's r over the repeat buyers (the population and sample forms are the same
    # ratio) and the mean spend of those with one: one pass over the clients
    stats = table.aggregate(
        r=table.frequency.cast("float64").corr(table.mean_spend, how="pop",
                                               where=table.frequency > 0),
        mean_spend=table.mean_spend.mean(where=table.mean_spend > 0)).to_pandas().iloc[0]
    return {"model": model, "spend": spend, "clients": n_clients, "value_total": value_total,
            "bgnbd_fit_clients": int(fit_counts["n"].sum()),
            "spend_fit_clients": int(len(sample)),
            "spend_frequency_correlation": float(stats["r"]),
            "mean_spend": float(stats["mean_spend"]),
            "value_by_cluster": _value_by_cluster(sums, totals)}


def _client_values(cfg: Config, df: pd.DataFrame, pos: np.ndarray,
                   near: dict[str, np.ndarray], p_hdi: tuple[np.ndarray, np.ndarray],
                   expected: np.ndarray, spend: btyd.SpendModel,
                   totals: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per client of ``df`` (at cell positions ``pos``): P(alive), P(buy) with its HDI
    (``near``, ``p_hdi``: per cell), expected purchase days over the value horizon
    (``expected``: cells x draws), expected spend and margin (value) with its 94% HDI,
    computed :data:`VALUE_CHUNK` clients at a time; each cluster's value draws are added
    to ``totals``."""
    out = pd.DataFrame({"id": df["id"].to_numpy(), "cluster": df["cluster"].to_numpy(),
                        "purchase_days": df["repeat_days"].to_numpy() + 1,
                        "p_alive": near["p_alive"][pos], "p_purchase": near["p_purchase"][pos],
                        "expected_purchases": expected.mean(1)[pos]})
    out["p_purchase_low"], out["p_purchase_high"] = p_hdi[0][pos], p_hdi[1][pos]
    n_draws = expected.shape[1]
    cols = {k: np.empty(len(df)) for k in ("expected_spend", "value", "value_low", "value_high")}
    clusters = df["cluster"].astype(str).to_numpy()
    for start in range(0, len(df), VALUE_CHUNK):
        sl = slice(start, start + VALUE_CHUNK)
        s_draws = spend.expected_spend_draws(df["repeat_days"].to_numpy()[sl],
                                             df["mean_spend"].to_numpy()[sl], n_draws)
        value = NP.customer_value(expected[pos[sl]], s_draws, cfg.business.margin)
        cols["expected_spend"][sl] = s_draws.mean(1)
        cols["value"][sl] = value.mean(1)
        cols["value_low"][sl], cols["value_high"][sl] = btyd.hdi_rows(value)
        for g in np.unique(clusters[sl]):
            part = value[clusters[sl] == g].sum(axis=0)
            totals[g] = totals[g] + part if g in totals else part
    for k, v in cols.items():
        out[k] = v
    return out


#: clients whose value draws are computed at once (x draws: 20,000 x 400 = 64 MB)
VALUE_CHUNK = 20_000


def _value_by_cluster(sums: dict[str, dict[str, float]], totals: dict[str, np.ndarray]
                      ) -> pd.DataFrame:
    """Per cluster: clients, mean P(alive), P(buy), and the cluster's total expected
    margin with its 94% HDI (the draws of its clients summed); ``sums``: per cluster the
    clients and their P(alive) and P(buy) added up."""
    records = []
    for g in sorted(sums):
        acc, total = sums[g], totals[g]
        lo, hi = hdi(total)
        n = acc["clients"]
        records.append({"cluster": g, "clients": int(n), "p_alive": acc["p_alive"] / n,
                        "p_purchase": acc["p_purchase"] / n,
                        "value_per_client": float(total.mean() / n),
                        "value_total": float(total.mean()), "value_total_low": lo,
                        "value_total_high": hi})
    return pd.DataFrame(records).sort_values("value_per_client", ascending=False)


def _figures(ev: dict[str, Any], dep: dict[str, Any], out: Any) -> None:
    curves = {m: g for m, g in ev["calibration"].groupby("model")}
    fig = reliability_figure(curves, "predicted P(buy in the holdout period)",
                             "observed share who bought",
                             "Calibration on held-out clients (deciles)")
    save_figure(fig, out / "calibration.png")
    bf = ev["by_frequency"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.arange(len(bf))
    ax.bar(x - 0.2, bf["actual"], 0.4, label="actual")
    ax.bar(x + 0.2, bf["expected"], 0.4, label="BG/NBD expected")
    ax.set_xticks(x, bf["frequency_group"])
    ax.set_xlabel("purchase days in the calibration period")
    ax.set_ylabel("purchase days in the holdout period\n(mean per client)")
    ax.legend(fontsize=8)
    save_figure(fig, out / "by_frequency.png")
    fig = explain.shap_summary_plot(ev["shap"], ev["shap_X"], xlabel=SHAP_LABEL)
    save_figure(fig, out / "shap_summary.png")
    v = dep["value_by_cluster"]
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.4 * len(v)))
    per = v["value_total"] / v["clients"]
    err = np.vstack([per - v["value_total_low"] / v["clients"],
                     v["value_total_high"] / v["clients"] - per])
    ax.barh(v["cluster"].astype(str), per, xerr=err, color="tab:green")
    ax.invert_yaxis()
    ax.set_xlabel("expected margin per client, next 90 days (money; 94% HDI)")
    ax.set_ylabel("cluster")
    save_figure(fig, out / "value_by_cluster.png")


def run(cfg: Config) -> dict[str, Any]:
    npc = cfg.next_purchase
    if not 0 <= npc.calibration_end < npc.last_day:
        raise ValueError(f"next_purchase: calibration_end ({npc.calibration_end}) must be "
                         f"before last_day ({npc.last_day})")
    t_start = time.perf_counter()
    con = connect(cfg.engine, memory_limit=cfg.engine_memory)
    out = step_dir(cfg, "next_purchase")
    out.mkdir(parents=True, exist_ok=True)
    ranges = purchase_ranges(cfg, con)
    length = npc.last_day - npc.calibration_end
    prev_end = npc.calibration_end - length
    # each client table is one GROUP BY over the purchases, written once and read by the
    # several queries that follow (counts, cells, samples, batches)
    with ExitStack() as stack:
        def table(calibration: tuple[int, int], holdout: tuple[int, int], by_id: bool = False
                  ) -> tuple[Any, Any]:
            expr = client_table(cfg, con, calibration, holdout)
            return stack.enter_context(materialised(
                con, expr.order_by("id") if by_id else expr, out, ranges))

        cal, _ = table((0, npc.calibration_end), (npc.calibration_end + 1, npc.last_day))
        n = cal.aggregate(n=cal.count(), buyers=(cal.holdout_days > 0).cast("int64").sum()
                          ).to_pandas().iloc[0]
        n_clients, buyers = int(n["n"]), int(n["buyers"] or 0)
        if n_clients < 200 or buyers in (0, n_clients):
            raise StepSkipped(f"next purchase: {n_clients} clients with a calibration "
                              "purchase and a holdout period in which everyone or no one "
                              "bought: nothing to judge a model on")
        t0 = time.perf_counter()
        clock = (activity_clock(con, cfg, npc.calibration_end) if npc.activity_clock
                 else btyd.ActivityClock.calendar(npc.calibration_end + 1))
        previous = (table((0, prev_end), (prev_end + 1, npc.calibration_end))[0]
                    if npc.previous_period_baseline and prev_end >= MIN_PREVIOUS_DAYS - 1
                    else None)
        ev = evaluate(cfg, cal, clock, previous,
                      holdout_activity(con, cfg) if npc.activity_clock else None)
        base_rate = (None if previous is None else float(
            (previous.holdout_days > 0).cast("float64").mean().to_pandas()))
        t_eval = time.perf_counter() - t0
        chosen = ev["fits"][ev["chosen"]]
        # in id order: the deploy streams every client from its file, batch by batch
        full = table((0, npc.last_day), (npc.last_day + 1, npc.last_day + 1), by_id=True)
        full_clock = (activity_clock(con, cfg, npc.last_day) if npc.activity_clock
                      else btyd.ActivityClock.calendar(npc.last_day + 1))
        t0 = time.perf_counter()
        dep = deploy(cfg, *full, full_clock, chosen, out)
        t_deploy = time.perf_counter() - t0
    _figures(ev, dep, out)
    write_parquet(ev["metrics"], out / "metrics.parquet")
    write_parquet(ev["calibration"], out / "calibration.parquet")
    write_parquet(ev["by_frequency"], out / "by_frequency.parquet")
    write_parquet(ev["pooling"], out / "pooling.parquet")
    write_parquet(dep["model"].group_table(), out / "groups.parquet")
    write_parquet(dep["value_by_cluster"], out / "value_by_cluster.parquet")
    write_parquet(explain.shap_importance(ev["shap"]), out / "shap_importance.parquet")
    write_parquet(explain.shap_by_group(ev["shap"], ev["shap_groups"]),
                  out / "shap_by_cluster.parquet")
    fits = {f"bgnbd_{k.replace(' ', '_')}": v for k, v in ev["fits"].items()}
    fits.update({"bgnbd_deployed": dep["model"], "gamma_gamma": dep["spend"]})
    convergence = {k: {**v.convergence.as_dict(), "resampled_with": v.resampled_with}
                   for k, v in fits.items()}
    fit_timings = {k: v.timings_ for k, v in fits.items()}
    failed = [k for k, v in convergence.items() if not v["ok"]]
    m = ev["metrics"].set_index("model")
    bg, clf = m.iloc[0], m.iloc[1]
    bg_model = btyd.BetaGeoCells()
    summary = {
        "calibration_days": [0, npc.calibration_end],
        "holdout_days": [npc.calibration_end + 1, npc.last_day],
        "horizon_days": ev["horizon_days"], "forecast_days": npc.forecast_days,
        "value_horizon_days": npc.value_horizon_days,
        "margin": cfg.business.margin, "clients": ev["clients"],
        "clients_deployed": dep["clients"],
        "bgnbd_fit_clients_deployed": dep["bgnbd_fit_clients"],
        "cells": ev["cells"], "activity_clock": bool(npc.activity_clock),
        "activity": {"calibration_weights": clock.weights.round(4).tolist(),
                     "forecast_level": float(clock.weights[-clock.forecast_days:].mean()),
                     "deployed_forecast_level":
                         float(full_clock.weights[-full_clock.forecast_days:].mean()),
                     # the holdout days' mean activity as the training clients showed it
                     "holdout_level_training": (None if ev["horizon_known"] is None else
                                                ev["horizon_known"] / ev["horizon_days"])},
        "horizon_operational": ev["horizon_operational"],
        "previous_period": (None if previous is None else
                            {"calibration_days": [0, prev_end],
                             "label_days": [prev_end + 1, npc.calibration_end],
                             "base_rate": base_rate}),
        "chosen": ev["chosen"], "pooling": ev["pooling"].to_dict("records"),
        "metrics": ev["metrics"].to_dict("records"),
        "auc_gap": float(bg["roc_auc"] - clf["roc_auc"]),
        "classifier_params": ev["best_params"],
        "by_frequency": ev["by_frequency"].to_dict("records"),
        "spend_summary": dep["spend"].summary().reset_index().to_dict("records"),
        "spend_fit_clients": dep["spend_fit_clients"],
        "spend_frequency_correlation": dep["spend_frequency_correlation"],
        "window_birth": bool(npc.window_birth),
        "priors": {k: list(v) for k, v in btyd.DEFAULT_PRIORS.items()},
        "spend_priors": {k: list(v) for k, v in btyd.SPEND_PRIORS.items()},
        "prior_predictive": bg_model.prior_predictive(T=npc.calibration_end + 1,
                                                      seed=cfg.seed % (2**31)),
        "spend_prior_predictive": btyd.SpendModel().prior_predictive(
            mean_spend=dep["mean_spend"],
            seed=cfg.seed % (2**31)),
        "convergence": convergence, "failed_fits": failed,
        "value_total": dep["value_total"],
        "hdi_prob": HDI_PROB,
        "fit_timings": fit_timings,
        "timings": {**{k: round(v, 1) for k, v in ev["timings"].items()},
                    "evaluate": round(t_eval, 1), "deploy": round(t_deploy, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
    }
    write_json(summary, out / "summary.json")
    verdict = "FAILED CONVERGENCE: " + ", ".join(failed) if failed else "converged"
    prev = (f"; trained on the previous period {m.loc[PREVIOUS_PERIOD, 'roc_auc']:.3f} (ECE "
            f"{m.loc[PREVIOUS_PERIOD, 'ece']:.3f})" if PREVIOUS_PERIOD in m.index else "")
    return {"message": f"held-out ROC-AUC BG/NBD {bg['roc_auc']:.3f} vs boosting "
                       f"{clf['roc_auc']:.3f} (ECE {bg['ece']:.3f} vs {clf['ece']:.3f}){prev}; "
                       + verdict}


if __name__ == "__main__":
    from analysis.cli import main

    sys.exit(main(["run", "next_purchase", *sys.argv[1:]]))
