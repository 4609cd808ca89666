"""A synthetic stand-in for the apparel online store's next-purchase case ("Мастерская 2").

Only the case's target file is public (49,849 clients, 1.93% bought within 90 days after
the data end); its purchase and message files were never published, so this module writes
files with their documented schemas and quirks:

* ``apparel-purchases.csv``: client_id, quantity, price, category_ids, date, message_id.
  ``category_ids`` is a list of nested category ids written inside a string
  (``"['4', '28', '57', '431']"``; sometimes ``"[]"`` or with a ``None`` inside); one row
  per item, so the same purchase repeats as identical rows (duplicates are real rows here:
  two identical items); a purchase made from a mailing carries that ``message_id``.
* ``apparel-messages.csv``: bulk_campaign_id, client_id, message_id, event (send, open,
  click, purchase; rarer hard_bounce, soft_bounce, unsubscribe, complain), channel (email,
  mobile_push), date, created_at. An exact duplicate of a message event is an export
  artefact (a few are planted).
* ``apparel-target_binary.csv``: client_id, target.

Planted truth (``truth.json``): every client follows the BG/NBD process (purchase rate
``lambda ~ Gamma(r, alpha)`` per day while alive, dropout ``p ~ Beta(a, b)`` after each
purchase) from their first purchase, which falls uniformly in the data's days. Mailing
engagement carries signal the purchase history does not: a client opens a message with a
probability that is higher while they are alive and rises with their purchase rate. The
target is a purchase within 90 days after the last day; ``ceiling_auc`` is the ROC-AUC of
the true probability of that given the latent state (what no model can beat).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from analysis.io import atomic_path, write_json

FILES = {"purchases": "apparel-purchases.csv", "messages": "apparel-messages.csv",
         "target": "apparel-target_binary.csv"}
START = pd.Timestamp("2022-05-16")
DAYS = 640  # 2022-05-16 .. 2024-02-15, as the case's data span
HORIZON = 90
TRUE = {"r": 0.5, "alpha": 120.0, "a": 3.0, "b": 1.0}
#: log-odds of opening a message: base, alive, per log purchase rate (centred)
OPEN = {"base": -2.3, "alive": 1.2, "log_rate": 0.5}
CLICK_GIVEN_OPEN = 0.18
CAMPAIGN_EVERY = 14  # days between bulk campaigns of one channel
EVENT_VERSION = 1


def _client_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """19-digit ids like the case's (1515915625...)."""
    return np.sort(1515915625000000000 + rng.choice(10**9, n, replace=False)).astype(np.int64)


def _histories(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Latent state and purchase days of every client (days from ``START``)."""
    lam = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], n)
    p = rng.beta(TRUE["a"], TRUE["b"], n)
    birth = rng.integers(0, DAYS, n)
    death = np.full(n, np.inf)
    days: list[np.ndarray] = []
    future = np.zeros(n, bool)
    for i in range(n):
        t, out = float(birth[i]), [int(birth[i])]
        while True:
            t += rng.exponential(1 / lam[i])
            if t >= DAYS + HORIZON:
                break
            if t >= DAYS:  # alive and buying within the horizon after the last day
                future[i] = True
                break
            out.append(int(t))
            if rng.random() < p[i]:  # drops out after this purchase
                death[i] = t
                break
        days.append(np.unique(out))
    return {"lam": lam, "p": p, "birth": birth, "death": death, "days": days,
            "future": future}


def _alive_probability(lam: np.ndarray, p: np.ndarray, days: list[np.ndarray]) -> np.ndarray:
    """P(alive at the end | latent rate and dropout, history): the BG/NBD posterior of
    being alive given the true ``lambda`` and ``p`` (Fader, Hardie and Lee 2005, sec. 3)."""
    x = np.array([len(d) - 1 for d in days])
    last = np.array([d[-1] for d in days], float)
    gap = DAYS - last
    # alive: survived x dropout chances' last one or x = 0; no purchase for ``gap`` days
    alive = (1 - p) * np.exp(-lam * gap)
    dead = p
    return np.where(x == 0, 1.0, alive / (alive + dead))


def make_apparel(clients: int = 5000, seed: int = 7) -> dict:
    """The three tables as written to disk and the planted truth."""
    rng = np.random.default_rng(seed)
    ids = _client_ids(clients, rng)
    h = _histories(clients, rng)
    n_days = np.array([len(d) for d in h["days"]])
    client = np.repeat(np.arange(clients), n_days)
    day = np.concatenate(h["days"])
    # purchases: 1-3 items a day, each a row (identical items repeat the row)
    items = rng.choice([1, 1, 1, 2, 3], len(day))
    rows_client = np.repeat(client, items)
    rows_day = np.repeat(day, items)
    m = len(rows_client)
    price = np.round(np.exp(rng.normal(7.4, 0.7, m)) // 10 * 10 + 9, 0)
    cat_pool = [["4", "28", "57", "431"], ["4", "28", "62", "135"],
                ["4", "27", "176", "458"], ["2", "18", "212", "726"],
                ["5562", "5630", "5649", "675"], ["4", "28", "260", "420"],
                ["3", "31", "120", "611"], ["5562", "5632", "5549", "None"]]
    pick = rng.integers(0, len(cat_pool), m)
    cats = np.array([str(c).replace('"', "'").replace("'None'", "None") for c in cat_pool],
                    dtype=object)[pick]
    cats[rng.random(m) < 0.01] = "[]"
    # messages: a bulk campaign per channel every week; each client gets it from birth on
    # (opted in to that channel with probability 0.8 / 0.5)
    camp_days = np.arange(0, DAYS, CAMPAIGN_EVERY)
    log_rate = np.log(h["lam"]) - np.log(h["lam"]).mean()
    rows = []
    camp_id = 4000
    for channel, share, offset in (("email", 0.8, 0), ("mobile_push", 0.5, 3)):
        opted = rng.random(clients) < share
        for d0 in camp_days + offset:
            if d0 >= DAYS:
                continue
            camp_id += 1
            who = np.flatnonzero(opted & (h["birth"] <= d0))
            if len(who) == 0:
                continue
            alive = d0 < h["death"][who]
            po = expit(OPEN["base"] + OPEN["alive"] * alive + OPEN["log_rate"] * log_rate[who])
            opened = rng.random(len(who)) < po
            clicked = opened & (rng.random(len(who)) < CLICK_GIVEN_OPEN)
            bounced = rng.random(len(who)) < 0.004
            unsub = opened & (rng.random(len(who)) < 0.003)
            rows.append(pd.DataFrame({"bulk_campaign_id": camp_id, "client": who, "day": d0,
                                      "channel": channel, "open": opened, "click": clicked,
                                      "bounce": bounced, "unsub": unsub}))
    sends = pd.concat(rows, ignore_index=True)
    sends["message_id"] = [f"{ids[c]}-{b}-{(c * 7919 + b) % 16**13:013x}"
                           for c, b in zip(sends["client"], sends["bulk_campaign_id"],
                                           strict=True)]
    events = [sends.assign(event="send", lag=0)]
    events.append(sends[sends["open"]].assign(event="open", lag=1))
    events.append(sends[sends["click"]].assign(event="click", lag=2))
    events.append(sends[sends["bounce"]].assign(event=np.where(
        rng.random(int(sends["bounce"].sum())) < 0.5, "hard_bounce", "soft_bounce"), lag=1))
    events.append(sends[sends["unsub"]].assign(event="unsubscribe", lag=3))
    comp = sends[sends["open"]].sample(frac=0.0005, random_state=seed)
    events.append(comp.assign(event="complain", lag=4))
    # a purchase made within 2 days after a click is credited to that message
    clicks = sends[sends["click"]]
    credit = {}
    by_client = {c: set(h["days"][c].tolist()) for c in clicks["client"].unique()}
    for c, d0, mid in zip(clicks["client"], clicks["day"], clicks["message_id"], strict=True):
        for dd in (d0, d0 + 1, d0 + 2):
            if dd in by_client[c] and (c, dd) not in credit:
                credit[(c, dd)] = mid
    bought = clicks[[(c, d) in credit or (c, d + 1) in credit
                     for c, d in zip(clicks["client"], clicks["day"], strict=True)]]
    events.append(bought.assign(event="purchase", lag=5))
    ev = pd.concat(events, ignore_index=True)
    secs = rng.integers(0, 86_400, len(ev)) + ev["lag"].to_numpy() * 600
    created = START + pd.to_timedelta(ev["day"].to_numpy(), "D") + pd.to_timedelta(secs, "s")
    messages = pd.DataFrame({"bulk_campaign_id": ev["bulk_campaign_id"].to_numpy(),
                             "client_id": ids[ev["client"].to_numpy()],
                             "message_id": ev["message_id"].to_numpy(),
                             "event": ev["event"].to_numpy(),
                             "channel": ev["channel"].to_numpy(),
                             "date": created.strftime("%Y-%m-%d"),
                             "created_at": created.strftime("%Y-%m-%d %H:%M:%S")})
    messages = messages.sort_values(["created_at", "client_id"], kind="stable")
    dup = messages.sample(frac=0.002, random_state=seed)
    messages = pd.concat([messages, dup]).sort_values("created_at", kind="stable")
    mid = np.array([credit.get((c, d)) for c, d in zip(rows_client, rows_day, strict=True)],
                   dtype=object)
    purchases = pd.DataFrame({
        "client_id": ids[rows_client], "quantity": 1, "price": price, "category_ids": cats,
        "date": (START + pd.to_timedelta(rows_day, "D")).strftime("%Y-%m-%d"),
        "message_id": mid})
    purchases = purchases.sort_values(["date", "client_id"], kind="stable")
    # the truth: P(purchase in the next 90 days | latent state and history)
    p_alive = _alive_probability(h["lam"], h["p"], h["days"])
    p_true = p_alive * (1 - np.exp(-h["lam"] * HORIZON))
    target = h["future"].astype(int)
    truth = {"spec": {"clients": clients, "seed": seed, "version": EVENT_VERSION},
             "bgnbd": TRUE, "open_logit": OPEN, "click_given_open": CLICK_GIVEN_OPEN,
             "horizon_days": HORIZON, "days": DAYS, "start": str(START.date()),
             "target_rate": float(target.mean()),
             "ceiling_auc": float(roc_auc_score(target, p_true)) if 0 < target.mean() < 1
             else None}
    return {"purchases": purchases.reset_index(drop=True),
            "messages": messages.reset_index(drop=True),
            "target": pd.DataFrame({"client_id": ids, "target": target}), "truth": truth}


def write_apparel_demo(out: str | Path, clients: int = 5000, seed: int = 7) -> list[Path]:
    """Write the three files and ``truth.json`` to ``out`` (atomic, CSV with a header)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = make_apparel(clients, seed)
    written = []
    for key, name in FILES.items():
        with atomic_path(out / name) as tmp:
            d[key].to_csv(tmp, index=False)
        written.append(out / name)
    written.append(write_json(d["truth"], out / "truth.json"))
    return written


def is_current(out: Path, clients: int, seed: int) -> bool:
    """Whether ``out`` holds this stand-in already (same size, seed and version)."""
    f = Path(out) / "truth.json"
    if not f.exists() or not all((Path(out) / n).exists() for n in FILES.values()):
        return False
    try:
        spec = json.loads(f.read_text(encoding="utf-8"))["spec"]
    except (ValueError, KeyError):
        return False
    return spec == {"clients": clients, "seed": seed, "version": EVENT_VERSION}
