"""Synthetic store data with the real schema, the real messiness and known truth.

``shopbayes demo-data --out data/demo --clients N --seed S [--design store|randomized]``
writes

* ``shop_database.db`` with ``personal_data`` (clients with known gender),
  ``personal_data_coeffs`` (all clients) and ``purchases`` (one row per item);
* ``personal_data.csv.gz``: the "lost" clients, without gender;
* ``ids_first_company_positive.txt`` / ``..._negative.txt``: dirty id files;
* ``truth.json`` (planted parameters) and ``truth_clients.parquet`` (per-client latent
  values) so tests can check that each model recovers what was planted.

The defaults are calibrated to the figures published from the real tables
(``analysis/demo/resources/published.json``; :mod:`analysis.demo.published` compares a data set
with them).

What is planted (all in ``truth.json``):

* **Demographics** from the real marginals (``analysis/demo/resources/marginals.json``).
* **Purchases**: each client buys on a day with a Poisson rate
  ``segment_rate[s] * frailty * city_factor * day_factor[d]`` (frailty ~ Gamma with mean
  1; the day factor falls over the two months, as the published ``dt`` quartiles do).
* **Client-level propensities**: each client has a persistent taste for each product
  type (log-odds ``~ Normal(0, taste_sd)`` added to the segment's type preferences, so
  what a client bought before predicts what they buy next) and a deal proneness (log-odds
  ``~ Normal(0, deal_sd)`` added to the segment's share of items bought on sale, which
  also scales the email's effect by ``exp(tau_deal * deal)``). Frailty drives frequency,
  recency and spend. ``truth.json`` (``propensity``) records the ROC-AUC of the true
  probability of buying each category in the window (given the client's arm) against what
  was bought: the ceiling any propensity model can reach.
* **Segments**: four latent segments (:data:`analysis.demo.catalogue.SEGMENTS`) that differ in
  purchase rate, category preferences and share of items bought on ``base_sale``.
* **Gender**: items of gendered types go to the buyer's gender with probability
  ``p_product_sex_match``; ``personal_coef`` is set by gender and age band (with a little
  noise), as in the real store where it nearly reveals gender.
* **Campaign 1** (days 5..16): the email multiplies a treated client's purchase rate in
  the window by ``exp(tau + tau_city[c] + tau_segment[s])``; treated buyers trade up
  (list prices ``x exp(trade_up)``) and pay ``1 - discount_depth`` of them. The design:

  - ``store`` (default, what the real store did): the store picks the treated among
    adults of country 32 from the purchase records of days 0..2 (a client with more
    purchase days is more likely to be picked); the controls are drawn from the window's
    purchase records among untreated clients of the same city, gender and age band, so
    every control bought (the published figures: 97.4% of treated and 100% of controls
    bought). Selection into treatment depends on observed pre-period behaviour and
    demographics only, so an adjusted comparison with the whole store is valid; the
    control file is selected on the outcome.
  - ``randomized``: the store picks twice as many clients by the same rule and splits
    them at random.

  For both, ``truth.json`` records the effect on the treated (ATT) on conversion, revenue
  per client, items per client and average purchase value, from the simulated potential
  outcomes of the treated clients (conversion and items exactly; revenue by Monte Carlo
  over ``truth_replicates`` draws of each arm).
* **Campaign 2**: in city 1134 the daily order rate is multiplied by
  ``exp(campaign2_log_effect)`` on days 15 and 45.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from analysis.demo import catalogue as cat
from analysis.leftovers import sweep, tagged

RESOURCES = Path(__file__).parent / "resources"
N_DAYS = 59
WINDOW = (5, 16)
CAMPAIGN2_CITY = 1134
CAMPAIGN2_DAYS = (15, 45)
AGE_BANDS = np.array([0, 18, 25, 35, 49, 60, 200])
COEF_BY_GENDER_BAND = {  # personal_coef by (gender, age band); 12 of the 15 values
    0: (0.2701, 0.4893, 0.5021, 0.5072, 0.5207, 0.5584),
    1: (0.2336, 0.3911, 0.4117, 0.4304, 0.4502, 0.4689),
}
COEF_EXTRA = (0.3308, 0.3645, 0.5418)


DESIGNS = ("store", "randomized")


@dataclass(frozen=True)
class DemoSpec:
    """Size, seed, campaign-1 design and planted parameters of a synthetic data set.

    Rates are orders (purchase days) per client-day; campaign effects are on the log
    scale of the purchase rate (``tau = 0.85`` multiplies a treated client's rate in the
    window by about 2.3 for the average city and segment).
    """

    clients: int = 104_989
    seed: int = 2024
    design: str = "store"
    lost_share: float = 0.15
    campaign_group_size: int | None = None  # default: 5,000 scaled by clients / 104,989
    segment_rate: tuple[float, ...] = (0.125, 0.11, 0.105, 0.085)
    frailty_shape: float = 5.0
    day_decline: tuple[float, float] = (1.3, 20.0)  # day factor 1 + a * exp(-d / b)
    segment_sale_share: tuple[float, ...] = (0.2, 0.3, 0.75, 0.25)
    items_per_order_extra: float = 0.2
    # list prices x 1.09: 1.15 before the client-level propensities, which made the average
    # item dearer (cost mean 5,703 against the published 5,407)
    price_scale: float = 1.09
    price_spread: float = 0.65  # SD of log list prices around a type's median
    p_product_sex_match: float = 0.85
    product_sex_missing: float = 0.08
    unisex_labelled: float = 0.4
    coef_noise: float = 0.02
    # client-level purchase propensities (drawn from their own stream, seed [seed, 3])
    # SD of a client's persistent log-odds taste for each product type, and of their deal
    # proneness: larger values blur the planted segments for the segments step's mixture
    # (taste 0.3 or 0.5 made it choose 8 to 10 clusters at real scale, ARI 0.34-0.37 with
    # the 4 planted; deal 0.3 made it choose 7 at 25,000 clients); 0.15 and 0.2 keep 4
    taste_sd: float = 0.15
    deal_sd: float = 0.2  # SD of a client's log-odds of buying an item on sale (deal proneness)
    # campaign 1
    selection_days: tuple[int, int] = (0, 2)
    selection_power: float = 3.0  # weight of a client = purchase days in selection_days ** p
    control_power: float = 2.5  # store design: weight of a control = window purchase days ** p
    tau: float = 0.85
    sigma_tau_city: float = 0.15
    tau_segment: tuple[float, ...] = (-0.15, 0.05, 0.3, -0.2)
    tau_deal: float = 1.0  # log-rate effect of the email per unit of a client's deal proneness
    trade_up: float = 0.18
    discount_depth: float = 0.15
    truth_replicates: int = 20
    # campaign 2
    campaign2_log_effect: float = 0.19

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise ValueError(f"unknown campaign-1 design {self.design!r}; use one of {DESIGNS}")


def _marginals() -> dict:
    return json.loads((RESOURCES / "marginals.json").read_text(encoding="utf-8"))


def _price99(x: np.ndarray) -> np.ndarray:
    """Round to prices ending in 99 (steps of 500 above 1,000, of 100 below)."""
    step = np.where(x >= 1000, 500, 100)
    return np.maximum(np.round(x / step) * step - 1, 99).astype(np.int64)


def id_space(clients: int) -> int:
    """Client ids of a store of ``clients`` are drawn from ``0..id_space(clients) - 1``
    (the real ids go up to the published ``max_id``; larger stores spread ids by 1.7)."""
    return max(_marginals()["max_id"] + 1, int(clients * 1.7))


def _clients(spec: DemoSpec, rng: np.random.Generator) -> pd.DataFrame:
    m = _marginals()
    n = spec.clients
    ids = np.sort(rng.choice(id_space(n), size=n, replace=False))
    cities = pd.DataFrame(m["cities"])
    ci = rng.choice(len(cities), size=n, p=cities.clients / cities.clients.sum())
    gender = (rng.random(n) < m["p_gender_1"]).astype(np.int64)
    age = np.empty(n, dtype=np.int64)
    for g in (0, 1):
        counts = m["age_counts_by_gender"][str(g)]
        ages = np.array([int(a) for a in counts])
        w = np.array(list(counts.values()), dtype=float)
        sel = gender == g
        age[sel] = rng.choice(ages, size=sel.sum(), p=w / w.sum())
    p_high = np.array([m["p_higher_education_by_gender"][str(g)] for g in (0, 1)])[gender]
    education = np.where(rng.random(n) < p_high, "высшее", "среднее")
    logits = np.zeros((n, 4))
    logits[:, 0] += 0.9 * (age < 35)
    logits[:, 1] += 1.3 * ((age >= 28) & (age <= 45))
    logits[:, 2] += 0.6 * (education == "среднее")
    logits[:, 3] += 0.7 * (age >= 35)
    u = rng.random(n)[:, None]
    segment = (u > np.cumsum(softmax(logits, axis=1), axis=1)).sum(axis=1)
    band = np.searchsorted(AGE_BANDS, age, side="right") - 1
    coef = np.array([COEF_BY_GENDER_BAND[g][b] for g, b in zip(gender, band, strict=True)])
    noisy = rng.random(n) < spec.coef_noise
    pool = np.array(COEF_BY_GENDER_BAND[0] + COEF_BY_GENDER_BAND[1] + COEF_EXTRA)
    coef[noisy] = rng.choice(pool, size=noisy.sum())
    return pd.DataFrame({
        "id": ids, "gender": gender, "age": age, "education": education,
        "city": cities.city.to_numpy()[ci], "country": cities.country.to_numpy()[ci],
        "segment": segment, "age_band": band, "personal_coef": coef,
        "frailty": rng.gamma(spec.frailty_shape, 1 / spec.frailty_shape, size=n),
    })


def _day_factor(spec: DemoSpec) -> np.ndarray:
    """Relative purchase rate by day (mean 1): a weekly cycle on a decline over the two
    months (published ``dt`` mean 25.1, quartiles 10 / 22 / 40)."""
    days = np.arange(N_DAYS)
    a, b = spec.day_decline
    f = (1 + a * np.exp(-days / b)) * (1 + 0.15 * np.sin(2 * np.pi * (days + 3) / 7))
    return f / f.mean()


def _rates(spec: DemoSpec, cl: pd.DataFrame, rng: np.random.Generator,
           city_factor: dict | None = None) -> tuple[np.ndarray, float]:
    """Expected orders per client and day (clients x days) with campaign 2 planted, and
    the expected orders ratio on the campaign days in the campaign city. ``city_factor``
    (city -> rate multiplier) is drawn here unless given (a chunked store shares one)."""
    if city_factor is None:
        city_ids = np.unique(cl.city)
        city_factor = dict(zip(city_ids, np.exp(rng.normal(0, 0.15, len(city_ids))),
                               strict=True))
    city_factor = dict(city_factor)
    city_factor[CAMPAIGN2_CITY] = 1.0  # the campaign city is an ordinary one but for it
    rate = (np.asarray(spec.segment_rate)[cl.segment] * cl.frailty
            * cl.city.map(city_factor).to_numpy())
    lam = rate.to_numpy()[:, None] * _day_factor(spec)[None, :]
    in_1134 = (cl.city == CAMPAIGN2_CITY).to_numpy()
    base = lam[in_1134][:, list(CAMPAIGN2_DAYS)]
    # orders are client-days with >= 1 basket, so they rise by less than the rate does
    denom = (-np.expm1(-base)).sum()
    ratio = ((-np.expm1(-base * np.exp(spec.campaign2_log_effect))).sum() / denom
             if denom > 0 else float(np.exp(spec.campaign2_log_effect)))
    for d in CAMPAIGN2_DAYS:
        lam[in_1134, d] *= np.exp(spec.campaign2_log_effect)
    return lam, float(ratio)


def _group_size(spec: DemoSpec, n: int) -> int:
    return spec.campaign_group_size or max(20, round(5_000 * n / 104_989))


def _pick_groups(spec: DemoSpec, cl: pd.DataFrame, orders: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """The store's rule: adults of country 32 drawn from the purchase records of the
    selection days (weight = purchase days then). ``randomized`` draws twice as many and
    splits them at random; ``store`` returns no controls (they are drawn later)."""
    lo, hi = spec.selection_days
    eligible = (cl.country == 32).to_numpy() & (cl.age >= 18).to_numpy()
    weight = (orders[:, lo:hi + 1] > 0).sum(axis=1) ** spec.selection_power * eligible
    k = _group_size(spec, len(cl))
    need = k if spec.design == "store" else 2 * k
    need = min(need, int((weight > 0).sum()))
    picked = rng.choice(len(cl), size=need, replace=False, p=weight / weight.sum())
    if spec.design == "store":
        return np.sort(picked), None
    picked = rng.permutation(picked)
    half = need // 2
    return np.sort(picked[:half]), np.sort(picked[half:2 * half])


def _store_controls(cl: pd.DataFrame, treated: np.ndarray, window_orders: np.ndarray,
                    power: float, rng: np.random.Generator) -> np.ndarray:
    """Controls as the real store drew them: untreated adults of country 32 who bought in
    the window, from the window's purchase records (weight = purchase days ** ``power``), matched to
    the treated on city, gender and age band."""
    n = len(cl)
    is_t = np.zeros(n, dtype=bool)
    is_t[treated] = True
    cand = ((cl.country == 32).to_numpy() & (cl.age >= 18).to_numpy() & ~is_t
            & (window_orders > 0))
    top = cl.city.value_counts().index[:25]
    city_key = np.where(cl.city.isin(top), cl.city, -1)
    strata = pd.Series(list(zip(city_key, cl.gender, cl.age_band, strict=True)))
    by_stratum = {key: idx for key, idx in
                  pd.Series(np.flatnonzero(cand)).groupby(strata[cand].to_numpy())}
    chosen = np.zeros(n, dtype=bool)
    short = 0
    for key, n_t in strata.iloc[treated].value_counts().sort_index().items():
        cands = by_stratum.get(key)
        cands = np.empty(0, dtype=int) if cands is None else cands.to_numpy()
        take = min(n_t, len(cands))
        if take:
            w = window_orders[cands].astype(float) ** power
            chosen[rng.choice(cands, size=take, replace=False, p=w / w.sum())] = True
        short += n_t - take
    if short:
        rest = np.flatnonzero(cand & ~chosen)
        w = window_orders[rest].astype(float) ** power
        chosen[rng.choice(rest, size=min(short, len(rest)), replace=False, p=w / w.sum())] = True
    return np.flatnonzero(chosen)


def _campaign1(spec: DemoSpec, cl: pd.DataFrame, lam: np.ndarray, orders: np.ndarray,
               rng: np.random.Generator, tau_city: dict | None = None) -> dict:
    """Pick the groups, plant the email's effect on the treated's window orders (in
    place) and return the groups and the per-client log-rate uplift. ``tau_city`` is
    drawn here unless given (a chunked store shares one)."""
    treated, control = _pick_groups(spec, cl, orders, rng)
    if tau_city is None:
        city_ids = np.unique(cl.city)
        tau_city = dict(zip(city_ids, rng.normal(0, spec.sigma_tau_city, len(city_ids)),
                            strict=True))
    tau_i = (spec.tau + cl.city.map(tau_city).to_numpy()
             + np.asarray(spec.tau_segment)[cl.segment.to_numpy()]
             + spec.tau_deal * cl.deal.to_numpy())
    lo, hi = WINDOW
    mult = np.exp(tau_i[treated])[:, None]
    orders[treated, lo:hi + 1] = rng.poisson(lam[treated, lo:hi + 1] * mult)
    if control is None:
        control = _store_controls(cl, treated, orders[:, lo:hi + 1].sum(axis=1),
                                  spec.control_power, rng)
    group = np.zeros(len(cl), dtype=np.int64)
    group[treated] = 1
    group[control] = 2
    return {"group": group, "tau_i": tau_i, "tau_city": tau_city}


def _att(spec: DemoSpec, cl: pd.DataFrame, lam: np.ndarray, tau_i: np.ndarray,
         treated: np.ndarray, products: pd.DataFrame, rng: np.random.Generator,
         taste: np.ndarray) -> dict[str, float]:
    """The effect on the treated from their potential outcomes in the window.

    Conversion and items are exact expectations given each treated client's rates;
    revenue is a Monte Carlo mean over ``truth_replicates`` draws of each arm (list
    prices as the generator draws them; the few recording errors it adds later, left out
    of revenue by the cleaning, are not in it). Average purchase value is revenue per item
    of each arm (ratio of the treated clients' means).
    """
    lo, hi = WINDOW
    lam_w = lam[treated, lo:hi + 1].sum(axis=1)
    mult = np.exp(tau_i[treated])
    items_per_order = 1 + spec.items_per_order_extra
    out = {"clients": len(treated)}
    arms = {}
    for arm, m in (("treated", mult), ("untreated", np.ones_like(mult))):
        conv = -np.expm1(-lam_w * m)
        items = lam_w * m * items_per_order
        revenue = np.zeros(len(treated))
        for _ in range(spec.truth_replicates):
            n_orders = rng.poisson(lam_w * m)
            n_items = n_orders + rng.poisson(spec.items_per_order_extra * n_orders)
            who = np.repeat(np.arange(len(treated)), n_items)
            cost = _item_costs(spec, cl.iloc[treated[who]], products, rng,
                               treated_price=arm == "treated", taste=taste[treated[who]])
            revenue += np.bincount(who, weights=cost, minlength=len(treated))
        revenue /= spec.truth_replicates
        arms[arm] = {"conversion": float(conv.mean()), "items_per_client": float(items.mean()),
                     "revenue_per_client": float(revenue.mean())}
        arms[arm]["average_purchase_value"] = (arms[arm]["revenue_per_client"]
                                               / arms[arm]["items_per_client"])
    for k in ("conversion", "revenue_per_client", "items_per_client", "average_purchase_value"):
        out[k] = arms["treated"][k] - arms["untreated"][k]
    out["potential_outcomes"] = arms
    return out


def catalogue(spec: DemoSpec) -> pd.DataFrame:
    """The products and list prices every chunk of a large store sells (one draw seeded
    by ``spec.seed``): a store has one catalogue, and chunks that each drew their own
    sold differently named products and differed by up to 20% in the average price paid
    (4,823 to 5,861 per item over five chunks of the 10-million-client store)."""
    return _catalogue(_catalogue_stream(spec), spec.price_scale, spec.price_spread)


def _catalogue_stream(spec: DemoSpec) -> np.random.Generator:
    return np.random.default_rng([spec.seed, 8])


def _catalogue(rng: np.random.Generator, price_scale: float = 1.0, price_spread: float = 0.45
               ) -> pd.DataFrame:
    rows = []
    for t_idx, t in enumerate(cat.TYPES):
        variants = [(False, None)]
        if t.gendered:
            variants = [(False, 1), (False, 0)]
        if t.kids:
            variants += [(True, 1), (True, 0)] if t.gendered else [(True, None)]
        for kids, sex in variants:
            for b_idx, brand in enumerate(t.brands):
                models = rng.choice(len(cat.MODELS), size=3, replace=False)
                for mi in models:
                    suffix = t.suffix[rng.integers(len(t.suffix))]
                    audience = (cat.KIDS_AUDIENCE[sex] if kids
                                else cat.ADULT_AUDIENCE.get(sex, "") if sex is not None else "")
                    words = [t.name, audience, brand, cat.MODELS[mi]]
                    name = " ".join(w for w in words if w) + suffix
                    base = t.price * price_scale * (0.6 if kids else 1.0)
                    n_col = 1 + int(rng.random() < 0.25)
                    colours = rng.choice(len(cat.COLOURS), size=n_col, replace=False)
                    rows.append({
                        "type": t_idx, "kids": kids, "sex": -1 if sex is None else sex,
                        "brand": brand, "name": name,
                        "price": int(_price99(np.array([
                            base * rng.lognormal(0, price_spread)]))[0]),
                        "colour": "/".join(cat.COLOURS[c] for c in colours),
                        "brand_rank": b_idx,
                    })
    return pd.DataFrame(rows)


def _name_variant(name: str, brand: str, kind: int) -> str:
    """A heterogeneous spelling of one product name (same canonical key)."""
    if kind == 1:
        return name.lower()
    if kind == 2:
        return name.replace(brand, brand.upper())
    if kind == 3:
        return "  ".join(name.split(" ", 1))
    rest = name.replace(brand + " ", "").replace(" " + brand, "")
    return f"{brand} {rest[0].lower()}{rest[1:]}"


GENDER_TILT = (("Бутсы", 0.8), ("Гантели", 0.6), ("Купальник", -1.2),
               ("Коврик для йоги", -0.9), ("Роликовые коньки", -0.3))


def _gender_tilt() -> np.ndarray:
    tilt = np.zeros(len(cat.TYPES))
    names = [t.name for t in cat.TYPES]
    for name, value in GENDER_TILT:
        tilt[names.index(name)] = value
    return tilt


def type_logits(seg: np.ndarray, gender: np.ndarray, taste: np.ndarray | None = None
                ) -> np.ndarray:
    """Log-odds of each product type (items x types) for buyers of segment ``seg`` and
    gender ``gender``, plus their own ``taste`` (items x types) when given."""
    affinity = np.array([t.affinity for t in cat.TYPES])  # types x segments
    logits = affinity.T[seg] + np.outer(2 * gender - 1, _gender_tilt()) / 2
    return logits if taste is None else logits + taste


def _sale_logit(spec: DemoSpec, seg: np.ndarray, deal: np.ndarray | None) -> np.ndarray:
    share = np.asarray(spec.segment_sale_share)[seg]
    base = np.log(share / (1 - share))
    return base if deal is None else base + deal


def _draw_products(spec: DemoSpec, seg: np.ndarray, gender: np.ndarray,
                   products: pd.DataFrame, rng: np.random.Generator,
                   taste: np.ndarray | None = None, deal: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Product (catalogue row) and on-sale flag of items bought by clients of segment
    ``seg`` and gender ``gender`` (one entry per item), with the buyers' type ``taste``
    (items x types) and ``deal`` proneness (items) when given."""
    m = len(seg)
    logits = type_logits(seg, gender, taste)
    u = rng.random(m)[:, None]
    type_idx = (u > np.cumsum(softmax(logits, axis=1), axis=1)).sum(axis=1)
    type_idx = np.minimum(type_idx, len(cat.TYPES) - 1)
    kids_able = np.array([t.kids for t in cat.TYPES])[type_idx]
    kids = kids_able & (rng.random(m) < np.where(seg == 1, 0.65, 0.08))
    gendered = np.array([t.gendered for t in cat.TYPES])[type_idx]
    match = rng.random(m) < spec.p_product_sex_match
    sex = np.where(gendered, np.where(match, gender, 1 - gender), -1)
    key = products.type * 100 + products.kids.astype(int) * 10 + (products.sex + 1)
    groups = {k: g.index.to_numpy() for k, g in products.groupby(key)}
    item_key = type_idx * 100 + kids.astype(int) * 10 + (sex + 1)
    product = np.empty(m, dtype=np.int64)
    for k in np.unique(item_key):
        sel = np.flatnonzero(item_key == k)
        product[sel] = rng.choice(groups[k], size=len(sel))
    sale = rng.random(m) < 1 / (1 + np.exp(-_sale_logit(spec, seg, deal)))
    return product, sale


def _paid(spec: DemoSpec, price: np.ndarray, sale: np.ndarray, treated_price: np.ndarray
          ) -> np.ndarray:
    """What a client pays for an item: the list price, 30% off on ``base_sale``, and for
    treated clients in the window a pricier item (``trade_up``) at the personal discount."""
    cost = np.where(sale, _price99(price * 0.7), price)
    up = _price99(cost * np.exp(spec.trade_up) * (1 - spec.discount_depth))
    return np.where(treated_price, up, cost)


def _item_costs(spec: DemoSpec, buyers: pd.DataFrame, products: pd.DataFrame,
                rng: np.random.Generator, treated_price: bool,
                taste: np.ndarray | None = None) -> np.ndarray:
    """Paid costs of one item per row of ``buyers`` (their segment, gender, deal
    proneness and ``taste``: buyers x types)."""
    product, sale = _draw_products(spec, buyers.segment.to_numpy(), buyers.gender.to_numpy(),
                                   products, rng, taste, buyers.deal.to_numpy())
    price = products.price.to_numpy()[product]
    return _paid(spec, price, sale, np.full(len(product), treated_price)).astype(float)


def _items(spec: DemoSpec, cl: pd.DataFrame, orders: np.ndarray, group: np.ndarray,
           products: pd.DataFrame, rng: np.random.Generator, taste: np.ndarray
           ) -> tuple[pd.DataFrame, dict]:
    n_items = orders + rng.poisson(spec.items_per_order_extra * orders)
    client, day = np.nonzero(n_items)
    reps = n_items[client, day]
    client = np.repeat(client, reps)
    day = np.repeat(day, reps)
    m = len(client)
    product, sale = _draw_products(spec, cl.segment.to_numpy()[client],
                                   cl.gender.to_numpy()[client], products, rng,
                                   taste[client], cl.deal.to_numpy()[client])
    lo, hi = WINDOW
    treated_window = (group[client] == 1) & (day >= lo) & (day <= hi)
    cost = _paid(spec, products.price.to_numpy()[product], sale, treated_window)
    # messiness: odd costs, missing product_sex, colour gaps and spellings, name variants
    r = rng.random(m)
    cost = np.where(r < 0.0003, -rng.integers(1, 31, m), cost)
    cost = np.where((r >= 0.0003) & (r < 0.0008), 0, cost)
    extreme = (r >= 0.0008) & (r < 0.0009)
    cost = np.where(extreme, np.minimum(cost * rng.integers(30, 80, m), 446_420), cost)
    product_sex = products.sex.to_numpy()[product]
    # some unisex items carry a gender label anyway (the buyer's, as gendered items do)
    labelled = (product_sex < 0) & (rng.random(m) < spec.unisex_labelled)
    buyer = cl.gender.to_numpy()[client]
    product_sex = np.where(labelled, np.where(rng.random(m) < spec.p_product_sex_match, buyer,
                                              1 - buyer), product_sex)
    product_sex = np.where(rng.random(m) < spec.product_sex_missing, -1, product_sex)
    colour = products.colour.to_numpy()[product].astype(object)
    yo = rng.random(m) < 0.3
    colour[yo] = [c.replace("черный", "чёрный") for c in colour[yo]]
    colour[rng.random(m) < 0.15] = None
    names = products.name.to_numpy()[product].astype(object)
    brands = products.brand.to_numpy()[product]
    kind = rng.integers(0, 5, m) * (rng.random(m) < 0.3)
    for k in range(1, 5):
        sel = np.flatnonzero(kind == k)
        names[sel] = [_name_variant(nm, b, k) for nm, b in zip(names[sel], brands[sel],
                                                               strict=True)]
    items = pd.DataFrame({
        "id": cl.id.to_numpy()[client], "product": names, "colour": colour,
        "cost": cost.astype(np.int64),
        "product_sex": pd.array(np.where(product_sex < 0, pd.NA, product_sex), dtype="Int64"),
        "base_sale": sale.astype(np.int64), "dt": day.astype(np.int64),
    })
    truth = {"n_catalogue_products": len(products),
             "type_affinity_by_segment": {t.name: list(t.affinity) for t in cat.TYPES},
             "type_gender_tilt": dict(zip([t.name for t in cat.TYPES], _gender_tilt().tolist(),
                                          strict=True))}
    return items, truth


def category_of_type() -> np.ndarray:
    """The cleaned category (first Cyrillic word, as :func:`analysis.store.rules.
    product_category` reads it) of each product type."""
    from analysis.store.rules import product_category

    return product_category(pd.Series([t.name for t in cat.TYPES])).to_numpy(dtype=object)


def propensity_truth(spec: DemoSpec, cl: pd.DataFrame, lam: np.ndarray, tau_i: np.ndarray,
                     group: np.ndarray, taste: np.ndarray, items: pd.DataFrame) -> dict:
    """The ceiling of a window propensity model: ROC-AUC of each client's true
    probability of buying each category in campaign 1's window (given their arm) against
    whether they bought it.

    Items of a category arrive as a thinned compound Poisson process: with ``L`` expected
    orders in the window, ``1 + Poisson(e)`` items per order and a share ``q`` of items in
    the category, P(none) = ``exp(-L * (1 - (1 - q) * exp(-e * q)))``.
    """
    from sklearn.metrics import roc_auc_score

    from analysis.store.rules import product_category

    lo, hi = WINDOW
    treated = group == 1
    L = lam[:, lo:hi + 1].sum(axis=1) * np.where(treated, np.exp(tau_i), 1.0)
    cats, col = np.unique(category_of_type(), return_inverse=True)
    p = np.zeros((len(cl), len(cats)))
    e = spec.items_per_order_extra
    block = 100_000
    for s in range(0, len(cl), block):
        sl = slice(s, s + block)
        logit = type_logits(cl.segment.to_numpy()[sl], cl.gender.to_numpy()[sl], taste[sl])
        share = np.exp(logit - logit.max(axis=1, keepdims=True))
        share /= share.sum(axis=1, keepdims=True)
        q = np.zeros((len(share), len(cats)))
        np.add.at(q.T, col, share.T)
        p[sl] = -np.expm1(-L[sl, None] * (1 - (1 - q) * np.exp(-e * q)))
    w = items[(items.dt >= lo) & (items.dt <= hi)]
    pos = pd.Series(np.arange(len(cl)), index=cl.id.to_numpy())
    wc = product_category(w["product"]).to_numpy(dtype=object)
    y = np.zeros_like(p, dtype=bool)
    known = np.isin(wc, cats)
    y[pos.loc[w.id.to_numpy()[known]].to_numpy(), np.searchsorted(cats, wc[known])] = True
    out = {"taste_sd": spec.taste_sd, "deal_sd": spec.deal_sd, "tau_deal": spec.tau_deal,
           "window": list(WINDOW), "categories": len(cats),
           "auc_ceiling": float(roc_auc_score(y.ravel(), p.ravel())),
           "base_rate": float(y.mean())}
    if treated.any() and y[treated].any():
        out["auc_ceiling_contacted"] = float(roc_auc_score(y[treated].ravel(),
                                                           p[treated].ravel()))
    return out


def _dirty_ids(ids: np.ndarray, label: str, rng: np.random.Generator, sep: str) -> str:
    """Write ids the way the real files look: header, mixed separators, glued letters,
    and a hard wrap every 1,000 characters."""
    seps = np.array([sep] * 20 + [" ", "|||", sep * 3, "  "])
    junk = ["ahashdg", "dtj", "kdkdjff", "hsdgh", "yfsdf"]
    parts = [f"Ids of {label} AB people "]
    for i, v in enumerate(rng.permutation(ids)):
        parts.append(str(v))
        if i < len(ids) - 1:
            if rng.random() < 0.002:
                parts.append(junk[rng.integers(len(junk))] + sep)
            else:
                parts.append(str(seps[rng.integers(len(seps))]))
    text = "".join(parts)
    return "\n".join(text[i:i + 1000] for i in range(0, len(text), 1000)) + "\n\n"


def generate(spec: DemoSpec, city_effects: tuple[dict, dict] | None = None,
             id_offset: int = 0, catalogue: pd.DataFrame | None = None) -> dict:
    """Build every table and the planted truth in memory (see the module docstring).

    ``city_effects`` (``city_factor``, ``tau_city``: city -> purchase-rate multiplier and
    campaign-1 log-rate effect), ``catalogue`` (:func:`catalogue`: products and list
    prices) and ``id_offset`` (added to every client id) let :mod:`analysis.demo.parquet`
    build a large store as chunks that share one set of city effects and one catalogue
    and have disjoint ids; by default the effects and the catalogue are drawn here.
    """
    rng = np.random.default_rng(spec.seed)
    cl = _clients(spec, rng)
    cl["id"] += id_offset
    # client-level propensities from a stream of their own (the other draws stay put)
    rng_client = np.random.default_rng([spec.seed, 3])
    taste = rng_client.normal(0, spec.taste_sd, (len(cl), len(cat.TYPES))).astype(np.float32)
    cl["deal"] = rng_client.normal(0, spec.deal_sd, len(cl))
    factor, tau_city = city_effects if city_effects is not None else (None, None)
    lam, c2_ratio = _rates(spec, cl, rng, factor)
    orders = rng.poisson(lam).astype(np.int32)
    c1 = _campaign1(spec, cl, lam, orders, rng, tau_city)
    group = c1["group"]
    # the catalogue comes from a stream of its own (the one a chunked store shares): drawn
    # from the main stream, it changed whenever an earlier draw did (a planted parameter of
    # campaign 1 moved the average list price by 12%); the main stream's draw is still made
    # so that the draws after it stay put
    _catalogue(rng, spec.price_scale, spec.price_spread)
    products = (_catalogue(_catalogue_stream(spec), spec.price_scale, spec.price_spread)
                if catalogue is None else catalogue)
    items, item_truth = _items(spec, cl, orders, group, products, rng, taste)
    treated = np.flatnonzero(group == 1)
    att = _att(spec, cl, lam, c1["tau_i"], treated, products,
               np.random.default_rng([spec.seed, 1]), taste)
    lost = rng.random(len(cl)) < spec.lost_share
    cl["lost"] = lost
    coeffs = pd.DataFrame({
        "id": cl.id, "lbt_coef": np.round(rng.uniform(4.5, 8.2, len(cl)), 4),
        "ac_coef": np.round(rng.uniform(-4.5, 0.3, len(cl)), 4),
        "sm_coef": np.round(rng.uniform(0.8, 1.0, len(cl)), 4), "personal_coef": cl.personal_coef,
    })
    coeffs.loc[rng.random(len(cl)) < 0.01, "lbt_coef"] = np.nan
    cities_in_campaign = sorted(set(cl.city[group > 0].tolist()))
    lo, hi = WINDOW
    window_bought = orders[:, lo:hi + 1].sum(axis=1) > 0
    pre_orders = (orders[:, :lo] > 0).sum(axis=1)
    truth = {
        "spec": asdict(spec),
        "segments": list(cat.SEGMENTS),
        "n_segments": len(cat.SEGMENTS),
        "gender_coding": "product_sex uses the gender coding (1 = items for gender-1 clients)",
        "campaign1": {
            "design": spec.design,
            "window": list(WINDOW),
            "selection": ("treated: adults (18+) of country 32 drawn from the purchase records "
                          f"of days {spec.selection_days[0]}..{spec.selection_days[1]} "
                          "(weight = purchase days then); "
                          + ("controls: untreated adults of country 32 who bought in the "
                             "window, drawn from the window's purchase records, matched on "
                             "city, gender and age band" if spec.design == "store" else
                             "controls: drawn by the same rule and split at random")),
            "ignorable_given": ["purchase days in days 0..4", "age band", "country"],
            "att": att,
            "tau_log_rate": spec.tau, "sigma_tau_city": spec.sigma_tau_city,
            "tau_segment": list(spec.tau_segment),
            "tau_city": {str(c): c1["tau_city"][c] for c in cities_in_campaign},
            "trade_up": spec.trade_up, "discount_depth": spec.discount_depth,
            "model": "orders per day ~ Poisson(rate); treated in days 5..16: rate x "
                     "exp(tau + tau_city + tau_segment + tau_deal * deal)",
            "tau_deal": spec.tau_deal,
        },
        "campaign2": {"city": CAMPAIGN2_CITY, "days": list(CAMPAIGN2_DAYS),
                      "log_effect_rate": spec.campaign2_log_effect,
                      "orders_ratio_expected": c2_ratio, "shift_days": []},
        "products": item_truth,
        "propensity": propensity_truth(spec, cl, lam, c1["tau_i"], group, taste, items),
    }
    p0 = -np.expm1(-lam[:, lo:hi + 1].sum(axis=1))
    clients_truth = pd.DataFrame({
        "id": cl.id, "gender": cl.gender, "segment": cl.segment, "lost": lost,
        "group": np.array(["none", "treated", "control"])[group],
        "pre_orders": pre_orders, "bought_window": window_bought,
        "frailty": cl.frailty, "deal": cl.deal,
        "p_convert_untreated": p0,
        "p_convert_treated": -np.expm1(-lam[:, lo:hi + 1].sum(axis=1) * np.exp(c1["tau_i"])),
    })
    return {"clients": cl, "coeffs": coeffs, "purchases": items, "truth": truth,
            "clients_truth": clients_truth,
            "treated_ids": cl.id.to_numpy()[group == 1],
            "control_ids": cl.id.to_numpy()[group == 2]}


_SQL = {
    "personal_data": "CREATE TABLE personal_data (id INTEGER, gender INTEGER, age INTEGER, "
                     "education TEXT, city INTEGER, country INTEGER)",
    "personal_data_coeffs": "CREATE TABLE personal_data_coeffs (id INTEGER, lbt_coef REAL, "
                            "ac_coef REAL, sm_coef REAL, personal_coef REAL)",
    "purchases": "CREATE TABLE purchases (id INTEGER, product TEXT, colour TEXT, cost INTEGER, "
                 "product_sex INTEGER, base_sale INTEGER, dt INTEGER)",
}


def _records(df: pd.DataFrame) -> list[tuple]:
    cols = [df[c].astype(object).where(df[c].notna(), None).tolist() for c in df.columns]
    return list(zip(*cols, strict=True))


def _write_db(path: Path, tables: dict[str, pd.DataFrame]) -> None:
    con = sqlite3.connect(path)
    try:
        for name, df in tables.items():
            con.execute(_SQL[name])
            marks = ",".join("?" * df.shape[1])
            con.executemany(f"INSERT INTO {name} VALUES ({marks})", _records(df))
        con.commit()
    finally:
        con.close()


def write_id_files(folder: Path, treated: np.ndarray, control: np.ndarray,
                   rng: np.random.Generator) -> None:
    """Campaign 1's two id files, as dirty as the real ones (:func:`_dirty_ids`)."""
    (folder / "ids_first_company_positive.txt").write_text(
        _dirty_ids(treated, "positive", rng, ","), encoding="utf-8")
    (folder / "ids_first_company_negative.txt").write_text(
        _dirty_ids(control, "negative", rng, ";"), encoding="utf-8")


def publish(tmp: Path, out: Path, truth: dict) -> dict[str, Path]:
    """Write ``truth.json`` and move every file of ``tmp`` into ``out`` (file by file);
    returns file name -> path."""
    (tmp / "truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1),
                                    encoding="utf-8")
    written = {}
    for f in sorted(tmp.iterdir()):
        os.replace(f, out / f.name)
        written[f.name] = out / f.name
    return written


def write_demo(out: str | Path, spec: DemoSpec | None = None) -> dict[str, Path]:
    """Generate a data set and write it into ``out`` atomically (file by file).

    Same ``spec`` (size and seed) gives byte-identical files.
    """
    spec = spec or DemoSpec()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = generate(spec)
    cl = d["clients"]
    known = cl[~cl.lost][["id", "gender", "age", "education", "city", "country"]]
    lost = cl[cl.lost][["id", "age", "education", "city", "country"]]
    purchases = d["purchases"].sort_values(["dt", "id"], kind="stable")
    rng = np.random.default_rng(spec.seed + 1)
    # a killed run's folder (its name carries the process id) goes now
    sweep(out)
    tmp = Path(tempfile.mkdtemp(prefix=tagged("demo"), dir=out))
    try:
        _write_db(tmp / "shop_database.db", {"personal_data": known,
                                             "personal_data_coeffs": d["coeffs"],
                                             "purchases": purchases})
        with open(tmp / "personal_data.csv.gz", "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(lost.to_csv(index=False).encode("utf-8"))
        write_id_files(tmp, d["treated_ids"], d["control_ids"], rng)
        d["clients_truth"].to_parquet(tmp / "truth_clients.parquet", index=False)
        return publish(tmp, out, d["truth"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
