"""The figures published from the real store's tables, and the same figures computed on
any data set with the store's schema (to calibrate and check the synthetic generator).

The published figures live in ``analysis/demo/resources/published.json``, each with its source.
:func:`store_figures` computes them with the published definitions from raw tables;
:func:`compare` lays the two side by side with a tolerance per figure (counts are scaled
by the number of clients, so a small demo is compared with the real store's shares).

Definitions (as the published analyses used them): the window is days 5..16; a group's
conversion is the share of its ids with a purchase row in the window; revenue per client
is the window's summed ``cost`` over the group's ids; average purchase value is that
revenue per purchase row (item); ``dt`` quartiles are pandas' linear-interpolation
quantiles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESOURCE = Path(__file__).parent / "resources" / "published.json"
WINDOW = (5, 16)
CAMPAIGN2_DAYS = (15, 45)
CAMPAIGN2_CITY = 1134

#: (figure, kind, tolerance): ``rel`` relative error, ``abs`` absolute difference,
#: ``count`` relative error after scaling by clients, ``set`` overlap of the top values
TOLERANCES: tuple[tuple[str, str, float], ...] = (
    ("purchases.rows", "count", 0.05),
    ("purchases.cost_mean", "rel", 0.08),
    ("purchases.cost_quartiles", "rel", 0.2),
    ("purchases.most_common_prices", "set", 3),
    ("purchases.base_sale_share", "abs", 0.03),
    ("purchases.product_sex_1_share_of_known", "abs", 0.03),
    ("purchases.product_sex_empty_share", "abs", 0.05),
    ("purchases.dt_mean", "abs", 1.5),
    ("purchases.dt_quartiles", "abs", 2.5),
    ("purchases.window_buyers", "count", 0.05),
    ("purchases.day_15_45_buyers", "count", 0.1),
    ("purchases.day_15_45_buyers_city_1134", "count", 0.15),
    ("personal_coef.distinct_values", "abs", 0),
    ("personal_coef.min", "abs", 0.001),
    ("personal_coef.max", "abs", 0.001),
    ("personal_coef.mean", "abs", 0.01),
    ("campaign1.treated_conversion", "abs", 0.015),
    ("campaign1.control_conversion", "abs", 0.0),
    ("campaign1.treated_revenue_per_client", "rel", 0.15),
    ("campaign1.control_revenue_per_client", "rel", 0.15),
    ("campaign1.treated_average_purchase", "rel", 0.15),
    ("campaign1.control_average_purchase", "rel", 0.15),
    ("campaign1.items_per_client_ratio", "rel", 0.12),
)


def load_published() -> dict[str, Any]:
    """The published figures: ``{"purchases.rows": 786260, ...}`` (values only)."""
    raw = json.loads(RESOURCE.read_text(encoding="utf-8"))
    out: dict[str, Any] = {"clients": raw["clients"]["value"]}
    for table in ("purchases", "personal_coef", "campaign1"):
        for name, entry in raw[table].items():
            out[f"{table}.{name}"] = entry["value"]
    return out


def store_figures(clients: pd.DataFrame, purchases: pd.DataFrame, personal_coef: pd.Series,
                  treated_ids: Any, control_ids: Any) -> dict[str, Any]:
    """The published figures computed on one data set.

    Parameters
    ----------
    clients
        Every client (known and lost gender), columns ``id`` and ``city``.
    purchases
        The raw ``purchases`` table (one row per item; ``cost`` in roubles, ``dt`` day).
    personal_coef
        ``personal_coef`` of every client.
    treated_ids, control_ids
        Campaign-1 ids.
    """
    p = purchases
    cost = p["cost"].astype(float)
    known_sex = p["product_sex"].dropna().astype(float)
    lo, hi = WINDOW
    win = p[(p["dt"] >= lo) & (p["dt"] <= hi)]
    c2 = p[p["dt"].isin(CAMPAIGN2_DAYS)]
    c2_ids = pd.Index(c2["id"].unique())
    city = clients.set_index("id")["city"]
    out: dict[str, Any] = {
        "clients": int(len(clients)),
        "purchases.rows": int(len(p)),
        "purchases.cost_mean": float(cost.mean()),
        "purchases.cost_quartiles": [float(q) for q in cost.quantile([0.25, 0.5, 0.75])],
        "purchases.cost_max": float(cost.max()),
        "purchases.cost_min": float(cost.min()),
        "purchases.most_common_prices": [int(v) for v in cost.value_counts().index[:5]],
        "purchases.base_sale_share": float(p["base_sale"].mean()),
        "purchases.product_sex_1_share_of_known": float((known_sex == 1).mean()),
        "purchases.product_sex_empty_share": float(p["product_sex"].isna().mean()),
        "purchases.dt_mean": float(p["dt"].mean()),
        "purchases.dt_quartiles": [float(q) for q in p["dt"].quantile([0.25, 0.5, 0.75])],
        "purchases.window_buyers": int(win["id"].nunique()),
        "purchases.day_15_45_buyers": int(len(c2_ids)),
        "purchases.day_15_45_buyers_city_1134": int(
            (city.reindex(c2_ids) == CAMPAIGN2_CITY).sum()),
        "personal_coef.distinct_values": int(personal_coef.nunique()),
        "personal_coef.min": float(personal_coef.min()),
        "personal_coef.max": float(personal_coef.max()),
        "personal_coef.mean": float(personal_coef.mean()),
    }
    by_id = win.groupby("id").agg(items=("cost", "size"), revenue=("cost", "sum"))
    items = {}
    for name, ids in (("treated", treated_ids), ("control", control_ids)):
        g = by_id.reindex(pd.Index(np.asarray(list(ids)), name="id")).fillna(0)
        out[f"campaign1.{name}_conversion"] = float((g["items"] > 0).mean())
        out[f"campaign1.{name}_revenue_per_client"] = float(g["revenue"].mean())
        out[f"campaign1.{name}_average_purchase"] = float(
            g["revenue"].sum() / max(g["items"].sum(), 1))
        items[name] = float(g["items"].mean())
    out["campaign1.items_per_client_ratio"] = items["treated"] / max(items["control"], 1e-9)
    return out


def _error(kind: str, published: Any, demo: Any, scale: float) -> float:
    if kind == "set":
        return float(len(set(published) - set(demo)))
    pub, got = np.atleast_1d(np.asarray(published, float)), np.atleast_1d(np.asarray(demo, float))
    if kind == "count":
        pub = pub * scale
    diff = np.abs(got - pub)
    if kind in ("rel", "count"):
        diff = diff / np.abs(pub)
    return float(diff.max())


def compare(figures: dict[str, Any], published: dict[str, Any] | None = None) -> pd.DataFrame:
    """Published figure, the data set's figure and the tolerance, one row per figure.

    Counts are compared after scaling the published count by ``clients / 104,989``.
    ``error`` is in the unit of ``kind`` (relative, absolute, or number of the published
    top prices missing from the data set's top five).
    """
    pub = published or load_published()
    scale = figures["clients"] / pub["clients"]
    rows = []
    for name, kind, tol in TOLERANCES:
        err = _error(kind, pub[name], figures[name], scale)
        rows.append({"figure": name, "published": pub[name], "demo": figures[name],
                     "kind": kind, "tolerance": tol, "error": err, "ok": err <= tol})
    return pd.DataFrame(rows)


def demo_figures(data: dict[str, Any]) -> dict[str, Any]:
    """:func:`store_figures` of a data set from :func:`analysis.demo.store.generate`."""
    cl = data["clients"]
    return store_figures(cl[["id", "city"]], data["purchases"], data["coeffs"]["personal_coef"],
                         data["treated_ids"], data["control_ids"])
