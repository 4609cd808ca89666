"""The cleaning rules of :mod:`analysis.store.rules`, run in the engine.

The same rules, tables and data-quality summary as the in-memory reference
(:func:`analysis.store.rules.clean`, which tests compare with this one at small scale), as
Ibis expressions, so a store of any size is cleaned in DuckDB (or Spark) and written
straight to Parquet:

* product names → key and category: the **distinct** names (a few thousand) come back to
  Python, get their key and category from :func:`analysis.store.rules.product_key` and
  :func:`analysis.store.rules.product_category`, and go back as a small table the purchases
  are joined to;
* cost flags against each category's median positive cost (a GROUP BY), revenue without
  flagged costs;
* colours lower-cased, ``ё`` → ``е``, split on ``/`` into the long table ``colours``
  (``id``, ``colour``: one row per colour of a purchase row) and ``n_colours``;
* clients: the known-gender table and the lost rows stacked (a known-gender row wins),
  ``personal_coef`` joined; purchases of unknown clients dropped and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.store.aggregates import group_medians
from analysis.store.rules import (
    EXTREME_FACTOR,
    conflicting_duplicates,
    product_category,
    product_key,
)
from analysis.store.sources import StagedStore
from analysis.store.tables import write_parquet

#: column order of the cleaned tables (as the in-memory reference writes them)
CLIENT_COLUMNS = ("id", "gender", "age", "education", "country", "city", "gender_known",
                  "personal_coef")
PURCHASE_COLUMNS = ("id", "product", "cost", "product_sex", "base_sale", "dt",
                    "product_key", "category", "cost_flag", "revenue", "n_colours")


def clean_clients(con: Any, staged: StagedStore, out: Path, quality: dict[str, Any]) -> Any:
    """Write ``clients.parquet`` (columns :data:`CLIENT_COLUMNS`, sorted by id) and fill
    the client part of ``quality``; returns the cleaned clients as an Ibis table."""
    import ibis

    known = con.read_parquet(str(staged.paths["personal_data"]), table_name="known")
    parts = [known.mutate(gender_known=ibis.literal(True))]
    if "personal_data_lost" in staged.paths:
        lost_all = con.read_parquet(str(staged.paths["personal_data_lost"]), table_name="lost")
        lost = lost_all.anti_join(known.select("id"), "id")
        n_lost = int(lost_all.count().to_pyarrow().as_py())
        quality["lost_rows"] = n_lost
        quality["lost_ids_also_in_known_table"] = n_lost - int(
            lost.count().to_pyarrow().as_py())
        # only ids in both tables come back to Python (a handful in any real store)
        in_both = lost_all.semi_join(known.select("id"), "id")
        quality["duplicates_across_client_tables"] = conflicting_duplicates(
            known.semi_join(in_both.select("id"), "id").to_pandas(), in_both.to_pandas())
        parts.append(lost.mutate(gender=ibis.null("int64"),
                                 gender_known=ibis.literal(False)))
    cols = [c for c in CLIENT_COLUMNS if c not in ("gender_known", "personal_coef")]
    clients = ibis.union(*[t.select(*cols, "gender_known") for t in parts])
    if "personal_data_coeffs" in staged.paths:
        coeffs = con.read_parquet(str(staged.paths["personal_data_coeffs"]),
                                  table_name="coeffs").select("id", "personal_coef")
        clients = clients.left_join(coeffs, "id").select(*cols, "gender_known",
                                                        "personal_coef")
        quality["clients_without_personal_coef"] = int(
            clients.personal_coef.isnull().sum().to_pyarrow().as_py() or 0)
    else:
        clients = clients.mutate(personal_coef=ibis.null("float64"))
    clients = clients.select(*CLIENT_COLUMNS).order_by("id")
    write_parquet(con, clients, out / "clients.parquet")
    clients = con.read_parquet(str(out / "clients.parquet"), table_name="clients")
    counts = clients.aggregate(n=clients.count(),
                               missing=(~clients.gender_known).sum()).to_pandas().iloc[0]
    quality["clients"] = int(counts["n"])
    quality["clients_gender_missing"] = int(counts["missing"] or 0)
    return clients


def product_lookup(names: pd.Series) -> pd.DataFrame:
    """``product``, ``product_key``, ``category`` for each distinct product name."""
    names = pd.Series(names.dropna().unique(), dtype=object)
    return pd.DataFrame({"product": names.to_numpy(),
                         "product_key": product_key(names).to_numpy(),
                         "category": product_category(names).to_numpy()})


def _colour_norm(colour: Any) -> Any:
    """Colours lower-cased with ``ё`` as ``е`` (the rule of
    :func:`analysis.store.rules.split_colours`)."""
    return colour.lower().replace("ё", "е")


def clean_purchases(con: Any, staged: StagedStore, clients: Any, out: Path,
                    quality: dict[str, Any]) -> None:
    """Write ``purchases.parquet`` (columns :data:`PURCHASE_COLUMNS`), ``colours.parquet``
    and ``products.parquet``, and fill the purchase part of ``quality``."""
    import ibis

    raw = con.read_parquet(str(staged.paths["purchases"]), table_name="raw_purchases")
    ids = clients.select("id")
    unknown = raw.anti_join(ids, "id")
    quality["purchase_rows"] = int(raw.count().to_pyarrow().as_py())
    quality["purchase_rows_unknown_client"] = int(unknown.count().to_pyarrow().as_py())
    quality["purchase_unknown_client_examples"] = (
        unknown.select("id").limit(5).to_pandas()["id"].tolist())
    known = raw.semi_join(ids, "id")
    lookup = ibis.memtable(product_lookup(known.select("product").distinct().to_pandas()
                                          ["product"]))
    p = known.inner_join(lookup, "product")
    med = group_medians(p.filter(p.cost > 0), "category", "cost")
    median = ibis.memtable(pd.DataFrame({"category": med.index.astype(str),
                                         "median_cost": med.to_numpy(dtype=float)}),
                           schema={"category": "string", "median_cost": "float64"})
    p = p.left_join(median, "category").drop("category_right")
    flag = (ibis.cases((p.cost < 0, "negative"), (p.cost == 0, "zero"),
                       (p.median_cost.notnull() & (p.cost > EXTREME_FACTOR * p.median_cost),
                        "extreme"), else_="ok"))
    # colours of a row: its "/"-separated parts that hold more than blanks; counted by
    # turning each such part into one "x" (no array lambdas: DuckDB 2 and Ibis 12 disagree
    # on their syntax)
    n_colours = (_colour_norm(p.colour).re_replace(r"[^/]*[^/\s][^/]*", "x")
                 .re_replace(r"[^x]", "").length())
    p = p.mutate(cost_flag=flag, n_colours=n_colours.fill_null(0).cast("int64"))
    p = p.mutate(revenue=(p.cost_flag == "ok").ifelse(p.cost, 0).cast("int64"))
    write_parquet(con, p.select(*PURCHASE_COLUMNS), out / "purchases.parquet")
    # the rest reads the written table or the known clients' raw rows, without redoing
    # the joins and flags
    cleaned = con.read_parquet(str(out / "purchases.parquet"), table_name="purchases")
    norm = known.filter(known.colour.notnull()).select("id", norm=_colour_norm(known.colour))
    colours = norm.select("id", part=norm.norm.split("/").unnest())
    colours = colours.select("id", colour=colours.part.strip())
    write_parquet(con, colours.filter(colours.colour != ""), out / "colours.parquet")
    counts = cleaned.group_by(["product_key", "product"]).aggregate(n=lambda t: t.count())
    rank = ibis.row_number().over(group_by="product_key",
                                  order_by=[ibis.desc("n"), "product"])
    top = counts.mutate(r=rank).filter(lambda t: t.r == 0)
    per_key = cleaned.group_by("product_key").aggregate(rows=lambda t: t.count())
    variants = counts.group_by("product_key").aggregate(variants=lambda t: t.count())
    catalogue = (top.inner_join(variants, "product_key").inner_join(per_key, "product_key")
                 .inner_join(lookup.select("product", "category"), "product"))
    catalogue = catalogue.select("product_key", name=catalogue["product"],
                                 variants=catalogue.variants.cast("int64"),
                                 category=catalogue.category,
                                 rows=catalogue.rows.cast("int64")).order_by("product_key")
    write_parquet(con, catalogue, out / "products.parquet")
    c = cleaned
    stats = c.aggregate(
        product_names=c["product"].nunique(), product_keys=c.product_key.nunique(),
        categories=c.category.nunique(),
        colour_set_rows=(c.n_colours > 1).sum(),
        product_sex_missing_rows=c.product_sex.isnull().sum(),
        cost_negative_rows=(c.cost_flag == "negative").sum(),
        cost_zero_rows=(c.cost_flag == "zero").sum(),
        cost_extreme_rows=(c.cost_flag == "extreme").sum(),
    ).to_pandas().iloc[0].to_dict()
    missing = known.colour.isnull().sum().to_pyarrow().as_py()
    order = ("product_names", "product_keys", "categories", "colour_missing_rows",
             "colour_set_rows", "product_sex_missing_rows", "cost_negative_rows",
             "cost_zero_rows", "cost_extreme_rows")  # as the report lists them
    stats = {k: missing if k == "colour_missing_rows" else stats[k] for k in order}
    quality.update({k: int(v) if pd.notna(v) else 0 for k, v in stats.items()})
    quality["cost_rule"] = (f"negative, zero, or > {EXTREME_FACTOR:g} x category median: "
                            "cost excluded from revenue, item kept")


def clean_store(con: Any, staged: StagedStore, out: Path) -> dict[str, Any]:
    """Clean a staged store in the engine and write the tidy tables to ``out``.

    Parameters
    ----------
    con
        Ibis backend (:func:`analysis.store.engine.connect`).
    staged
        Validated Parquet tables (:func:`analysis.store.sources.stage_folder`).
    out
        Folder of ``clients.parquet`` and, when the store has purchases,
        ``purchases.parquet``, ``colours.parquet``, ``products.parquet`` (each written
        atomically).

    Returns
    -------
    dict
        The data-quality summary, with the keys of the in-memory reference's.
    """
    quality: dict[str, Any] = {"sources": dict(staged.sources)}
    clients = clean_clients(con, staged, out, quality)
    if "purchases" in staged.paths:
        clean_purchases(con, staged, clients, out, quality)
    else:
        quality["purchases_note"] = "no purchases table in this data folder"
    return quality
