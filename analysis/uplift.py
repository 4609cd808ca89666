"""Step ``uplift``: campaign 1 (personal discount email, days 5..16).

Trust checks first (sample-ratio mismatch, covariate balance, selection on the outcome,
ids dropped), then the closed-form Beta-Binomial / log-normal answer, then the
hierarchical PyMC model with city (and cluster, when the segmentation step has run)
effects, its diagnostics, and the profit decision. Outputs in ``results_dir/uplift/``.

Run alone: ``python -m analysis.uplift`` or ``shopbayes run uplift``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.campaign1_data import campaign_frame
from analysis.clean import read_campaign_ids, read_clients, read_purchases
from analysis.config import Config, load_config
from analysis.io import atomic_path, save_figure, write_json, write_parquet
from analysis.pipeline import optional_result, step_dir
from models import uplift as U

BALANCE_COVARIATES = ["age", "gender", "higher_education", "personal_coef", "pre_revenue",
                      "pre_bought"]


def _clusters(cfg: Config) -> pd.DataFrame | None:
    """Cluster assignments when the segments step succeeded (a failed run keeps the
    earlier files, which must not be mixed with today's data)."""
    return optional_result(cfg, "segments", "assignments.parquet")


def trust_checks(df: pd.DataFrame, report: dict[str, Any]) -> dict[str, Any]:
    srm = U.sample_ratio_mismatch(int(df.treated.sum()), int((~df.treated).sum()))
    cov = df.assign(pre_revenue=df["pre_revenue"].astype(float),
                    pre_bought=df["pre_bought"].astype(float),
                    gender=pd.to_numeric(df["gender"], errors="coerce"))
    top = df["city"].value_counts().index[:5]
    for c in top:
        cov[f"city_{c}"] = (df["city"] == c).astype(float)
    smd = U.standardized_mean_differences(cov, BALANCE_COVARIATES + [f"city_{c}" for c in top])
    conv = df.groupby("treated")["converted"].mean()
    rates = {"treated": float(conv.get(True, np.nan)), "control": float(conv.get(False, np.nan))}
    warnings = U.selection_on_outcome(rates)
    if srm["mismatch"]:
        warnings.append(f"sample-ratio mismatch: {srm['n_treated']} treated vs "
                        f"{srm['n_control']} control (p = {srm['p_value']:.2g})")
    bad = smd[smd.imbalanced]
    if len(bad):
        warnings.append("covariates imbalanced (|SMD| > 0.1): " + ", ".join(bad.covariate))
    return {"srm": srm, "smd": smd, "warnings": warnings, "ids": report,
            "conversion_rates": rates}


def group_metrics(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby("treated")
    out = pd.DataFrame({
        "clients": g.size(),
        "conversion": g["converted"].mean(),
        "orders_per_client": g["window_orders"].mean(),
        "items_per_client": g["window_items"].mean(),
        "arpu": g["revenue"].mean(),
        "aov": g["aov"].mean(),
        "discount_share": g["window_sale_items"].sum() / g["window_items"].sum().clip(lower=1),
        "pre_arpu": g["pre_revenue"].mean(),
        "post_arpu": g["post_revenue"].mean(),
        "post_conversion": g["post_orders"].apply(lambda s: (s > 0).mean()),
    })
    out.index = out.index.map({True: "treated", False: "control"})
    return out.reset_index(names="group")


def run(cfg: Config) -> dict[str, Any]:
    clients, purchases = read_clients(cfg), read_purchases(cfg)
    ids = read_campaign_ids(cfg)
    clusters = _clusters(cfg)
    df, report = campaign_frame(clients, purchases, ids["treated"], ids["control"], clusters)
    out = step_dir(cfg, "uplift")
    trust = trust_checks(df, report)
    b = cfg.business
    n_t, n_c = int(df.treated.sum()), int((~df.treated).sum())
    conv_t, conv_c = int(df[df.treated].converted.sum()), int(df[~df.treated].converted.sum())
    bb = U.beta_binomial_ab(conv_t, n_t, conv_c, n_c, seed=cfg.seed)
    arpu = U.arpu_ab(df, seed=cfg.seed)
    cf_profit = U.profit_per_treated(arpu["_draws"]["treated"], arpu["_draws"]["control"],
                                     b.margin, b.discount_depth)
    model = U.HierarchicalUplift(sampler_config=cfg.sampler_for("uplift"), seed=cfg.seed,
                                 min_city_clients=cfg.min_city_clients).fit(df)
    conv = model.convergence_
    overall = model.effects(b.margin, b.discount_depth).iloc[0]
    by_city = model.effects(b.margin, b.discount_depth, by="city")
    by_cluster = model.effects(b.margin, b.discount_depth, by="cluster")
    curve = model.margin_curve(b.discount_depth)
    prior = model.prior_predictive()
    ppc = model.posterior_predictive()
    ppc_groups = pd.concat([model.posterior_predictive_groups(by).assign(by=by)
                            for by in ("cluster", "city")], ignore_index=True)
    sentence = U.recommend(overall, by_city, by_cluster, b.margin, b.discount_depth)
    sentence = conv.caveat("the hierarchical model") + sentence
    _figures(model, bb, curve, out, b)
    with atomic_path(out / "posterior.nc") as tmp:
        az.to_netcdf(model.idata_, tmp)
    write_parquet(group_metrics(df), out / "group_metrics.parquet")
    write_parquet(trust["smd"], out / "balance.parquet")
    write_parquet(by_city, out / "effects_city.parquet")
    write_parquet(by_cluster, out / "effects_cluster.parquet")
    write_parquet(curve, out / "margin_curve.parquet")
    write_parquet(ppc_groups, out / "posterior_predictive_groups.parquet")
    summary = {
        "recommendation": sentence,
        "business": {"margin": b.margin, "discount_depth": b.discount_depth},
        "trust": {k: v for k, v in trust.items() if k != "smd"},
        "closed_form": {
            "conversion": {k: v for k, v in bb.items() if not k.startswith("_")},
            "arpu": {k: v for k, v in arpu.items() if not k.startswith("_")},
            "profit_per_client": U.describe(cf_profit),
        },
        "hierarchical": {
            "overall": overall.to_dict(),
            "total_incremental_profit": float(overall["profit_per_client_mean"] * n_t),
            "parameters": model.summary().reset_index(names="parameter").to_dict("records"),
            "pooled_cities": [str(c) for c in model.pooled_cities_],
            "cells": len(model.cells_), "clusters_used": clusters is not None,
            "priors": {k: list(v) for k, v in model.model_config.items()},
            "prior_predictive": {k: v for k, v in prior.items() if not k.startswith("_")},
            "posterior_predictive": ppc,
            "posterior_predictive_groups": {
                by: {"groups": int((ppc_groups["by"] == by).sum()),
                     "inside_94": int(ppc_groups.loc[ppc_groups["by"] == by, "inside"].sum())}
                for by in ("cluster", "city")},
        },
        "convergence": conv.as_dict(),
    }
    write_json(summary, out / "summary.json")
    status = "converged" if conv.ok else "FAILED CONVERGENCE: " + "; ".join(conv.problems)
    return {"message": f"P(uplift>0)={overall['conversion_uplift_p_positive']:.2f}, "
                       f"P(profit>0)={overall['profit_per_client_p_positive']:.2f}; {status}",
            "convergence_ok": conv.ok}


def _figures(model: U.HierarchicalUplift, bb: dict, curve: pd.DataFrame, out: Path,
             b: Any) -> None:
    for by in ("city", "cluster"):
        ax = model.plot_forest(by, b.margin, b.discount_depth)
        save_figure(ax.figure, out / f"forest_{by}.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    hier = 100 * model.weighted_draws()["conversion"]
    axes[0].hist(100 * (bb["_draws"]["treated"] - bb["_draws"]["control"]), bins=60,
                 density=True, alpha=0.5, label="closed form (Beta-Binomial)")
    axes[0].hist(hier, bins=60, density=True, alpha=0.5, label="hierarchical model")
    axes[0].axvline(0, color="k", lw=1)
    axes[0].set_xlabel("conversion uplift, percentage points")
    axes[0].set_title("Posterior of the overall uplift")
    axes[0].legend(fontsize=8)
    profit = model.profit_draws(b.margin, b.discount_depth)
    axes[1].hist(profit, bins=60, color="C2", alpha=0.7)
    axes[1].axvline(0, color="k", lw=1)
    axes[1].set_xlabel("incremental profit per treated client")
    axes[1].set_title(f"Profit (margin {b.margin:.0%}, discount {b.discount_depth:.0%})")
    save_figure(fig, out / "uplift_posterior.png")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(100 * curve["margin"], curve["p_profit_positive"], "-o", ms=3)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.axvline(100 * b.margin, color="C1", ls="--", lw=1, label="configured margin")
    ax.set_xlabel("gross margin, %")
    ax.set_ylabel("P(incremental profit > 0)")
    ax.set_title("Does campaign 1 pay off? It depends on the margin")
    ax.legend()
    save_figure(fig, out / "margin_curve.png")
    ax = model.plot_posterior_predictive("cluster")
    save_figure(ax.figure, out / "ppc.png")


if __name__ == "__main__":
    from analysis.pipeline import run as run_pipeline

    res = run_pipeline(load_config(Path("shopbayes.toml")), only="uplift")
    sys.exit(0 if all(r["status"] != "failed" for r in res) else 1)
