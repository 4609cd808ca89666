import hashlib
import shutil

import pandas as pd
import pytest

from analysis.errors import DataError
from analysis.store.loaders import load_folder, read_client_csv, read_db_table
from tests.conftest import SKILLBOX, needs_shared, read_table, write_tables


def _digests(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}


def test_demo_folder_loads_and_nothing_is_written_into_it(small_demo):
    before = _digests(small_demo)
    data = load_folder(small_demo)
    assert data.has_purchases and data.positive is not None
    assert data.purchases["dt"].between(0, 58).all()
    assert _digests(small_demo) == before


def test_missing_table_names_the_table(demo_copy):
    db = demo_copy / "shop_database.db"
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("DROP TABLE purchases")
    con.commit()
    con.close()
    with pytest.raises(DataError, match=r"shop_database.db: missing table\(s\) \['purchases'\]"):
        load_folder(demo_copy)


def test_missing_column_is_named(demo_copy):
    db = demo_copy / "shop_database.db"
    p = read_table(db, "purchases").drop(columns=["base_sale"])
    write_tables(db, {"purchases": p})
    with pytest.raises(DataError, match=r"purchases: missing column\(s\) \['base_sale'\]"):
        read_db_table(db, "purchases")


def test_text_in_numeric_column_names_column_and_rows(demo_copy):
    db = demo_copy / "shop_database.db"
    p = read_table(db, "purchases")
    p["cost"] = p["cost"].astype(object)
    p.loc[[3, 7], "cost"] = "abc"
    write_tables(db, {"purchases": p})
    with pytest.raises(DataError) as err:
        read_db_table(db, "purchases")
    msg = str(err.value)
    assert "shop_database.db:purchases, column 'cost'" in msg
    # data rows 3 and 7 counted from 0 are the 4th and 8th a user sees
    assert "non-numeric" in msg and "'abc'" in msg and "[2 data rows: 4, 8]" in msg


def test_out_of_range_day_names_rows(demo_copy):
    db = demo_copy / "shop_database.db"
    p = read_table(db, "purchases")
    p.loc[5, "dt"] = 99
    write_tables(db, {"purchases": p})
    with pytest.raises(DataError, match=r"column 'dt': value\(s\) not allowed such as 99 "
                       r"\(rule: in_range\(0, 58\)\) \[data row: 6\]"):
        read_db_table(db, "purchases")


def test_bad_gender_and_duplicate_ids(demo_copy):
    db = demo_copy / "shop_database.db"
    c = read_table(db, "personal_data")
    c.loc[2, "gender"] = 3
    write_tables(db, {"personal_data": c})
    with pytest.raises(DataError, match=r"column 'gender'.*\[data row: 3\]"):
        read_db_table(db, "personal_data")
    c.loc[2, "gender"] = 1
    c.loc[4, "id"] = c.loc[0, "id"]
    write_tables(db, {"personal_data": c})
    with pytest.raises(DataError, match=r"column 'id'.*field_uniqueness"):
        read_db_table(db, "personal_data")


def test_truncated_database(demo_copy):
    db = demo_copy / "shop_database.db"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="shop_database.db"):
        load_folder(demo_copy)


def test_not_an_sqlite_file(demo_copy):
    (demo_copy / "shop_database.db").write_text("id,gender\n1,0\n")
    with pytest.raises(DataError, match="not an SQLite database"):
        load_folder(demo_copy)


def test_client_csv_without_database(tmp_path, small_demo):
    clients = read_table(small_demo / "shop_database.db", "personal_data")
    clients.to_csv(tmp_path / "personal_data.csv", index=False)
    shutil.copy(small_demo / "personal_data.csv.gz", tmp_path)
    data = load_folder(tmp_path)
    assert len(data.clients) == len(clients) and data.purchases is None
    assert data.lost is not None and "gender" not in data.lost


def test_missing_value_in_required_column(tmp_path):
    pd.DataFrame({"id": [1, 2], "gender": [0, None], "age": [30, 40], "education": ["среднее"] * 2,
                  "city": [1, 1], "country": [32, 32]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError,
                       match=r"c.csv, column 'gender': empty value.*not null.*\[data row: 2\]"):
        read_client_csv(tmp_path / "c.csv")


@needs_shared("skillbox", "personal_data.csv")
def test_real_client_tables_validate():
    data = load_folder(SKILLBOX)
    assert len(data.clients) == 89_241 and len(data.lost) == 15_748
    assert not set(data.clients["id"]) & set(data.lost["id"])
