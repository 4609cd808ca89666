"""Read the store's files from a data folder, read-only, and validate every table.

A data folder holds some or all of:

``shop_database.db``
    SQLite with tables ``personal_data``, ``personal_data_coeffs``, ``purchases``.
``personal_data.csv``
    The client table as CSV (used when the database is absent or lacks the table).
``personal_data.csv.gz``
    The lost part of the client table, without gender.
``ids_first_company_positive.txt`` / ``ids_first_company_negative.txt``
    Campaign 1 treated and control ids (dirty; see :mod:`analysis.store.id_files`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from analysis.errors import DataError, Problem
from analysis.store.id_files import IdFile, read_id_file
from analysis.store.text_files import read_csv_text

DB_FILE = "shop_database.db"
CLIENTS_CSV = "personal_data.csv"
LOST_FILE = "personal_data.csv.gz"
POSITIVE_FILE = "ids_first_company_positive.txt"
NEGATIVE_FILE = "ids_first_company_negative.txt"
#: campaign 1's id files by the :class:`RawData` attribute that holds them
ID_FILES = {"positive": POSITIVE_FILE, "negative": NEGATIVE_FILE}
DB_TABLES = ("personal_data", "personal_data_coeffs", "purchases")
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class RawData:
    """Validated tables of one data folder. Tables that are absent are ``None``."""

    folder: Path
    clients: pd.DataFrame
    lost: pd.DataFrame | None = None
    coeffs: pd.DataFrame | None = None
    purchases: pd.DataFrame | None = None
    positive: IdFile | None = None
    negative: IdFile | None = None
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def has_purchases(self) -> bool:
        return self.purchases is not None


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """Open an SQLite file read-only, failing clearly on anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    with open(path, "rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise DataError(path, "not an SQLite database (wrong file header)")
    con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    try:
        con.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        con.close()
        raise DataError(path, f"damaged SQLite database: {exc}") from exc
    return con


def db_tables(con: sqlite3.Connection) -> list[str]:
    rows = con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return sorted(r[0] for r in rows)


def read_db_table(path: str | Path, table: str) -> pd.DataFrame:
    """Read one table of the database and validate it against its schema."""
    con = connect_readonly(path)
    try:
        tables = db_tables(con)
        if table not in tables:
            raise DataError(path, f"missing table '{table}'; found {tables}")
        try:
            raw = pd.read_sql_query(f'SELECT * FROM "{table}"', con)
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
            raise DataError(f"{path}:{table}", f"table could not be read: {exc}") from exc
    finally:
        con.close()
    from analysis.store.schemas import validate  # pandera: 2 s to import

    return validate(raw, table, f"{path}:{table}")


def read_client_csv(path: str | Path, lost: bool = False) -> pd.DataFrame:
    """Read a client table exported as CSV (optionally gzip-compressed), in any encoding
    and separator of :mod:`analysis.store.text_files`; ``attrs["text"]`` says which were found.

    Raises
    ------
    DataError
        Unreadable file or encoding, or every schema problem of the table at once.
    """
    raw, info = read_csv_text(path)
    from analysis.store.schemas import validate  # pandera: 2 s to import

    table = validate(raw, "personal_data_lost" if lost else "personal_data", str(path))
    table.attrs["text"] = info.describe()
    return table


def load_folder(folder: str | Path) -> RawData:
    """Load and validate every known file in ``folder``.

    The client table comes from the database when it has ``personal_data``, else from
    ``personal_data.csv``. Files are never opened for writing. Every file is read before
    anything is raised, so one error lists the problems of all of them.

    Raises
    ------
    DataError
        When no client table is found, or present files fail validation (every problem
        of every file, each with file, column, rule and rows).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "data folder not found")
    db = folder / DB_FILE
    sources: dict[str, str] = {}
    tables: dict[str, pd.DataFrame] = {}
    problems: list[Problem] = []

    def attempt(fn, *args):  # type: ignore[no-untyped-def]
        try:
            return fn(*args)
        except DataError as exc:
            problems.extend(exc.problems)
            return None

    if db.exists():
        con = connect_readonly(db)
        present = db_tables(con)
        con.close()
        missing = [t for t in DB_TABLES if t not in present]
        if missing and (folder / CLIENTS_CSV).exists() and missing == ["personal_data"]:
            missing = []
        if missing:
            problems.append(Problem(str(db), f"missing table(s) {missing}; found {present}"))
        for t in DB_TABLES:
            if t in present:
                table = attempt(read_db_table, db, t)
                if table is not None:
                    tables[t] = table
                    sources[t] = f"{db}:{t}"
    if "personal_data" not in tables and not (db.exists() and "personal_data" in present):
        csv = folder / CLIENTS_CSV
        if not csv.exists():
            problems.append(Problem(str(folder), f"no client table: neither {DB_FILE} nor "
                                    f"{CLIENTS_CSV}"))
        else:
            table = attempt(read_client_csv, csv)
            if table is not None:
                tables["personal_data"] = table
                sources["personal_data"] = str(csv)
    lost = attempt(read_client_csv, folder / LOST_FILE, True) if (
        folder / LOST_FILE).exists() else None
    id_files = {attr: attempt(read_id_file, folder / name)
                for attr, name in ID_FILES.items() if (folder / name).exists()}
    if problems:
        raise DataError.from_problems(folder, problems)
    data = RawData(folder=folder, clients=tables["personal_data"],
                   coeffs=tables.get("personal_data_coeffs"),
                   purchases=tables.get("purchases"), sources=sources)
    if lost is not None:
        data.lost = lost
        sources["personal_data_lost"] = str(folder / LOST_FILE)
    for attr, parsed in id_files.items():
        setattr(data, attr, parsed)
        sources[attr] = str(folder / ID_FILES[attr])
    for name, table in (("personal_data", data.clients), ("personal_data_lost", data.lost)):
        if table is not None and table.attrs.get("text"):
            sources[f"{name}_text"] = table.attrs["text"]
    return data
