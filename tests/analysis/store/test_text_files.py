"""Bad input as analysts' files bring it: encodings, separators, every problem at once."""

import codecs
import gzip
import sqlite3

import pandas as pd
import pytest

from analysis.errors import DataError
from analysis.store.check_data import check_folder
from analysis.store.id_files import read_id_file
from analysis.store.loaders import load_folder, read_client_csv
from analysis.store.rules import clean
from analysis.store.text_files import decode, read_csv_text, sniff_separator
from tests.conftest import read_table, write_tables

TEXT = "id,education\n1,высшее\n2,среднее\n"


@pytest.mark.parametrize(("data", "encoding"), [
    (TEXT.encode("utf-8"), "utf-8"),
    (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8-sig"),
    (TEXT.encode("utf-16"), "utf-16"),  # with a byte-order mark
    (TEXT.encode("utf-16-le"), "utf-16-le"),  # Notepad's "Unicode" without one
    (TEXT.encode("utf-16-be"), "utf-16-be"),
    (TEXT.encode("cp1251"), "cp1251"),
])
def test_each_encoding_is_detected_and_decoded(data, encoding):
    assert decode(data, "f.csv") == (TEXT, encoding)


def test_binary_and_unknown_encodings_are_refused():
    with pytest.raises(DataError, match="f.bin: binary content"):
        decode(bytes(range(256)) * 4 + b"\x00" * 1024, "f.bin")
    with pytest.raises(DataError, match="not text in UTF-8, UTF-16 or cp1251"):
        decode(b"id\n\x98\x98\x98\n", "f.csv")  # 0x98 is unassigned in cp1251


@pytest.mark.parametrize(("sep", "expected"), [(",", ","), (";", ";"), ("\t", "\t")])
def test_separator_is_detected(sep, expected):
    text = sep.join(["id", "age", "city"]) + "\n" + sep.join(["1", "30", "5"]) + "\n"
    assert sniff_separator(text) == expected


def _client_frame(small_demo):
    return read_table(small_demo / "shop_database.db", "personal_data")


def test_excel_russian_locale_client_csv_reads_the_same_values(small_demo, tmp_path):
    """personal_data.csv as Excel writes it in a Russian locale: ';' and cp1251."""
    clients = _client_frame(small_demo)
    path = tmp_path / "personal_data.csv"
    path.write_bytes(clients.to_csv(index=False, sep=";").encode("cp1251"))
    table = read_client_csv(path)
    assert table.attrs["text"] == "cp1251, semicolon-separated"
    assert table["id"].tolist() == clients["id"].tolist()
    assert table["education"].tolist() == clients["education"].tolist()


def test_decimal_comma_in_a_float_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id;age;education;country;city\n1;30;высшее;32;5\n", encoding="utf-8")
    raw, info = read_csv_text(path)
    assert info.separator == ";" and raw.shape == (1, 5)


def test_russian_locale_csv_in_a_folder_gives_no_false_warnings(small_demo, tmp_path):
    """The client table as Excel exports it, beside a database without personal_data: it
    loads, and check-data reports what it found, no conclusion from a failed table."""
    folder = tmp_path / "store"
    folder.mkdir()
    for f in small_demo.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    clients = _client_frame(small_demo)
    con = sqlite3.connect(folder / "shop_database.db")
    con.execute("DROP TABLE personal_data")
    con.commit()
    con.close()
    (folder / "personal_data.csv").write_bytes(
        clients.to_csv(index=False, sep=";").encode("cp1251"))
    problems, sizes = check_folder(folder)
    assert [p for p in problems if p.severity == "fatal"] == []
    assert sizes["personal_data"] == len(clients)
    notes = [p.message for p in problems if p.severity == "note"]
    assert notes == ["read as cp1251, semicolon-separated"]
    # broken the same file: the fatal error, and no warning computed from the tables
    (folder / "personal_data.csv").write_bytes(
        clients.assign(age="x").to_csv(index=False, sep=";").encode("cp1251"))
    problems, _ = check_folder(folder)
    assert [p.severity for p in problems] == ["fatal"]
    assert "column 'age': non-numeric" in problems[0].message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-8-sig"])
def test_id_file_in_another_encoding_gives_the_same_ids(small_demo, tmp_path, encoding):
    src = small_demo / "ids_first_company_positive.txt"
    copy = tmp_path / src.name
    copy.write_bytes(src.read_text(encoding="utf-8").encode(encoding))
    assert read_id_file(copy).ids == read_id_file(src).ids
    assert read_id_file(copy).encoding == encoding


def test_check_data_on_a_utf16_id_file_reads_every_id(demo_copy):
    """UTF-16 without a byte-order mark (10 one-digit 'ids' before): the same 5,000."""
    pos = demo_copy / "ids_first_company_positive.txt"
    before = check_folder(demo_copy)[1]["campaign1_treated_ids"]
    pos.write_bytes(pos.read_text(encoding="utf-8").encode("utf-16-le"))
    problems, sizes = check_folder(demo_copy)
    assert sizes["campaign1_treated_ids"] == before
    assert [p.message for p in problems if p.severity == "note"] == ["read as utf-16-le"]
    assert [p for p in problems if p.severity == "fatal"] == []


def test_id_file_of_single_digits_is_fatal(tmp_path):
    """Digits separated by a byte (UTF-16 read as 8-bit text), never 10 'ids'."""
    path = tmp_path / "ids.txt"
    path.write_text(" ".join("1234567890" * 3), encoding="utf-8")
    with pytest.raises(DataError, match="30 numbers read are single digits"):
        read_id_file(path)


def test_every_problem_of_the_purchases_table_at_once(demo_copy):
    """NULL cost in 2 rows, NULL dt in 3, dt = 59 in 2: one error lists all three, rows
    numbered as a user counts them (1-based), and check-data says nothing false."""
    db = demo_copy / "shop_database.db"
    p = read_table(db, "purchases")
    p["cost"] = p["cost"].astype(object)
    p["dt"] = p["dt"].astype(object)
    p.loc[[0, 9], "cost"] = None
    p.loc[[1, 2, 3], "dt"] = None
    p.loc[[10, 11], "dt"] = 59
    write_tables(db, {"purchases": p})
    with pytest.raises(DataError) as err:
        load_folder(demo_copy)
    msg = str(err.value)
    assert "3 problems" in msg
    assert "column 'cost': empty value(s) in a column that must be filled (rule: not null) " \
           "[2 data rows: 1, 10]" in msg
    assert "column 'dt': empty value(s) in a column that must be filled (rule: not null) " \
           "[3 data rows: 2, 3, 4]" in msg
    assert "column 'dt': value(s) not allowed such as 59, 59 (rule: in_range(0, 58)) " \
           "[2 data rows: 11, 12]" in msg
    problems, _ = check_folder(demo_copy)
    assert [p.severity for p in problems] == ["fatal"] * 3
    assert not any("no purchases table" in p.message for p in problems)


def test_problems_of_several_files_in_one_error(demo_copy):
    db = demo_copy / "shop_database.db"
    c = read_table(db, "personal_data")
    c.loc[2, "gender"] = 3
    write_tables(db, {"personal_data": c})
    (demo_copy / "ids_first_company_negative.txt").write_text("", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_folder(demo_copy)
    msg = str(err.value)
    assert "2 problems" in msg and "column 'gender'" in msg and "the id file is empty" in msg


def test_same_id_with_different_values_across_client_tables(demo_copy):
    db = demo_copy / "shop_database.db"
    known = read_table(db, "personal_data")
    lost_path = demo_copy / "personal_data.csv.gz"
    lost = pd.read_csv(lost_path, dtype=str)
    row = known.iloc[[0]].drop(columns="gender").astype(str)
    row["age"] = str(int(row["age"].iloc[0]) + 1)
    row["city"] = "99999"
    lost = pd.concat([lost, row[lost.columns]], ignore_index=True)
    with gzip.open(lost_path, "wt", encoding="utf-8") as f:
        lost.to_csv(f, index=False)
    problems, _ = check_folder(demo_copy)
    warn = [p.message for p in problems if "different values" in p.message]
    first = known.iloc[0]
    assert warn == [f"1 of the 1 ids also in the client table have different values (age: 1, "
                    f"city: 1; e.g. id {first['id']}: age {first['age']} vs "
                    f"{first['age'] + 1}, city {first['city']} vs 99999); rule: the row of "
                    "the table with gender (personal_data) is kept"]
    quality = clean(load_folder(demo_copy)).quality
    assert quality["duplicates_across_client_tables"]["conflicting"] == 1
    assert quality["lost_ids_also_in_known_table"] == 1
