"""Step ``propensity``: who in country 32, city 1188 to contact, about which category, how
many, and how sure we are.

Outcome: bought the category in campaign 1's window (days 5..16); inputs: city, cluster,
gender, contacted (campaign-1 treatment) and the client's behaviour before the window
(:func:`analysis.store.aggregates.propensity_rows`: exact cells for clients without
history, hash-sampled and case-control-sampled rows for the others). A share of clients
is held out; the hierarchical :class:`~models.propensity.PropensityModel` is fitted on
the rest and compared on the held-out clients with tuned gradient boosting (response:
ROC-AUC, log loss, ECE) and with S-, T- and X-learner uplift baselines (Qini coefficient,
AUUC, uplift at the top 10/20/30%, inverse-probability weighted because the store chose
whom to contact). The target city's clients are then scored with and without contact,
ranked by the expected incremental profit of contacting them about their best category,
and the budget curve says how many to contact.

Outputs in ``results_dir/propensity/``: ``scores.parquet`` (client x category),
``targets.csv`` (ranked list), ``budget_curve.parquet``, ``qini.parquet``,
``uplift_metrics.parquet``, ``top_categories_by_cluster.parquet``, ``metrics.parquet``,
``calibration.parquet``, ``category_effects.parquet``, ``summary.json`` and figures.

Run alone: ``python -m analysis.steps.propensity`` or ``shopbayes run propensity``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import ibis
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from analysis.background import background
from analysis.config import Config
from analysis.io import atomic_path, save_figure, write_json, write_parquet
from analysis.leftovers import tagged
from analysis.pipeline import StepSkipped, step_dir, succeeded
from analysis.steps.clean import purchase_ranges, purchases_path, read_campaign_ids
from analysis.steps.client_labels import with_clusters, with_gender_labels
from analysis.steps.figures import reliability_figure
from analysis.store.aggregates import (
    PROPENSITY_COLUMNS,
    category_table,
    cluster_label,
    held_out,
    id_table,
    propensity_rows,
    window_value,
)
from analysis.store.engine import connect
from analysis.store.tables import engine_batches, materialised, open_table
from models import propensity_eval as E
from models.classification_metrics import auc_bootstrap
from models.propensity import (
    BEHAVIOUR,
    ROW_KEYS,
    PropensityModel,
    client_features,
    standardise_categories,
)
from models.targeting import budget_curve, draw_quantiles, stop_point, uplift_evaluation
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
    t = with_gender_labels(cfg, con, t)
    t = t.mutate(gender=ibis.cases((t.gender == 0, "0"), (t.gender == 1, "1"),
                                   else_="unknown"))
    k = with_clusters(cfg, con, t)
    t = (k.mutate(cluster=cluster_label(k.cluster)) if k is not None
         else t.mutate(cluster=ibis.literal("all")))
    t = t.left_join(id_table(treated).mutate(contacted=ibis.literal(True)), "id").drop(
        "id_right")
    return t.mutate(contacted=t.contacted.fill_null(False),
                    split=held_out(t.id, pc.holdout_share, cfg.seed).ifelse("holdout",
                                                                             "train"))


def history_counts(con: Any, purchases: Any, frame: Any) -> pd.DataFrame:
    """Clients with a purchase before the window per (``split``, ``contacted``)."""
    ids = purchases.filter(purchases.dt < WINDOW[0]).select("id").distinct()
    t = frame.semi_join(ids, "id")
    return t.group_by(["split", "contacted"]).aggregate(n=t.count()).to_pandas()


def sampling_shares(counts: pd.DataFrame, caps: dict[tuple[str, bool], int]
                    ) -> dict[tuple[str, bool], float]:
    """Share of each stratum's clients with history kept: ``min(1, cap / clients)``."""
    out = {}
    for (split, contacted), cap in caps.items():
        n = counts.loc[(counts["split"] == split) & (counts["contacted"] == contacted), "n"]
        total = int(n.sum())
        out[(split, contacted)] = 1.0 if total <= cap else cap / total
    return out


def contact_propensity(train: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """P(contacted | client) for each of ``rows``: a logistic regression on the training
    clients' behaviour before the window (one row per client; clients without history
    as their cells' counts), the inverse-probability weights of the uplift evaluation.

    The adjustment assumes that, within the evaluated country, whom the store contacted
    depended on nothing but these inputs (no unmeasured confounding), as campaign 1's
    adjusted comparison does.
    """
    cols = ["has_history", "log_frequency", "recency", "log_price_paid", "sale_share"]

    def table(r: pd.DataFrame) -> pd.DataFrame:
        x = client_features(r)[cols[1:]]
        return pd.concat([r[["has_history"]].astype(float), x], axis=1)

    cells = train[(train["id"] < 0) & (train["category"] == train["category"].iloc[0])]
    clients = pd.concat([cells, train[train["id"] >= 0].drop_duplicates("id")])
    w = (clients["n"] * clients["weight"]).to_numpy(float)
    y = clients["contacted"].to_numpy(int)
    if y.min() == y.max():
        return np.full(len(rows), float(y[0]))
    lr = LogisticRegression(C=1.0, max_iter=1000)
    lr.fit(table(clients), y, sample_weight=w)
    return lr.predict_proba(table(rows))[:, 1]


def run(cfg: Config) -> dict[str, Any]:
    con = connect(cfg.engine, memory_limit=cfg.engine_memory)
    purchases = open_table(con, purchases_path(cfg), PROPENSITY_COLUMNS, "purchases")
    ids = read_campaign_ids(cfg)
    out = step_dir(cfg, "propensity")
    out.mkdir(parents=True, exist_ok=True)
    with materialised(con, client_table(cfg, con, ids["treated"]), out) as (frame, _):
        return _run(cfg, con, purchases, frame, ids, out)


def fit_baselines(train: pd.DataFrame, seed: int) -> tuple[Any, E.MetaLearners]:
    """The held-out comparison's scikit-learn models on the training rows: the tuned
    boosting response model (:func:`models.propensity_eval.fit_baseline`) and the T- and
    X-learners with its settings (:func:`models.propensity_eval.meta_learners`)."""
    base = E.fit_baseline(train, random_state=seed)
    learners = E.meta_learners(train, contact_propensity(train, train), base.best_params_,
                               seed)
    return base, learners


def _fit_and_compare(cfg: Config, con: Any, purchases: Any, frame: Any,
                     categories: list[str], cat_table: pd.DataFrame
                     ) -> tuple[PropensityModel, dict[str, Any]]:
    pc = cfg.propensity
    t0 = time.perf_counter()
    counts = history_counts(con, purchases, frame)
    shares = sampling_shares(counts, {("train", True): pc.fit_contacted,
                                      ("train", False): pc.fit_not_contacted,
                                      ("holdout", True): pc.holdout_clients,
                                      ("holdout", False): pc.holdout_clients})
    rows = propensity_rows(purchases, frame, WINDOW, categories, shares, pc.negative_rate,
                           cfg.seed, purchase_ranges(cfg, con))
    rows_seconds = time.perf_counter() - t0
    train = rows[rows["split"] == "train"].drop(columns="split").reset_index(drop=True)
    holdout = rows[rows["split"] == "holdout"].drop(columns="split").reset_index(drop=True)
    model = PropensityModel(sampler_config=cfg.sampler_for("propensity"), seed=cfg.seed)
    # the baselines (scikit-learn, one core) are fitted in a second process while the
    # model compiles (one core) and samples: the fits of the sequential run
    t0 = time.perf_counter()
    with background(fit_baselines, train, cfg.seed) as task:
        model.fit(train, cat_table)
        fit_seconds = time.perf_counter() - t0
        base, learners = task.result()
    # what the baselines added to the step: the wait after the model's fit
    base_seconds = time.perf_counter() - t0 - fit_seconds
    t0 = time.perf_counter()
    preds = {"hierarchical Bayesian (PyMC)": model.predict_mean(holdout),
             "gradient boosting (scikit-learn, tuned)": E.predict_baseline(base, holdout)}
    metrics, calib = [], []
    for name, p in preds.items():
        tab = E.calibration_table(holdout, p)
        metrics.append({"model": name, **E.holdout_metrics(holdout, p),
                        "ece": E.table_calibration_error(tab)})
        calib.append(tab.assign(model=name))
    # the AUCs with paired Bayesian-bootstrap intervals (clients resampled, rows of a
    # client together), on every held-out row and on the contacted ones: P(buy | contacted)
    pos, y, w = E.weighted_rows(holdout)
    ids = holdout["id"].to_numpy()[pos]
    unit = np.where(ids >= 0, ids, -1)
    contacted = holdout["contacted"].to_numpy(bool)[pos]
    auc: dict[str, Any] = {}
    for part, keep in (("all", np.ones(len(pos), bool)), ("contacted", contacted)):
        if 0 < (w * y)[keep].sum() < w[keep].sum():
            auc[part] = auc_bootstrap(y[keep], w[keep],
                                      {n: np.asarray(p)[pos][keep] for n, p in preds.items()},
                                      unit=unit[keep], draws=pc.bootstrap_draws,
                                      seed=cfg.seed, prob=HDI_PROB)
    # uplift: held-out clients of the target country with history, where contact was
    # possible (estimated P(contacted) within the overlap bounds), weighted by 1 / P(arm)
    e = contact_propensity(train[train["country"] == pc.target_country], holdout)
    in_country = (holdout["country"] == pc.target_country).to_numpy()
    overlap = in_country & (e >= pc.overlap) & (e <= 1 - pc.overlap)
    ev = holdout[overlap].reset_index(drop=True)
    e_ev = e[overlap]
    uplift: dict[str, Any] = {"rows": int(overlap.sum()), "country": pc.target_country,
                              "overlap": pc.overlap,
                              "clients_in_country": int(ev["id"][ev["id"] >= 0].nunique()),
                              "contacted_rows": int(ev["contacted"].sum()),
                              "excluded_rows_in_country": int((in_country & ~overlap).sum()),
                              "models": {}}
    curves = []
    if len(ev) and ev["contacted"].any() and (~ev["contacted"]).any():
        scores = {"hierarchical Bayesian (PyMC)": model.predict_uplift_mean(ev),
                  "S-learner (tuned boosting)": E.predict_baseline(base, ev, True)
                  - E.predict_baseline(base, ev, False),
                  "T-learner (boosting)": learners.predict_t(ev),
                  "X-learner (boosting)": learners.predict_x(ev, e_ev)}
        pos, y, w = E.weighted_rows(ev)
        t = ev["contacted"].to_numpy(float)[pos]
        ipw = np.where(t == 1, 1 / e_ev[pos], 1 / (1 - e_ev[pos]))
        unit = np.where(ev["id"].to_numpy()[pos] >= 0, ev["id"].to_numpy()[pos], -1)
        for name, sc in scores.items():
            res = uplift_evaluation(y, t, w * ipw, sc[pos], unit=unit,
                                    draws=pc.bootstrap_draws, seed=cfg.seed)
            curves.append(res.pop("curve").assign(model=name))
            uplift["models"][name] = res
    eval_seconds = time.perf_counter() - t0
    # only the held-out rows' count is kept (they are 755,000 at 10 million clients)
    info = {"train": train, "holdout_rows": len(holdout), "shares": shares,
            "counts": counts, "metrics": pd.DataFrame(metrics), "auc": auc,
            "calibration": pd.concat(calib, ignore_index=True), "uplift": uplift,
            "qini": pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
            "best_params": {k.replace("boost__", ""): v
                            for k, v in base.best_params_.items()},
            "timings": {"rows": rows_seconds, "fit": fit_seconds,
                        "baselines_wait": base_seconds, "evaluation": eval_seconds}}
    return model, info


def gain_draws(model: PropensityModel, rows: pd.DataFrame, value: np.ndarray,
               margin: float, depth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior draws (draws x rows) of P(buy | contacted), P(buy | not) and the profit
    gain of contact with the discount (money; treated buyers pay ``1 - depth`` of the list
    price): ``value * (p1 * (margin - depth) - p0 * margin)``, ``value`` being the window
    revenue of a buyer of the row's category."""
    eta, effect = model.linear_predictor(rows)
    p1, p0 = expit(eta + effect), expit(eta)
    return p1, p0, value * (p1 * (margin - depth) - p0 * margin)


#: the per-row summaries of :func:`_gains`, in the order of its columns
GAIN_COLUMNS = ["p_contacted", "p_contacted_low", "p_contacted_high", "p_not_contacted",
                "uplift", "p_uplift_positive", "expected_profit_gain_no_discount",
                "expected_profit_gain", "profit_gain_low", "profit_gain_high",
                "p_profit_positive"]


def _gains(model: PropensityModel, rows: pd.DataFrame, value: np.ndarray, margin: float,
           depth: float) -> np.ndarray:
    """Posterior summaries per row of :func:`gain_draws` and the uplift: an array of
    shape (rows, len(GAIN_COLUMNS)), 94% equal-tailed bounds."""
    q = [(1 - HDI_PROB) / 2, 1 - (1 - HDI_PROB) / 2]
    p1, p0, gain = gain_draws(model, rows, value, margin, depth)
    up = p1 - p0
    p1_low, p1_high = draw_quantiles(p1, q)
    gain_low, gain_high = draw_quantiles(gain, q)
    return np.column_stack([
        p1.mean(axis=0), p1_low, p1_high, p0.mean(axis=0), up.mean(axis=0),
        (up > 0).mean(axis=0), (value * margin * up).mean(axis=0), gain.mean(axis=0),
        gain_low, gain_high, (gain > 0).mean(axis=0)])


def distinct_inputs(rows: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The distinct rows of ``rows`` as the propensity model sees them (the columns of
    :data:`models.propensity.ROW_KEYS` and :data:`~models.propensity.BEHAVIOUR`) and,
    per row, the position of its distinct row: ``distinct.iloc[code]`` has ``rows``'
    inputs in ``rows``' order."""
    keys = [c for c in ROW_KEYS + BEHAVIOUR if c in rows]
    code = rows.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    first = np.unique(code, return_index=True)[1]
    return code, rows.iloc[first].reset_index(drop=True)


def input_key(rows: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each row's inputs as the model sees them (the keys of
    :data:`models.propensity.ROW_KEYS` and the behaviour features of
    :func:`models.propensity.client_features`): rows with equal keys get equal scores
    (int64; pandas' ``hash_pandas_object``, a collision about 1 in 2**64 per pair)."""
    seen = pd.concat([rows[[c for c in ROW_KEYS if c in rows]].reset_index(drop=True),
                      client_features(rows).reset_index(drop=True)], axis=1)
    return pd.util.hash_pandas_object(seen, index=False).to_numpy().view(np.int64)


#: the ranked list's columns (``targets.csv``)
TARGET_COLUMNS = ["rank", "id", "cluster", "category", "has_history", "p_contacted",
                  "p_contacted_low", "p_contacted_high", "p_not_contacted", "uplift",
                  "p_uplift_positive", "expected_profit_gain", "profit_gain_low",
                  "profit_gain_high", "p_profit_positive", "expected_profit_gain_no_discount"]


class SortedRuns:
    """Distinct values of a sorted sequence fed in pieces, and how many values occur
    once: the tie statistics of a ranked list read in batches."""

    def __init__(self) -> None:
        self.values = 0
        self.distinct = 0
        self.singles = 0
        self._last: float | None = None
        self._run = 0

    def add(self, x: np.ndarray) -> None:
        """Feed the next values (``x`` continues the order of the values fed before)."""
        if not len(x):
            return
        starts = np.r_[True, x[1:] != x[:-1]]
        if self._last is not None and x[0] == self._last:
            starts[0] = False  # continues the last run
        idx = np.flatnonzero(starts)
        if not len(idx):
            self._run += len(x)
        else:
            if self._last is not None:  # the run before ``x`` ends at idx[0]
                self.singles += int(self._run + idx[0] == 1)
            lengths = np.diff(np.r_[idx, len(x)])
            self.singles += int((lengths[:-1] == 1).sum())
            self._run = int(lengths[-1])
            self.distinct += len(idx)
        self.values += len(x)
        self._last = x[-1]

    def finish(self) -> dict[str, float]:
        """``distinct`` values and the ``share`` of values that occur once."""
        singles = self.singles + int(self._run == 1)
        return {"distinct": self.distinct,
                "share": singles / self.values if self.values else float("nan")}


def score_target(cfg: Config, con: Any, purchases: Any, target: Any, model: PropensityModel,
                 categories: list[str], value: pd.Series, out: Path
                 ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Score every client x category of the target city (in batches), write
    ``scores.parquet`` and the ranked list ``targets.csv`` (each client's best category,
    ranked by the expected profit gain of contact with the discount, then by id).

    Memory holds one batch whatever the number of clients: each batch's best rows go to
    a temporary Parquet file, which the engine ranks and streams back in order.

    Returns
    -------
    head : DataFrame
        The first ``budget_clients`` rows of the ranked list, with the model's inputs
        (for the budget curve's posterior draws).
    by_cluster : DataFrame
        Mean ``p_contacted``, ``uplift`` and ``expected_profit_gain`` per cluster x
        category.
    counts : dict
        ``rows_scored``, ``profitable_rows``, ``clients``, ``clients_with_history``, the
        tie statistics of the ranked scores (rounded to 6 decimals) and
        ``best_category_counts`` (the five most frequent best categories).
    """
    import tempfile

    pc, b = cfg.propensity, cfg.business
    before = purchases.filter(purchases.dt < WINDOW[0]).semi_join(target.select("id"), "id")
    sums, n_rows, profitable = [], 0, 0
    keys = ["id", "country", "city", "cluster", "gender", "contacted"]
    gain_cols = ["p_contacted", "uplift", "expected_profit_gain"]
    with materialised(con, before, out) as (before, _), \
            tempfile.TemporaryDirectory(prefix=tagged("best"), dir=out) as tmp_best, \
            atomic_path(out / "scores.parquet") as tmp:
        best_path = Path(tmp_best) / "best.parquet"
        writer = best_writer = None
        try:
            for batch in engine_batches(con, target.select(*keys).order_by("id"),
                                        pc.score_batch, out):
                batch = batch.assign(contacted=False, split="target")
                rows = propensity_rows(before, ibis.memtable(batch), WINDOW, categories,
                                       {}, 1.0, cfg.seed, aggregate=False)
                rows = rows.drop(columns=["split", "n", "k", "weight", "negative_rate"])
                # clients with the same inputs (most without history) share their scores:
                # each distinct row is scored once
                code, distinct = distinct_inputs(rows)
                parts = []
                for lo in range(0, len(distinct), model.ROW_BLOCK):
                    part = distinct.iloc[lo:lo + model.ROW_BLOCK]
                    v = part["category"].map(value).fillna(0.0).to_numpy()
                    parts.append(_gains(model, part, v, b.margin, b.discount_depth))
                del distinct
                gains = np.concatenate(parts)[code] if parts else np.zeros(
                    (0, len(GAIN_COLUMNS)))
                del parts
                table = pa.Table.from_pandas(rows, preserve_index=False)
                for j, col in enumerate(GAIN_COLUMNS):
                    table = table.append_column(col, pa.array(gains[:, j]))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                # each client's best category: the first of its highest expected gain
                # (positions in the batch: idxmax of a series indexed 0..n-1)
                gain = pd.Series(gains[:, GAIN_COLUMNS.index("expected_profit_gain")])
                at = gain.groupby(rows["id"].to_numpy(), sort=False).idxmax().to_numpy()
                best = table.take(pa.array(at))
                best = best.append_column("input_key", pa.array(input_key(rows.iloc[at])))
                del table
                if best_writer is None:
                    best_writer = pq.ParquetWriter(best_path, best.schema)
                best_writer.write_table(best)
                sums.append(rows[["cluster", "category"]].assign(
                    **{c: gains[:, GAIN_COLUMNS.index(c)] for c in gain_cols})
                    .groupby(["cluster", "category"]).agg(["sum", "count"]))
                n_rows += len(rows)
                profitable += int((gain > 0).sum())
                del rows, gains, best
        finally:
            for w in (writer, best_writer):
                if w is not None:
                    w.close()
        head, counts = _rank(con, best_path, pc.budget_clients, pc.score_batch, out)
    total = pd.concat(sums).groupby(level=[0, 1]).sum()
    by_cluster = pd.DataFrame({c: total[(c, "sum")] / total[(c, "count")]
                               for c in gain_cols}).reset_index()
    return head, by_cluster, {"rows_scored": n_rows, "profitable_rows": profitable,
                              **counts}


def _rank(con: Any, best_path: Path, head_rows: int, batch_rows: int, out: Path
          ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rank the best rows in ``best_path`` (expected profit gain, descending, then id) in
    the engine; write ``targets.csv`` batch by batch; return the first ``head_rows``
    ranked rows and the list's counts (see :func:`score_target`)."""
    t = con.read_parquet(str(best_path))
    # ties the inputs explain: clients whose best-row inputs no other client shares, and
    # clients whose score (as listed) equals that of a client with other inputs
    by_key = t.group_by("input_key").aggregate(n=t.count())
    own_inputs = int(by_key.filter(by_key.n == 1).count().to_pyarrow().as_py())
    scored = t.mutate(score=t.expected_profit_gain.round(6))
    by_score = scored.group_by("score").aggregate(n=scored.count(),
                                                  inputs=scored.input_key.nunique())
    tied_unlike = int(by_score.filter(by_score.inputs > 1).n.sum().to_pyarrow().as_py() or 0)
    ranked = t.mutate(rank=ibis.row_number().over(
        order_by=[ibis.desc(t.expected_profit_gain), t.id]) + 1).order_by("rank")
    heads: list[pd.DataFrame] = []
    taken = 0  # rows in heads
    categories: Counter[str] = Counter()
    runs, runs_history = SortedRuns(), SortedRuns()
    with atomic_path(out / "targets.csv") as tmp, open(tmp, "w", newline="") as f:
        for i, part in enumerate(engine_batches(con, ranked, batch_rows, out)):
            part["rank"] = part["rank"].astype("int64")
            part[TARGET_COLUMNS].round(6).to_csv(f, header=i == 0, index=False)
            if taken < head_rows:
                heads.append(part.iloc[:head_rows - taken])
                taken += len(heads[-1])
            score = part["expected_profit_gain"].round(6).to_numpy()
            runs.add(score)
            runs_history.add(score[part["has_history"].to_numpy(bool)])
            categories.update(part["category"].astype(str).tolist())
        if not heads:  # no client: the header alone
            pd.DataFrame(columns=TARGET_COLUMNS).to_csv(f, index=False)
    head = (pd.concat(heads, ignore_index=True) if heads
            else pd.DataFrame(columns=["rank", *t.columns]))
    top = sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    alone, alone_history = runs.finish(), runs_history.finish()
    return head, {"clients": runs.values, "clients_with_history": runs_history.values,
                  "distinct_scores": alone["distinct"], "distinct_score_share": alone["share"],
                  "distinct_score_share_with_history": alone_history["share"],
                  "own_inputs_share": own_inputs / runs.values if runs.values else float("nan"),
                  "tied_with_other_inputs": tied_unlike,
                  "best_category_counts": dict(top)}


def _run(cfg: Config, con: Any, purchases: Any, frame: Any, ids: dict[str, list[int]],
         out: Path) -> dict[str, Any]:
    pc, b = cfg.propensity, cfg.business
    target = frame.filter((frame.city == str(pc.target_city))
                          & (frame.country == pc.target_country))
    n_target = int(target.count().to_pandas())
    if not n_target:
        raise StepSkipped(f"no clients in country {pc.target_country}, city {pc.target_city}")
    cat_table = standardise_categories(category_table(purchases))
    categories = sorted(cat_table["category"].astype(str))
    model, info = _fit_and_compare(cfg, con, purchases, frame, categories, cat_table)
    conv = model.convergence_
    value = window_value(purchases, WINDOW, ids["treated"])
    t0 = time.perf_counter()
    # writes targets.csv (each client's value, P(alive) and 90-day margin, is joined by
    # the `targets` step, which waits for next_purchase; this step does not, so the two
    # fit side by side)
    head, by_cluster, counts = score_target(cfg, con, purchases, target, model, categories,
                                            value, out)
    score_seconds = time.perf_counter() - t0
    # the budget curve: posterior draws of the best category's gain of the first clients
    # (their rows, behaviour included, are the ranked list's)
    t0 = time.perf_counter()
    v = head["category"].map(value).fillna(0.0).to_numpy()

    def head_gains(idx: np.ndarray) -> np.ndarray:  # draws x clients, a block at a time
        return gain_draws(model, head.iloc[idx], v[idx], b.margin, b.discount_depth)[2]

    curve = budget_curve(head_gains, b.contact_cost, clients=len(head),
                         block=model.ROW_BLOCK)
    curve.insert(1, "id", head["id"].to_numpy()[curve["client"].to_numpy()])
    curve = curve.drop(columns="client")
    n_contact = stop_point(curve)
    budget_seconds = time.perf_counter() - t0
    effects = model.category_effects()
    write_parquet(curve, out / "budget_curve.parquet")
    top_by_cluster = (by_cluster.sort_values(["cluster", "p_contacted"],
                                             ascending=[True, False])
                      .groupby("cluster").head(pc.top_categories))
    write_parquet(top_by_cluster, out / "top_categories_by_cluster.parquet")
    metrics = info["metrics"]
    write_parquet(metrics, out / "metrics.parquet")
    write_parquet(info["calibration"], out / "calibration.parquet")
    write_parquet(effects, out / "category_effects.parquet")
    if len(info["qini"]):
        write_parquet(info["qini"], out / "qini.parquet")
    uplift_table = pd.DataFrame([{"model": m, **{f"{k}_{q}": v[q] for k, v in r.items()
                                                 if isinstance(v, dict)
                                                 for q in ("mean", "low", "high")}}
                                 for m, r in info["uplift"]["models"].items()])
    write_parquet(uplift_table, out / "uplift_metrics.parquet")
    _figures(model, info, curve, n_contact, out)
    train = info["train"]
    gain_at = curve.set_index("rank")
    summary: dict[str, Any] = {
        "target": {"country": pc.target_country, "city": pc.target_city,
                   "clients": n_target, "rows_scored": counts["rows_scored"],
                   "score_batch": pc.score_batch},
        "window": list(WINDOW), "categories": len(categories),
        "clusters_used": succeeded(cfg, "segments"), "gender_source": "gender step"
        if succeeded(cfg, "gender") else "known gender only",
        "data": {"train_rows": len(train), "train_cells": int((train["id"] < 0).sum()),
                 "train_clients_without_history": int(
                     train.loc[train["id"] < 0, "n"].sum() / max(len(categories), 1)),
                 "train_clients_with_history_sampled": int(
                     train.loc[train["id"] >= 0, "id"].nunique()),
                 "holdout_rows": info["holdout_rows"],
                 "shares": [{"split": k[0], "contacted": k[1], "share": v}
                            for k, v in info["shares"].items()],
                 "clients_with_history": info["counts"].to_dict("records"),
                 "negative_rate": pc.negative_rate},
        "holdout_share": pc.holdout_share,
        "metrics": metrics.to_dict("records"),
        "roc_auc_intervals": info["auc"],
        "truth": _truth(cfg),
        "uplift": info["uplift"],
        "baseline_params": info["best_params"],
        "timings_seconds": {**{k: round(v, 1) for k, v in info["timings"].items()},
                            "score_target_city": round(score_seconds, 2),
                            "budget_curve": round(budget_seconds, 2)},
        "parameters": model.summary().reset_index(names="parameter").to_dict("records"),
        "priors": {k: list(v) for k, v in model.model_config.items()},
        "prior_predictive": model.prior_predictive(),
        "posterior_predictive": model.posterior_predictive_check(),
        "convergence": conv.as_dict(),
        "resampled_with": model.resampled_with_,
        "contact_effect_positive_categories": int(
            (effects.get("uplift_points_p_positive", pd.Series(dtype=float)) > 0.9).sum()),
        # clients with the same model inputs share a score: how coarse the ranking is
        **{k: counts[k] for k in ("distinct_scores", "distinct_score_share",
                                  "distinct_score_share_with_history", "own_inputs_share",
                                  "tied_with_other_inputs",
                                  "clients_with_history", "best_category_counts")},
        "share_profitable_with_discount": (counts["profitable_rows"] / counts["rows_scored"]
                                           if counts["rows_scored"] else float("nan")),
        "budget": {"clients_in_curve": len(curve), "contact_cost": b.contact_cost,
                   "recommended_contacts": n_contact,
                   "expected_profit_at_recommended": _at(gain_at, n_contact),
                   "expected_profit_top_100": _at(gain_at, min(100, len(curve))),
                   "expected_profit_all": _at(gain_at, len(curve))},
    }
    write_json(summary, out / "summary.json")
    status = "converged" if conv.ok else "FAILED CONVERGENCE: " + "; ".join(conv.problems)
    bayes, boost = metrics.iloc[0], metrics.iloc[1]
    return {"message": f"held-out AUC {bayes['roc_auc']:.3f} (tuned boosting "
                       f"{boost['roc_auc']:.3f}); {n_target} clients of city "
                       f"{pc.target_city} scored, contact {n_contact}; {status}",
            "convergence_ok": conv.ok}


def _truth(cfg: Config) -> dict[str, float] | None:
    """The demo's planted ceiling (``truth.json``'s ``propensity``: ROC-AUC of the true
    probabilities, on every client and on the contacted ones), ``None`` for real data."""
    f = Path(cfg.data_dir) / "truth.json"
    if not f.exists():
        return None
    t = json.loads(f.read_text()).get("propensity") or {}
    keep = ("auc_ceiling", "auc_ceiling_contacted")
    return {k: float(t[k]) for k in keep if k in t} or None


def _at(curve: pd.DataFrame, n: int) -> dict[str, float] | None:
    if n <= 0:
        return None
    r = curve.loc[n]
    return {"clients": int(n), "mean": float(r["cumulative_mean"]),
            "low": float(r["cumulative_low"]), "high": float(r["cumulative_high"]),
            "p_positive": float(r["p_cumulative_positive"])}


def _figures(model: PropensityModel, info: dict[str, Any], curve: pd.DataFrame,
             n_contact: int, out: Path) -> None:
    if model.has_contact_:
        ax = model.plot_contact_effects()
        save_figure(ax.figure, out / "contact_effects.png")
    fig = reliability_figure(dict(tuple(info["calibration"].groupby("model"))),
                             "predicted P(buy the category in the window)",
                             "observed share that bought",
                             "Calibration on held-out clients (deciles)")
    save_figure(fig, out / "calibration.png")
    qini = info["qini"]
    if len(qini):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for name, c in qini.groupby("model", sort=False):
            line, = ax.plot(100 * c["share"], 1000 * c["qini"], label=name)
            if name.startswith("hierarchical"):
                ax.fill_between(100 * c["share"], 1000 * c["qini_low"], 1000 * c["qini_high"],
                                color=line.get_color(), alpha=0.2)
        c = qini[qini["model"] == qini["model"].iloc[0]]
        ax.plot(100 * c["share"], 1000 * c["random"], "k--", lw=0.8, label="random order")
        ax.set_xlabel("share of held-out client x category rows contacted, ranked by "
                      "predicted uplift (%)")
        ax.set_ylabel("extra buyers per 1,000 rows (Qini)")
        ax.set_title("Qini curves on held-out clients (IPW; band: 94% for the Bayesian model)")
        ax.legend(fontsize=8)
        save_figure(fig, out / "qini.png")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(curve["rank"], curve["cumulative_mean"], label="expected")
    ax.fill_between(curve["rank"], curve["cumulative_low"], curve["cumulative_high"],
                    alpha=0.25, label="94% interval")
    if n_contact:
        ax.axvline(n_contact, color="k", ls="--", lw=0.8,
                   label=f"stop: next contact's expected gain < its cost ({n_contact:,})")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("clients contacted (best first)")
    ax.set_ylabel("cumulative incremental profit (money)")
    ax.set_title("Budget curve: contacting the target city's clients")
    ax.legend(fontsize=8)
    save_figure(fig, out / "budget.png")
    plt.close("all")


if __name__ == "__main__":
    # the same as `shopbayes run propensity [--data DIR] [--results DIR] [--force]`
    from analysis.cli import main

    sys.exit(main(["run", "propensity", *sys.argv[1:]]))
