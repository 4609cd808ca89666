"""Step ``gender``: restore the lost clients' gender.

Fits :class:`models.gender.GenderImputer` on clients with known gender, evaluates it
with stratified 5-fold CV against two baselines, picks a confidence threshold from the
out-of-fold predictions, and writes to ``results_dir/gender/``:

* ``clients.parquet``: every client with ``gender_prob`` (P(gender = 1); 0/1 for known),
  ``gender_label`` (known gender, or the imputed label when confident, else missing) and
  ``gender_source`` (``known`` / ``imputed`` / ``uncertain`` / ``not restored``);
* ``metrics.parquet``, ``reliability.parquet``, ``calibration.png``, ``summary.json``;
* ``model.joblib`` with ``model.json`` (library versions, feature schema, SHA-256): a
  model saved under another schema or library version is refused with a clear message.

Degenerate input:

* a gender with fewer known clients than the folds need (:func:`models.gender.min_members`,
  5 for 5 folds) stops the step before any fitting with a :class:`DataError` on the
  known-gender table's ``gender`` column;
* a chosen model that is not better than the base rate (rule and sources in
  :mod:`models.cv_checks`: the 95% interval of the out-of-fold ROC-AUC above 0.5 and a log
  loss below the prior-only ``DummyClassifier``'s) assigns nothing: the lost clients keep a
  missing ``gender_prob`` and ``gender_label`` (``gender_source`` = ``not restored``), no
  model is saved, and the CLI message and ``summary.json`` (``better_than_base_rate``,
  ``labels_withheld``) say why.

Downstream use (stated in the report): segmentation uses ``gender_prob``; campaign 1's
balance check uses known gender only; no step forces an uncertain label.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import model_store as store
from analysis.config import Config, load_config
from analysis.errors import DataError
from analysis.io import read_json, save_figure, write_json, write_parquet
from analysis.pipeline import step_dir
from analysis.steps.clean import purchase_ranges
from analysis.steps.figures import reliability_figure
from analysis.store.aggregates import (
    GENDER_COLUMNS,
    finish_gender_features,
    gender_feature_table,
    held_out,
)
from analysis.store.engine import connect
from analysis.store.tables import engine_batches, materialised, open_table
from analysis.store.tables import write_parquet as write_engine_parquet
from models.cv_checks import too_few_members
from models.gender import (
    GenderImputer,
    confidence_threshold,
    evaluate,
    min_members,
)

TARGET_ACCURACY = 0.95
FOLDS = 5


#: the cleaned clients' columns the features read
CLIENT_COLUMNS = {"id": "integer", "age": "integer", "education": "string", "city": "integer",
                  "country": "integer", "personal_coef": "number"}


def feature_table(cfg: Config, con: Any) -> Any:
    """Every client's features as an Ibis expression (the engine's rows, not Python's):
    demographics, ``personal_coef``, ``gender`` (missing for the lost) and, when the store
    has purchases, the purchase aggregates of
    :func:`analysis.store.aggregates.gender_feature_table`; finish a batch of its rows
    with :func:`to_features`."""
    clean = step_dir(cfg, "clean")
    c = open_table(con, clean / "clients.parquet", {**CLIENT_COLUMNS, "gender": "integer"},
                   "clients")
    X = c.select("id", "gender", *[k for k in CLIENT_COLUMNS if k != "id"])
    path = clean / "purchases.parquet"
    if path.exists():
        purchases = open_table(con, path, GENDER_COLUMNS, "purchases")
        cpath = clean / "colours.parquet"
        colours = (open_table(con, cpath, {"id": "integer", "colour": "string"}, "colours")
                   if cpath.exists() else None)
        X = X.left_join(gender_feature_table(purchases, colours), "id").drop("id_right")
    return X


def to_features(rows: pd.DataFrame, keep_coef: bool = True) -> pd.DataFrame:
    """A batch of :func:`feature_table`'s rows as the imputer's input: index ``id``,
    demographics, ``personal_coef`` (left out when ``keep_coef`` is false: the store has
    none), purchase features (``n_items`` 0 for clients without purchases)."""
    X = rows.drop(columns="gender").set_index("id")
    X.index = X.index.astype("Int64")
    if "spend" in X:
        X = finish_gender_features(X)
        X["n_items"] = X["n_items"].fillna(0)
    if not keep_coef:
        X = X.drop(columns="personal_coef")
    X = X.astype({"city": "Int64", "country": "Int64"})
    return X.astype({c: "float64" for c in X.columns if c not in ("education", "city",
                                                                   "country")})


def fit_sample(cfg: Config, X: Any) -> tuple[Any, dict[str, Any]]:
    """The known-gender clients the imputer is evaluated and fitted on: every one while
    there are at most ``cfg.gender.fit_sample``, else a hash sample of ids
    (:func:`analysis.store.aggregates.held_out`, the same share of each gender)."""
    known = X.filter(X.gender.notnull())
    n_known = int(known.count().to_pyarrow().as_py())
    share = min(1.0, cfg.gender.fit_sample / max(n_known, 1))
    if share < 1.0:
        known = known.filter(held_out(known.id, share, cfg.seed))
    return known, {"known_clients": n_known, "share": share,
                   "rule": "every known client" if share >= 1.0 else
                   "hash sample of client ids (same share of each gender)"}


def save_model(model: GenderImputer, folder: Path) -> None:
    store.save_model(model, folder, list(model.feature_names_in_))


def load_model(folder: Path, features: list[str] | None = None) -> GenderImputer:
    """Load a saved imputer, refusing a file that does not match its manifest."""
    return store.load_model(folder, features, step="gender")


def client_genders(con: Any, clients: Path, lost_ids: np.ndarray,
                   p_lost: np.ndarray | None, threshold: float, lost_source: str) -> Any:
    """Every client's gender as an Ibis expression: ``id``, ``gender_prob`` (the known
    gender, else the imputer's P(gender = 1); null when nothing was restored),
    ``gender_label`` (0/1 where known or confident: max(p, 1 - p) >= ``threshold``, else
    null) and ``gender_source`` (``known``, ``imputed``, else ``lost_source``).

    ``lost_ids`` (n_lost,) and ``p_lost`` (n_lost,; ``None``: no model) are the scored
    lost clients; the clients' table is read and joined in the engine.
    """
    import ibis

    c = open_table(con, clients, {"id": "integer", "gender": "integer"}, "clients")
    t = c.select(id=c.id.cast("int64"), gender=c.gender.cast("int64"))
    if p_lost is not None and len(lost_ids):
        scores = ibis.memtable(pd.DataFrame({"id": np.asarray(lost_ids, "int64"),
                                             "p_lost": np.asarray(p_lost, "float64")}))
        t = t.left_join(scores, "id").drop("id_right")
        p = t.p_lost
    else:
        p = ibis.null("float64")
    known = t.gender.notnull()
    prob = known.ifelse(t.gender.cast("float64"), p)
    confident = prob.notnull() & (ibis.greatest(prob, 1.0 - prob) >= threshold)
    label = (known | confident).ifelse((prob >= 0.5).cast("int64"), ibis.null("int64"))
    source = ibis.cases((known, "known"), (confident, "imputed"), else_=lost_source)
    return t.select("id", gender_prob=prob, gender_label=label, gender_source=source)


def known_gender_source(cfg: Config) -> str:
    """Where the known genders were read from (``file:table``), for error messages."""
    q = step_dir(cfg, "clean") / "quality.json"
    sources = read_json(q).get("sources", {}) if q.exists() else {}
    return str(sources.get("personal_data", cfg.data_dir / "personal_data"))


def check_classes(cfg: Config, y: np.ndarray, folds: int = FOLDS) -> None:
    """Stop before any cross-validation when a gender has too few known clients.

    Parameters
    ----------
    cfg
        The run's configuration (names the source file in the message).
    y
        Known gender 0/1 of the clients with known gender, shape ``(n,)``.
    folds
        Stratified folds of the evaluation.

    Raises
    ------
    DataError
        On the known-gender table's ``gender`` column, saying which gender, how many
        clients it has, how many the folds need (:func:`models.gender.min_members`) and
        what the user can do.
    """
    need = min_members(folds)
    short = too_few_members(y, need)
    if not short:
        return
    cls, k = short[0]
    other = int((y == 1 - cls).sum())
    raise DataError(
        known_gender_source(cfg),
        f"gender {cls} has {k:,} clients with known gender (gender {1 - cls}: {other:,}); "
        f"the gender model's {folds}-fold cross-validation needs at least {need} of each "
        f"gender. Add clients of gender {cls} with known gender to the table; until then "
        "no gender is restored and later steps use known gender only",
        column="gender")


def run(cfg: Config) -> dict[str, Any]:
    con = connect(cfg.engine, memory_limit=cfg.engine_memory)
    out = step_dir(cfg, "gender")
    out.mkdir(parents=True, exist_ok=True)
    # the per-client features are computed once; the sample and the batches read them
    with materialised(con, feature_table(cfg, con), out, purchase_ranges(cfg, con)) as (
            X_all, _):
        return _run(cfg, con, X_all, out)


def _run(cfg: Config, con: Any, X_all: Any, out: Path) -> dict[str, Any]:
    keep_coef = bool(X_all.personal_coef.notnull().any().to_pyarrow().as_py())
    sample, sample_info = fit_sample(cfg, X_all)
    rows = sample.order_by("id").to_pandas()
    y = rows["gender"].astype(int).to_numpy()
    check_classes(cfg, y)
    X_known = to_features(rows, keep_coef)
    sample_info["size"] = len(X_known)
    del rows
    t0 = time.perf_counter()
    ev = evaluate(X_known, y, folds=FOLDS, random_state=cfg.seed)
    cv_seconds = time.perf_counter() - t0
    base = ev.base_rate()
    threshold = confidence_threshold(y, ev.oof[ev.chosen], TARGET_ACCURACY)
    model = None
    if base.better:
        model = GenderImputer(calibrate=ev.chosen.endswith("calibration"),
                              random_state=cfg.seed).fit(X_known, y)
    features = list(X_known.columns)
    del X_known
    # the lost clients, scored batch by batch as the engine streams them
    lost_ids, p_parts, batches = [], [], 0
    lost = X_all.filter(X_all.gender.isnull()).order_by("id")
    for batch in engine_batches(con, lost, cfg.gender.score_batch, out):
        X_lost = to_features(batch, keep_coef)
        lost_ids.append(X_lost.index.to_numpy(dtype="int64"))
        p_parts.append(model.predict_proba(X_lost)[:, 1] if model is not None
                       else np.full(len(X_lost), np.nan))
        batches += 1
    lost_ids_arr = np.concatenate(lost_ids) if lost_ids else np.empty(0, dtype="int64")
    p_lost = np.concatenate(p_parts) if p_parts else np.empty(0)
    # every client's gender, probability, label and source, computed in the engine (a
    # pandas table of 10,000,000 clients peaked at 4.1 GiB)
    lost_source = "uncertain" if base.better else "not restored"
    table = client_genders(con, step_dir(cfg, "clean") / "clients.parquet", lost_ids_arr,
                           p_lost if model is not None else None, threshold, lost_source)
    counts = table.group_by("gender_source").aggregate(n=table.count()).to_pandas()
    counts = dict(zip(counts["gender_source"], counts["n"].astype(int), strict=True))
    rel = ev.reliability()
    n_unc = counts.get("uncertain", 0)
    summary = {
        "chosen_model": ev.chosen, "features": features, "fit_sample": sample_info,
        "score_batches": batches,
        "cv_folds": FOLDS, "cv_seconds": round(cv_seconds, 1),
        "metrics": ev.table.to_dict("records"),
        "better_than_base_rate": base.better, "base_rate_check": base.as_dict(),
        "threshold": threshold, "target_accuracy": TARGET_ACCURACY,
        "lost_clients": int(len(p_lost)),
        "imputed_confident": counts.get("imputed", 0),
        "uncertain": n_unc,
        "not_restored": counts.get("not restored", 0),
        "mean_prob_lost": float(p_lost.mean()) if base.better and len(p_lost) else None,
        "downstream": {"segments": "uses gender_prob (a probability, not a label)",
                       "uplift": "balance check uses known gender only"},
    }
    if not base.better:
        summary["labels_withheld"] = (
            f"The gender model ({ev.chosen}) is {base.reason}, with gender 1 for "
            f"{base.base_rate:.1%} of the {len(y):,} clients with known gender. No gender "
            f"is restored: the {len(p_lost):,} lost clients keep a missing gender and "
            "later steps use known gender only.")
        summary["downstream"] = {"segments": "known gender only (nothing restored)",
                                 "uplift": "balance check uses known gender only"}
    else:
        _truth_check(cfg, lost_ids_arr, p_lost, summary)
    write_engine_parquet(con, table.order_by("id"), out / "clients.parquet")
    write_parquet(ev.table, out / "metrics.parquet")
    write_parquet(rel, out / "reliability.parquet")
    _plot(ev, out)
    if base.better:
        save_model(model, out)
    else:  # a model from an earlier run must not outlive the verdict
        for name in ("model.joblib", "model.json"):
            (out / name).unlink(missing_ok=True)
    write_json(summary, out / "summary.json")
    chosen = ev.table.set_index("model").loc[ev.chosen]
    if not base.better:
        return {"message": f"gender model {base.reason}; no gender restored for the "
                           f"{len(p_lost):,} lost clients (gender 1 is {base.base_rate:.1%} "
                           "of known)"}
    return {"message": f"CV ROC-AUC {chosen['roc_auc']:.3f}, ECE {chosen['ece']:.3f}; "
                       f"{n_unc} of {len(p_lost)} lost clients stay uncertain"}


def _truth_check(cfg: Config, lost_ids: np.ndarray, p_lost: np.ndarray,
                 summary: dict[str, Any]) -> None:
    """On demo data, how well the planted gender of lost clients was restored."""
    truth_file = cfg.data_dir / "truth_clients.parquet"
    if not truth_file.exists():
        return
    t = pd.read_parquet(truth_file, columns=["id", "gender", "lost"],
                        filters=[("lost", "==", True)])
    scored = pd.DataFrame({"id": lost_ids, "gender_prob": p_lost})
    lost = scored.merge(t.astype({"id": "int64"}).rename(columns={"gender": "true_gender"}),
                        on="id")
    if len(lost):
        from models.classification_metrics import binary_metrics

        summary["demo_truth_lost"] = binary_metrics(lost["true_gender"].to_numpy(),
                                                    lost["gender_prob"].to_numpy())


def _plot(ev: Any, out: Path) -> None:
    fig = reliability_figure(
        {name: ev.reliability(name) for name in ("logistic, demographics only", ev.chosen)},
        "predicted P(gender = 1), out of fold", "observed share with gender = 1",
        "Reliability of the restored gender", lim=1.0, figsize=(5, 4.5))
    save_figure(fig, out / "calibration.png")


if __name__ == "__main__":
    from analysis.pipeline import run as run_pipeline

    run_pipeline(load_config(Path("shopbayes.toml")), only="gender")
