"""Step ``segments``: Gaussian mixture clusters of clients, chosen by evidence and profiled.

Behaviour is measured outside the campaign-1 window (days 5..16), so the clusters that
split the campaign effect in the ``uplift`` step are not moved by the campaign. The
mixture is fitted on clients with enough history (``segments.min_items``); every client
with purchases is then assigned with membership probabilities and clients without any
purchase form the "no history" group (cluster -1).

Outputs in ``results_dir/segments/``: ``assignments.parquet`` (id, cluster, history,
p_max, p_<k>), ``selection.parquet``, ``profiles.parquet``, ``categories.parquet``,
``stability.parquet``, ``model.joblib`` + ``model.json``, ``summary.json`` and figures.

Run alone: ``python -m analysis.segments`` or ``shopbayes run segments``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from analysis import model_store
from analysis.clean import purchases_path, read_clients
from analysis.config import Config
from analysis.io import read_json, save_figure, write_json, write_parquet
from analysis.pipeline import StepSkipped, optional_result, step_dir, succeeded
from analysis.store.aggregates import BEHAVIOUR_COLUMNS, client_behaviour
from analysis.store.engine import connect
from analysis.store.tables import open_table
from models.segments import NO_HISTORY, GaussianMixtureSegmenter, profile_clusters, stability

CAMPAIGN1_WINDOW = (5, 16)


def demographics(cfg: Config, clients: pd.DataFrame) -> pd.DataFrame:
    """Age, education, personal_coef and gender probability (imputed where it was lost,
    when the ``gender`` step has a successful result) per client id."""
    d = clients.set_index("id")[["age", "education", "personal_coef", "gender"]].copy()
    d["age"] = pd.to_numeric(d["age"], errors="coerce").astype(float)
    d["personal_coef"] = pd.to_numeric(d["personal_coef"], errors="coerce").astype(float)
    d["higher_education"] = (d["education"] == "высшее").astype(float)
    d["gender_prob"] = pd.to_numeric(d["gender"], errors="coerce").astype(float)
    imputed = optional_result(cfg, "gender", "clients.parquet", ["id", "gender_prob"])
    if imputed is not None:
        imputed = imputed.set_index("id")
        d["gender_prob"] = d["gender_prob"].fillna(imputed["gender_prob"].reindex(d.index))
    return d.drop(columns=["education", "gender"])


def assign(model: GaussianMixtureSegmenter, behaviour: pd.DataFrame, ids: pd.Series,
           min_items: int) -> pd.DataFrame:
    """Cluster, membership probabilities and history level of every client id."""
    out = pd.DataFrame({"id": ids.astype("int64").to_numpy()})
    prob = np.full((len(out), model.n_clusters_), np.nan)
    pos = pd.Index(out["id"]).get_indexer(behaviour.index)
    if len(behaviour):
        prob[pos] = model.predict_proba(behaviour)
    has = ~np.isnan(prob[:, 0])
    out["cluster"] = np.where(has, np.nan_to_num(prob).argmax(axis=1), NO_HISTORY)
    items = behaviour["items"].reindex(out["id"]).fillna(0).to_numpy()
    out["history"] = np.where(items >= min_items, "fit", np.where(items > 0, "thin", "none"))
    out["p_max"] = np.nanmax(np.where(has[:, None], prob, 0.0), axis=1)
    out.loc[~has, "p_max"] = np.nan
    for k in range(model.n_clusters_):
        out[f"p_{k}"] = prob[:, k]
    return out


def run(cfg: Config) -> dict[str, Any]:
    s = cfg.segments
    clients = read_clients(cfg)
    demo = demographics(cfg, clients)
    # per-client features are a GROUP BY in the engine: the purchases stay there
    purchases = open_table(connect(cfg.engine), purchases_path(cfg), BEHAVIOUR_COLUMNS)
    behaviour = client_behaviour(purchases, exclude_days=CAMPAIGN1_WINDOW)
    behaviour = behaviour[behaviour.index.isin(demo.index)].join(demo[["age"]])
    fit_set = behaviour[behaviour["items"] >= s.min_items]
    if len(fit_set) < 10 * s.k_min:
        raise StepSkipped(f"only {len(fit_set)} clients have at least {s.min_items} items "
                          "outside the campaign window; too few to segment")
    model = GaussianMixtureSegmenter(k_range=(s.k_min, s.k_max),
                                     covariance_types=tuple(s.covariance_types),
                                     criterion=s.criterion, random_state=cfg.seed)
    t0 = time.perf_counter()
    model.fit(fit_set)
    search_seconds = time.perf_counter() - t0
    stab = stability(model, fit_set, seeds=tuple(s.stability_seeds))
    table = assign(model, behaviour, clients["id"], s.min_items)
    labels = table.set_index("id")["cluster"]
    profiles, categories = profile_clusters(behaviour, labels[labels >= 0], demo)
    out = step_dir(cfg, "segments")
    hist = table["history"].value_counts()
    summary: dict[str, Any] = {
        "n_clusters": model.n_clusters_, "covariance_type": model.covariance_type_,
        "criterion": s.criterion, "k_range": [s.k_min, s.k_max],
        "features": list(model.encoder_.feature_names_out_),
        "clients": len(table), "fit_clients": int(hist.get("fit", 0)),
        "thin_history_clients": int(hist.get("thin", 0)),
        "no_history_clients": int(hist.get("none", 0)), "min_items": s.min_items,
        "search_seconds": round(search_seconds, 1),
        "covariance_types": list(s.covariance_types),
        "stability_refits": len(stab),
        "stability_mean_ari": float(stab["ari"].mean()),
        "stability_min_ari": float(stab["ari"].min()),
        "mean_p_max_fit": float(table.loc[table.history == "fit", "p_max"].mean()),
        "mean_p_max_thin": float(table.loc[table.history == "thin", "p_max"].mean()),
        "notes": model.notes_,
        "gender_prob_source": "gender step" if succeeded(cfg, "gender")
        else "known gender only",
    }
    _truth_check(cfg, table, summary)
    write_parquet(table, out / "assignments.parquet")
    write_parquet(model.summary(), out / "selection.parquet")
    write_parquet(profiles, out / "profiles.parquet")
    write_parquet(categories, out / "categories.parquet")
    write_parquet(stab, out / "stability.parquet")
    _figures(model, fit_set, categories, profiles, out)
    model_store.save_model(model, out, list(fit_set.columns))
    write_json(summary, out / "summary.json")
    msg = (f"k = {model.n_clusters_} ({model.covariance_type_}, {s.criterion.upper()}), "
           f"stability ARI {summary['stability_mean_ari']:.3f}")
    if "demo_truth" in summary:
        msg += f", ARI vs planted {summary['demo_truth']['ari_fit']:.3f}"
    return {"message": msg}


def load_segmenter(cfg: Config) -> GaussianMixtureSegmenter:
    """The saved segmentation model (assign new clients with ``predict_proba``)."""
    return model_store.load_model(step_dir(cfg, "segments"), step="segments")


def _truth_check(cfg: Config, table: pd.DataFrame, summary: dict[str, Any]) -> None:
    """On demo data: chosen k against the planted number and ARI against planted segments."""
    truth_file = cfg.data_dir / "truth_clients.parquet"
    if not truth_file.exists():
        return
    truth = read_json(cfg.data_dir / "truth.json")
    t = pd.read_parquet(truth_file, columns=["id", "segment"])
    m = table.merge(t, on="id")
    fit, anyp = m[m["history"] == "fit"], m[m["history"] != "none"]
    summary["demo_truth"] = {
        "planted_k": truth["n_segments"], "chosen_k": summary["n_clusters"],
        "ari_fit": float(adjusted_rand_score(fit["segment"], fit["cluster"])),
        "ari_all_with_purchases": float(adjusted_rand_score(anyp["segment"], anyp["cluster"])),
        "confusion": pd.crosstab(fit["cluster"], fit["segment"]).to_dict(),
    }


def _figures(model: GaussianMixtureSegmenter, fit_set: pd.DataFrame,
             categories: pd.DataFrame, profiles: pd.DataFrame, out: Path) -> None:
    axes = model.plot_selection()
    save_figure(axes[0].figure, out / "selection.png")
    ax = model.plot_projection(fit_set)
    save_figure(ax.figure, out / "projection.png")
    top = (categories[categories["share"] >= 0.02].groupby("category")["lift"].max()
           .sort_values(ascending=False).index[:18])
    heat = categories.pivot(index="category", columns="cluster", values="lift").loc[top]
    cols = ["discount_share", "kids_share", "orders_mean", "revenue_mean", "age"]
    rel = profiles.set_index("cluster")[[c for c in cols if c in profiles]]
    rel = (rel / rel.mean()).T.rename(index=lambda c: c.replace("_", " "))
    fig, axes = plt.subplots(1, 2, figsize=(11, 6),
                             gridspec_kw={"width_ratios": [3, 2], "wspace": 0.45})
    for ax, data, title in ((axes[0], heat, "Category lift versus all clients"),
                            (axes[1], rel, "Profile relative to the mean over clusters")):
        v = np.log2(data.to_numpy(float).clip(1e-3))
        lim = max(1.0, float(np.nanmax(np.abs(v))))
        im = ax.imshow(v, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(data.shape[1]), [str(c) for c in data.columns])
        ax.set_xlabel("cluster")
        ax.set_yticks(range(data.shape[0]), data.index)
        for (i, j), val in np.ndenumerate(data.to_numpy(float)):
            ax.text(j, i, f"{val:.1f}", ha="center", va="center", fontsize=7)
        ax.set_title(title)
    fig.colorbar(im, ax=axes, shrink=0.6, label="log2 ratio")
    save_figure(fig, out / "profiles.png")
    plt.close("all")


if __name__ == "__main__":
    # the same as `shopbayes run segments [--data DIR] [--results DIR] [--force]`
    from analysis.cli import main

    sys.exit(main(["run", "segments", *sys.argv[1:]]))
