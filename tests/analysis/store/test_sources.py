"""Tables from SQLite or Parquet, validated chunk by chunk, with errors naming file, column
and rows counted from the table's first row."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from analysis.errors import DataError
from analysis.store import sources
from analysis.store.cleaning import clean_store
from analysis.store.engine import connect
from analysis.store.sources import stage_folder


def _as_parquet(src: Path, dest: Path, tables=("personal_data", "personal_data_coeffs",
                                                  "purchases")) -> Path:
    """The demo folder with its database's tables as Parquet files instead."""
    dest.mkdir()
    con = sqlite3.connect(src / "shop_database.db")
    for t in tables:
        pd.read_sql_query(f"SELECT * FROM {t}", con).to_parquet(dest / f"{t}.parquet")
    con.close()
    for f in src.iterdir():
        if f.suffix in (".txt", ".gz"):
            shutil.copy(f, dest / f.name)
    return dest


def test_a_parquet_folder_cleans_to_the_same_tables_as_the_database(small_demo, tmp_path):
    con = connect("duckdb")
    folder = _as_parquet(small_demo, tmp_path / "pq")
    staged = stage_folder(folder, tmp_path / "s1", con)
    assert staged.sources["purchases"] == str(folder / "purchases.parquet")
    q_pq = clean_store(con, staged, tmp_path / "from_parquet")
    q_db = clean_store(con, stage_folder(small_demo, tmp_path / "s2", con), tmp_path / "db")
    drop = ("sources",)
    assert {k: v for k, v in q_pq.items() if k not in drop} == {
        k: v for k, v in q_db.items() if k not in drop}
    for name in ("clients", "products"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "from_parquet" / f"{name}.parquet"),
            pd.read_parquet(tmp_path / "db" / f"{name}.parquet"))


def test_a_parquet_folder_missing_a_table_names_it(small_demo, tmp_path):
    folder = _as_parquet(small_demo, tmp_path / "pq", tables=("personal_data", "purchases"))
    with pytest.raises(DataError, match=r"missing table\(s\) \['personal_data_coeffs'\]: "
                                        r"neither in the database nor as "
                                        r"personal_data_coeffs\.parquet"):
        stage_folder(folder, tmp_path / "s", connect("duckdb"))


def test_a_parquet_column_of_the_wrong_type_names_file_and_column(small_demo, tmp_path):
    folder = _as_parquet(small_demo, tmp_path / "pq")
    p = pd.read_parquet(folder / "purchases.parquet")
    p.assign(dt=p["dt"].astype(str)).drop(columns="cost").to_parquet(folder / "purchases.parquet")
    with pytest.raises(DataError) as err:
        stage_folder(folder, tmp_path / "s", connect("duckdb"))
    text = str(err.value)
    assert "missing column(s) ['cost']" in text
    assert "purchases.parquet, column 'dt': Parquet type string where integers are needed" in text


def test_rows_are_counted_from_the_tables_first_row_across_chunks(small_demo, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_ROWS", 1000)
    folder = _as_parquet(small_demo, tmp_path / "pq")
    p = pd.read_parquet(folder / "purchases.parquet")
    bad = [5, 2500, 2501, 7777]  # in the first, third and eighth chunk
    p.loc[bad, "dt"] = 99
    p.to_parquet(folder / "purchases.parquet")
    with pytest.raises(DataError) as err:
        stage_folder(folder, tmp_path / "s", connect("duckdb"))
    line = [x for x in str(err.value).splitlines() if "column 'dt'" in x]
    assert len(line) == 1  # one problem for the column, not one per chunk
    assert "[4 data rows: 6, 2501, 2502, 7778]" in line[0]


def test_ids_duplicated_across_chunks_are_found(small_demo, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_ROWS", 500)
    folder = _as_parquet(small_demo, tmp_path / "pq")
    c = pd.read_parquet(folder / "personal_data_coeffs.parquet")
    c.loc[1900, "id"] = c.loc[3, "id"]  # same id in the first and the fourth chunk
    c.to_parquet(folder / "personal_data_coeffs.parquet")
    with pytest.raises(DataError, match=rf"personal_data_coeffs\.parquet, column 'id': "
                                        rf"duplicated value\(s\) such as {c.loc[3, 'id']} "
                                        r"\(1 ids occur more than once\).*"
                                        r"\[2 data rows: 4, 1901\]"):
        stage_folder(folder, tmp_path / "s", connect("duckdb"))


def test_a_sqlite_table_is_read_in_chunks_with_the_same_rules(demo_copy, tmp_path,
                                                              monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_ROWS", 700)
    con = sqlite3.connect(demo_copy / "shop_database.db")
    con.execute("UPDATE purchases SET base_sale = 3 WHERE rowid IN (2, 1500)")
    con.commit()
    con.close()
    with pytest.raises(DataError) as err:
        stage_folder(demo_copy, tmp_path / "s", connect("duckdb"))
    assert "shop_database.db:purchases, column 'base_sale'" in str(err.value)
    assert "[2 data rows: 2, 1500]" in str(err.value)


def test_no_client_table_anywhere(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no client table: none of shop_database.db:"
                                        "personal_data, personal_data.parquet"):
        stage_folder(tmp_path / "empty", tmp_path / "s", connect("duckdb"))


def test_check_data_reads_a_parquet_folder_with_the_same_rules(small_demo, tmp_path):
    from analysis.store.check_data import check_folder

    folder = _as_parquet(small_demo, tmp_path / "pq")
    problems, sizes = check_folder(folder)
    assert not [p for p in problems if p.severity == "fatal"]
    assert sizes["purchases"] > 1000 and sizes["personal_data_coeffs"] == 3000
    p = pd.read_parquet(folder / "purchases.parquet")
    p.assign(cost=p["cost"].astype(str)).to_parquet(folder / "purchases.parquet")
    (folder / "personal_data_coeffs.parquet").unlink()
    problems, _ = check_folder(folder)
    fatal = "\n".join(p.message for p in problems if p.severity == "fatal")
    assert "column 'cost': Parquet type string where integers are needed" in fatal
    assert "missing table 'personal_data_coeffs' (nor personal_data_coeffs.parquet)" in fatal


def test_a_table_stored_as_a_folder_of_part_files_is_read_whole(small_demo, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_ROWS", 1500)
    folder = _as_parquet(small_demo, tmp_path / "pq")
    p = pd.read_parquet(folder / "purchases.parquet")
    (folder / "purchases.parquet").unlink()
    parts = folder / "purchases.parquet"
    parts.mkdir()
    for i, part in enumerate((p.iloc[:5000], p.iloc[5000:12000], p.iloc[12000:])):
        part.to_parquet(parts / f"part-{i:05d}.parquet")
    (parts / "_SUCCESS").write_bytes(b"")
    con = connect("duckdb")
    staged = stage_folder(folder, tmp_path / "s", con)
    assert staged.rows["purchases"] == len(p)
    got = pd.read_parquet(staged.paths["purchases"])
    pd.testing.assert_frame_equal(got[["id", "dt", "cost"]].astype("int64"),
                                  p[["id", "dt", "cost"]].astype("int64"))
    # a bad row in the second part is named by its part file and its row there
    bad = p.iloc[5000:12000].copy()
    bad.iloc[10, bad.columns.get_loc("dt")] = 77
    bad.to_parquet(parts / "part-00001.parquet")
    with pytest.raises(DataError, match=r"part-00001\.parquet, column 'dt'.*"
                                        r"\[data row: 11\]"):
        stage_folder(folder, tmp_path / "s2", con)


def test_duckdb_memory_limit_is_applied():
    con = connect("duckdb", memory_limit="1GB")
    limit = con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.replace(" ", "").upper() in ("1GB", "953.6MIB", "1.0GB", "1000.0MB",
                                              "953.6MB"), limit


def _parts(folder: Path, name: str, frames) -> Path:
    """Replace table ``name`` of ``folder`` by a folder of part files (tables or frames)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / f"{name}.parquet").unlink()
    parts = folder / f"{name}.parquet"
    parts.mkdir()
    for i, f in enumerate(frames):
        if isinstance(f, bytes):
            (parts / f"part-{i}.parquet").write_bytes(f)
        else:
            pq.write_table(f if isinstance(f, pa.Table) else pa.Table.from_pandas(
                f, preserve_index=False), parts / f"part-{i}.parquet")
    return parts


def test_exports_as_they_come_from_warehouses(small_demo, tmp_path):
    """Bad parts are named with the problem; odd but valid types are read."""
    import pyarrow as pa

    con = connect("duckdb")

    def fails(folder, *expected):
        with pytest.raises(DataError) as err:
            stage_folder(folder, tmp_path / f"s-{folder.name}", con)
        for e in expected:
            assert e in str(err.value), str(err.value)

    base = _as_parquet(small_demo, tmp_path / "base")
    p = pd.read_parquet(base / "purchases.parquet")
    # an empty part file, ids as text in the second part, a part without dt
    f = _as_parquet(small_demo, tmp_path / "a")
    _parts(f, "purchases", [p.iloc[:100], p.iloc[100:200].assign(id=p["id"].astype(str)),
                            p.iloc[200:300].drop(columns="dt"), b""])
    fails(f, "part-1.parquet, column 'id': Parquet type string where integers are needed",
          "part-2.parquet: missing column(s) ['dt']",
          "part-3.parquet: not a readable Parquet file")
    # dt in folder names (hive partitions) gets a hint; an empty folder says so
    f = _as_parquet(small_demo, tmp_path / "b")
    (f / "purchases.parquet").unlink()
    (f / "purchases.parquet" / "dt=3").mkdir(parents=True)
    p[p["dt"] == 3].drop(columns="dt").to_parquet(f / "purchases.parquet" / "dt=3" / "x.parquet")
    (f / "personal_data_coeffs.parquet").unlink()
    (f / "personal_data_coeffs.parquet").mkdir()
    fails(f, "columns in folder names such as dt=3/ are not read",
          "personal_data_coeffs.parquet: the folder holds no Parquet part files")
    # a cost beyond int64, and a client table without rows
    f = _as_parquet(small_demo, tmp_path / "c")
    p.assign(cost=p["cost"].astype(float).where(p.index != 7, 1e20)).to_parquet(
        f / "purchases.parquet")
    pd.read_parquet(f / "personal_data.parquet").iloc[:0].to_parquet(f / "personal_data.parquet")
    fails(f, "column 'cost': value(s) beyond the integer range such as 1e+20 (rule: int64 "
             "range) [data row: 8]", "personal_data.parquet: the table has no rows")
    # valid: an all-null first part, category text, whole-number decimals, extra columns
    f = _as_parquet(small_demo, tmp_path / "d")
    first = pa.Table.from_pandas(p.iloc[:50].assign(colour=None), preserve_index=False)
    second = pa.Table.from_pandas(p.iloc[50:].assign(colour=p["colour"].iloc[50:].astype(
        "category"), extra="x"), preserve_index=False)
    second = second.set_column(second.schema.get_field_index("cost"), "cost",
                               second["cost"].cast(pa.decimal128(20, 0)))
    _parts(f, "purchases", [first, second])
    staged = stage_folder(f, tmp_path / "s-d", con)
    assert staged.rows["purchases"] == len(p)


def test_a_parquet_table_beside_the_database_is_said_to_win(demo_copy, tmp_path):
    pd.read_sql_query("SELECT * FROM personal_data_coeffs", sqlite3.connect(
        demo_copy / "shop_database.db")).to_parquet(demo_copy / "personal_data_coeffs.parquet")
    staged = stage_folder(demo_copy, tmp_path / "s", connect("duckdb"))
    assert staged.sources["personal_data_coeffs_note"] == (
        "personal_data_coeffs.parquet used; the table personal_data_coeffs of "
        "shop_database.db is not")


def test_a_boolean_flag_column_is_read_as_0_and_1(small_demo, tmp_path):
    """Warehouses export base_sale as a boolean: true/false are the 1/0 the schema wants."""
    folder = _as_parquet(small_demo, tmp_path / "pq")
    p = pd.read_parquet(folder / "purchases.parquet")
    expected = p["base_sale"].astype("int64")
    p.assign(base_sale=p["base_sale"].astype(bool)).to_parquet(folder / "purchases.parquet")
    store = stage_folder(folder, tmp_path / "s", connect("duckdb"))
    got = pd.read_parquet(store.paths["purchases"])["base_sale"]
    assert got.tolist() == expected.tolist() and got.sum() > 0
