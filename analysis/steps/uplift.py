"""Step ``uplift``: campaign 1 (personal discount email, days 5..16).

Trust checks first (sample-ratio mismatch, covariate balance, selection on the outcome,
ids dropped), then the closed-form Beta-Binomial / log-normal answer, then the
hierarchical PyMC model with city (and cluster, when the segmentation step has run)
effects, its diagnostics, and the profit decision. Outputs in ``results_dir/uplift/``.

Run alone: ``python -m analysis.steps.uplift`` or ``shopbayes run uplift``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.background import background
from analysis.config import Config
from analysis.errors import DataError
from analysis.io import atomic_path, save_figure, write_json, write_parquet
from analysis.pipeline import optional_table, step_dir
from analysis.steps.campaign1_data import GROUPS, PERIODS, store_frame
from analysis.steps.clean import (
    CLIENT_DTYPES,
    purchase_ranges,
    purchases_path,
    read_campaign_ids,
)
from analysis.store.aggregates import (
    CAMPAIGN_CLIENT_COLUMNS,
    PERIOD_COLUMNS,
    campaign_store_table,
    store_sample,
    uplift_cells,
)
from analysis.store.engine import connect
from analysis.store.loaders import POSITIVE_FILE
from analysis.store.tables import materialised, open_table
from models import campaign_design as DESIGN
from models import next_test as NT
from models import observational as OBS
from models import uplift as U

BALANCE_COVARIATES = ["age", "gender", "higher_education", "personal_coef", "pre_revenue",
                      "pre_bought"]


def trust_checks(df: pd.DataFrame, report: dict[str, Any], srm: dict[str, Any],
                 rates: dict[str, float] | None = None) -> dict[str, Any]:
    """Balance, selection on the outcome and the sample-ratio test (``srm``, the design
    verdict's) of the campaign's treated and control clients, as warnings; ``rates``
    (conversion of the whole ``treated`` and ``control`` groups) when ``df`` holds a
    sample of them."""
    cov = df.assign(pre_revenue=df["pre_revenue"].astype(float),
                    pre_bought=df["pre_bought"].astype(float),
                    gender=pd.to_numeric(df["gender"], errors="coerce"))
    top = df["city"].value_counts().index[:5]
    for c in top:
        cov[f"city_{c}"] = (df["city"] == c).astype(float)
    smd = U.standardized_mean_differences(cov, BALANCE_COVARIATES + [f"city_{c}" for c in top])
    if rates is None:
        conv = df.groupby("treated")["converted"].mean()
        rates = {"treated": float(conv.get(True, np.nan)),
                 "control": float(conv.get(False, np.nan))}
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


def _support_mask(df: pd.DataFrame) -> np.ndarray:
    """Rows of the comparison population: clients in the countries and age bands where
    treated clients are (no untreated client elsewhere can stand in for a treated one)."""
    t = df.loc[df["treated"], ["country", "age_band"]]
    return (df["country"].isin(t["country"].unique())
            & df["age_band"].isin(t["age_band"].unique())).to_numpy(bool)


def buyers_comparison(campaign: pd.DataFrame) -> dict[str, Any]:
    """The control file among buyers: per-buyer revenue, items and average purchase with
    Lee bounds (valid only if the controls were drawn at random among buyers)."""
    t, c = campaign[campaign["treated"]], campaign[~campaign["treated"]]
    tb, cb = t[t["converted"]], c[c["converted"]]
    out: dict[str, Any] = {}
    if tb.empty or cb.empty:
        return {"reason": f"no buyers to compare (treated buyers {len(tb)}, control buyers "
                          f"{len(cb)})"}
    for name, col in (("revenue_per_buyer", "revenue"), ("items_per_buyer", "items")):
        out[name] = DESIGN.lee_bounds(tb[col].to_numpy(), cb[col].to_numpy(), len(t), len(c))
        out[name]["treated"] = float(tb[col].mean())
        out[name]["control"] = float(cb[col].mean())
    out["average_purchase"] = {"treated": float(tb["revenue"].sum() / tb["items"].sum()),
                               "control": float(cb["revenue"].sum() / cb["items"].sum())}
    return out


def _check_groups(store: pd.DataFrame, data_dir: Path) -> None:
    """Stop with the file at fault when a campaign group cannot be analysed: no treated
    client in the client table, or no treated client with any purchase in two months (the
    id file and the purchases then describe different clients)."""
    t = store[store["group"] == "treated"]
    path = data_dir / POSITIVE_FILE
    if t.empty:
        raise DataError(path, "none of its ids is a client of personal_data: there is no "
                        "treated group to analyse")
    bought = t[["pre_items", "window_items", "post_items"]].sum(axis=1) > 0
    if not bought.any():
        raise DataError(path, f"none of its {len(t):,} clients has a purchase on any day "
                        "(0..58): the id file and the purchases table do not describe the "
                        "same clients")


def _sample_frames(sample: pd.DataFrame, clusters: bool
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The engine's sample rows split into :func:`store_frame`'s inputs."""
    client_cols = list(CAMPAIGN_CLIENT_COLUMNS)
    metrics = [c for c in sample.columns
               if c not in CAMPAIGN_CLIENT_COLUMNS and c not in ("group", "cluster")]
    clients = sample[client_cols].astype({c: CLIENT_DTYPES[c] for c in client_cols
                                          if c in CLIENT_DTYPES})
    return (clients, sample[["id", *metrics]],
            sample[["id", "cluster"]] if clusters else None)


def run(cfg: Config) -> dict[str, Any]:
    con = connect(cfg.engine, memory_limit=cfg.engine_memory)
    purchases = open_table(con, purchases_path(cfg), PERIOD_COLUMNS, "purchases")
    clients_t = open_table(con, step_dir(cfg, "clean") / "clients.parquet",
                           CAMPAIGN_CLIENT_COLUMNS, "clients")
    ids = read_campaign_ids(cfg)
    clusters_t = optional_table(cfg, con, "segments", "assignments.parquet",
                                {"id": "integer", "cluster": "integer"})
    out = step_dir(cfg, "uplift")
    out.mkdir(parents=True, exist_ok=True)
    expr = campaign_store_table(purchases, clients_t, PERIODS, ids["treated"], ids["control"],
                                clusters_t)
    with materialised(con, expr, out, purchase_ranges(cfg, con)) as (table, _):
        return _run(cfg, table, ids, clusters_t is not None, out)


def _placebo_caveat(placebo: dict[str, Any], overall: pd.Series, sentence: str) -> str:
    """The recommendation when the placebo's interval excludes 0: kept, with the placebo
    stated, when the largest bias it leaves plausible (``placebo["bias_bound"]``:
    :func:`models.observational.placebo_bias_bound`) lies below the uplift's 94%
    interval; withheld otherwise (the bias could explain the effect)."""
    pl, bound = placebo["conversion"], placebo["bias_bound"]
    low = float(overall["conversion_uplift_hdi_low"])
    said = (f"The placebo before the email (days 3-4) shows an effect of "
            f"{100 * pl['mean']:+.2f} points (94% interval {100 * pl['hdi_low']:.2f} to "
            f"{100 * pl['hdi_high']:.2f}), so the adjustment leaves some bias")
    if bound is not None and low > bound:
        return (said + f"; scaled to the window, at most {100 * bound:.1f} points, below "
                f"the uplift's lower bound of {100 * low:.1f} points, so it does not change "
                "the conclusion. " + sentence)
    head = sentence.split("Recommendation:")[0]
    size = "" if bound is None else f" (up to {100 * bound:.1f} points in the window)"
    return ("WARNING: " + said + size + ", as large as the uplift's lower bound of "
            f"{100 * low:.1f} points: the adjusted comparison may be confounded. " + head
            + "Recommendation withheld: the comparison it would rest on failed its placebo.")


def _run(cfg: Config, table: Any, ids: dict[str, list[int]], clusters: bool, out: Path
         ) -> dict[str, Any]:
    lo, hi = PERIODS["pre"]
    if not int(table.pre_items.max().to_pandas() or 0):
        raise DataError(Path(cfg.data_dir) / "shop_database.db:purchases",
                        f"no purchase on days {lo}..{hi}, the days before the email: what the "
                        "store chose the treated on cannot be seen or adjusted for, so no "
                        "comparison of campaign 1 would be valid", column="dt")
    counts = table.group_by("group").aggregate(
        n=table.count(), buyers=(table.window_orders > 0).sum()).to_pandas()
    group_sizes = {g: int(counts.loc[counts["group"] == g, "n"].sum()) for g in GROUPS}
    group_buyers = {g: int(counts.loc[counts["group"] == g, "buyers"].sum()) for g in GROUPS}
    # what the design checks, the balance tables and the scikit-learn cross-check read:
    # each group whole up to ``uplift_store_sample`` clients, a hash sample of that size of
    # a larger one (counts and conversion rates stay the whole groups')
    cap = cfg.uplift_store_sample
    shares = {g: cap / n for g, n in group_sizes.items() if n > cap}
    sample = store_sample(table, shares, cfg.seed).order_by("id").to_pandas()
    clients, per_client, cluster_rows = _sample_frames(sample, clusters)
    del sample
    store, report = store_frame(clients, None, ids["treated"], ids["control"], cluster_rows,
                                per_client=per_client)
    del clients, per_client, cluster_rows
    # ids that are no client of the store: counted against the whole groups, not the
    # sample (a sampled-out client is a client; an id in both files is treated)
    treated_ids = {int(i) for i in ids["treated"]}
    report["dropped_unknown_treated"] = len(treated_ids) - group_sizes["treated"]
    report["dropped_unknown_control"] = (len({int(i) for i in ids["control"]} - treated_ids)
                                        - group_sizes["control"])
    sampled = store["group"].value_counts()
    weight = {g: group_sizes[g] / sampled[g] if sampled.get(g, 0) else 1.0 for g in GROUPS}
    store_sampling = {"cap": cap, "sampled": bool(shares), "groups": {
        g: {"clients": group_sizes[g], "sampled": int(sampled.get(g, 0)),
            "share": shares.get(g, 1.0), "weight": weight[g]} for g in GROUPS}}
    _check_groups(store, Path(cfg.data_dir))
    verdict = DESIGN.diagnose_design(store, report, group_sizes=group_sizes,
                                     group_buyers=group_buyers)
    campaign = store[store["group"] != "untreated"].reset_index(drop=True)
    b = cfg.business
    n_t, n_c = group_sizes["treated"], group_sizes["control"]
    rates = {"treated": group_buyers["treated"] / n_t,
             "control": group_buyers["control"] / n_c if n_c else float("nan")}
    trust = (trust_checks(campaign, report, verdict.srm, rates)
             if (~campaign.treated).any() else None)
    closed: dict[str, Any] = {}
    if n_c:
        conv_t, conv_c = group_buyers["treated"], group_buyers["control"]
        bb = U.beta_binomial_ab(conv_t, n_t, conv_c, n_c, seed=cfg.seed)
        arpu = U.arpu_ab(campaign, seed=cfg.seed,
                         counts={"treated": (conv_t, n_t), "control": (conv_c, n_c)})
        closed = {"conversion": {k: v for k, v in bb.items() if not k.startswith("_")},
                  "arpu": {k: v for k, v in arpu.items() if not k.startswith("_")},
                  "profit_per_client": U.describe(U.profit_per_treated(
                      arpu["_draws"]["treated"], arpu["_draws"]["control"], b.margin,
                      b.discount_depth)),
                  "valid": verdict.control_valid_for_conversion}
    # the comparison population's rows, not a copy of them (600,000 rows of 38 columns at
    # 10 million clients: the step's peak)
    keep = _support_mask(store)
    treated = store[store["treated"]]
    # every client of the store in the treated clients' countries and age bands, as cells
    # the engine sums: no client row in memory
    cells = uplift_cells(table, treated["country"].unique(), treated["age_band"].unique())
    support = {"kept": int(cells["n"].sum()),
               "outside_support": int(sum(group_sizes.values()) - cells["n"].sum())}
    model = U.HierarchicalUplift(sampler_config=cfg.sampler_for("uplift"), seed=cfg.seed,
                                 min_city_clients=cfg.min_city_clients,
                                 max_cities=cfg.max_cities)
    weights = store.loc[keep, "group"].map(weight).to_numpy(float)
    # what the model does not change is computed before its fit, so the client frames
    # (600,000 rows at 10 million clients) are not held while it compiles and samples
    metrics = group_metrics(store.assign(treated=store["group"] == "treated")
                            if n_c == 0 else campaign)
    buyers = buyers_comparison(campaign) if n_c and campaign[~campaign.treated].converted.any() \
        else None
    revenue_sd = float(treated["revenue"].std())
    check_input = store.loc[keep, OBS.CHECK_COLUMNS].reset_index(drop=True)
    whole_treated = check_input["treated"].to_numpy(bool)
    del store, treated
    if verdict.primary == "whole store":
        del campaign
    # the scikit-learn cross-check runs on the second core while the model compiles
    with background(OBS.observational_check, check_input, cfg.seed, weights) as cross_check:
        del check_input  # pickled for the worker
        if verdict.primary == "whole store":
            model.fit_cells(cells)
            comparison_clients = support["kept"]
        else:
            model.fit(campaign)
            comparison_clients = len(campaign)
        obs = cross_check.result()
    # memory of the cross-check's process, which runs beside this one (MiB)
    obs["worker_peak_rss_mib"] = cross_check.peak_rss_mib
    conv = model.convergence_
    overall = model.effects(b.margin, b.discount_depth).iloc[0]
    by_city = model.effects(b.margin, b.discount_depth, by="city")
    by_cluster = model.effects(b.margin, b.discount_depth, by="cluster")
    curve = model.margin_curve(b.discount_depth)
    rr = overall["conversion_ratio_hdi_low"]
    sensitivity = {"risk_ratio": float(overall["conversion_ratio_mean"]),
                   "e_value": DESIGN.e_value(overall["conversion_ratio_mean"]),
                   "e_value_interval": DESIGN.e_value(rr) if rr > 1 else 1.0}
    w = model.weighted_draws()
    depth_grid = NT.profit_by_depth(w["arpu1"], w["arpu0"], b.margin, b.discount_depth)
    best = depth_grid.loc[depth_grid["profit_mean"].idxmax()]
    sigma = float(revenue_sd * abs(b.margin - best["depth"]) / (1 - b.discount_depth))
    prior_sd = max((best["profit_high"] - best["profit_low"]) / (2 * 1.88), 1e-6)
    follow_up = NT.assurance(best["profit_mean"], prior_sd, max(sigma, 1e-6),
                         np.array([500, 1000, 2000, 5000, 10000, 20000, 50000]), seed=cfg.seed)
    prior = model.prior_predictive()
    ppc = model.posterior_predictive()
    ppc_groups = pd.concat([model.posterior_predictive_groups(by).assign(by=by)
                            for by in ("cluster", "city")], ignore_index=True)
    sentence = U.recommend(overall, by_city, by_cluster, b.margin, b.discount_depth,
                           comparison=verdict.primary)
    if verdict.control_problems:
        # the trust failures are part of the decision, not only of a box in the report
        sentence = ("The control file was not used (" + "; ".join(verdict.control_problems)
                    + "). " + sentence)
    sentence = conv.caveat("the hierarchical model") + sentence
    if obs["placebo"]["conversion"] is not None:
        obs["placebo"]["bias_bound"] = OBS.placebo_bias_bound(obs["placebo"]["conversion"],
                                                              rates["treated"])
    if verdict.primary == "whole store" and obs["placebo"]["passes"] is False:
        sentence = _placebo_caveat(obs["placebo"], overall, sentence)
    _figures(model, curve, out, b)
    ax = OBS.plot_overlap(obs.pop("_e"), whole_treated)
    if shares:
        ax.set_title(ax.get_title() + "\n(hash samples: " + ", ".join(
            f"{g} {s:.1%}" for g, s in shares.items()) + ")", fontsize="medium")
    save_figure(ax.figure, out / "overlap.png")
    with atomic_path(out / "posterior.nc") as tmp:
        az.to_netcdf(model.idata_, tmp)
    # the counts are the store's, the means the (possibly sampled) rows'
    other = "control" if n_c else "untreated"
    metrics["clients"] = metrics["group"].map({"treated": n_t, "control": group_sizes[other]})
    metrics["conversion"] = metrics["group"].map(
        {"treated": group_buyers["treated"] / n_t,
         "control": group_buyers[other] / max(group_sizes[other], 1)})
    write_parquet(metrics, out / "group_metrics.parquet")
    write_parquet(verdict.balance, out / "balance.parquet")
    write_parquet(by_city, out / "effects_city.parquet")
    write_parquet(by_cluster, out / "effects_cluster.parquet")
    write_parquet(curve, out / "margin_curve.parquet")
    write_parquet(depth_grid, out / "depth_grid.parquet")
    write_parquet(follow_up, out / "follow_up_sizes.parquet")
    write_parquet(ppc_groups, out / "posterior_predictive_groups.parquet")
    summary = {
        "recommendation": sentence,
        "business": {"margin": b.margin, "discount_depth": b.discount_depth},
        "design": {**{k: v for k, v in verdict.as_dict().items() if k != "balance"},
                   "sentence": verdict.sentence(), "support": support,
                   "store_sample": store_sampling},
        "trust": None if trust is None else {k: v for k, v in trust.items() if k != "smd"},
        "closed_form": closed,
        "buyers_comparison": buyers,
        "observational": obs,
        "sensitivity": sensitivity,
        "next_test": {"best_depth": float(best["depth"]),
                      "best_profit_mean": float(best["profit_mean"]),
                      "profit_sd_per_client": sigma,
                      "assumption": "extra list-price revenue proportional to the depth"},
        "hierarchical": {
            "comparison": verdict.primary,
            "comparison_clients": comparison_clients,
            "overall": overall.to_dict(),
            "total_incremental_profit": float(overall["profit_per_client_mean"] * n_t),
            "parameters": model.summary().reset_index(names="parameter").to_dict("records"),
            "pooled_cities": [str(c) for c in model.pooled_cities_],
            "city_levels": {"own": int(sum(c != "other" for c in model.cells_["city"].unique())),
                            "pooled": len(model.pooled_cities_),
                            "min_treated_clients": cfg.min_city_clients,
                            "max_cities": cfg.max_cities},
            "cells": len(model.cells_), "clusters_used": clusters is not None,
            "outside_support": model.outside_support_, "timings_seconds": model.timings_,
            "resampled_with": model.resampled_with_,
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
    return {"message": f"{verdict.primary} comparison: uplift "
                       f"{100 * overall['conversion_uplift_mean']:+.1f} points, "
                       f"P(uplift>0)={overall['conversion_uplift_p_positive']:.2f}, "
                       f"P(profit>0)={overall['profit_per_client_p_positive']:.2f}"
                       + ("" if verdict.control_valid_for_conversion
                          else "; control file not used: " + "; ".join(verdict.control_problems))
                       + f"; {status}",
            "convergence_ok": conv.ok}


def _figures(model: U.HierarchicalUplift, curve: pd.DataFrame, out: Path, b: Any) -> None:
    for by in ("city", "cluster"):
        ax = model.plot_forest(by, b.margin, b.discount_depth)
        save_figure(ax.figure, out / f"forest_{by}.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    w = model.weighted_draws()
    axes[0].hist(100 * w["conversion"], bins=60, density=True, color="C0", alpha=0.7)
    axes[0].axvline(0, color="k", lw=1)
    axes[0].set_xlabel("conversion uplift on the treated, percentage points")
    axes[0].set_title("Posterior of the effect on the treated")
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
    # the same as `shopbayes run uplift [--data DIR] [--results DIR] [--force]`
    from analysis.cli import main

    sys.exit(main(["run", "uplift", *sys.argv[1:]]))
