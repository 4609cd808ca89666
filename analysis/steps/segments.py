"""Step ``segments``: Gaussian mixture clusters of clients, chosen by evidence and profiled.

Behaviour is measured outside the campaign-1 window (days 5..16), so the clusters that
split the campaign effect in the ``uplift`` step are not moved by the campaign. The
mixture is fitted on clients with enough history (``segments.min_items``; at most
``segments.fit_sample`` of them, a hash sample of ids beyond that); every client with
purchases is then assigned with membership probabilities and clients without any
purchase form the "no history" group (cluster -1). The engine computes the behaviour and
writes every client's row; Python assigns them in batches of ``segments.assign_batch`` and
adds up each batch's profile sums, so memory does not grow with the store.

Outputs in ``results_dir/segments/``: ``assignments.parquet`` (id, cluster, history,
p_max, p_<k>), ``selection.parquet``, ``profiles.parquet``, ``categories.parquet``,
``stability.parquet``, ``model.joblib`` + ``model.json``, ``summary.json`` and figures.

Run alone: ``python -m analysis.steps.segments`` or ``shopbayes run segments``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.metrics import adjusted_rand_score

from analysis import model_store
from analysis.config import Config
from analysis.io import atomic_path, read_json, save_figure, write_json, write_parquet
from analysis.pipeline import StepSkipped, optional_table, step_dir, succeeded
from analysis.steps.clean import purchase_ranges, purchases_path
from analysis.store.aggregates import (
    BEHAVIOUR_COLUMNS,
    behaviour_table,
    finish_behaviour,
    held_out,
)
from analysis.store.engine import connect
from analysis.store.tables import materialised, open_table, parquet_batches
from models.segments import (
    NO_HISTORY,
    GaussianMixtureSegmenter,
    profile_sums,
    profiles_from_sums,
    stability,
)

CAMPAIGN1_WINDOW = (5, 16)


#: demographics profiled per cluster (see :func:`client_rows`)
DEMOGRAPHICS = ["age", "personal_coef", "higher_education", "gender_prob"]


def client_rows(cfg: Config, con: Any, behaviour: Any) -> Any:
    """Every client with its demographics and (for buyers) behaviour, as an Ibis
    expression: ``id``, :data:`DEMOGRAPHICS` (``gender_prob`` is the known gender, else
    the gender step's probability when it succeeded) and the columns of ``behaviour``
    (missing for clients without purchases outside the campaign window)."""
    import ibis

    c = open_table(con, step_dir(cfg, "clean") / "clients.parquet",
                   {"id": "integer", "age": "integer", "education": "string",
                    "personal_coef": "number", "gender": "integer"}, "clients")
    gender_prob = c.gender.cast("float64")
    g = optional_table(cfg, con, "gender", "clients.parquet",
                       {"id": "integer", "gender_prob": "number"})
    if g is not None:
        c = c.left_join(g.select("id", imputed="gender_prob"), "id")
        gender_prob = ibis.coalesce(c.gender.cast("float64"), c.imputed.cast("float64"))
    demo = c.select("id", age=c.age.cast("float64"),
                    personal_coef=c.personal_coef.cast("float64"),
                    higher_education=(c.education == "высшее").fill_null(False)
                    .cast("float64"), gender_prob=gender_prob)
    return demo.left_join(behaviour, "id").drop("id_right")


def _behaviour(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Buyers' behaviour (+ ``age``) from a batch of :func:`client_rows`, as the mixture
    takes it."""
    b = finish_behaviour(rows[["id", *columns]])
    return b.join(rows.set_index("id")["age"].astype(float).rename("age"))


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
    con = connect(cfg.engine, memory_limit=cfg.engine_memory)
    # per-client features are a GROUP BY in the engine: the purchases stay there
    purchases = open_table(con, purchases_path(cfg), BEHAVIOUR_COLUMNS, "purchases")
    behaviour = behaviour_table(purchases, exclude_days=CAMPAIGN1_WINDOW)
    columns = [c for c in behaviour.columns if c != "id"]
    out = step_dir(cfg, "segments")
    out.mkdir(parents=True, exist_ok=True)
    # every client's row is computed once; the count, the fit sample and the batches
    # read it
    with materialised(con, client_rows(cfg, con, behaviour).order_by("id"), out,
                      purchase_ranges(cfg, con)) as (rows, path):
        return _run(cfg, con, rows, path, columns, out)


def _run(cfg: Config, con: Any, rows: Any, path: Path, columns: list[str], out: Path
         ) -> dict[str, Any]:
    s = cfg.segments
    eligible = rows.filter(rows["items"] >= s.min_items)
    n_eligible = int(eligible.count().to_pyarrow().as_py())
    if n_eligible < 10 * s.k_min:
        raise StepSkipped(f"only {n_eligible} clients have at least {s.min_items} items "
                          "outside the campaign window; too few to segment")
    share = min(1.0, s.fit_sample / n_eligible)
    if share < 1.0:
        eligible = eligible.filter(held_out(eligible.id, share, cfg.seed))
    fit_set = _behaviour(eligible.order_by("id").to_pandas(), columns)
    model = GaussianMixtureSegmenter(k_range=(s.k_min, s.k_max),
                                     covariance_types=tuple(s.covariance_types),
                                     criterion=s.criterion, random_state=cfg.seed)
    t0 = time.perf_counter()
    model.fit(fit_set)
    search_seconds = time.perf_counter() - t0
    stab = stability(model, fit_set, seeds=tuple(s.stability_seeds))
    # every client assigned batch by batch as the engine wrote them (by id); the profiles
    # add up each batch's sufficient statistics
    sums, counts, batches = [], pd.DataFrame(), 0
    with atomic_path(out / "assignments.parquet") as dest:
        writer = None
        try:
            for batch in parquet_batches(path, s.assign_batch):
                buyers = _behaviour(batch[batch["items"].notna()], columns)
                table = assign(model, buyers, batch["id"], s.min_items)
                labels = table.set_index("id")["cluster"]
                sums.append(profile_sums(buyers, labels[labels >= 0],
                                         batch.set_index("id")[DEMOGRAPHICS]))
                g = table.groupby("history")["p_max"]
                counts = counts.add(pd.DataFrame({"n": g.size(), "p_max_sum": g.sum()}),
                                    fill_value=0)
                arrow = pa.Table.from_pandas(table, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(dest, arrow.schema)
                writer.write_table(arrow)
                batches += 1
        finally:
            if writer is not None:
                writer.close()
    profiles, categories = profiles_from_sums(pd.concat(sums).groupby(level=0).sum())
    hist = counts["n"] if len(counts) else pd.Series(dtype=float)
    p_max = counts["p_max_sum"] / counts["n"] if len(counts) else pd.Series(dtype=float)
    summary: dict[str, Any] = {
        "n_clusters": model.n_clusters_, "covariance_type": model.covariance_type_,
        "criterion": s.criterion, "k_range": [s.k_min, s.k_max],
        "features": list(model.encoder_.feature_names_out_),
        "clients": int(hist.sum()), "fit_clients": int(hist.get("fit", 0)),
        "fit_sample": {"size": len(fit_set), "eligible": n_eligible, "share": share,
                       "rule": "every client with enough items" if share >= 1.0 else
                       "hash sample of client ids"},
        "assign_batches": batches,
        "thin_history_clients": int(hist.get("thin", 0)),
        "no_history_clients": int(hist.get("none", 0)), "min_items": s.min_items,
        "search_seconds": round(search_seconds, 1),
        "covariance_types": list(s.covariance_types),
        "stability_refits": len(stab),
        "stability_mean_ari": float(stab["ari"].mean()),
        "stability_min_ari": float(stab["ari"].min()),
        "mean_p_max_fit": float(p_max.get("fit", np.nan)),
        "mean_p_max_thin": float(p_max.get("thin", np.nan)),
        "notes": model.notes_,
        "gender_prob_source": "gender step" if succeeded(cfg, "gender")
        else "known gender only",
    }
    _truth_check(cfg, con, out / "assignments.parquet", summary)
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


def _truth_check(cfg: Config, con: Any, assignments: Path, summary: dict[str, Any]) -> None:
    """On demo data: chosen k against the planted number and ARI against planted segments.

    The engine counts clients per (history, cluster, planted segment); the ARI
    (scikit-learn's) reads labels rebuilt from those counts, so no client table is held
    but two integer arrays.
    """
    truth_file = cfg.data_dir / "truth_clients.parquet"
    if not truth_file.exists():
        return
    truth = read_json(cfg.data_dir / "truth.json")
    a = open_table(con, assignments, {"id": "integer", "cluster": "integer",
                                      "history": "string"}, "truth_assignments")
    t = open_table(con, truth_file, {"id": "integer", "segment": "integer"}, "truth_clients")
    m = a.select(id=a.id.cast("int64"), cluster=a.cluster.cast("int64"), history=a.history)
    m = m.join(t.select(id=t.id.cast("int64"), segment=t.segment.cast("int64")), "id")
    counts = m.group_by(["history", "cluster", "segment"]).aggregate(n=m.count()).to_pandas()

    def ari(part: pd.DataFrame) -> float:
        n = part["n"].to_numpy()
        return float(adjusted_rand_score(np.repeat(part["segment"].to_numpy(), n),
                                         np.repeat(part["cluster"].to_numpy(), n)))

    fit = counts[counts["history"] == "fit"]
    planted = truth.get("n_segments") or int(counts["segment"].nunique())
    summary["demo_truth"] = {
        "planted_k": planted, "chosen_k": summary["n_clusters"],
        "ari_fit": ari(fit),
        "ari_all_with_purchases": ari(counts[counts["history"] != "none"]),
        "confusion": fit.pivot_table(index="cluster", columns="segment", values="n",
                                     aggfunc="sum", fill_value=0).to_dict(),
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
