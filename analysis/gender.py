"""Step ``gender``: restore the lost clients' gender.

Fits :class:`models.gender.GenderImputer` on clients with known gender, evaluates it
with stratified 5-fold CV against two baselines, picks a confidence threshold from the
out-of-fold predictions, and writes to ``results_dir/gender/``:

* ``clients.parquet``: every client with ``gender_prob`` (P(gender = 1); 0/1 for known),
  ``gender_label`` (known gender, or the imputed label when confident, else missing) and
  ``gender_source`` (``known`` / ``imputed`` / ``uncertain``);
* ``metrics.parquet``, ``reliability.parquet``, ``calibration.png``, ``summary.json``;
* ``model.joblib`` with ``model.json`` (library versions, feature schema, SHA-256): a
  model saved under another schema or library version is refused with a clear message.

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
from analysis.clean import read_clients
from analysis.config import Config, load_config
from analysis.figures import reliability_figure
from analysis.io import save_figure, write_json, write_parquet
from analysis.pipeline import step_dir
from models.gender import GenderImputer, confidence_threshold, evaluate, purchase_features

TARGET_ACCURACY = 0.95


def features(cfg: Config, clients: pd.DataFrame) -> pd.DataFrame:
    """Demographics, personal_coef and (when purchases exist) purchase behaviour."""
    X = clients.set_index("id")[["age", "education", "city", "country", "personal_coef"]].copy()
    X["age"] = X["age"].astype(float)
    X["personal_coef"] = X["personal_coef"].astype(float)
    if X["personal_coef"].isna().all():
        X = X.drop(columns="personal_coef")
    path = step_dir(cfg, "clean") / "purchases.parquet"
    if path.exists():
        purchases = pd.read_parquet(path, columns=["id", "product_sex", "revenue", "base_sale",
                                                   "category"])
        cpath = step_dir(cfg, "clean") / "colours.parquet"
        colours = pd.read_parquet(cpath) if cpath.exists() else None
        X = X.join(purchase_features(purchases, colours))
        X["n_items"] = X["n_items"].fillna(0)
    return X.astype({c: "float64" for c in X.columns if c not in ("education", "city",
                                                                   "country")})


def save_model(model: GenderImputer, folder: Path) -> None:
    store.save_model(model, folder, list(model.feature_names_in_))


def load_model(folder: Path, features: list[str] | None = None) -> GenderImputer:
    """Load a saved imputer, refusing a file that does not match its manifest."""
    return store.load_model(folder, features, step="gender")


def run(cfg: Config) -> dict[str, Any]:
    clients = read_clients(cfg)
    X = features(cfg, clients)
    known = clients.set_index("id")["gender"].notna()
    y = clients.set_index("id").loc[known, "gender"].astype(int).to_numpy()
    X_known, X_lost = X[known.reindex(X.index).to_numpy()], X[~known.reindex(X.index).to_numpy()]
    t0 = time.perf_counter()
    ev = evaluate(X_known, y, random_state=cfg.seed)
    cv_seconds = time.perf_counter() - t0
    threshold = confidence_threshold(y, ev.oof[ev.chosen], TARGET_ACCURACY)
    model = GenderImputer(calibrate=ev.chosen.endswith("calibration"),
                          random_state=cfg.seed).fit(X_known, y)
    out = step_dir(cfg, "gender")
    p_lost = model.predict_proba(X_lost)[:, 1] if len(X_lost) else np.array([])
    table = clients[["id"]].copy()
    prob = pd.Series(np.nan, index=X.index)
    prob[known.reindex(X.index).to_numpy()] = y
    prob[X_lost.index] = p_lost
    table["gender_prob"] = table["id"].map(prob).to_numpy()
    conf = np.maximum(table["gender_prob"], 1 - table["gender_prob"])
    is_known = table["id"].map(known).to_numpy()
    confident = conf >= threshold
    table["gender_label"] = pd.array(
        np.where(is_known | confident, (table["gender_prob"] >= 0.5).astype(int), -1),
        dtype="Int64")
    table.loc[table["gender_label"] == -1, "gender_label"] = pd.NA
    table["gender_source"] = np.where(is_known, "known",
                                      np.where(confident, "imputed", "uncertain"))
    rel = ev.reliability()
    n_unc = int((table["gender_source"] == "uncertain").sum())
    summary = {
        "chosen_model": ev.chosen, "features": list(X.columns),
        "cv_folds": 5, "cv_seconds": round(cv_seconds, 1),
        "metrics": ev.table.to_dict("records"),
        "threshold": threshold, "target_accuracy": TARGET_ACCURACY,
        "lost_clients": int(len(X_lost)),
        "imputed_confident": int((table["gender_source"] == "imputed").sum()),
        "uncertain": n_unc,
        "mean_prob_lost": float(p_lost.mean()) if len(p_lost) else None,
        "downstream": {"segments": "uses gender_prob (a probability, not a label)",
                       "uplift": "balance check uses known gender only"},
    }
    _truth_check(cfg, table, summary)
    write_parquet(table, out / "clients.parquet")
    write_parquet(ev.table, out / "metrics.parquet")
    write_parquet(rel, out / "reliability.parquet")
    _plot(ev, out)
    save_model(model, out)
    write_json(summary, out / "summary.json")
    chosen = ev.table.set_index("model").loc[ev.chosen]
    return {"message": f"CV ROC-AUC {chosen['roc_auc']:.3f}, ECE {chosen['ece']:.3f}; "
                       f"{n_unc} of {len(X_lost)} lost clients stay uncertain"}


def _truth_check(cfg: Config, table: pd.DataFrame, summary: dict[str, Any]) -> None:
    """On demo data, how well the planted gender of lost clients was restored."""
    truth_file = cfg.data_dir / "truth_clients.parquet"
    if not truth_file.exists():
        return
    t = pd.read_parquet(truth_file)[["id", "gender", "lost"]]
    m = table.merge(t.rename(columns={"gender": "true_gender"}), on="id")
    lost = m[m["lost"]]
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
