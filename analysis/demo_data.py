"""Synthetic store data with the real schema, the real messiness and known truth.

``shopbayes demo-data --out data/demo --clients N --seed S`` writes

* ``shop_database.db`` with ``personal_data`` (clients with known gender),
  ``personal_data_coeffs`` (all clients) and ``purchases`` (one row per item);
* ``personal_data.csv.gz``: the "lost" clients, without gender;
* ``ids_first_company_positive.txt`` / ``..._negative.txt``: dirty id files;
* ``truth.json`` (planted parameters) and ``truth_clients.parquet`` (per-client latent
  values) so tests can check that each model recovers what was planted.

What is planted (all in ``truth.json``):

* **Demographics** from the real marginals (``analysis/resources/marginals.json``).
* **Segments**: four latent segments (:data:`analysis.catalogue.SEGMENTS`) that differ in
  purchase rate, category preferences and share of items bought on ``base_sale``.
* **Gender**: items of gendered types go to the buyer's gender with probability
  ``p_product_sex_match``; ``personal_coef`` is set by gender and age band (with a little
  noise), as in the real store where it nearly reveals gender.
* **Campaign 1** (days 5..16): for the 10,000 campaign clients, buying in the window
  follows ``logit p = alpha + city_base[c] + segment_base[s] + beta_pre * bought_pre
  + treated * (tau + tau_city[c] + tau_segment[s])`` exactly, with
  ``tau_city ~ Normal(0, sigma_tau_city)`` and zero-sum ``tau_segment``; treated buyers
  place more orders and pay ``1 - discount_depth`` of the list price. Controls are
  matched to treated clients on city, gender, age band and pre-period buying.
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
from scipy.special import expit, softmax

from analysis import catalogue as cat

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


@dataclass(frozen=True)
class DemoSpec:
    """Size, seed and planted parameters of a synthetic data set."""

    clients: int = 104_989
    seed: int = 2024
    lost_share: float = 0.15
    campaign_group_size: int | None = None  # default: 5,000 scaled by clients / 104,989
    segment_rate: tuple[float, ...] = (0.075, 0.05, 0.05, 0.028)  # orders per client-day
    segment_sale_share: tuple[float, ...] = (0.2, 0.3, 0.75, 0.25)
    items_per_order_extra: float = 1.5
    p_product_sex_match: float = 0.85
    coef_noise: float = 0.02
    # campaign 1 (conversion in the window, logit scale)
    alpha: float = -0.3
    sigma_city_base: float = 0.3
    segment_base: tuple[float, ...] = (0.4, 0.0, -0.1, -0.3)
    beta_pre: float = 0.8
    tau: float = 0.35
    sigma_tau_city: float = 0.2
    tau_segment: tuple[float, ...] = (-0.15, 0.05, 0.35, -0.25)
    window_orders_extra: float = 0.8
    treated_orders_log_effect: float = 0.15
    discount_depth: float = 0.15
    # campaign 2
    campaign2_log_effect: float = 0.6


def _marginals() -> dict:
    return json.loads((RESOURCES / "marginals.json").read_text(encoding="utf-8"))


def _price99(x: np.ndarray) -> np.ndarray:
    """Round to prices ending in 99 (steps of 500 above 1,000, of 100 below)."""
    step = np.where(x >= 1000, 500, 100)
    return np.maximum(np.round(x / step) * step - 1, 99).astype(np.int64)


def _clients(spec: DemoSpec, rng: np.random.Generator) -> pd.DataFrame:
    m = _marginals()
    n = spec.clients
    id_space = max(m["max_id"] + 1, int(n * 1.7))
    ids = np.sort(rng.choice(id_space, size=n, replace=False))
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
        "frailty": rng.gamma(2.0, 0.5, size=n),
    })


def _orders(spec: DemoSpec, cl: pd.DataFrame, rng: np.random.Generator) -> tuple:
    """Orders per client and day with campaign 2 planted; returns (orders, expected orders
    ratio on the campaign days in the campaign city)."""
    city_ids = np.unique(cl.city)
    city_factor = dict(zip(city_ids, np.exp(rng.normal(0, 0.15, len(city_ids))), strict=True))
    rate = (np.asarray(spec.segment_rate)[cl.segment] * cl.frailty
            * cl.city.map(city_factor).to_numpy())
    days = np.arange(N_DAYS)
    day_factor = 1 + 0.15 * np.sin(2 * np.pi * days / 7) + 0.002 * (days - 29)
    lam = rate.to_numpy()[:, None] * day_factor[None, :]
    in_1134 = (cl.city == CAMPAIGN2_CITY).to_numpy()
    base = lam[in_1134][:, list(CAMPAIGN2_DAYS)]
    # orders are client-days with >= 1 basket, so they rise by less than the rate does
    ratio = (-np.expm1(-base * np.exp(spec.campaign2_log_effect))).sum() / (-np.expm1(-base)).sum()
    for d in CAMPAIGN2_DAYS:
        lam[in_1134, d] *= np.exp(spec.campaign2_log_effect)
    return rng.poisson(lam).astype(np.int32), float(ratio)


def _campaign_groups(spec: DemoSpec, cl: pd.DataFrame, pre_bought: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """0 = not in campaign, 1 = treated, 2 = matched control."""
    n = len(cl)
    k = spec.campaign_group_size or max(20, round(5_000 * n / 104_989))
    eligible = np.flatnonzero((cl.country == 32).to_numpy() & (cl.age >= 16).to_numpy())
    if len(eligible) < 2 * k:
        k = len(eligible) // 2
    group = np.zeros(n, dtype=np.int64)
    treated = rng.choice(eligible, size=k, replace=False)
    group[treated] = 1
    top = cl.city.value_counts().index[:25]
    city_key = np.where(cl.city.isin(top), cl.city, -1)
    strata = pd.Series(list(zip(city_key, cl.gender, cl.age_band, pre_bought, strict=True)))
    pool = pd.Series(eligible[group[eligible] == 0])
    by_stratum = pool.groupby(strata.iloc[pool].to_numpy()).apply(list).to_dict()
    short = 0
    for key, n_t in strata.iloc[treated].value_counts().sort_index().items():
        cands = by_stratum.get(key, [])
        take = min(n_t, len(cands))
        if take:
            group[rng.choice(cands, size=take, replace=False)] = 2
        short += n_t - take
    if short:
        rest = np.flatnonzero(group == 0)
        rest = np.intersect1d(rest, eligible)
        group[rng.choice(rest, size=short, replace=False)] = 2
    return group


def _campaign1(spec: DemoSpec, cl: pd.DataFrame, orders: np.ndarray, pre_bought: np.ndarray,
               rng: np.random.Generator) -> dict:
    group = _campaign_groups(spec, cl, pre_bought, rng)
    city_ids = np.unique(cl.city)
    city_base = dict(zip(city_ids, rng.normal(0, spec.sigma_city_base, len(city_ids)),
                         strict=True))
    tau_city = dict(zip(city_ids, rng.normal(0, spec.sigma_tau_city, len(city_ids)),
                        strict=True))
    inc = group > 0
    treat = (group == 1).astype(float)
    seg = cl.segment.to_numpy()
    eta = (spec.alpha + cl.city.map(city_base).to_numpy() + np.asarray(spec.segment_base)[seg]
           + spec.beta_pre * pre_bought
           + treat * (spec.tau + cl.city.map(tau_city).to_numpy()
                      + np.asarray(spec.tau_segment)[seg]))
    p = expit(eta)
    convert = (rng.random(len(cl)) < p) & inc
    lo, hi = WINDOW
    orders[inc, lo:hi + 1] = 0
    extra = rng.poisson(spec.window_orders_extra
                        * np.exp(spec.treated_orders_log_effect * treat))
    n_orders = np.where(convert, 1 + extra, 0)
    who = np.repeat(np.arange(len(cl)), n_orders)
    np.add.at(orders, (who, rng.integers(lo, hi + 1, size=len(who))), 1)
    return {"group": group, "p_convert": np.where(inc, p, np.nan), "converted": convert,
            "city_base": city_base, "tau_city": tau_city}


def _catalogue(rng: np.random.Generator) -> pd.DataFrame:
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
                    base = t.price * (0.6 if kids else 1.0)
                    n_col = 1 + int(rng.random() < 0.25)
                    colours = rng.choice(len(cat.COLOURS), size=n_col, replace=False)
                    rows.append({
                        "type": t_idx, "kids": kids, "sex": -1 if sex is None else sex,
                        "brand": brand, "name": name,
                        "price": int(_price99(np.array([base * rng.lognormal(0, 0.45)]))[0]),
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


def _items(spec: DemoSpec, cl: pd.DataFrame, orders: np.ndarray, group: np.ndarray,
           rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    n_items = orders + rng.poisson(spec.items_per_order_extra * orders)
    client, day = np.nonzero(n_items)
    reps = n_items[client, day]
    client = np.repeat(client, reps)
    day = np.repeat(day, reps)
    m = len(client)
    seg = cl.segment.to_numpy()[client]
    gender = cl.gender.to_numpy()[client]
    # category choice: segment affinity + a gender tilt on some types
    affinity = np.array([t.affinity for t in cat.TYPES])  # types x segments
    gender_tilt = np.array([0.0] * len(cat.TYPES))
    for name, tilt in (("Бутсы", 0.8), ("Гантели", 0.6), ("Купальник", -1.2),
                       ("Коврик для йоги", -0.9), ("Роликовые коньки", -0.3)):
        gender_tilt[[t.name for t in cat.TYPES].index(name)] = tilt
    logits = affinity.T[seg] + np.outer(2 * gender - 1, gender_tilt) / 2
    u = rng.random(m)[:, None]
    type_idx = (u > np.cumsum(softmax(logits, axis=1), axis=1)).sum(axis=1)
    type_idx = np.minimum(type_idx, len(cat.TYPES) - 1)
    kids_able = np.array([t.kids for t in cat.TYPES])[type_idx]
    kids = kids_able & (rng.random(m) < np.where(seg == 1, 0.65, 0.08))
    gendered = np.array([t.gendered for t in cat.TYPES])[type_idx]
    match = rng.random(m) < spec.p_product_sex_match
    sex = np.where(gendered, np.where(match, gender, 1 - gender), -1)
    products = _catalogue(rng)
    key = products.type * 100 + products.kids.astype(int) * 10 + (products.sex + 1)
    groups = {k: g.index.to_numpy() for k, g in products.groupby(key)}
    item_key = type_idx * 100 + kids.astype(int) * 10 + (sex + 1)
    product = np.empty(m, dtype=np.int64)
    for k in np.unique(item_key):
        sel = np.flatnonzero(item_key == k)
        product[sel] = rng.choice(groups[k], size=len(sel))
    sale = rng.random(m) < np.asarray(spec.segment_sale_share)[seg]
    price = products.price.to_numpy()[product]
    cost = np.where(sale, _price99(price * 0.7), price)
    lo, hi = WINDOW
    treated_window = (group[client] == 1) & (day >= lo) & (day <= hi)
    cost = np.where(treated_window, _price99(cost * (1 - spec.discount_depth)), cost)
    # messiness: odd costs, missing product_sex, colour gaps and spellings, name variants
    r = rng.random(m)
    cost = np.where(r < 0.0003, -rng.integers(1, 31, m), cost)
    cost = np.where((r >= 0.0003) & (r < 0.0008), 0, cost)
    extreme = (r >= 0.0008) & (r < 0.0009)
    cost = np.where(extreme, np.minimum(cost * rng.integers(30, 80, m), 446_420), cost)
    product_sex = np.where(rng.random(m) < 0.08, -1, products.sex.to_numpy()[product])
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
             "type_gender_tilt": dict(zip([t.name for t in cat.TYPES], gender_tilt.tolist(),
                                          strict=True))}
    return items, truth


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


def generate(spec: DemoSpec) -> dict:
    """Build every table and the planted truth in memory (see the module docstring)."""
    rng = np.random.default_rng(spec.seed)
    cl = _clients(spec, rng)
    orders, c2_ratio = _orders(spec, cl, rng)
    pre_bought = orders[:, :WINDOW[0]].sum(axis=1) > 0
    c1 = _campaign1(spec, cl, orders, pre_bought, rng)
    items, item_truth = _items(spec, cl, orders, c1["group"], rng)
    lost = rng.random(len(cl)) < spec.lost_share
    cl["lost"] = lost
    coeffs = pd.DataFrame({
        "id": cl.id, "lbt_coef": np.round(rng.uniform(4.5, 8.2, len(cl)), 4),
        "ac_coef": np.round(rng.uniform(-4.5, 0.3, len(cl)), 4),
        "sm_coef": np.round(rng.uniform(0.8, 1.0, len(cl)), 4), "personal_coef": cl.personal_coef,
    })
    coeffs.loc[rng.random(len(cl)) < 0.01, "lbt_coef"] = np.nan
    group = c1["group"]
    cities_in_campaign = sorted(set(cl.city[group > 0].tolist()))
    truth = {
        "spec": asdict(spec),
        "segments": list(cat.SEGMENTS),
        "n_segments": len(cat.SEGMENTS),
        "gender_coding": "product_sex uses the gender coding (1 = items for gender-1 clients)",
        "campaign1": {
            "window": list(WINDOW), "alpha": spec.alpha, "beta_pre": spec.beta_pre,
            "tau": spec.tau, "sigma_tau_city": spec.sigma_tau_city,
            "tau_segment": list(spec.tau_segment), "segment_base": list(spec.segment_base),
            "tau_city": {str(c): c1["tau_city"][c] for c in cities_in_campaign},
            "city_base": {str(c): c1["city_base"][c] for c in cities_in_campaign},
            "discount_depth": spec.discount_depth,
            "treated_orders_log_effect": spec.treated_orders_log_effect,
            "model": "logit P(buy in window) = alpha + city_base + segment_base + beta_pre * "
                     "bought_pre + treated * (tau + tau_city + tau_segment)",
        },
        "campaign2": {"city": CAMPAIGN2_CITY, "days": list(CAMPAIGN2_DAYS),
                      "log_effect_rate": spec.campaign2_log_effect,
                      "orders_ratio_expected": c2_ratio, "shift_days": []},
        "products": item_truth,
    }
    clients_truth = pd.DataFrame({
        "id": cl.id, "gender": cl.gender, "segment": cl.segment, "lost": lost,
        "group": np.array(["none", "treated", "control"])[group],
        "bought_pre": pre_bought, "p_convert": c1["p_convert"], "converted": c1["converted"],
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
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=out))
    try:
        _write_db(tmp / "shop_database.db", {"personal_data": known,
                                             "personal_data_coeffs": d["coeffs"],
                                             "purchases": purchases})
        with open(tmp / "personal_data.csv.gz", "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(lost.to_csv(index=False).encode("utf-8"))
        (tmp / "ids_first_company_positive.txt").write_text(
            _dirty_ids(d["treated_ids"], "positive", rng, ","), encoding="utf-8")
        (tmp / "ids_first_company_negative.txt").write_text(
            _dirty_ids(d["control_ids"], "negative", rng, ";"), encoding="utf-8")
        (tmp / "truth.json").write_text(json.dumps(d["truth"], ensure_ascii=False, indent=1),
                                        encoding="utf-8")
        d["clients_truth"].to_parquet(tmp / "truth_clients.parquet", index=False)
        written = {}
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
            written[f.name] = out / f.name
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
