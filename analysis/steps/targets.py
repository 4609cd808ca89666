"""Step ``targets``: the contact list for country 32, city 1188, with what each client is
worth.

The ``propensity`` step ranks the target city's clients by the expected incremental
profit of contacting them about their best category (``propensity/targets.csv``). This
step adds, for each of them, P(alive) and the expected margin over the next 90 days with
its 94% HDI (``value_90d``, ``value_90d_low``, ``value_90d_high``; money) from the
``next_purchase`` step's BG/NBD and Gamma-Gamma models when that step succeeded (a client
without a purchase has no value: empty), and says what the recommended contacts are worth
beyond the campaign. The ranking stays the contact's expected incremental profit.

It is a step of its own so that ``propensity`` need not wait for ``next_purchase``: run
two at a time (``shopbayes run --jobs 2``) the two models fit side by side.

Outputs in ``results_dir/targets/``: ``contact_list.csv`` and ``summary.json``.

Run alone: ``python -m analysis.steps.targets`` or ``shopbayes run targets``.
"""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd

from analysis.config import Config
from analysis.io import read_json, write_json, write_text
from analysis.pipeline import optional_table, step_dir
from analysis.store.aggregates import id_table
from analysis.store.engine import connect

VALUE_COLUMNS = ["p_alive", "value_90d", "value_90d_low", "value_90d_high"]


def client_value(cfg: Config, con: Any, ranked: pd.DataFrame
                 ) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """``ranked`` (one row per client, column ``id``) with each client's P(alive) and
    expected margin over the next days (``value_90d`` and its 94% HDI, money) from the
    ``next_purchase`` step, when it succeeded (a client without a purchase has none:
    NaN), in the same order; and how many clients got a value (``None`` without the
    step's result)."""
    t = optional_table(cfg, con, "next_purchase", "clients.parquet",
                       {"id": "integer", "p_alive": "number", "value": "number",
                        "value_low": "number", "value_high": "number"})
    if t is None:
        return ranked, None
    ids = id_table(ranked["id"].astype("int64").tolist())
    v = t.semi_join(ids, t.id == ids.id).select(
        id=t.id.cast("int64"), p_alive=t.p_alive, value_90d=t.value,
        value_90d_low=t.value_low, value_90d_high=t.value_high).to_pandas()
    out = ranked.merge(v, on="id", how="left")
    return out, {"clients_with_value": int(out["value_90d"].notna().sum())}


def run(cfg: Config) -> dict[str, Any]:
    src = step_dir(cfg, "propensity")
    ranked = pd.read_csv(src / "targets.csv")
    recommended = int(read_json(src / "summary.json")["budget"]["recommended_contacts"])
    out = step_dir(cfg, "targets")
    out.mkdir(parents=True, exist_ok=True)
    listed, note = client_value(cfg, connect(cfg.engine, memory_limit=cfg.engine_memory),
                                ranked)
    write_text(listed.round(6).to_csv(index=False), out / "contact_list.csv")
    summary: dict[str, Any] = {"clients": len(listed), "recommended_contacts": recommended,
                               "client_value": None}
    if note:  # what the recommended clients are worth beyond this campaign
        top = listed.head(recommended)["value_90d"]
        summary["client_value"] = {**note, "recommended_value_90d": float(top.sum()),
                                   "recommended_with_value": int(top.notna().sum())}
    write_json(summary, out / "summary.json")
    return {"message": f"{len(listed):,} clients listed, "
                       + (f"{note['clients_with_value']:,} with their 90-day value"
                          if note else "without values (next_purchase has no result)")}


if __name__ == "__main__":
    # the same as `shopbayes run targets [--data DIR] [--results DIR] [--force]`
    from analysis.cli import main

    sys.exit(main(["run", "targets", *sys.argv[1:]]))
