"""Read the apparel store's three files into one row per client (its next-purchase case).

Files (documented schemas, see ``../shared/data/README.md``): ``apparel-purchases.csv``
(client_id, quantity, price, category_ids, date, message_id), ``apparel-messages.csv``
(bulk_campaign_id, client_id, message_id, event, channel, date, created_at) and
``apparel-target_binary.csv`` (client_id, target). They are read read-only, as text, and
validated (pandera, :mod:`analysis.store.schemas`); a broken file stops with an error
naming the file, column and rows.

Rules (documented, counted in :attr:`ApparelData.log`):

1. A purchase row is one item: identical purchase rows are identical items bought
   together, not duplicates (``quantity`` items per row, each row counted).
2. An exact duplicate message event (every column equal) is an export artefact: dropped.
3. ``category_ids`` is a list written inside a string (``"['4', '28', '57']"``, ``"[]"``,
   ``None`` inside); its first id is the top-level category. A value that is not such a
   list is an error naming its rows.
4. A purchase day (a client's purchases on one date) is one transaction; the data's last
   day is the last date in either file, and the target is a purchase within 90 days
   after it.
5. A target client without any purchase has no history: frequency, recency and T are 0
   (the BTYD model then gives them the prior's P(buy)); counted.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import DataError, Problem
from analysis.store.schemas import validate

FILES = {"purchases": "apparel-purchases.csv", "messages": "apparel-messages.csv",
         "target": "apparel-target_binary.csv"}
TABLES = {"purchases": "apparel_purchases", "messages": "apparel_messages",
          "target": "apparel_target"}
#: message engagement windows (days before the last day)
RECENT_DAYS = (30, 90)


def is_apparel_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds the apparel case (its purchases file)."""
    return (Path(folder) / FILES["purchases"]).exists()


@dataclass
class ApparelData:
    """One row per target client: features and target, with the cleaning log."""

    clients: pd.DataFrame
    last_day: pd.Timestamp
    log: dict[str, Any] = field(default_factory=dict)


def read_file(folder: Path, key: str) -> pd.DataFrame:
    """Read one of the three files as text and validate it.

    Raises
    ------
    DataError
        The file is missing or unreadable, a column is missing, a value is malformed
        (naming the column and the rows).
    """
    path = folder / FILES[key]
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                          encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(path, f"not a readable CSV file: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    return validate(raw, TABLES[key], str(path))


def _dates(values: pd.Series, source: str, column: str, fmt: str) -> pd.Series:
    out = pd.to_datetime(values, format=fmt, errors="coerce")
    bad = out.isna()
    if bad.any():
        raise DataError.from_problems(source, [Problem(
            source, f"not a date such as {values[bad].head(3).tolist()}", column,
            f"format {fmt}", tuple(np.flatnonzero(bad)[:10].tolist()), int(bad.sum()))])
    return out


def top_category(values: pd.Series, source: str) -> pd.Series:
    """The first id of each ``category_ids`` list (``"none"`` for an empty list or gap)."""
    uniq = values.dropna().unique()
    parsed: dict[str, str] = {}
    bad: list[str] = []
    for v in uniq:
        try:
            lst = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            bad.append(v)
            continue
        if not isinstance(lst, list):
            bad.append(v)
            continue
        first = next((str(x) for x in lst if x is not None), "none")
        parsed[v] = first
    if bad:
        rows = values.isin(bad)
        raise DataError.from_problems(source, [Problem(
            source, f"not a list of category ids such as {bad[:3]}", "category_ids",
            "a list inside a string, e.g. \"['4', '28']\"",
            tuple(np.flatnonzero(rows)[:10].tolist()), int(rows.sum()))])
    return values.map(parsed).fillna("none")


def load_apparel(folder: str | Path) -> ApparelData:
    """Load, validate and aggregate the three files of ``folder`` to one row per client.

    Returns
    -------
    ApparelData
        ``clients``: ``client_id`` and ``target``; purchase history (``frequency``,
        ``recency``, ``T`` in days, ``mean_spend``, ``spend``, ``items``,
        ``categories``, ``days_since_last``, ``mailing_purchases``); message engagement
        (``sends``, ``opens``, ``clicks``, ``open_rate``, ``click_rate``, opens and
        clicks in the last 30 and 90 days, ``days_since_open``, ``unsubscribed``,
        ``bounces``, ``push_share``).
    """
    folder = Path(folder)
    log: dict[str, Any] = {}
    pur = read_file(folder, "purchases")
    msg = read_file(folder, "messages")
    tgt = read_file(folder, "target")
    src = {k: str(folder / f) for k, f in FILES.items()}
    pur["client_id"] = pur["client_id"].astype("int64")
    msg["client_id"] = msg["client_id"].astype("int64")
    tgt["client_id"] = tgt["client_id"].astype("int64")
    pur["day"] = _dates(pur["date"], src["purchases"], "date", "%Y-%m-%d")
    msg["day"] = _dates(msg["date"], src["messages"], "date", "%Y-%m-%d")
    _dates(msg["created_at"], src["messages"], "created_at", "%Y-%m-%d %H:%M:%S")
    pur["top_category"] = top_category(pur["category_ids"], src["purchases"])
    n0 = len(msg)
    msg = msg.drop_duplicates(subset=[c for c in msg.columns if c != "day"])
    log["duplicate_message_events_dropped"] = int(n0 - len(msg))
    log["purchase_rows"] = int(len(pur))
    log["identical_purchase_rows"] = int(pur.duplicated().sum())
    last = max(pur["day"].max(), msg["day"].max())
    start = min(pur["day"].min(), msg["day"].min())
    log["first_day"], log["last_day"] = str(start.date()), str(last.date())
    pur["d"] = (pur["day"] - start).dt.days
    pur["amount"] = pur["quantity"].astype(float) * pur["price"].astype(float)
    end = int((last - start).days)
    days = pur.groupby(["client_id", "d"]).agg(spend=("amount", "sum"),
                                               items=("quantity", "sum")).reset_index()
    g = days.groupby("client_id")
    first_spend = days.loc[g["d"].idxmin()].set_index("client_id")["spend"]
    h = pd.DataFrame({"first": g["d"].min(), "last": g["d"].max(), "days": g.size(),
                      "spend": g["spend"].sum(), "items": g["items"].sum()})
    h["frequency"] = h["days"] - 1
    h["recency"] = h["last"] - h["first"]
    h["T"] = end + 1 - h["first"]
    h["mean_spend"] = np.where(h["frequency"] > 0, (h["spend"] - first_spend.reindex(h.index))
                               / h["frequency"].clip(lower=1), 0.0)
    h["days_since_last"] = end - h["last"]
    h["categories"] = pur.groupby("client_id")["top_category"].nunique()
    h["mailing_purchases"] = pur[pur["message_id"].notna()].groupby("client_id")["d"].nunique()
    m = msg.assign(d=(msg["day"] - start).dt.days)
    ev = m.pivot_table(index="client_id", columns="event", values="d", aggfunc="size",
                       fill_value=0)
    e = pd.DataFrame(index=ev.index)
    for k in ("send", "open", "click", "purchase", "unsubscribe", "hard_bounce",
              "soft_bounce"):
        e[k] = ev[k] if k in ev else 0
    e = e.rename(columns={"send": "sends", "open": "opens", "click": "clicks",
                          "purchase": "message_purchases", "unsubscribe": "unsubscribed"})
    e["bounces"] = e.pop("hard_bounce") + e.pop("soft_bounce")
    e["unsubscribed"] = (e["unsubscribed"] > 0).astype(int)
    e["open_rate"] = e["opens"] / e["sends"].clip(lower=1)
    e["click_rate"] = e["clicks"] / e["sends"].clip(lower=1)
    for w in RECENT_DAYS:
        recent = m[m["d"] > end - w]
        for k in ("open", "click"):
            e[f"{k}s_{w}d"] = recent[recent["event"] == k].groupby("client_id").size()
    opens = m[m["event"] == "open"].groupby("client_id")["d"].max()
    e["days_since_open"] = (end - opens).reindex(e.index)
    sends = m[m["event"] == "send"]
    e["push_share"] = (sends["channel"] == "mobile_push").groupby(sends["client_id"]).mean()
    out = tgt.set_index("client_id")[["target"]].astype(int)
    out = out.join(h.drop(columns=["first", "last", "days"]), how="left")
    log["target_clients_without_purchases"] = int(out["frequency"].isna().sum())
    out = out.join(e, how="left")
    never = end + 1
    fill = {c: 0 for c in out.columns if c not in ("days_since_open", "days_since_last")}
    out = out.fillna(fill)
    out["days_since_open"] = out["days_since_open"].fillna(never)
    out["days_since_last"] = out["days_since_last"].fillna(never)
    for c in ("frequency", "recency", "T"):
        out[c] = out[c].astype(int)
    log["clients"] = int(len(out))
    log["target_rate"] = float(out["target"].mean())
    log["purchase_clients_without_target"] = int(len(set(h.index) - set(out.index)))
    return ApparelData(out.reset_index(), last, log)
