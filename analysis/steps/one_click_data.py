"""Read and clean the "В один клик" online store's four files into one row per client.

The files (see ``../shared/data/README.md``) are read read-only and survive their quirks:
CRLF line endings, a ``;`` separator with a decimal comma (``money.csv``), Cyrillic
column names, and the known typos ``стандартт`` (service type), ``предыдцщий_месяц``
(period in ``market_time.csv``) and ``Косметика и аксесуары`` (category). Every fix and
every dropped client is counted in :attr:`OneClickData.log`.

Cleaning rules (documented, in this order):

1. Revenue outlier: a monthly revenue above ``outlier_factor`` times the median monthly
   revenue of all clients is a recording error (the real data has one, 106,862.2 against
   a median of 4,957.5). ``outlier_rule="replace"`` (default) replaces it by the median
   of that client's other months; ``"drop"`` drops the client.
2. Only clients active in all three revenue months (revenue > 0 in each) are kept; a
   client without a row for some period is dropped too and counted separately.
3. Clients must appear in all four files; those that do not are dropped and counted.

The periods are pivoted into features: revenue per month, minutes on site per month,
and their changes between months.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import DataError
from analysis.store.schemas import (
    COLUMNS,
    REVENUE_PERIODS,
    TIME_PERIODS,
    validate,
)

FILES = {"market_file": "market_file.csv", "market_money": "market_money.csv",
         "market_time": "market_time.csv", "money": "money.csv"}

#: Known misspellings and what they mean (applied to every text column).
SPELLING_FIXES = {
    "стандартт": "стандарт",
    "предыдцщий_месяц": "предыдущий_месяц",
    "Косметика и аксесуары": "Косметика и аксессуары",
}

#: English names of market_file's columns (the report shows both).
RENAME = {
    "Покупательская активность": "activity", "Тип сервиса": "service",
    "Разрешить сообщать": "consent", "Маркет_актив_6_мес": "marketing_6m",
    "Маркет_актив_тек_мес": "marketing_month", "Длительность": "tenure_days",
    "Акционные_покупки": "promo_share", "Популярная_категория": "category",
    "Средний_просмотр_категорий_за_визит": "categories_per_visit",
    "Неоплаченные_продукты_штук_квартал": "unpaid_items", "Ошибка_сервиса": "service_errors",
    "Страниц_за_визит": "pages_per_visit",
}
PERIOD_NAMES = {"препредыдущий_месяц": "m2", "предыдущий_месяц": "m1", "текущий_месяц": "m0"}
DECLINED = "Снизилась"

#: Model inputs: categorical and numeric features of one client.
CATEGORICAL = ["service", "consent", "category"]
NUMERIC = ["marketing_6m", "marketing_month", "tenure_days", "promo_share",
           "categories_per_visit", "unpaid_items", "service_errors", "pages_per_visit",
           "revenue_m2", "revenue_m1", "revenue_m0", "revenue_change", "revenue_change_prev",
           "minutes_m1", "minutes_m0", "minutes_change"]
FEATURES = CATEGORICAL + NUMERIC

#: What each feature means, for tables and figures.
LABELS = {
    "service": "service type (Тип сервиса)", "consent": "marketing consent (Разрешить сообщать)",
    "category": "favourite category (Популярная_категория)",
    "marketing_6m": "marketing contacts / month, last 6 months",
    "marketing_month": "marketing contacts this month", "tenure_days": "days since sign-up",
    "promo_share": "share of promo purchases, 6 months",
    "categories_per_visit": "categories viewed per visit",
    "unpaid_items": "unpaid items in cart, quarter", "service_errors": "service errors",
    "pages_per_visit": "pages per visit", "revenue_m2": "revenue 2 months ago",
    "revenue_m1": "revenue last month", "revenue_m0": "revenue this month",
    "revenue_change": "revenue change, this vs last month",
    "revenue_change_prev": "revenue change, last month vs the one before",
    "minutes_m1": "minutes on site last month", "minutes_m0": "minutes on site this month",
    "minutes_change": "minutes change, this vs last month", "profit": "monthly profit",
}

_DECIMAL_COMMA = re.compile(r"^\s*-?\d+,\d+\s*$")


@dataclass
class OneClickData:
    """The cleaned case: one row per kept client (index ``id``).

    Columns: :data:`FEATURES`, ``declined`` (1 = activity declined), ``profit``.
    ``log`` lists each cleaning step with the clients left after it.
    """

    clients: pd.DataFrame
    log: list[dict[str, Any]] = field(default_factory=list)
    fixes: dict[str, int] = field(default_factory=dict)
    outliers: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def X(self) -> pd.DataFrame:
        return self.clients[FEATURES]

    @property
    def y(self) -> np.ndarray:
        return self.clients["declined"].to_numpy()


def _separator(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.readline().decode("utf-8-sig", errors="replace")
    return ";" if head.count(";") > head.count(",") else ","


def read_table(path: str | Path, table: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read one of the four files as text, fix the known quirks, validate its schema.

    Returns the typed frame and how many cells each spelling fix changed.

    Raises
    ------
    DataError
        The file is missing or unreadable, a column is missing, a value is not numeric or
        not allowed (naming the column and rows).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        raw = pd.read_csv(path, sep=_separator(path), dtype=str, keep_default_na=False,
                          na_values=[""], encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(path, f"not a readable CSV file: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    raw.index = pd.RangeIndex(len(raw))
    fixes: dict[str, int] = {}
    for col, kind in COLUMNS[table].items():
        if col not in raw.columns:
            continue
        values = raw[col].str.strip()
        if kind == "str":
            for wrong, right in SPELLING_FIXES.items():
                hit = values == wrong
                if hit.any():
                    fixes[f"{wrong} -> {right}"] = int(hit.sum())
                    values = values.mask(hit, right)
        else:
            comma = values.str.match(_DECIMAL_COMMA).fillna(False).astype(bool)
            if comma.any():
                fixes[f"decimal comma in {col}"] = int(comma.sum())
                values = values.mask(comma, values.str.replace(",", ".", regex=False))
        raw[col] = values
    return validate(raw, table, str(path)), fixes


def _pivot(df: pd.DataFrame, value: str, periods: tuple[str, ...], prefix: str,
           source: str) -> pd.DataFrame:
    seen = set(df["Период"])
    absent = [p for p in periods if p not in seen]
    if absent:
        raise DataError(source, f"period(s) {absent} have no rows at all; found {sorted(seen)}",
                        column="Период")
    wide = df.pivot(index="id", columns="Период", values=value)
    wide = wide.rename(columns=lambda p: f"{prefix}_{PERIOD_NAMES[p]}")
    return wide.astype(float)


def load_one_click(folder: str | Path, outlier_factor: float = 10.0,
                   outlier_rule: str = "replace") -> OneClickData:
    """Load, validate and clean the four files of ``folder``.

    Parameters
    ----------
    folder
        Folder holding ``market_file.csv``, ``market_money.csv``, ``market_time.csv``
        and ``money.csv``.
    outlier_factor
        A monthly revenue above this multiple of the median monthly revenue is an outlier.
    outlier_rule
        ``"replace"`` (by the client's median of the other months) or ``"drop"``.

    Raises
    ------
    DataError
        Naming the file, column and rows at fault.
    """
    if outlier_rule not in ("replace", "drop"):
        raise ValueError(f"outlier_rule must be 'replace' or 'drop', not {outlier_rule!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "data folder not found")
    tables, fixes = {}, {}
    for table, name in FILES.items():
        tables[table], f = read_table(folder / name, table)
        fixes.update({f"{name}: {k}": v for k, v in f.items()})
    market = tables["market_file"].rename(columns=RENAME).set_index("id")
    log = [{"step": "read market_file.csv", "clients": len(market), "dropped": 0}]

    money_src = str(folder / FILES["market_money"])
    money = tables["market_money"]
    revenue = _pivot(money, "Выручка", REVENUE_PERIODS, "revenue", money_src)
    minutes = _pivot(tables["market_time"], "минут", TIME_PERIODS, "minutes",
                     str(folder / FILES["market_time"]))
    profit = tables["money"].set_index("id")["Прибыль"].astype(float).rename("profit")

    rev_cols = [f"revenue_{PERIOD_NAMES[p]}" for p in REVENUE_PERIODS]
    threshold = outlier_factor * float(np.nanmedian(revenue[rev_cols].to_numpy()))
    out_mask = revenue[rev_cols] > threshold
    outliers = revenue[rev_cols].where(out_mask).stack().rename("revenue").reset_index()
    outliers.columns = ["id", "period", "revenue"]
    names = {f"revenue_{v}": k for k, v in PERIOD_NAMES.items()}
    outliers["period"] = outliers["period"].map(names)
    outliers["threshold"] = threshold
    n_out = int(out_mask.to_numpy().sum())
    if n_out and outlier_rule == "replace":
        med = revenue[rev_cols].where(~out_mask).median(axis=1)
        outliers["replaced_by"] = med.reindex(outliers["id"]).to_numpy()
        revenue[rev_cols] = revenue[rev_cols].mask(out_mask, med, axis=0)
    elif n_out:
        revenue = revenue[~out_mask.any(axis=1)]
    log.append({"step": f"revenue outliers (> {outlier_factor:g} x median = {threshold:,.0f}): "
                        f"{n_out} {'replaced' if outlier_rule == 'replace' else 'dropped'}",
                "clients": len(market), "dropped": 0 if outlier_rule == "replace" else n_out})

    has_all_periods = revenue.reindex(market.index)[rev_cols].notna().all(axis=1)
    n_missing = int((~has_all_periods).sum())
    kept = market[has_all_periods]
    log.append({"step": "revenue rows for all three months", "clients": len(kept),
                "dropped": n_missing})
    active = (revenue.reindex(kept.index)[rev_cols] > 0).all(axis=1)
    log.append({"step": "active (revenue > 0) in all three months",
                "clients": int(active.sum()), "dropped": int((~active).sum())})
    kept = kept[active]
    in_all = kept.index.isin(minutes.dropna().index) & kept.index.isin(profit.index)
    log.append({"step": "present in market_time.csv and money.csv", "clients": int(in_all.sum()),
                "dropped": int((~in_all).sum())})
    kept = kept[in_all]

    out = kept.join(revenue[rev_cols]).join(minutes).join(profit)
    out["revenue_change"] = out["revenue_m0"] - out["revenue_m1"]
    out["revenue_change_prev"] = out["revenue_m1"] - out["revenue_m2"]
    out["minutes_change"] = out["minutes_m0"] - out["minutes_m1"]
    out["declined"] = (out["activity"] == DECLINED).astype(int)
    for col in NUMERIC + ["profit"]:
        out[col] = out[col].astype(float)
    out = out[FEATURES + ["declined", "profit"]].sort_index()
    return OneClickData(clients=out, log=log, fixes=fixes, outliers=outliers)

