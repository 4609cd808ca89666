"""The store's tables from a database connection: the same staged tables as from the
folder's files, and clear errors naming the connection, table, column and rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from analysis.errors import DataError
from analysis.store.database import fingerprint, open_database, redact
from analysis.store.engine import connect
from analysis.store.loaders import DB_TABLES
from analysis.store.sources import stage_folder
from tests.conftest import read_table, write_tables


@pytest.fixture(scope="module")
def store_tables(small_demo: Path) -> dict[str, pd.DataFrame]:
    return {t: read_table(small_demo / "shop_database.db", t) for t in DB_TABLES}


def _duckdb_file(path: Path, tables: dict[str, pd.DataFrame]) -> Path:
    con = duckdb.connect(str(path))
    for name, df in tables.items():
        con.register("frame", df)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame')
        con.unregister("frame")
    con.close()
    return path


def _folder_without_tables(small_demo: Path, tmp_path: Path) -> Path:
    """The demo folder with only the lost clients and the id files (no database)."""
    folder = tmp_path / "folder"
    shutil.copytree(small_demo, folder)
    (folder / "shop_database.db").unlink()
    return folder


def _staged(folder: Path, tmp_path: Path, database=None) -> dict[str, pd.DataFrame]:
    store = stage_folder(folder, tmp_path / f"staged-{id(database)}", connect("duckdb"),
                         database)
    return {t: pd.read_parquet(p) for t, p in store.paths.items()} | {"_": store}


@pytest.mark.parametrize("scheme", ["duckdb", "sqlite"])
def test_tables_from_a_connection_equal_those_from_the_folder(small_demo, store_tables,
                                                              tmp_path, scheme):
    if scheme == "duckdb":
        path = _duckdb_file(tmp_path / "store.duckdb", store_tables)
    else:
        path = tmp_path / "store.db"
        write_tables(path, store_tables)
    before = path.stat().st_mtime_ns
    expected = _staged(small_demo, tmp_path)
    db = open_database(f"{scheme}:///{path}")
    assert set(DB_TABLES) <= set(db.tables)
    got = _staged(_folder_without_tables(small_demo, tmp_path), tmp_path, db)
    for t in [*DB_TABLES, "personal_data_lost"]:
        pd.testing.assert_frame_equal(got[t], expected[t])
    assert got["_"].sources["purchases"] == f"{scheme}:///{path}:purchases"
    assert path.stat().st_mtime_ns == before  # read only


def test_the_connection_wins_over_the_folder_and_says_so(small_demo, store_tables, tmp_path):
    fewer = {**store_tables, "purchases": store_tables["purchases"].iloc[:100]}
    db = open_database(f"duckdb:///{_duckdb_file(tmp_path / 's.duckdb', fewer)}")
    got = _staged(small_demo, tmp_path, db)
    assert len(got["purchases"]) == 100
    assert "the data folder's purchases is not" in got["_"].sources["purchases_note"]


def test_connection_problems_name_the_url_table_column_and_rows(small_demo, store_tables,
                                                                tmp_path, monkeypatch):
    from analysis.store import sources

    monkeypatch.setattr(sources, "CHUNK_ROWS", 1000)  # row numbers across chunks
    with pytest.raises(DataError, match="nowhere.duckdb not found .*never created"):
        open_database(f"duckdb:///{tmp_path / 'nowhere.duckdb'}")
    assert not (tmp_path / "nowhere.duckdb").exists()
    folder = _folder_without_tables(small_demo, tmp_path)
    # a missing table, a text id column, and rows breaking the schema
    bad_clients = store_tables["personal_data"].assign(
        id=store_tables["personal_data"]["id"].astype(str))
    only_clients = _duckdb_file(tmp_path / "a.duckdb", {"personal_data": bad_clients})
    db = open_database(f"duckdb:///{only_clients}")
    with pytest.raises(DataError) as err:
        _staged(folder, tmp_path, db)
    text = str(err.value)
    assert "a.duckdb: missing table(s) ['personal_data_coeffs', 'purchases']" in text
    assert "a.duckdb:personal_data" in text and "column 'id'" in text
    assert "where integers are needed" in text
    purchases = store_tables["purchases"].copy()
    late = 150_007 % len(purchases)
    assert late > 1000
    purchases.loc[[4, late], "dt"] = -3
    tables = {**store_tables, "purchases": purchases}
    db = open_database(f"duckdb:///{_duckdb_file(tmp_path / 'b.duckdb', tables)}")
    with pytest.raises(DataError) as err:
        _staged(folder, tmp_path, db)
    text = str(err.value)
    assert "b.duckdb:purchases" in text and "column 'dt'" in text
    assert f"data rows: 5, {late + 1}" in text


def test_passwords_never_reach_messages():
    assert redact("postgres://shop:s3cret@db.example:5432/store") == (
        "postgres://shop:***@db.example:5432/store")
    assert redact("duckdb:///data/store.duckdb") == "duckdb:///data/store.duckdb"
    with pytest.raises(DataError) as err:
        open_database("postgres://shop:s3cret@127.0.0.1:1/store")
    assert "s3cret" not in str(err.value) and "shop:***@127.0.0.1:1" in str(err.value)


def test_the_clean_step_reads_the_connection_and_reruns_when_its_data_change(
        small_demo, store_tables, tmp_path):
    from analysis import pipeline
    from analysis.config import load_config

    path = _duckdb_file(tmp_path / "store.duckdb", store_tables)
    url = f"duckdb:///{path}"
    cfg = load_config(None, data_dir=_folder_without_tables(small_demo, tmp_path),
                      results_dir=tmp_path / "res", database=url)
    step = pipeline.get_step("clean")
    first = pipeline.input_hash(cfg, step)
    assert pipeline.run(cfg, only="clean", echo=lambda s: None)[0]["status"] == "ok"
    clients = pd.read_parquet(tmp_path / "res" / "clean" / "clients.parquet")
    assert len(clients) > 1000
    assert pipeline.input_hash(cfg, step) == first  # unchanged data: reused
    fp = fingerprint(url, tuple(DB_TABLES))
    con = duckdb.connect(str(path))
    con.execute("UPDATE purchases SET cost = cost + 1 WHERE rowid = 0")
    con.close()
    assert fingerprint(url, tuple(DB_TABLES)) != fp
    assert pipeline.input_hash(cfg, step) != first


def test_check_data_reads_a_connection_with_one_problem_per_column(small_demo, store_tables,
                                                                   tmp_path):
    from analysis.store.check_data import check_folder
    from analysis.store.database import read_table

    purchases = store_tables["purchases"].copy()
    purchases.loc[[4, 5000], "dt"] = -3
    path = _duckdb_file(tmp_path / "c.duckdb", {**store_tables, "purchases": purchases})
    db = open_database(f"duckdb:///{path}")
    with pytest.raises(DataError) as err:
        read_table(db, "purchases", rows=1000)  # the bad rows in two chunks
    lines = [x for x in str(err.value).splitlines() if "column 'dt'" in x]
    assert len(lines) == 1 and "data rows: 5, 5001" in lines[0]
    problems, sizes = check_folder(_folder_without_tables(small_demo, tmp_path),
                                   f"duckdb:///{path}")
    assert sizes["personal_data"] == len(store_tables["personal_data"])
    assert any("c.duckdb:purchases" in p.file and p.severity == "fatal" for p in problems)
