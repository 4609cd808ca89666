"""Campaign-1 benchmark cases (imported by benchmarks/run.py in a fresh process)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from models import uplift as U


def synthetic_campaign(n_clients: int, seed: int = 0) -> pd.DataFrame:
    """A campaign with the planted logit model, drawn directly at any size."""
    rng = np.random.default_rng(seed)
    m = json.loads((Path("analysis/demo/resources/marginals.json")).read_text())
    # the same 60 cities at every size, so the model (its parameters) is the same and only
    # the number of clients changes: that isolates what aggregation buys
    cities = pd.DataFrame(m["cities"]).nlargest(60, "clients")
    city = rng.choice(cities.city.to_numpy(), n_clients, p=cities.clients / cities.clients.sum())
    tau_city = dict(zip(cities.city, rng.normal(0, 0.2, len(cities)), strict=True))
    cluster = rng.integers(0, 4, n_clients)
    treated = rng.random(n_clients) < 0.5
    pre = rng.random(n_clients) < 0.2
    eta = -0.3 + 0.8 * pre + treated * (0.35 + pd.Series(city).map(tau_city).to_numpy()
                                        + np.array([-0.15, 0.05, 0.35, -0.25])[cluster])
    conv = rng.random(n_clients) < expit(eta)
    revenue = np.where(conv, rng.lognormal(9, 1, n_clients), 0.0)
    return pd.DataFrame({"treated": treated, "converted": conv, "revenue": revenue,
                         "pre_bought": pre, "city": city.astype(str),
                         "cluster": cluster.astype(str)})


def closed_form(n: int = 10_000) -> dict:
    df = synthetic_campaign(n)
    t0 = time.perf_counter()
    U.beta_binomial_ab(int(df[df.treated].converted.sum()), int(df.treated.sum()),
                       int(df[~df.treated].converted.sum()), int((~df.treated).sum()), draws=4000)
    U.arpu_ab(df, draws=4000)
    return {"inner_seconds": time.perf_counter() - t0}


def hierarchical(n: int, backend: str = "auto") -> dict:
    """The hierarchical fit with the sampler settings the uplift step uses."""
    from dataclasses import asdict, replace

    from analysis.config import Config

    settings = replace(Config().sampler_for("uplift"), backend=backend)
    df = synthetic_campaign(n)
    t0 = time.perf_counter()
    m = U.HierarchicalUplift(sampler_config=asdict(settings), seed=1).fit(df)
    return {"inner_seconds": time.perf_counter() - t0, "cells": len(m.cells_),
            "convergence_ok": m.convergence_.ok, "problems": m.convergence_.problems}


def rows_pymc_default(n: int = 10_000) -> dict:
    """The same conversion model on client rows (Bernoulli) with PyMC's default sampler."""
    import pymc as pm

    df = synthetic_campaign(n)
    rows = U.pool_small_cities(df, 30)[0].assign(age_band="all")
    rows = pd.concat([rows, U.pre_period_keys(rows)], axis=1).assign(
        n=1, y=lambda d: d.converted.astype(int), spenders=0, s1=0.0, r1=0.0)
    m = U.HierarchicalUplift()
    m.cells_, m.has_items_ = rows.reset_index(drop=True), False
    m.log_pre_mean_, m.log_pre_sd_ = {}, 1.0
    model = m.build_model(m.cells_)
    t0 = time.perf_counter()
    with model:
        pm.sample(draws=2000, tune=1000, chains=2, cores=2, random_seed=1, progressbar=False)
    return {"inner_seconds": time.perf_counter() - t0}


def bambi_crosscheck(n: int = 10_000, draws: int = 1000, seed: int = 1) -> dict:
    """The readable cross-check: the uplift model as a bambi formula on the same cells.

    ``p(y, n) ~ treated + pre_level + (1 + treated | city) + (1 + treated | cluster)``,
    binomial family, sampled with nutpie; its overall conversion uplift (averaged over the
    treated clients' cells) against :class:`models.uplift.HierarchicalUplift`'s, with both
    fits' convergence checks. bambi's group effects are not zero-sum, so its intercept and
    treatment slope trade off against the group means (the ridge the hand-written model
    avoids); agreement is judged on the uplift, which both identify.
    """
    from dataclasses import asdict

    import bambi as bmb

    from analysis.config import Config
    from models.diagnostics import check_convergence

    df = synthetic_campaign(n, seed=0)
    t0 = time.perf_counter()
    m = U.HierarchicalUplift(sampler_config=asdict(Config().sampler_for("uplift")),
                             seed=seed).fit(df)
    hand_seconds = time.perf_counter() - t0
    hand = m.effects(0.35, 0.15).iloc[0]
    cells = m.cells_.assign(treated=lambda c: c["treated"].astype(int))
    t0 = time.perf_counter()
    model = bmb.Model("p(y, n) ~ treated + pre_level + (1 + treated | city) "
                      "+ (1 + treated | cluster)", cells, family="binomial")
    idata = model.fit(draws=draws, tune=1000, chains=2, random_seed=seed,
                      inference_method="nutpie", progressbar=False)
    bambi_seconds = time.perf_counter() - t0
    treated = cells[cells["treated"] == 1]
    p = {}
    for arm in (0, 1):
        pred = model.predict(idata, data=treated.assign(treated=arm), kind="response_params",
                             inplace=False)
        p[arm] = pred.posterior["p"].stack(s=("chain", "draw")).values  # cells x draws
    w = treated["n"].to_numpy(float) / treated["n"].sum()
    uplift = w @ (p[1] - p[0])
    conv = check_convergence(idata, var_names=[v for v in idata.posterior.data_vars
                                               if not v.endswith("_mean")
                                               and v not in ("p",)])
    lo, hi = U.hdi(uplift)
    return {"n_clients": n, "cells": len(cells),
            "hand_uplift": float(hand["conversion_uplift_mean"]),
            "hand_hdi": [float(hand["conversion_uplift_hdi_low"]),
                         float(hand["conversion_uplift_hdi_high"])],
            "hand_seconds": hand_seconds, "hand_converged": m.convergence_.ok,
            "hand_problems": m.convergence_.problems,
            "bambi_uplift": float(uplift.mean()), "bambi_hdi": [lo, hi],
            "bambi_seconds": bambi_seconds, "bambi_converged": conv.ok,
            "bambi_problems": conv.problems, "inner_seconds": hand_seconds}
