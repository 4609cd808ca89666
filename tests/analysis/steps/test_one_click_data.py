import numpy as np
import pandas as pd
import pytest

from analysis.errors import DataError
from analysis.steps.one_click_data import FEATURES, load_one_click, read_table
from tests.conftest import SHARED, copy_one_click, needs_shared, rewrite_csv

REAL = SHARED / "one_click"


@needs_shared("one_click", "market_file.csv")
@pytest.mark.real_data
def test_real_files_row_counts_typos_and_decimal_comma():
    d = load_one_click(REAL)
    assert [s["clients"] for s in d.log] == [1300, 1300, 1300, 1297, 1297]
    assert [s["dropped"] for s in d.log] == [0, 0, 0, 3, 0]
    assert d.fixes["market_file.csv: стандартт -> стандарт"] == 10
    assert d.fixes["market_file.csv: Косметика и аксесуары -> Косметика и аксессуары"] == 223
    assert d.fixes["market_time.csv: предыдцщий_месяц -> предыдущий_месяц"] == 1300
    c = d.clients
    assert set(c["service"]) == {"стандарт", "премиум"}
    assert "Косметика и аксессуары" in set(c["category"])
    assert "Косметика и аксесуары" not in set(c["category"])
    # money.csv: ';' and a decimal comma -> floats (first rows 0,98 / 4,16 / 3,13)
    assert c["profit"].dtype == float
    assert c.loc[215349, "profit"] == pytest.approx(4.16)
    assert c["profit"].mean() == pytest.approx(3.9966, abs=0.01)
    # the 106,862.2 outlier of client 215380 is replaced by the client's other months
    assert d.outliers["id"].tolist() == [215380]
    assert c.loc[215380, "revenue_m0"] < 10_000
    assert int(c["declined"].sum()) == 495  # 498 in the file, 3 of the dropped clients
    assert not c[FEATURES].isna().any().any()


def test_stand_in_has_the_real_quirks_and_cleans_the_same_way(one_click_demo):
    raw = (one_click_demo / "money.csv").read_bytes()
    assert b"\r\n" in raw and b";" in raw.splitlines()[0]
    assert "стандартт" in (one_click_demo / "market_file.csv").read_text(encoding="utf-8")
    d = load_one_click(one_click_demo)
    assert [s["clients"] for s in d.log][-1] == 1297
    assert len(d.outliers) == 1 and d.clients["revenue_m0"].max() < 10_000
    assert 0.25 < d.y.mean() < 0.55
    assert len(d.fixes) == 4


def test_missing_period_is_named(one_click_demo, tmp_path):
    folder = copy_one_click(one_click_demo, tmp_path)
    f = folder / "market_money.csv"
    lines = f.read_text(encoding="utf-8").splitlines()
    f.write_text("\r\n".join(ln for ln in lines if "текущий_месяц" not in ln) + "\r\n",
                 encoding="utf-8")
    with pytest.raises(DataError, match=r"market_money.csv.*Период.*текущий_месяц"):
        load_one_click(folder)


def test_non_numeric_revenue_names_column_and_row(one_click_demo, tmp_path):
    folder = copy_one_click(one_click_demo, tmp_path)
    rewrite_csv(folder, "market_money.csv", lambda df: df.assign(
        Выручка=df["Выручка"].mask(df.index == 7, "n/a")))
    with pytest.raises(DataError, match=r"Выручка.*'n/a'.*\[data row: 8\]"):
        load_one_click(folder)


def test_unknown_activity_value_and_missing_file(one_click_demo, tmp_path):
    folder = copy_one_click(one_click_demo, tmp_path)
    col = "Покупательская активность"
    rewrite_csv(folder, "market_file.csv",
             lambda df: df.assign(**{col: df[col].mask(df.index == 3, "Выросла")}))
    with pytest.raises(DataError, match="Покупательская активность"):
        load_one_click(folder)
    (folder / "money.csv").unlink()
    with pytest.raises(DataError, match="money.csv: file not found"):
        read_table(folder / "money.csv", "money")


def test_outlier_rule_drop_and_client_without_a_period(one_click_demo, tmp_path):
    folder = copy_one_click(one_click_demo, tmp_path)
    assert len(load_one_click(folder, outlier_rule="drop").clients) == 1296
    victim = pd.read_csv(folder / "market_money.csv", dtype=str)["id"].iloc[-1]
    rewrite_csv(folder, "market_money.csv", lambda df: df[
        ~((df["id"] == victim) & (df["Период"] == "предыдущий_месяц"))])
    d = load_one_click(folder)
    assert d.log[2]["dropped"] == 1 and int(victim) not in d.clients.index
    with pytest.raises(ValueError, match="outlier_rule"):
        load_one_click(folder, outlier_rule="clip")


def test_inputs_are_not_modified(one_click_demo):
    before = {p.name: p.read_bytes() for p in one_click_demo.iterdir()}
    load_one_click(one_click_demo)
    assert before == {p.name: p.read_bytes() for p in one_click_demo.iterdir()}
    assert np.isfinite(load_one_click(one_click_demo).clients["profit"]).all()
