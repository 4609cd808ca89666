"""Aggregations as Ibis expressions: one definition for DuckDB and Spark.

Each function takes Ibis tables and returns an Ibis expression; ``.to_pandas()`` runs it
in the engine and brings back only the aggregate (cities x days, cells), never the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from analysis.errors import DataError
from models.segment_features import CATEGORY_PREFIX, KIDS_PATTERN

#: days 0..58 of the store's data
N_DAYS = 59
#: the columns :func:`city_day_panel` reads, for :func:`analysis.store.tables.open_table`
PANEL_PURCHASE_COLUMNS = {"id": "integer", "dt": "integer", "revenue": "number"}
PANEL_CLIENT_COLUMNS = {"id": "integer", "city": "integer"}


def city_day_panel(purchases: Any, clients: Any, exclude_ids: Iterable[int] = (),
                   days: int = N_DAYS, source: str = "purchases") -> pd.DataFrame:
    """City x day panel of orders, buyers and revenue, every city and day (zeros kept).

    The engine version of :func:`models.campaign2.build_panel` (same rows, order and
    numbers): ``orders`` counts client-days with a purchase, ``buyers`` distinct clients,
    ``revenue`` the sum of ``revenue``; ``exclude_ids`` (campaign 1's clients) are left
    out.

    Parameters
    ----------
    purchases
        Ibis table with ``id``, ``dt`` (day) and ``revenue`` (money).
    clients
        Ibis table with ``id`` and ``city``; every city in it gets all ``days`` rows.
    exclude_ids
        Client ids to leave out.
    days
        Number of days (rows per city).
    source
        The purchases' file, named in errors.

    Returns
    -------
    pandas.DataFrame
        ``city``, ``day``, ``orders``, ``buyers`` (int64), ``revenue`` (float64); one row
        per city and day, sorted by city then day.

    Raises
    ------
    DataError
        Purchases on days outside ``0..days-1`` (with examples).
    """
    import ibis

    p = purchases
    exclude = sorted({int(i) for i in exclude_ids})
    if exclude:  # an anti-join against a small table, not an IN list of 10,000 literals
        p = p.anti_join(ibis.memtable({"id": exclude}, schema={"id": "int64"}), "id")
    outside = p.filter((p.dt < 0) | (p.dt >= days))
    n_bad = int(outside.count().to_pyarrow().as_py())
    if n_bad:
        shown = outside.select("dt").limit(3).to_pandas()["dt"].tolist()
        raise DataError(source, f"purchases hold days outside 0..{days - 1} (e.g. {shown})",
                        column="dt", n_rows=n_bad, rule=f"in_range(0, {days - 1})")
    c = clients.select("id", "city")
    joined = p.inner_join(c, "id")
    per_client_day = joined.group_by(["city", "dt", "id"]).aggregate(
        revenue=joined.revenue.sum())
    counts = per_client_day.group_by(["city", "dt"]).aggregate(
        orders=per_client_day.count(), buyers=per_client_day.id.nunique(),
        revenue=per_client_day.revenue.sum())
    grid = c.select("city").distinct().cross_join(
        ibis.memtable({"day": list(range(days))}))
    full = grid.left_join(counts, [grid.city == counts.city, grid.day == counts.dt])
    panel = full.select(
        city=grid.city, day=grid.day,
        orders=full.orders.fill_null(0).cast("int64"),
        buyers=full.buyers.fill_null(0).cast("int64"),
        revenue=full.revenue.fill_null(0).cast("float64"),
    ).order_by(["city", "day"])
    out = panel.to_pandas()
    return out.astype({"city": "int64", "day": "int64", "orders": "int64",
                       "buyers": "int64", "revenue": "float64"}).reset_index(drop=True)


#: the purchases' columns :func:`client_behaviour` reads, for
#: :func:`analysis.store.tables.open_table`
BEHAVIOUR_COLUMNS = {"id": "integer", "dt": "integer", "revenue": "number",
                     "base_sale": "integer", "category": "string", "product_key": "string"}


def client_behaviour(purchases: Any, exclude_days: tuple[int, int] | None = (5, 16),
                     last_day: int | None = None) -> pd.DataFrame:
    """Per-client purchase behaviour outside ``exclude_days``, computed in the engine.

    The engine version of :func:`models.segment_features.client_behaviour` (same index,
    columns, dtypes and numbers): the engine groups by client and by client x category;
    only those per-client rows come back.

    Parameters
    ----------
    purchases
        Ibis table with ``id``, ``dt`` (day), ``revenue`` (money), ``base_sale`` (0/1,
        may be null), ``category`` and ``product_key`` (may be null).
    exclude_days
        Days left out, inclusive (the campaign-1 window by default); ``None`` keeps all.
    last_day
        Day recency is measured from (default: the last day of any purchase).

    Returns
    -------
    pandas.DataFrame
        Index ``id``; ``items``, ``orders`` (distinct purchase days), ``revenue``,
        ``recency`` (days), ``sale_items``, ``kids_items`` and one ``cat__<category>``
        count per category (categories sorted by name). Clients without purchases in the
        kept days are absent.
    """
    p = purchases
    last = (int(p.dt.max().to_pyarrow().as_py()) if last_day is None else int(last_day))
    if exclude_days is not None:
        lo, hi = exclude_days
        p = p.filter((p.dt < lo) | (p.dt > hi))
    p = p.mutate(kids=p.product_key.re_search(KIDS_PATTERN).fill_null(False).cast("int64"),
                 base_sale=p.base_sale.fill_null(0).cast("int64"),
                 category=p.category.fill_null("unknown"))
    per_client = p.group_by("id").aggregate(
        items=p.count(), orders=p.dt.nunique(), revenue=p.revenue.sum().cast("float64"),
        recency=(last - p.dt.max()).cast("int64"), sale_items=p.base_sale.sum(),
        kids_items=p.kids.sum())
    out = per_client.to_pandas().set_index("id").sort_index()
    long = p.group_by(["id", "category"]).aggregate(n=p.count()).to_pandas()
    counts = long.pivot(index="id", columns="category", values="n").fillna(0)
    counts = counts.reindex(columns=sorted(counts.columns)).astype("int64")
    counts.columns = [CATEGORY_PREFIX + str(c) for c in counts.columns]
    counts.columns.name = None
    out = out.astype({"items": "int64", "orders": "int64", "revenue": "float64",
                      "recency": "int64", "sale_items": "int64", "kids_items": "int64"})
    out = out.join(counts)
    out.index = out.index.astype("int64")
    out.index.name = "id"
    return out
