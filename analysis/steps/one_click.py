"""Step ``one_click``: the second case. Which clients of the "В один клик" online store
will buy less, why, and what to offer them.

1. Load and clean the four files (:mod:`analysis.steps.one_click_data`).
2. Compare two models of P(activity declined) on the same stratified outer folds:
   a scikit-learn search across five model families, nested inside each outer fold
   (:mod:`models.decline`), and a hierarchical Bayesian logistic model with partial
   pooling over favourite category and service type (:mod:`models.hierarchical_logit`,
   compiled once, refitted per fold). ROC-AUC, log loss, Brier, ECE and reliability
   curves from the out-of-fold probabilities.
3. Explain: permutation importance of the search winner on held-out folds, Kernel SHAP
   values of each fold's winner for held-out clients (:mod:`models.explain`; a summary
   plot and the top drivers per action segment), posterior coefficients of the Bayesian
   model (fitted on all clients, every convergence check reported), and where they agree.
4. Act: action segments from P(decline) (out of fold, from the model with the lower
   log loss) and profit, profiled, with offers generated from each segment's numbers and
   the profit at risk with a 94% interval from the Bayesian posterior.

Degenerate input: an activity level with fewer clients than the nested folds need
(:func:`check_classes`; 7 for 5 x 5) stops the step before any fitting with a
:class:`DataError` naming the level, its count, the need and a fold setting that runs; a
grid search with a NaN fold score is an error (:func:`models.decline.search`). A model
drives the segments only when it is better than the base rate (rule and sources in
:mod:`models.cv_checks`); when neither is, no segments or offers are built, and the CLI
message and ``summary.json`` (``better_than_base_rate``, ``segments_withheld``) say so.

Outputs in ``results_dir/one_click/``. Run: ``shopbayes run one-click --data DIR``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from analysis.config import Config, load_config
from analysis.errors import DataError
from analysis.io import atomic_path, read_json, save_figure, write_json, write_parquet
from analysis.model_store import save_model
from analysis.pipeline import StepSkipped, step_dir
from analysis.steps.figures import reliability_figure
from analysis.steps.one_click_data import CATEGORICAL, FEATURES, LABELS, NUMERIC, load_one_click
from models import explain
from models.classification_metrics import binary_metrics, reliability
from models.cv_checks import (
    BaseRateCheck,
    base_rate_check,
    min_class_members,
    prior_oof,
    too_few_members,
)
from models.decline import nested_cv, outer_folds, search
from models.hierarchical_logit import HierarchicalLogit
from models.offer_segments import (
    SegmentRules,
    assign_segments,
    offers,
    profile_segments,
    profit_at_risk,
)
from models.sampling import chosen_backend

#: Inputs of the Bayesian model: NUMERIC without the exact linear combinations (revenue
#: last month and the month before, minutes last month follow from the levels and changes
#: kept), so each coefficient is identified and readable.
BAYES_NUMERIC = ["marketing_6m", "marketing_month", "tenure_days", "promo_share",
                 "categories_per_visit", "unpaid_items", "service_errors", "pages_per_visit",
                 "revenue_m0", "revenue_change", "revenue_change_prev", "minutes_m0",
                 "minutes_change"]
BAYES_GROUPS = ["category", "service"]
BAYES_INDICATORS = {"consent": "да"}
SKLEARN_NAME = "scikit-learn search (nested CV)"
BAYES_NAME = "hierarchical Bayesian logistic"


def bayes_model(cfg: Config) -> HierarchicalLogit:
    return HierarchicalLogit(BAYES_NUMERIC, BAYES_GROUPS, dict(BAYES_INDICATORS),
                             sampler=cfg.sampler_for("one_click"))


def _bayes_cv(cfg: Config, X: pd.DataFrame, y: np.ndarray,
              splits: list[tuple[np.ndarray, np.ndarray]]
              ) -> tuple[np.ndarray, list[dict[str, Any]], HierarchicalLogit, float]:
    """Out-of-fold posterior-mean probabilities (one compiled model, refitted per fold),
    then the fit on all clients."""
    model = bayes_model(cfg)
    t0 = time.perf_counter()
    sampler = model.compile(X, y)
    compile_s = time.perf_counter() - t0
    oof = np.full(len(y), np.nan)
    folds = []
    for i, (tr, te) in enumerate(splits):
        model.fit(X.iloc[tr], y[tr], seed=cfg.seed + i, sampler=sampler)
        oof[te] = model.predict_proba(X.iloc[te])[:, 1]
        folds.append({"fold": i, **model.convergence_.as_dict()})
    model.fit(X, y, seed=cfg.seed, sampler=sampler)
    return oof, folds, model, compile_s


def _agreement(importance: pd.DataFrame, coefs: pd.DataFrame, top: int = 5
               ) -> dict[str, Any]:
    """Where permutation importance and posterior coefficients agree on the features both
    models use."""
    both = importance.merge(coefs[["feature", "mean", "hdi_low", "hdi_high"]]
                            .rename(columns={"mean": "coef"}), on="feature")
    both["abs_coef"] = both["coef"].abs()
    rho = float(spearmanr(both["mean"], both["abs_coef"]).statistic) if len(both) > 2 \
        else float("nan")
    top_perm = both.nlargest(top, "mean")["feature"].tolist()
    top_bayes = both.nlargest(top, "abs_coef")["feature"].tolist()
    return {"features_compared": len(both), "spearman": rho, "top_permutation": top_perm,
            "top_bayes": top_bayes, "agree": [f for f in top_perm if f in top_bayes],
            "only_permutation": [f for f in top_perm if f not in top_bayes],
            "only_bayes": [f for f in top_bayes if f not in top_perm]}


def _truth_check(folder: Path, coefs: pd.DataFrame) -> dict[str, Any] | None:
    """On the synthetic stand-in: the planted coefficients against the posterior (features
    absent from the truth have a planted effect of 0 given the others)."""
    truth_file = folder / "truth.json"
    if not truth_file.exists():
        return None
    truth = read_json(truth_file)
    c = coefs[coefs["feature"].isin(BAYES_NUMERIC)].copy()
    planted = truth["beta_per_sd"]
    # the stand-in plants effects of minutes_m1 and minutes_m0; the model uses minutes_m0
    # and minutes_change = m0 - m1, so only features with a one-to-one truth are compared
    comparable = [f for f in c["feature"] if f not in ("minutes_m0", "minutes_change")]
    c = c[c["feature"].isin(comparable)]
    c["truth"] = c["feature"].map(planted).fillna(0.0)
    c["covered"] = (c["hdi_low"] <= c["truth"]) & (c["truth"] <= c["hdi_high"])
    return {"coverage_94": float(c["covered"].mean()), "features": len(c),
            "missed": c.loc[~c["covered"], "feature"].tolist(),
            "declined_share": truth.get("declined_share")}


ACTIVITY_COLUMN = "Покупательская активность"
LEVEL_NAMES = {1: "'Снизилась' (activity declined)",
               0: "'Прежний уровень' (activity kept)"}


def check_classes(folder: Path, y: np.ndarray, outer_folds: int, inner_folds: int) -> None:
    """Stop before any cross-validation when an activity level has too few clients for
    the nested folds asked.

    A level needs :func:`models.cv_checks.min_class_members` ``(outer_folds,
    inner_folds)`` clients: one in every outer test fold, and ``inner_folds`` in every
    outer training part, so that every inner test fold holds both levels (otherwise its
    ROC-AUC is NaN and the grid search would rank nothing). 7 for the default 5 x 5.

    Parameters
    ----------
    folder
        The case's data folder (names ``market_file.csv`` in the message).
    y
        1 = activity declined, shape ``(n,)``.
    outer_folds, inner_folds
        The ``[one_click]`` settings.

    Raises
    ------
    DataError
        On ``market_file.csv``'s activity column: which level, how many clients it has,
        how many the folds need, and the fold setting that would run, if any.
    """
    need = min_class_members(outer_folds, inner_folds)
    short = too_few_members(y, need)
    if not short:
        return
    cls, k = short[0]
    fits = [f for f in range(min(outer_folds, inner_folds), 1, -1)
            if min_class_members(f, f) <= k]
    todo = (f"set outer_folds = inner_folds = {fits[0]} under [one_click] in the config "
            f"(the most that run on {k} clients; so few rarely beat the base rate, which "
            "the step then reports)" if fits else "no fold setting can run on so few")
    raise DataError(
        folder / "market_file.csv",
        f"{LEVEL_NAMES[cls]} has {k:,} clients ({LEVEL_NAMES[1 - cls].split(' (')[0]}: "
        f"{int((y == 1 - cls).sum()):,}); nested cross-validation with {outer_folds} outer "
        f"and {inner_folds} inner folds needs at least {need} of each level ({inner_folds} "
        f"in every outer training part). Add clients of that level, or {todo}",
        column=ACTIVITY_COLUMN)


def segment_model(metrics: pd.DataFrame, checks: dict[str, BaseRateCheck]) -> str | None:
    """The model whose P(decline) drives the segments: the lowest out-of-fold log loss
    among the models better than the base rate, or ``None`` when none is.

    Parameters
    ----------
    metrics
        One row per model (``model``, ``log_loss``).
    checks
        :func:`models.cv_checks.base_rate_check` of each model.

    Returns
    -------
    str or None
    """
    ok = metrics[metrics["model"].map(lambda k: checks[k].better)]
    return str(ok.sort_values("log_loss")["model"].iloc[0]) if len(ok) else None


def withheld_reason(checks: dict[str, BaseRateCheck], y: np.ndarray) -> str:
    """Why no segments or offers were built, in words, with each model's numbers."""
    parts = "; ".join(f"{k}: {c.reason}" for k, c in checks.items())
    return (f"Neither model is better than the base rate ({int(y.sum())} of {len(y)} "
            f"clients declined, {y.mean():.1%}), so no action segments or offers were "
            f"built from their P(decline). {parts}.")


def run(cfg: Config) -> dict[str, Any]:
    oc = cfg.one_click
    folder = cfg.one_click_dir
    if not (folder / "market_file.csv").exists():
        raise StepSkipped(f"no one-click data in {folder} (put the four files there, pass "
                          "--data DIR, or write the stand-in with `shopbayes demo-data`)")
    t_start = time.perf_counter()
    data = load_one_click(folder, oc.outlier_factor, oc.outlier_rule)
    X, y = data.X, data.y
    check_classes(folder, y, oc.outer_folds, oc.inner_folds)
    load_s = time.perf_counter() - t_start
    splits = outer_folds(y, oc.outer_folds, cfg.seed)
    n_jobs = min(2, os.cpu_count() or 1)

    t0 = time.perf_counter()
    nested = nested_cv(X, y, CATEGORICAL, NUMERIC, splits, oc.inner_folds, cfg.seed, n_jobs,
                       oc.permutation_repeats, oc.shap_clients_per_fold, oc.shap_background,
                       oc.shap_nsamples)
    nested_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    final = search(X, y, CATEGORICAL, NUMERIC, oc.inner_folds, cfg.seed, n_jobs)
    search_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    bayes_oof, bayes_folds, bayes, compile_s = _bayes_cv(cfg, X, y, splits)
    bayes_s = time.perf_counter() - t0
    conv = bayes.convergence_
    assert conv is not None

    oof = {SKLEARN_NAME: nested.oof, BAYES_NAME: bayes_oof}
    metrics = pd.DataFrame([{"model": k, **binary_metrics(y, p)} for k, p in oof.items()])
    fold_auc = pd.DataFrame([
        {"fold": i, "model": k, "roc_auc": binary_metrics(y[te], p[te])["roc_auc"]}
        for k, p in oof.items() for i, (_, te) in enumerate(splits)])
    diff = (fold_auc.pivot(index="fold", columns="model", values="roc_auc")
            .pipe(lambda t: t[BAYES_NAME] - t[SKLEARN_NAME]))
    base_p = prior_oof(y, splits)
    checks = {k: base_rate_check(y, p, base_p) for k, p in oof.items()}
    chosen = segment_model(metrics, checks)
    calib = pd.concat([reliability(y, p).assign(model=k) for k, p in oof.items()])

    coefs = bayes.coefficients()
    groups = bayes.summary()
    groups = groups[groups["parameter"].str.match(r"^(u|sigma)_")].reset_index(drop=True)
    agreement = _agreement(nested.importance, coefs)

    t0 = time.perf_counter()
    rules = SegmentRules(oc.p_threshold, oc.profit_quantile, oc.promo_threshold,
                         oc.unpaid_quantile, oc.min_smd)
    frame = data.clients
    draws = bayes.predict_draws(X, seed=cfg.seed)
    lo, hi = np.quantile(draws, [0.03, 0.97], axis=0)
    if chosen is not None:
        p = oof[chosen]
        segment, thresholds = assign_segments(frame, p, rules)
        profiles, smd = profile_segments(frame, segment, p, NUMERIC)
        profiles = profiles.merge(profit_at_risk(frame["profit"].to_numpy(), draws, segment),
                                  on="segment")
        offer_table = offers(frame, segment, smd, profiles, rules.min_smd)
    else:  # no model beats the base rate: its P(decline) must not drive any action
        p = np.full(len(y), np.nan)
        segment = pd.Series([None] * len(y), index=frame.index, dtype=object)
        thresholds, profiles, smd, offer_table = None, pd.DataFrame(), None, None
    clients = pd.DataFrame({
        "id": frame.index.to_numpy(), "declined": y, "profit": frame["profit"].to_numpy(),
        "p_decline": p, "p_decline_sklearn_oof": nested.oof, "p_decline_bayes_oof": bayes_oof,
        "p_decline_bayes_fit": draws.mean(axis=0), "p_decline_bayes_low": lo,
        "p_decline_bayes_high": hi, "segment": segment.to_numpy(),
        **{c: frame[c].to_numpy() for c in FEATURES}})
    segments_s = time.perf_counter() - t0

    out = step_dir(cfg, "one_click")
    write_parquet(clients, out / "clients.parquet")
    write_parquet(metrics, out / "metrics.parquet")
    write_parquet(fold_auc, out / "fold_auc.parquet")
    write_parquet(calib, out / "calibration.parquet")
    write_parquet(final.candidates, out / "search_candidates.parquet")
    write_parquet(nested.folds, out / "nested_folds.parquet")
    write_parquet(nested.importance, out / "permutation_importance.parquet")
    write_parquet(coefs, out / "coefficients.parquet")
    write_parquet(groups, out / "group_effects.parquet")
    segment_files = ("segment_profiles.parquet", "segment_smd.parquet", "offers.parquet",
                     "segments.png")
    if chosen is not None:
        write_parquet(profiles, out / "segment_profiles.parquet")
        write_parquet(smd, out / "segment_smd.parquet")
        write_parquet(offer_table, out / "offers.parquet")
    else:  # segments and offers of an earlier run must not outlive the verdict
        for name in segment_files:
            (out / name).unlink(missing_ok=True)
    if checks[SKLEARN_NAME].better:
        save_model(final.best, out / "model", FEATURES)
    else:  # a search winner no better than the base rate is not offered for scoring
        shutil.rmtree(out / "model", ignore_errors=True)
    with atomic_path(out / "posterior.nc") as tmp:
        az.to_netcdf(bayes.idata_, tmp)
    _figures(calib, nested.importance, bayes, clients, thresholds, out)
    shap_summary = _shap_outputs(nested.shap, X, segment, out)
    ppc = pd.concat([bayes.posterior_predictive(X, y, g, seed=cfg.seed, p_draws=draws)
                     .rename(columns={g: "level"}).assign(group=g) for g in BAYES_GROUPS])
    write_parquet(ppc, out / "posterior_predictive.parquet")
    total_s = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        "data_dir": str(folder), "cleaning": data.log, "fixes": data.fixes,
        "outliers": data.outliers.to_dict("records"),
        "clients": int(len(y)), "declined": int(y.sum()), "declined_share": float(y.mean()),
        "folds": {"outer": oc.outer_folds, "inner": oc.inner_folds},
        "metrics": metrics.to_dict("records"),
        "auc_difference_bayes_minus_sklearn": {"mean": float(diff.mean()),
                                               "sd": float(diff.std(ddof=1))},
        "base_rate": {k: c.as_dict() for k, c in checks.items()},
        "better_than_base_rate": {k: c.better for k, c in checks.items()},
        "chosen_for_segments": chosen,
        "search": {"candidates": int(len(final.candidates)), "best_family": final.best_family,
                   "best_params": final.best_params, "inner_auc": final.best_score,
                   "by_family": final.by_family().to_dict("records"),
                   "nested_folds": nested.folds.to_dict("records")},
        "agreement": agreement,
        "shap": shap_summary,
        "priors": {k: list(v[:2]) if v[0] == "HalfNormal" else list(v)
                   for k, v in bayes.priors.items()},
        "prior_predictive": bayes.prior_predictive(X, seed=cfg.seed),
        "posterior_predictive_inside_90": float(ppc["inside"].mean()),
        "convergence": conv.as_dict(),
        "convergence_folds": bayes_folds,
        "sampler": {"backend": chosen_backend(bayes.sampler),
                    # per chain: kept (sized by the checks), and the ceiling
                    "draws": int(bayes.idata_.posterior.sizes["draw"]),
                    "max_draws": bayes.sampler.draws, "chains": bayes.sampler.chains,
                    "target_accept": bayes.sampler.target_accept},
        "segment_rules": thresholds,
        "segments": profiles.to_dict("records"),
        "timings_seconds": {"load": round(load_s, 2), "nested_search": round(nested_s, 1),
                            "final_search": round(search_s, 1),
                            "bayes_compile": round(compile_s, 1),
                            "bayes_cv_and_fit": round(bayes_s, 1),
                            "segments": round(segments_s, 2), "total": round(total_s, 1)},
    }
    if chosen is None:
        summary["segments_withheld"] = withheld_reason(checks, y)
    truth = _truth_check(folder, coefs)
    if truth:
        summary["demo_truth"] = truth
    write_json(summary, out / "summary.json")
    status = "converged" if conv.ok else "FAILED CONVERGENCE: " + "; ".join(conv.problems)
    m = metrics.set_index("model")["roc_auc"]
    verdict = "" if chosen is not None else (
        f"; NOT BETTER THAN THE BASE RATE ({int(y.sum())} of {len(y)} declined): no "
        "segments or offers")
    return {"message": f"{len(y)} clients; CV ROC-AUC search {m[SKLEARN_NAME]:.3f}, "
                       f"Bayesian {m[BAYES_NAME]:.3f}{verdict}; Bayesian fit {status}",
            "convergence_ok": conv.ok}


def _shap_outputs(values: pd.DataFrame, X: pd.DataFrame, segment: pd.Series, out: Path
                  ) -> dict[str, Any] | None:
    """Write the out-of-fold SHAP values' importance, their top drivers per action segment
    (when there are segments) and shap's summary plot; return what the report states."""
    files = ("shap_importance.parquet", "shap_by_segment.parquet", "shap_summary.png")
    for name in files:  # an earlier run's explanations must not outlive this one's
        (out / name).unlink(missing_ok=True)
    if values.empty:
        return None
    imp = explain.shap_importance(values)
    write_parquet(imp, out / "shap_importance.parquet")
    seg = segment.reindex(values.index)
    if seg.notna().any():
        write_parquet(explain.shap_by_group(values[seg.notna()], seg[seg.notna()]),
                      out / "shap_by_segment.parquet")
    rows = X.loc[values.index]
    fig = explain.shap_summary_plot(values.rename(columns=LABELS), rows.rename(columns=LABELS),
                                    xlabel="SHAP value (log-odds of a decline)")
    save_figure(fig, out / "shap_summary.png")
    return {"clients": int(len(values)), "top": imp["feature"].head(5).tolist(),
            "mean_abs_top": imp["mean_abs_shap"].head(5).round(4).tolist()}


def _figures(calib: pd.DataFrame, importance: pd.DataFrame, bayes: HierarchicalLogit,
             clients: pd.DataFrame, thresholds: dict[str, float] | None, out: Path) -> None:
    fig = reliability_figure(dict(tuple(calib.groupby("model"))),
                             "predicted P(activity declines), out of fold",
                             "observed share that declined",
                             "Calibration on held-out folds", lim=1.0)
    save_figure(fig, out / "calibration.png")
    imp = importance.sort_values("mean")
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(imp) + 1.2))
    ax.barh([LABELS.get(f, f) for f in imp["feature"]], imp["mean"], xerr=imp["sd"],
            color="#ff7f0e")
    ax.set_xlabel("drop in held-out ROC-AUC when shuffled")
    fig.tight_layout()
    save_figure(fig, out / "permutation_importance.png")
    save_figure(bayes.plot(LABELS), out / "coefficients.png")
    if thresholds is None:  # no segments: no model beat the base rate
        plt.close("all")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for seg, g in clients.groupby("segment"):
        ax.scatter(g["p_decline"], g["profit"], s=9, alpha=0.6, label=seg)
    ax.axvline(thresholds["p_decline"], color="grey", ls=":")
    ax.axhline(thresholds["profit"], color="grey", ls=":")
    ax.set_xlabel("P(activity declines), out of fold")
    ax.set_ylabel("monthly profit")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save_figure(fig, out / "segments.png")
    plt.close("all")


if __name__ == "__main__":
    from analysis.pipeline import run as run_pipeline

    res = run_pipeline(load_config(Path("shopbayes.toml")), only="one_click")
    sys.exit(0 if all(r["status"] != "failed" for r in res) else 1)
