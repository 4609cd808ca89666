"""The engine aggregates equal today's pandas ones exactly, on DuckDB and on Spark."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.errors import DataError
from analysis.store.aggregates import (
    BEHAVIOUR_COLUMNS,
    PANEL_CLIENT_COLUMNS,
    PANEL_PURCHASE_COLUMNS,
    city_day_panel,
)
from analysis.store.engine import EngineUnavailable, connect, spark_problem
from analysis.store.id_files import campaign_groups
from analysis.store.loaders import load_folder
from analysis.store.rules import clean
from analysis.store.tables import id_ranges, open_table
from models.campaign2 import build_panel


@pytest.fixture(scope="module")
def cleaned(small_demo: Path, tmp_path_factory: pytest.TempPathFactory):
    """The small demo's cleaned tables as the clean step writes them, and campaign 1's ids."""
    raw = load_folder(small_demo)
    data = clean(raw)
    out = tmp_path_factory.mktemp("clean")
    data.purchases.to_parquet(out / "purchases.parquet")
    data.clients.to_parquet(out / "clients.parquet")
    data.colours.to_parquet(out / "colours.parquet")
    g = campaign_groups(raw.positive, raw.negative)
    return out, data, set(g.treated) | set(g.control)


def _panel(con, folder: Path, exclude) -> pd.DataFrame:
    return city_day_panel(open_table(con, folder / "purchases.parquet", PANEL_PURCHASE_COLUMNS),
                          open_table(con, folder / "clients.parquet", PANEL_CLIENT_COLUMNS),
                          exclude)


def test_duckdb_panel_equals_the_pandas_panel(cleaned):
    folder, data, exclude = cleaned
    expected = build_panel(data.purchases, data.clients, exclude)
    got = _panel(connect("duckdb"), folder, exclude)
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))
    assert got["orders"].sum() > 1000 and (got.groupby("city").size() == 59).all()
    # excluding nobody changes the numbers: the exclusion is applied, not ignored
    assert _panel(connect("duckdb"), folder, ())["orders"].sum() > got["orders"].sum()


def test_spark_panel_equals_the_duckdb_panel(cleaned, spark_or_none):
    if spark_or_none is None:
        pytest.skip(spark_problem())
    folder, _, exclude = cleaned
    on_duckdb = _panel(connect("duckdb"), folder, exclude)
    on_spark = _panel(spark_or_none, folder, exclude)
    pd.testing.assert_frame_equal(on_spark, on_duckdb)


def test_a_missing_table_and_wrong_types_name_the_file_and_column(cleaned, tmp_path):
    folder, data, _ = cleaned
    con = connect("duckdb")
    with pytest.raises(DataError, match=r"nowhere[/\\]purchases.parquet: table not found"):
        open_table(con, tmp_path / "nowhere" / "purchases.parquet", PANEL_PURCHASE_COLUMNS)
    bad = data.clients.assign(city=data.clients["city"].astype(str)).drop(columns="id")
    bad.to_parquet(tmp_path / "clients.parquet")
    with pytest.raises(DataError) as err:
        open_table(con, tmp_path / "clients.parquet", PANEL_CLIENT_COLUMNS)
    text = str(err.value)
    assert "clients.parquet: 2 problems" in text
    assert "column 'id': column missing (needs integer)" in text
    assert "column 'city': type string where integer is needed" in text


def test_days_outside_the_period_are_an_error_naming_the_column(cleaned, tmp_path):
    folder, data, _ = cleaned
    data.purchases.assign(dt=data.purchases["dt"].where(
        data.purchases.index % 97 != 0, 61)).to_parquet(tmp_path / "purchases.parquet")
    con = connect("duckdb")
    with pytest.raises(DataError, match=r"column 'dt': purchases hold days outside 0\.\.58 "
                                        r"\(e\.g\. \[61, 61, 61\]\) \(rule: in_range\(0, 58\)\)"):
        city_day_panel(open_table(con, tmp_path / "purchases.parquet", PANEL_PURCHASE_COLUMNS),
                       open_table(con, folder / "clients.parquet", PANEL_CLIENT_COLUMNS),
                       source=str(tmp_path / "purchases.parquet"))


def test_engines_that_cannot_run_say_why(monkeypatch):
    import builtins

    with pytest.raises(EngineUnavailable, match="unknown engine 'sqlserver'; known: duckdb, "
                                                "spark"):
        connect("sqlserver")
    real_import = builtins.__import__

    def no_pyspark(name, *args, **kwargs):
        if name.startswith("pyspark"):
            raise ImportError(name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    assert "pip install 'shopbayes[spark]'" in spark_problem()
    monkeypatch.setattr(builtins, "__import__", real_import)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert "needs Java 17" in spark_problem()


def test_the_engine_is_a_config_setting(tmp_path):
    from analysis.config import load_config

    f = tmp_path / "c.toml"
    f.write_text('engine = "spark"\n')
    assert load_config(f).engine == "spark"
    f.write_text('engine = "oracle"\n')
    with pytest.raises(ValueError, match="engine = 'oracle' is not one of duckdb, spark"):
        load_config(f)


def test_client_behaviour_equals_the_pandas_features(cleaned, spark_or_none):
    from analysis.store.aggregates import client_behaviour
    from models.segment_features import client_behaviour as on_pandas

    folder, data, _ = cleaned
    expected = on_pandas(data.purchases)
    assert expected["kids_items"].sum() > 0 and expected["sale_items"].sum() > 0
    engines = [connect("duckdb")] + ([spark_or_none] if spark_or_none is not None else [])
    for con in engines:
        got = client_behaviour(open_table(con, folder / "purchases.parquet",
                                          BEHAVIOUR_COLUMNS))
        pd.testing.assert_frame_equal(got, expected)
    # the window and the recency day are honoured, not ignored
    whole = client_behaviour(open_table(engines[0], folder / "purchases.parquet",
                                        BEHAVIOUR_COLUMNS), exclude_days=None, last_day=70)
    pd.testing.assert_frame_equal(whole, on_pandas(data.purchases, exclude_days=None,
                                                   last_day=70))
    assert whole["items"].sum() > expected["items"].sum()


def _engines(spark_or_none):
    return [connect("duckdb")] + ([spark_or_none] if spark_or_none is not None else [])


def test_campaign1_period_metrics_equal_the_pandas_ones(cleaned, spark_or_none):
    from analysis.steps.campaign1_data import PERIODS, client_metrics, metrics_of
    from analysis.store.aggregates import PERIOD_COLUMNS, period_metrics_table

    folder, data, _ = cleaned
    ids = data.clients["id"]
    expected = client_metrics(data.purchases, ids)
    assert expected["window_orders"].gt(0).sum() > 100
    for con in _engines(spark_or_none):
        per_client = period_metrics_table(open_table(con, folder / "purchases.parquet",
                                                     PERIOD_COLUMNS), PERIODS).to_pandas()
        assert len(per_client) < len(ids)  # only clients with purchases come back
        pd.testing.assert_frame_equal(metrics_of(per_client, ids), expected)


def _propensity_rows_in_pandas(p, frame, categories, shares, rate, seed):
    """The reference of :func:`propensity_rows`, written with pandas."""
    import numpy as np

    from analysis.store.aggregates import sampled

    keys = ["country", "city", "cluster", "gender", "contacted", "split"]
    before = p[p["dt"] < 5]
    days = before.groupby(["id", "dt"]).agg(items=("dt", "size"), spend=("revenue", "sum"),
                                            sale=("base_sale", lambda s: s.fillna(0).sum()))
    b = days.reset_index().groupby("id").agg(
        frequency=("dt", "size"), recency=("dt", lambda d: 5 - d.max()),
        items=("items", "sum"), spend=("spend", "sum"), sale_items=("sale", "sum"))
    window = p[(p["dt"] >= 5) & (p["dt"] <= 16) & p["category"].isin(categories)]
    buy = window[["id", "category"]].drop_duplicates().assign(k=1)
    has = frame["id"].isin(b.index)
    c0 = frame[~has]
    n0 = c0.groupby(keys).size().rename("n").reset_index()
    k0 = buy.merge(c0, on="id").groupby([*keys, "category"]).size().rename("k").reset_index()
    cells = n0.merge(pd.DataFrame({"category": categories}), how="cross").merge(
        k0, on=[*keys, "category"], how="left")
    cells["k"] = cells["k"].fillna(0)
    for col in ["frequency", "recency", "items", "spend", "sale_items", "category_items"]:
        cells[col] = 0
    cells = cells.assign(id=-1, has_history=False, weight=1.0, negative_rate=1.0)
    c1 = frame[has].copy()
    share = np.array([shares.get((s, bool(t)), 1.0) for s, t in zip(c1["split"],
                                                                   c1["contacted"],
                                                                   strict=True)])
    keep = sampled(c1["id"].to_numpy(), share, seed + 7_919)
    c1 = c1[keep].assign(weight=1 / share[keep])
    rows = c1.merge(pd.DataFrame({"category": categories,
                                  "cat_index": range(len(categories))}), how="cross")
    rows = rows.merge(b.reset_index(), on="id")
    per_cat = before.groupby(["id", "category"]).size().rename("category_items").reset_index()
    rows = rows.merge(per_cat, on=["id", "category"], how="left").merge(
        buy, on=["id", "category"], how="left")
    rows["category_items"] = rows["category_items"].fillna(0)
    rows["k"] = rows["k"].fillna(0)
    train = rows["split"] == "train"
    kept = (rows["k"] == 1) | ~train | sampled(
        (rows["id"] * len(categories) + rows["cat_index"]).to_numpy(), rate, seed + 104_729)
    rows = rows[kept].assign(n=1, has_history=True,
                             negative_rate=np.where(train[kept], rate, 1.0))
    out = pd.concat([cells, rows[cells.columns]], ignore_index=True)
    return out


def test_propensity_rows_and_category_tables_equal_the_pandas_ones(cleaned, spark_or_none):
    import ibis
    import numpy as np

    from analysis.store.aggregates import (
        PROPENSITY_COLUMNS,
        category_table,
        held_out,
        propensity_rows,
        window_value,
    )
    from models.propensity import category_features, standardise_categories

    folder, data, exclude = cleaned
    p = data.purchases
    rng = np.random.default_rng(3)
    c = data.clients
    frame = pd.DataFrame({
        "id": c["id"].astype("int64"), "country": c["country"].astype("int64"),
        "city": c["city"].astype(str), "cluster": rng.choice(["a", "b"], len(c)),
        "gender": c["gender"].map({0: "0", 1: "1"}).fillna("unknown").astype(str),
        "contacted": c["id"].isin(exclude).to_numpy(),
        "split": np.where(held_out(c["id"].to_numpy(dtype="int64"), 0.25, 7), "holdout",
                          "train")})
    categories = sorted(p["category"].unique())[:6]
    shares = {("train", False): 0.5, ("train", True): 1.0, ("holdout", False): 0.7}
    expected = _propensity_rows_in_pandas(p, frame, categories, shares, 0.3, 11)
    value = (p[(p["dt"] >= 5) & (p["dt"] <= 16) & ~p["id"].isin(exclude)]
             .groupby(["id", "category"])["revenue"].sum().groupby("category").mean())
    for con in _engines(spark_or_none):
        t = open_table(con, folder / "purchases.parquet", PROPENSITY_COLUMNS)
        got = propensity_rows(t, ibis.memtable(frame), (5, 16), categories, shares, 0.3, 11)
        exp = expected[got.columns].astype(got.dtypes.to_dict()).sort_values(
            ["split", "id", "country", "city", "cluster", "gender", "contacted", "category"],
            ignore_index=True)
        pd.testing.assert_frame_equal(got, exp)
        # computed one client-id range at a time: the same rows, the cells summed (the
        # ranges are filters of the same expression, summed in pandas: checked on DuckDB
        # only, as on Spark each range's query takes 10 s)
        if con.name == "duckdb":
            ranges = id_ranges(t, 5_000)
            assert len(ranges) >= 3
            parts = propensity_rows(t, ibis.memtable(frame), (5, 16), categories, shares,
                                    0.3, 11, ranges)
            pd.testing.assert_frame_equal(parts, got)
        # for scoring: every client as rows, behaviour 0 without history
        scored = propensity_rows(t, ibis.memtable(frame.head(50)), (5, 16), categories, {},
                                 1.0, 11, aggregate=False)
        assert len(scored) == 50 * len(categories) and (scored["id"] >= 0).all()
        pd.testing.assert_frame_equal(standardise_categories(category_table(t)),
                                      category_features(p), check_dtype=False)
        pd.testing.assert_series_equal(window_value(t, (5, 16), exclude),
                                       value.astype(float), check_names=False)
        # the held-out split by hash is the same in the engine as in NumPy
        cl = open_table(con, folder / "clients.parquet", PANEL_CLIENT_COLUMNS)
        split = cl.select("id", h=held_out(cl.id, 0.25, 7)).to_pandas().sort_values("id")
        assert (split["h"].to_numpy() == held_out(split["id"].to_numpy(), 0.25, 7)).all()
    hist = expected[expected["has_history"]]
    assert (expected["id"] < 0).any() and len(hist) > 100 and hist["k"].sum() > 20
    assert set(hist["weight"].round(4)) == {1.0, 2.0, round(1 / 0.7, 4)}
    assert (frame["split"] == "holdout").mean() == pytest.approx(0.25, abs=0.03)


def test_gender_features_equal_the_pandas_features(cleaned, spark_or_none):
    from analysis.store.aggregates import GENDER_COLUMNS, gender_features
    from models.gender import purchase_features

    folder, data, _ = cleaned
    expected = purchase_features(data.purchases, data.colours)
    expected.index = expected.index.astype("int64")
    expected = expected.sort_index()
    assert expected.filter(like="colour_").notna().any().all()
    for con in _engines(spark_or_none):
        got = gender_features(open_table(con, folder / "purchases.parquet", GENDER_COLUMNS),
                              open_table(con, folder / "colours.parquet",
                                         {"id": "integer", "colour": "string"}))
        pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=True)


def test_the_held_out_split_is_a_fixed_share_of_ids():
    import numpy as np

    from analysis.store.aggregates import held_out

    ids = np.arange(0, 200_000, 3)
    h = held_out(ids, 0.2, 2024)
    assert h.mean() == pytest.approx(0.2, abs=0.005)
    assert (held_out(ids, 0.2, 2024) == h).all() and (held_out(ids, 0.2, 1) != h).any()
    assert not held_out(ids, 0.0).any() and held_out(ids, 1.0).all()
    with pytest.raises(ValueError, match="share must be in"):
        held_out(ids, 1.5)


def test_campaign1_cells_and_store_sample_equal_the_pandas_ones(cleaned, small_demo,
                                                                 spark_or_none, tmp_path):
    import numpy as np

    from analysis.steps.campaign1_data import PERIODS, store_frame
    from analysis.steps.clean import CLIENT_DTYPES
    from analysis.steps.uplift import _sample_frames, _support_mask
    from analysis.store.aggregates import (
        CAMPAIGN_CLIENT_COLUMNS,
        PERIOD_COLUMNS,
        campaign_store_table,
        held_out,
        store_sample,
        uplift_cells,
    )
    from models.uplift import CELL_KEYS, client_cells

    folder, data, _ = cleaned
    raw = load_folder(small_demo)
    g = campaign_groups(raw.positive, raw.negative)
    ids = data.clients["id"].astype("int64")
    # clusters as the segments step writes them: numbers, -1 without history, some unassigned
    clusters = pd.DataFrame({"id": ids, "cluster": (ids % 4 - 1).astype("int64")}).iloc[::2]
    clusters.to_parquet(tmp_path / "assignments.parquet")
    clients = data.clients.astype(CLIENT_DTYPES)
    store, _ = store_frame(clients, data.purchases, list(g.treated), list(g.control), clusters)
    whole = store[_support_mask(store)]
    expected = client_cells(whole).sort_values(list(CELL_KEYS), ignore_index=True)
    t = store[store["treated"]]
    assert expected["cluster"].nunique() == 4 and expected["treated"].any()
    keep = store["group"].ne("untreated") | held_out(store["id"].to_numpy(), 0.3, 7)
    runs = []
    for con in [connect("duckdb"), *_engines(spark_or_none)]:
        table = campaign_store_table(
            open_table(con, folder / "purchases.parquet", PERIOD_COLUMNS),
            open_table(con, folder / "clients.parquet", CAMPAIGN_CLIENT_COLUMNS),
            PERIODS, g.treated, g.control,
            open_table(con, tmp_path / "assignments.parquet", {"id": "integer",
                                                              "cluster": "integer"}))
        got = uplift_cells(table, t["country"].unique(), t["age_band"].unique())
        pd.testing.assert_frame_equal(got[list(expected.columns)], expected, check_dtype=False,
                                      rtol=1e-9)
        runs.append(got)
        # the sample: every campaign client and the hashed share of the others
        sample = store_sample(table, {"untreated": 0.3}, 7).order_by("id").to_pandas()
        assert sample["id"].tolist() == store.loc[keep, "id"].tolist()
        # any group can be sampled, each by its own share
        both = store_sample(table, {"treated": 0.5, "untreated": 0.3}, 7).to_pandas()
        hashed = held_out(store["id"].to_numpy(), 0.5, 7)
        want = keep & (store["group"].ne("treated") | hashed)
        assert sorted(both["id"]) == sorted(store.loc[want, "id"])
        assert 0 < both["group"].eq("treated").sum() < store["treated"].sum()
        c, per_client, k = _sample_frames(sample, clusters=True)
        again, _ = store_frame(c, None, list(g.treated), list(g.control), k,
                               per_client=per_client)
        pd.testing.assert_frame_equal(again, store[keep].reset_index(drop=True),
                                      check_dtype=False)
    # the float sums are the same bits in every run (the sampler's path from a seed
    # depends on them); engines agree to rounding (their logarithms differ in the last bit)
    pd.testing.assert_frame_equal(runs[1], runs[0], check_exact=True)
    assert 0.2 < (store.loc[keep, "group"] == "untreated").sum() / (
        store["group"] == "untreated").sum() < 0.4
    assert not np.isclose(expected["lp1"].sum(), 0)
