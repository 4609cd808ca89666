"""Per-client campaign-1 metrics from the cleaned tables.

Periods: pre (days 0..4), window (5..16), post (17..58); the placebo splits the pre period
into a pseudo-pre stretch (days 0..2) and a pseudo-window (days 3..4) that the email cannot
have touched. Orders are distinct purchase days of a client; items are purchase rows;
revenue excludes flagged costs (see :mod:`analysis.store.rules`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.segments import cluster_labels

PERIODS = {"pre": (0, 4), "window": (5, 16), "post": (17, 58),
           "placebo_pre": (0, 2), "placebo": (3, 4)}
AGE_BANDS = [0, 18, 25, 35, 49, 60, 200]
AGE_LABELS = ["<18", "18-24", "25-34", "35-48", "49-59", "60+"]
GROUPS = ("treated", "control", "untreated")


def client_metrics(purchases: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """Orders, items, revenue and discount share per client and period (zeros for no buys).

    The in-memory reference of :func:`analysis.store.aggregates.period_metrics_table` (which the
    uplift step runs in the engine): ``id`` and ``<period>_orders``, ``_items``,
    ``_revenue``, ``_sale_items`` (float64) for each of ``ids``.
    """
    p = purchases[purchases["id"].isin(ids)]
    out = pd.DataFrame({"id": ids.to_numpy()})
    for name, (lo, hi) in PERIODS.items():
        part = p[(p["dt"] >= lo) & (p["dt"] <= hi)]
        agg = part.groupby("id").agg(orders=("dt", "nunique"), items=("dt", "size"),
                                     revenue=("revenue", "sum"), sale_items=("base_sale", "sum"))
        agg = agg.add_prefix(f"{name}_")
        out = out.merge(agg, left_on="id", right_index=True, how="left")
    return _zero_filled(out)


def _zero_filled(out: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in out.columns if c != "id"]
    return out.fillna({c: 0 for c in cols}).astype({c: "float64" for c in cols})


def metrics_of(per_client: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """:func:`client_metrics`' frame from the engine's per-client rows
    (:func:`analysis.store.aggregates.period_metrics_table`): one row per id of ``ids``, zeros
    for clients without purchases."""
    out = pd.DataFrame({"id": ids.to_numpy()})
    return _zero_filled(out.merge(per_client.astype({"id": out["id"].dtype}), on="id",
                                  how="left"))


def store_frame(clients: pd.DataFrame, purchases: pd.DataFrame | None, treated: list[int],
                control: list[int], clusters: pd.DataFrame | None = None,
                per_client: pd.DataFrame | None = None
                ) -> tuple[pd.DataFrame, dict[str, object]]:
    """One row per client of the store with the uplift data contract (see models.uplift)
    and ``group`` in ``treated`` / ``control`` (the control file) / ``untreated`` (every
    other client).

    The period metrics come from ``purchases`` (:func:`client_metrics`) or, when given,
    from the engine's ``per_client`` rows (:func:`metrics_of`; ``purchases`` may then be
    ``None``). Returns the frame and a report of campaign ids dropped (unknown clients)
    and why.
    """
    known = set(clients["id"].tolist())
    t_ids, c_ids = pd.Index(treated), pd.Index(control)
    report = {
        "treated_ids": len(treated), "control_ids": len(control),
        "dropped_unknown_treated": int((~t_ids.isin(list(known))).sum()),
        "dropped_unknown_control": int((~c_ids.isin(list(known))).sum()),
    }
    base = clients[["id", "gender", "age", "education", "city", "country", "personal_coef"]]
    metrics = (metrics_of(per_client, base["id"]) if per_client is not None
               else client_metrics(purchases, base["id"]))
    df = base.merge(metrics, on="id")
    df["group"] = np.where(df["id"].isin(t_ids), "treated",
                           np.where(df["id"].isin(c_ids), "control", "untreated"))
    df["treated"] = df["group"] == "treated"
    campaign = df["group"] != "untreated"
    report["without_any_purchase"] = int(
        (df.loc[campaign, ["pre_items", "window_items", "post_items"]].sum(axis=1) == 0).sum())
    df["converted"] = df["window_orders"] > 0
    df["revenue"] = df["window_revenue"].astype(float)
    df["items"] = df["window_items"].astype(float)
    df["pre_bought"] = df["pre_orders"] > 0
    df["pre_early_orders"] = df["placebo_pre_orders"]
    df["higher_education"] = (df["education"] == "высшее").astype(float)
    df["age_band"] = pd.cut(df["age"].astype(float), AGE_BANDS, right=False,
                            labels=AGE_LABELS).astype(str)
    df["city"] = df["city"].astype(int).astype(str)
    if clusters is not None:
        df = df.merge(clusters[["id", "cluster"]], on="id", how="left")
        df["cluster"] = cluster_labels(df["cluster"])
    else:
        df["cluster"] = "all"
    df["aov"] = np.where(df["window_orders"] > 0,
                         df["window_revenue"] / df["window_orders"].clip(lower=1), np.nan)
    return df, report


def campaign_frame(clients: pd.DataFrame, purchases: pd.DataFrame, treated: list[int],
                   control: list[int], clusters: pd.DataFrame | None = None
                   ) -> tuple[pd.DataFrame, dict[str, object]]:
    """The campaign's two id files only: treated and the control file (see
    :func:`store_frame`)."""
    ids = pd.Index(list(treated) + list(control))
    df, report = store_frame(clients[clients["id"].isin(ids)], purchases, treated, control,
                             clusters)
    return df[df["group"] != "untreated"].reset_index(drop=True), report
