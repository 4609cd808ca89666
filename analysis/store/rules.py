"""Turn validated raw tables into the tidy tables every model reads.

Rules (each counted in the data-quality summary):

* **Product key**: lower case, ``ё`` → ``е``, punctuation to spaces, spaces collapsed,
  words sorted, so case, spacing, punctuation and word-order variants of one item share
  a key. The display name is the key's most frequent spelling. The **category** is the
  first Cyrillic word of the name (types are Russian words, brands Latin), so
  ``Кроссовки Nike ...`` and ``Nike кроссовки ...`` both land in ``кроссовки``.
* **Colours**: ``ё`` → ``е``, lower case; sets like ``белый/черный`` are split into one
  row per colour in a separate long table; an empty colour stays missing.
* **Cost**: ``negative`` (refunds or errors), ``zero``, and ``extreme`` (more than
  ``EXTREME_FACTOR`` times the median cost of its category) are flagged; flagged rows
  keep their item count but their cost is excluded from money totals (``revenue`` = 0).
* **Clients**: the known-gender table and the lost rows (gender missing) are stacked,
  ``personal_coef`` joined; an id in both keeps its known-gender row, and ids whose age,
  education, country or city differ between the two are counted with examples.
* **Purchases of unknown clients** are dropped and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.store.loaders import RawData

EXTREME_FACTOR = 20.0
_PUNCT = re.compile(r"[^\w\s.]+|(?<!\d)\.|\.(?!\d)")
_SPACES = re.compile(r"\s+")
_CYRILLIC_WORD = re.compile(r"^[а-я][а-я-]*$")


def normalise_text(s: pd.Series) -> pd.Series:
    """Lower case, ``ё`` → ``е``, punctuation (except decimal points) to spaces."""
    out = s.astype("string").str.lower().str.replace("ё", "е", regex=False)
    out = out.str.replace(_PUNCT, " ", regex=True)
    return out.str.replace(_SPACES, " ", regex=True).str.strip()


def product_key(names: pd.Series) -> pd.Series:
    """Canonical key of product names (word order, case, spacing and punctuation ignored).

    Examples
    --------
    >>> product_key(pd.Series(["Носки Demix, 3 пары", "demix  НОСКИ 3 пары"])).tolist()
    ['3 demix носки пары', '3 demix носки пары']
    """
    uniq = pd.Series(names.dropna().unique())
    norm = normalise_text(uniq)
    keys = norm.map(lambda t: " ".join(sorted(t.split())) if isinstance(t, str) else t)
    lookup = dict(zip(uniq, keys, strict=True))
    return names.map(lookup).astype(object)


def product_category(names: pd.Series) -> pd.Series:
    """Product type: the first Cyrillic word of the (normalised) name, else its first word."""
    uniq = pd.Series(names.dropna().unique())
    norm = normalise_text(uniq)

    def first_type(text: str) -> str:
        words = text.split()
        for w in words:
            if _CYRILLIC_WORD.match(w):
                return w
        return words[0] if words else "unknown"

    lookup = dict(zip(uniq, norm.map(first_type), strict=True))
    return names.map(lookup).astype(object)


def split_colours(colour: pd.Series) -> pd.DataFrame:
    """Long table ``row, colour`` with one row per colour of each purchase row."""
    norm = colour.astype("string").str.lower().str.replace("ё", "е", regex=False)
    parts = norm.str.split("/").explode().str.strip()
    parts = parts[parts.notna() & (parts != "")]
    return pd.DataFrame({"row": parts.index.to_numpy(), "colour": parts.to_numpy(dtype=object)})


def flag_costs(cost: pd.Series, category: pd.Series) -> pd.Series:
    """``ok``, ``negative``, ``zero`` or ``extreme`` for each cost (see module rules)."""
    median = cost.where(cost > 0).groupby(category).transform("median")
    flag = np.select(
        [cost < 0, cost == 0, cost > EXTREME_FACTOR * median.fillna(np.inf)],
        ["negative", "zero", "extreme"],
        default="ok",
    )
    return pd.Series(flag, index=cost.index, dtype=object)


@dataclass
class CleanData:
    """Tidy tables and the data-quality summary.

    ``colours`` is the long table ``id``, ``colour`` (one row per colour of a purchase
    row); ``products`` the catalogue ``product_key``, ``name`` (the key's most frequent
    spelling), ``variants``, ``category`` (of that name), ``rows``.
    """

    clients: pd.DataFrame
    purchases: pd.DataFrame | None
    colours: pd.DataFrame | None
    products: pd.DataFrame | None
    quality: dict[str, object] = field(default_factory=dict)


#: columns both client tables hold, compared for ids that are in both
SHARED_CLIENT_COLUMNS = ("age", "education", "country", "city")
#: how an id in both client tables is resolved (stated wherever conflicts are reported)
DUPLICATE_RULE = "the row of the table with gender (personal_data) is kept"


def conflicting_duplicates(known: pd.DataFrame, lost: pd.DataFrame) -> dict[str, object]:
    """Ids present in both client tables, and those whose shared columns disagree.

    Parameters
    ----------
    known, lost
        The client table with gender and the lost rows (validated; ``id`` unique in each).

    Returns
    -------
    dict
        ``ids_in_both`` (count), ``conflicting`` (count of those with any difference),
        ``by_column`` (differences per column), ``examples`` (up to 3 strings
        ``"id 17: age 34 vs 35"``) and ``rule`` (:data:`DUPLICATE_RULE`).
    """
    cols = [c for c in SHARED_CLIENT_COLUMNS if c in known and c in lost]
    both = known[["id", *cols]].merge(lost[["id", *cols]], on="id", suffixes=("", "_lost"))
    diff = pd.DataFrame({c: both[c].astype(object).ne(both[f"{c}_lost"].astype(object))
                         & ~(both[c].isna() & both[f"{c}_lost"].isna()) for c in cols},
                        index=both.index)
    bad = diff.any(axis=1) if cols else pd.Series(False, index=both.index)
    examples = []
    for i in both.index[bad.to_numpy()][:3]:
        parts = [f"{c} {both.at[i, c]} vs {both.at[i, f'{c}_lost']}" for c in cols
                 if diff.at[i, c]]
        examples.append(f"id {both.at[i, 'id']}: " + ", ".join(parts))
    return {"ids_in_both": len(both), "conflicting": int(bad.sum()),
            "by_column": {c: int(diff[c].sum()) for c in cols if diff[c].any()},
            "examples": examples, "rule": DUPLICATE_RULE}


def clean_clients(raw: RawData, quality: dict[str, object]) -> pd.DataFrame:
    known = raw.clients.assign(gender_known=True)
    parts = [known]
    if raw.lost is not None:
        lost = raw.lost[~raw.lost["id"].isin(known["id"])]
        quality["lost_rows"] = len(raw.lost)
        quality["lost_ids_also_in_known_table"] = len(raw.lost) - len(lost)
        quality["duplicates_across_client_tables"] = conflicting_duplicates(raw.clients,
                                                                            raw.lost)
        parts.append(lost.assign(gender=pd.array([pd.NA] * len(lost), dtype="Int64"),
                                gender_known=False))
    clients = pd.concat(parts, ignore_index=True)
    clients["gender"] = clients["gender"].astype("Int64")
    if raw.coeffs is not None:
        clients = clients.merge(raw.coeffs[["id", "personal_coef"]], on="id", how="left")
        quality["clients_without_personal_coef"] = int(clients["personal_coef"].isna().sum())
    else:
        clients["personal_coef"] = pd.Series(pd.NA, index=clients.index, dtype="Float64")
    quality["clients"] = len(clients)
    quality["clients_gender_missing"] = int((~clients["gender_known"]).sum())
    return clients.sort_values("id", ignore_index=True)


def clean_purchases(
    purchases: pd.DataFrame, known_ids: pd.Series, quality: dict[str, object]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    p = purchases.reset_index(drop=True)
    unknown = ~p["id"].isin(known_ids)
    quality["purchase_rows"] = len(p)
    quality["purchase_rows_unknown_client"] = int(unknown.sum())
    quality["purchase_unknown_client_examples"] = p.loc[unknown, "id"].head(5).tolist()
    p = p[~unknown].reset_index(drop=True)
    p["product_key"] = product_key(p["product"])
    p["category"] = product_category(p["product"])
    p["cost_flag"] = flag_costs(p["cost"], p["category"])
    p["revenue"] = p["cost"].where(p["cost_flag"] == "ok", 0).astype("int64")
    colours = split_colours(p["colour"])
    p["n_colours"] = colours.groupby("row").size().reindex(p.index, fill_value=0).to_numpy()
    colours = pd.DataFrame({"id": p["id"].to_numpy()[colours["row"].to_numpy()],
                            "colour": colours["colour"].to_numpy()})
    products = (
        p.groupby(["product_key", "product"]).size().rename("n").reset_index()
        .sort_values(["product_key", "n"], ascending=[True, False])
    )
    variants = products.groupby("product_key").size()
    names = products.drop_duplicates("product_key").set_index("product_key")
    catalogue = pd.DataFrame({
        "product_key": names.index,
        "name": names["product"].to_numpy(),
        "variants": variants.reindex(names.index).to_numpy(),
    })
    # a key's category is its display name's (word-order variants may start differently)
    catalogue["category"] = product_category(catalogue["name"]).to_numpy()
    catalogue = catalogue.merge(p.groupby("product_key").agg(rows=("id", "size")),
                                on="product_key")
    flags = p["cost_flag"].value_counts()
    quality.update({
        "product_names": int(p["product"].nunique()),
        "product_keys": int(p["product_key"].nunique()),
        "categories": int(p["category"].nunique()),
        "colour_missing_rows": int(p["colour"].isna().sum()),
        "colour_set_rows": int((p["n_colours"] > 1).sum()),
        "product_sex_missing_rows": int(p["product_sex"].isna().sum()),
        "cost_negative_rows": int(flags.get("negative", 0)),
        "cost_zero_rows": int(flags.get("zero", 0)),
        "cost_extreme_rows": int(flags.get("extreme", 0)),
        "cost_rule": f"negative, zero, or > {EXTREME_FACTOR:g} x category median: "
                     "cost excluded from revenue, item kept",
    })
    return p, colours, catalogue


def clean(raw: RawData) -> CleanData:
    """Build the tidy client, purchase, colour and product tables from validated raw data."""
    quality: dict[str, object] = {"sources": dict(raw.sources)}
    clients = clean_clients(raw, quality)
    purchases = colours = products = None
    if raw.purchases is not None:
        purchases, colours, products = clean_purchases(raw.purchases, clients["id"], quality)
    else:
        quality["purchases_note"] = "no purchases table in this data folder"
    return CleanData(clients, purchases, colours, products, quality)
