import pandas as pd

from analysis.store.loaders import load_folder
from analysis.store.rules import clean, flag_costs, product_category, product_key, split_colours


def test_known_name_variants_share_one_key():
    names = pd.Series([
        "Кроссовки мужские Nike Revolution 6",
        "кроссовки мужские nike revolution 6",
        "Кроссовки  мужские NIKE Revolution 6",
        "Nike кроссовки мужские Revolution 6",
        "Кроссовки мужские, Nike Revolution 6.",
    ])
    assert product_key(names).nunique() == 1
    assert set(product_category(names)) == {"кроссовки"}


def test_different_items_keep_different_keys():
    names = pd.Series(['Велосипед горный Stern Energy 1.0 26"',
                       'Велосипед горный Stern Energy 2.0 26"'])
    assert product_key(names).nunique() == 2


def test_colour_sets_split_and_spellings_unified():
    tidy = split_colours(pd.Series(["Белый/Чёрный", None, "черный", "синий / красный"]))
    assert tidy.groupby("row").colour.apply(list).to_dict() == {
        0: ["белый", "черный"], 2: ["черный"], 3: ["синий", "красный"]}


def test_cost_flags_follow_documented_rule():
    cost = pd.Series([-30, 0, 2999, 3499, 2999, 200_000])
    catg = pd.Series(["a"] * 6)
    assert flag_costs(cost, catg).tolist() == ["negative", "zero", "ok", "ok", "ok", "extreme"]


def test_clean_demo_folder(small_demo):
    data = clean(load_folder(small_demo))
    q = data.quality
    assert q["clients"] == len(data.clients) == 3000
    assert data.clients["gender"].isna().sum() == q["clients_gender_missing"] > 0
    assert data.clients["personal_coef"].notna().all()
    assert q["product_keys"] < q["product_names"]  # variants were merged
    assert (data.purchases.loc[data.purchases.cost_flag != "ok", "revenue"] == 0).all()
    assert q["cost_negative_rows"] + q["cost_zero_rows"] + q["cost_extreme_rows"] > 0
    assert set(data.colours["colour"]).isdisjoint({c for c in data.colours["colour"] if "ё" in c})


def test_purchases_of_unknown_clients_are_counted_and_dropped(small_demo):
    raw = load_folder(small_demo)
    extra = raw.purchases.head(3).assign(id=10_000_000)
    raw.purchases = pd.concat([raw.purchases, extra], ignore_index=True)
    data = clean(raw)
    assert data.quality["purchase_rows_unknown_client"] == 3
    assert 10_000_000 not in set(data.purchases["id"])
