"""Segments worth acting on: the predicted probability that a client buys less, combined
with the profit the client brings, and offers generated from each segment's numbers.

Segments (first matching rule wins, thresholds in :class:`SegmentRules`):

1. ``at risk: promo-driven, items left in cart`` - P(decline) >= ``p_threshold``, promo
   share >= ``promo_threshold`` and unpaid items in the cart at or above the
   ``unpaid_quantile`` of all clients;
2. ``at risk: high profit`` - P(decline) >= ``p_threshold`` and profit at or above the
   ``profit_quantile`` of all clients;
3. ``at risk: lower profit`` - the other clients at risk;
4. ``stable: high profit`` and 5. ``stable: lower profit`` - the rest.

Each segment is described by how far its medians and shares stand from all clients
(standardised mean differences); an offer is proposed for every feature that stands out
by at least ``min_smd`` in the direction a rule knows how to act on, with the segment's
own numbers in the sentence. Nothing in an offer is hand-written per segment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

AT_RISK_CART = "at risk: promo-driven, items left in cart"
AT_RISK_HIGH = "at risk: high profit"
AT_RISK_LOW = "at risk: lower profit"
STABLE_HIGH = "stable: high profit"
STABLE_LOW = "stable: lower profit"
SEGMENTS = (AT_RISK_CART, AT_RISK_HIGH, AT_RISK_LOW, STABLE_HIGH, STABLE_LOW)


@dataclass(frozen=True)
class SegmentRules:
    """Thresholds of the action segments (documented defaults)."""

    p_threshold: float = 0.5
    profit_quantile: float = 0.5
    promo_threshold: float = 0.5
    unpaid_quantile: float = 0.75
    min_smd: float = 0.3


def assign_segments(frame: pd.DataFrame, p: np.ndarray, rules: SegmentRules | None = None
                    ) -> tuple[pd.Series, dict[str, float]]:
    """Segment of each client and the thresholds used (in the data's units).

    ``frame`` needs ``profit``, ``promo_share`` and ``unpaid_items``; ``p`` is P(decline).
    """
    r = rules or SegmentRules()
    p = np.asarray(p, float)
    if len(p) != len(frame):
        raise ValueError(f"{len(p)} probabilities for {len(frame)} clients")
    if np.isnan(p).any():
        raise ValueError("P(decline) has missing values")
    profit_cut = float(frame["profit"].quantile(r.profit_quantile))
    unpaid_cut = float(frame["unpaid_items"].quantile(r.unpaid_quantile))
    risk = p >= r.p_threshold
    high = frame["profit"].to_numpy() >= profit_cut
    cart = (frame["promo_share"].to_numpy() >= r.promo_threshold) \
        & (frame["unpaid_items"].to_numpy() >= unpaid_cut)
    seg = np.select([risk & cart, risk & high, risk, high],
                    [AT_RISK_CART, AT_RISK_HIGH, AT_RISK_LOW, STABLE_HIGH], STABLE_LOW)
    thresholds = {"p_decline": r.p_threshold, "profit": profit_cut,
                  "promo_share": r.promo_threshold, "unpaid_items": unpaid_cut}
    return pd.Series(seg, index=frame.index, name="segment"), thresholds


def profit_at_risk(profit: np.ndarray, p_draws: np.ndarray, segment: pd.Series
                   ) -> pd.DataFrame:
    """Expected monthly profit of clients who will buy less, per segment: the sum over
    clients of P(decline) x profit, with a 94% interval over posterior draws of P."""
    rows = []
    for seg in [s for s in SEGMENTS if (segment == s).any()]:
        m = (segment == seg).to_numpy()
        tot = p_draws[:, m] @ np.asarray(profit, float)[m]
        lo, hi = np.quantile(tot, [0.03, 0.97])
        rows.append({"segment": seg, "profit_at_risk": float(tot.mean()),
                     "profit_at_risk_low": float(lo), "profit_at_risk_high": float(hi)})
    return pd.DataFrame(rows)


def _values(frame: pd.DataFrame, numeric: list[str]) -> pd.DataFrame:
    """The numeric columns and one 0/1 column per level (``service=премиум``) of the
    categorical ones: what segments are compared on."""
    dummies = pd.get_dummies(frame[["service", "consent", "category"]].astype(str),
                             prefix_sep="=").astype(float)
    return pd.concat([frame[numeric].astype(float), dummies], axis=1)


def profile_segments(frame: pd.DataFrame, segment: pd.Series, p: np.ndarray,
                     numeric: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Size, P(decline), profit and feature medians per segment, and the standardised mean
    difference (segment vs all clients) of every numeric feature and level share."""
    f = frame.assign(p_decline=np.asarray(p, float), segment=segment.to_numpy())
    values = _values(frame, numeric + ["profit"])
    mu, sd = values.mean(), values.std().replace(0, np.nan)
    rows, smd_rows = [], []
    for seg in [s for s in SEGMENTS if (segment == s).any()]:
        m = (f["segment"] == seg).to_numpy()
        g = f[m]
        top_cat = g["category"].value_counts()
        rows.append({
            "segment": seg, "clients": int(m.sum()), "share": float(m.mean()),
            "mean_p_decline": float(g["p_decline"].mean()),
            "declined_observed": float(g["declined"].mean()) if "declined" in g else np.nan,
            "profit_median": float(g["profit"].median()),
            "profit_total": float(g["profit"].sum()),
            "top_category": str(top_cat.index[0]),
            "top_category_share": float(top_cat.iloc[0] / len(g)),
            **{f"median_{c}": float(g[c].median()) for c in numeric},
        })
        d = (values[m].mean() - mu) / sd
        smd_rows.append(d.rename(seg))
    smd = pd.DataFrame(smd_rows)
    smd.index.name = "segment"
    return pd.DataFrame(rows), smd.reset_index()


@dataclass(frozen=True)
class OfferRule:
    """An offer for segments where ``feature`` stands out in ``direction`` (+1 higher than
    all clients, -1 lower); ``text`` builds the sentence from the numbers."""

    feature: str
    direction: int
    text: Callable[[dict[str, float], str], str]


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


OFFER_RULES: tuple[OfferRule, ...] = (
    OfferRule("promo_share", +1, lambda v, cat: (
        f"a personal promo code for {cat}: promo purchases are {_pct(v['seg'])} of their "
        f"buying against {_pct(v['all'])} overall")),
    OfferRule("unpaid_items", +1, lambda v, cat: (
        f"a reminder of the items left in the cart with a time-limited discount on them: "
        f"{v['seg']:.1f} unpaid items per quarter against {v['all']:.1f} overall")),
    OfferRule("pages_per_visit", -1, lambda v, cat: (
        f"personalised recommendations and a curated {cat} page to bring them deeper into "
        f"the site: {v['seg']:.1f} pages per visit against {v['all']:.1f} overall")),
    OfferRule("categories_per_visit", -1, lambda v, cat: (
        f"a cross-category bundle built around {cat}: they view {v['seg']:.1f} categories "
        f"per visit against {v['all']:.1f} overall")),
    OfferRule("minutes_m0", -1, lambda v, cat: (
        f"a win-back message this month: {v['seg']:.1f} minutes on site against "
        f"{v['all']:.1f} overall")),
    OfferRule("service_errors", +1, lambda v, cat: (
        f"an apology bonus and a check of the errors they meet: {v['seg']:.1f} service "
        f"errors against {v['all']:.1f} overall")),
    OfferRule("marketing_6m", -1, lambda v, cat: (
        f"more frequent personal contact: {v['seg']:.1f} marketing contacts a month "
        f"against {v['all']:.1f} overall")),
    OfferRule("consent=нет", +1, lambda v, cat: (
        f"ask for marketing consent with a welcome bonus: {_pct(v['seg'])} do not allow "
        f"messages against {_pct(v['all'])} overall")),
    OfferRule("service=премиум", +1, lambda v, cat: (
        f"a premium-tier perk (for example free delivery) in {cat}: {_pct(v['seg'])} are "
        f"premium clients against {_pct(v['all'])} overall")),
)


def offers(frame: pd.DataFrame, segment: pd.Series, smd: pd.DataFrame,
           profiles: pd.DataFrame, min_smd: float = 0.3, top: int = 3) -> pd.DataFrame:
    """Offer suggestions for each at-risk segment from the features that stand out; stable
    segments get a keep-as-is line with their numbers."""
    smd = smd.set_index("segment")
    values = _values(frame, [c for c in smd.columns if c in frame.columns])
    rows = []
    for _, prof in profiles.iterrows():
        seg = prof["segment"]
        m = (segment == seg).to_numpy()
        if not seg.startswith("at risk"):
            rows.append({"segment": seg, "rank": 1, "feature": "",
                         "smd": np.nan, "offer": (
                             f"no retention offer needed: mean P(decline) "
                             f"{prof['mean_p_decline']:.2f}; keep the usual programme")})
            continue
        cands = []
        for rule in OFFER_RULES:
            if rule.feature not in smd.columns or rule.feature not in values.columns:
                continue
            d = float(smd.loc[seg, rule.feature])
            if d * rule.direction >= min_smd:
                v = {"seg": float(values.loc[m, rule.feature].mean()),
                     "all": float(values[rule.feature].mean())}
                cands.append((abs(d), rule.feature, d, rule.text(v, prof["top_category"])))
        cands.sort(reverse=True)
        if not cands:
            cands = [(0.0, "", np.nan, (
                f"a general retention offer in {prof['top_category']}: no single feature "
                f"stands out by {min_smd} SD or more"))]
        for i, (_, feat, d, text) in enumerate(cands[:top], 1):
            rows.append({"segment": seg, "rank": i, "feature": feat, "smd": d, "offer": text})
    return pd.DataFrame(rows)
