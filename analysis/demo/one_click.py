"""A synthetic stand-in for the "В один клик" files: same schema, same quirks, known truth.

The four files are written exactly as the real ones are: CRLF line endings, Cyrillic
headers, ``money.csv`` with ``;`` and a decimal comma, the typos ``стандартт`` and
``предыдцщий_месяц``, the category spelled ``Косметика и аксесуары``, a few clients with
zero revenue in the earlier months, and one revenue outlier. The target is drawn from a
planted logistic model (``truth.json`` holds its coefficients per SD), so the case's
models can be checked against the truth. Marginal ranges follow the real data's summary
statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from analysis.io import atomic_path, write_json

CATEGORIES = {  # real spelling (with its typo) and share
    "Товары для детей": 0.254, "Домашний текстиль": 0.193, "Косметика и аксесуары": 0.172,
    "Техника для красоты и здоровья": 0.142, "Мелкая бытовая техника и электроника": 0.134,
    "Кухонная посуда": 0.105,
}
#: planted log odds of decline per SD of each feature (and per category)
TRUE_BETA = {"pages_per_visit": -0.9, "minutes_m1": -0.6, "minutes_m0": -0.5,
             "categories_per_visit": -0.5, "unpaid_items": 0.5, "promo_share": 0.5,
             "marketing_6m": -0.4, "service_errors": 0.2}
TRUE_CATEGORY = {"Товары для детей": 0.0, "Домашний текстиль": 0.2,
                 "Косметика и аксессуары": 0.1, "Техника для красоты и здоровья": -0.3,
                 "Мелкая бытовая техника и электроника": -0.6, "Кухонная посуда": 0.4}
BASE_RATE = 0.38


def _write_csv(df: pd.DataFrame, dest: Path, sep: str = ",", decimal: str = ".") -> None:
    with atomic_path(dest) as tmp:
        df.to_csv(tmp, index=False, sep=sep, decimal=decimal, lineterminator="\r\n",
                  encoding="utf-8")


def make_one_click(clients: int = 1300, seed: int = 2024) -> dict[str, pd.DataFrame]:
    """The four tables (as written to disk) and ``truth`` (clean features, y)."""
    rng = np.random.default_rng(seed)
    n = clients
    ids = np.arange(215348, 215348 + n)
    cats = rng.choice(list(CATEGORIES), n, p=np.array(list(CATEGORIES.values()))
                      / sum(CATEGORIES.values()))
    service = rng.choice(["стандарт", "премиум", "стандартт"], n, p=[0.695, 0.297, 0.008])
    f = pd.DataFrame({
        "marketing_6m": np.clip(rng.normal(4.25, 1.0, n), 0.9, 6.6).round(1),
        "marketing_month": rng.choice([3, 4, 5], n, p=[0.25, 0.5, 0.25]),
        "tenure_days": rng.integers(110, 1080, n),
        "promo_share": np.where(rng.random(n) < 0.8, rng.beta(2, 9, n),
                                rng.beta(9, 2, n)).round(2),
        "categories_per_visit": np.clip(rng.poisson(3.3, n), 1, 6),
        "unpaid_items": np.clip(rng.poisson(2.8, n), 0, 10),
        "service_errors": np.clip(rng.poisson(4.2, n), 0, 9),
        "pages_per_visit": np.clip(rng.poisson(8.2, n), 1, 20),
        "minutes_m1": np.clip(rng.normal(13.5, 3.6, n), 5, 23).round(),
        "minutes_m0": np.clip(rng.normal(13.2, 4.2, n), 4, 23).round(),
    })
    z = (f[list(TRUE_BETA)] - f[list(TRUE_BETA)].mean()) / f[list(TRUE_BETA)].std(ddof=0)
    clean_cat = pd.Series(cats).replace({"Косметика и аксесуары": "Косметика и аксессуары"})
    eta = logit(BASE_RATE) + z.to_numpy() @ np.array(list(TRUE_BETA.values())) \
        + clean_cat.map(TRUE_CATEGORY).to_numpy()
    y = (rng.random(n) < expit(eta)).astype(int)
    market = pd.DataFrame({
        "id": ids,
        "Покупательская активность": np.where(y == 1, "Снизилась", "Прежний уровень"),
        "Тип сервиса": service,
        "Разрешить сообщать": rng.choice(["да", "нет"], n, p=[0.74, 0.26]),
        "Маркет_актив_6_мес": f["marketing_6m"], "Маркет_актив_тек_мес": f["marketing_month"],
        "Длительность": f["tenure_days"], "Акционные_покупки": f["promo_share"],
        "Популярная_категория": cats,
        "Средний_просмотр_категорий_за_визит": f["categories_per_visit"],
        "Неоплаченные_продукты_штук_квартал": f["unpaid_items"],
        "Ошибка_сервиса": f["service_errors"], "Страниц_за_визит": f["pages_per_visit"],
    })
    # revenue carries no planted effect, so the planted model is the whole truth
    revenue = np.column_stack([rng.normal(4840, 330, n), rng.normal(4950, 680, n),
                               rng.normal(5250, 800, n)]).clip(2700, 7800).round(1)
    inactive = rng.choice(n, 3, replace=False)
    revenue[inactive, :2] = 0.0
    revenue[rng.choice(np.setdiff1d(np.arange(n), inactive)), 2] = 106862.2
    periods = ["препредыдущий_месяц", "текущий_месяц", "предыдущий_месяц"]
    order = [0, 2, 1]
    money = pd.DataFrame({"id": np.repeat(ids, 3), "Период": np.tile(periods, n),
                          "Выручка": revenue[:, order].ravel()})
    time = pd.DataFrame({"id": np.repeat(ids, 2),
                         "Период": np.tile(["текущий_месяц", "предыдцщий_месяц"], n),
                         "минут": f[["minutes_m0", "minutes_m1"]].to_numpy().astype(int).ravel()})
    profit = pd.DataFrame({"id": ids, "Прибыль": np.clip(rng.normal(4.0, 1.0, n), 0.86,
                                                          7.43).round(2)})
    return {"market_file": market, "market_money": money, "market_time": time,
            "money": profit, "truth": f.assign(id=ids, declined=y)}


def write_one_click_demo(out: str | Path, clients: int = 1300, seed: int = 2024) -> list[Path]:
    """Write the four files and ``truth.json`` to ``out``; return the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t = make_one_click(clients, seed)
    paths = [out / "market_file.csv", out / "market_money.csv", out / "market_time.csv",
             out / "money.csv"]
    _write_csv(t["market_file"], paths[0])
    _write_csv(t["market_money"], paths[1])
    _write_csv(t["market_time"], paths[2])
    _write_csv(t["money"], paths[3], sep=";", decimal=",")
    truth = {"spec": {"clients": clients, "seed": seed}, "beta_per_sd": TRUE_BETA,
             "category": TRUE_CATEGORY, "base_rate": BASE_RATE,
             "declined_share": float(t["truth"]["declined"].mean())}
    paths.append(write_json(truth, out / "truth.json"))
    return paths


def is_current(out: str | Path, clients: int, seed: int) -> bool:
    """Whether ``out`` holds a stand-in written with these settings."""
    truth = Path(out) / "truth.json"
    try:
        spec = json.loads(truth.read_text(encoding="utf-8"))["spec"]
    except (OSError, ValueError, KeyError):
        return False
    return spec == {"clients": clients, "seed": seed} and (Path(out) / "money.csv").exists()
