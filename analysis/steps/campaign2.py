"""Step ``campaign2``: the billboard discount days in city 1134 (days 15 and 45).

Builds the city x day panel in the query engine (:func:`analysis.store.aggregates.
city_day_panel`, DuckDB by default) without campaign 1's treated and control clients (their
window, days 5..16, includes day 15), keeps the 40 largest cities as comparison cities
and pools the rest into "other", fits :class:`models.campaign2.Campaign2Model` with
placebo terms (cities 1188 and 1157 on the campaign days; city 1134 on days 25 and 35),
and writes ``results_dir/campaign2/``: ``summary.json``, ``counterfactual.parquet``,
``placebo.parquet``, ``posterior.nc`` and ``counterfactual.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import arviz as az
import matplotlib.pyplot as plt

from analysis.config import Config
from analysis.io import atomic_path, save_figure, write_json, write_parquet
from analysis.pipeline import StepSkipped, step_dir
from analysis.steps.clean import purchases_path, read_campaign_ids
from analysis.store.aggregates import (
    PANEL_CLIENT_COLUMNS,
    PANEL_PURCHASE_COLUMNS,
    city_day_panel,
)
from analysis.store.engine import connect
from analysis.store.tables import open_table
from models.campaign2 import Campaign2Model, check_design, pool_cities

CITY, DAYS = 1134, (15, 45)
PLACEBO_CITIES, PLACEBO_DAYS = (1188, 1157), (25, 35)


def run(cfg: Config) -> dict[str, Any]:
    try:
        ids = read_campaign_ids(cfg)
        exclude = set(ids["treated"]) | set(ids["control"])
    except StepSkipped:
        exclude = set()
    # the panel is a GROUP BY in the engine: only cities x days come back
    con = connect(cfg.engine, memory_limit=cfg.engine_memory)
    source = purchases_path(cfg)
    purchases = open_table(con, source, PANEL_PURCHASE_COLUMNS)
    clients = open_table(con, step_dir(cfg, "clean") / "clients.parquet", PANEL_CLIENT_COLUMNS)
    panel = city_day_panel(purchases, clients, exclude, source=str(source))
    present = set(panel["city"])
    placebo = tuple(c for c in PLACEBO_CITIES if c in present)
    panel = pool_cities(panel, keep=40, must_keep=(CITY, *placebo))
    try:
        check_design(panel, CITY, DAYS)
    except ValueError as exc:  # the data cannot answer: say what is missing, fit nothing
        raise StepSkipped(f"campaign 2 cannot be evaluated: {exc}") from exc
    model = Campaign2Model(city=CITY, days=DAYS, placebo_cities=placebo,
                           placebo_days=PLACEBO_DAYS, sampler_config=cfg.sampler_for("campaign2"),
                           seed=cfg.seed).fit(panel)
    b = cfg.business
    effects = model.effects()
    inc = model.incremental(b.margin, b.campaign2_discount_depth)
    placebo_table = model.placebo()
    cf = model.counterfactual()
    conv = model.convergence_
    out = step_dir(cfg, "campaign2")
    sentence = _conclusion(effects, inc, placebo_table, b)
    sentence = conv.caveat("the campaign-2 model") + sentence
    _plot(cf, out)
    with atomic_path(out / "posterior.nc") as tmp:
        az.to_netcdf(model.idata_, tmp)
    write_parquet(cf, out / "counterfactual.parquet")
    write_parquet(placebo_table, out / "placebo.parquet")
    write_json({"conclusion": sentence, "city": CITY, "days": list(DAYS),
                "comparison_cities": int(panel["city"].nunique() - 1),
                "excluded_campaign1_clients": len(exclude), "effects": effects,
                "incremental": inc, "priors": {k: list(v) for k, v in model.priors.items()},
                "placebo_days": list(PLACEBO_DAYS),
                "placebo_all_include_zero": bool(placebo_table["hdi_includes_zero"].all()),
                "convergence": conv.as_dict(),
                "resampled_with": model.resampled_with_}, out / "summary.json")
    o = effects["orders"]
    return {"message": f"orders {100 * o['mean']:+.0f}% on discount days "
                       f"(HDI {100 * o['hdi_low']:.0f}..{100 * o['hdi_high']:.0f}%); "
                       + ("converged" if conv.ok else "FAILED CONVERGENCE")}


def _conclusion(effects: dict, inc: dict, placebo: Any, b: Any) -> str:
    o, r, p = effects["orders"], effects["revenue"], inc["incremental_profit"]
    words = (f"On the billboard discount days, city {CITY} had {100 * o['mean']:.0f}% more "
             f"orders than comparable cities predict (94% HDI {100 * o['hdi_low']:.0f}% to "
             f"{100 * o['hdi_high']:.0f}%, P(effect > 0) = {o['p_positive']:.2f}) and "
             f"{100 * r['mean']:.0f}% more revenue. ")
    around = effects["orders_around"]
    if around["hdi_high"] < 0:
        words += "Buying on the neighbouring days fell, so part of the effect was pulled forward. "
    else:
        words += "The neighbouring days show no clear shift of buying. "
    words += (f"At a {b.margin:.0%} margin and a {b.campaign2_discount_depth:.0%} discount the "
              f"incremental profit is {p['mean']:,.0f} (94% HDI {p['hdi_low']:,.0f} to "
              f"{p['hdi_high']:,.0f}; P(profit > 0) = {p['p_positive']:.2f}). ")
    if len(placebo) and not placebo["hdi_includes_zero"].all():
        words += "Caution: some placebo checks found an 'effect' where there was none. "
    elif len(placebo):
        words += "Placebo cities and days show no effect, which supports the comparison. "
    return words


def _plot(cf: Any, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.fill_between(cf["day"], cf["cf_low"], cf["cf_high"], color="C0", alpha=0.25,
                    label="without the campaign (94% interval)")
    ax.plot(cf["day"], cf["counterfactual_orders"], color="C0", lw=1)
    ax.plot(cf["day"], cf["orders"], "o-", color="C3", ms=3, lw=1, label="observed")
    for d in cf.loc[cf["campaign_day"], "day"]:
        ax.axvline(d, color="grey", ls=":", lw=1)
    ax.set_xlabel("day")
    ax.set_ylabel(f"orders in city {CITY}")
    ax.set_title(f"City {CITY}: observed orders and the no-campaign counterfactual")
    ax.legend(fontsize=8)
    save_figure(fig, out / "counterfactual.png")


if __name__ == "__main__":
    # the same as `shopbayes run campaign2 [--data DIR] [--results DIR] [--force]`
    from analysis.cli import main

    sys.exit(main(["run", "campaign2", *sys.argv[1:]]))
