"""The store's tables read from a database connection instead of a folder's files.

``database`` in ``shopbayes.toml`` (or ``shopbayes run --database URL``) is an Ibis
connection URL (https://ibis-project.org/how-to/input-output/basics: ``ibis.connect``):
``duckdb:///path/store.duckdb``, ``sqlite:///path/shop.db``, or a server such as
``postgres://user:password@host:5432/db`` (its Ibis backend installed). The tables
``personal_data``, ``personal_data_coeffs`` and ``purchases`` found there are used instead
of the data folder's; the folder still holds the lost clients' ``personal_data.csv.gz``
and the campaign id files.

Each table is read in chunks of :data:`analysis.store.sources.CHUNK_ROWS` rows and checked
by the same schemas as a file (column types first, from the database's schema; then
every chunk's rows). Row numbers count in the order the database returns the rows (no
``ORDER BY``, which would sort a billion rows), so a problem also shows the values at
fault. File databases must exist (a missing file is an error, never a new empty
database) and are opened read only. Passwords never reach messages or results
(:func:`redact`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from analysis.errors import DataError, Problem
from analysis.store.schemas import COLUMNS, validate

#: URL schemes whose "host + path" is a file on this machine
FILE_SCHEMES = ("duckdb", "sqlite")


def redact(url: str) -> str:
    """``url`` without its password (``postgres://user:***@host/db``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _file_of(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme not in FILE_SCHEMES:
        return None
    path = parts.netloc + parts.path
    return None if path in ("", ":memory:") else Path(path)


@dataclass
class Database:
    """An open connection: ``source`` (the redacted URL) names it in every message."""

    url: str
    source: str
    con: Any
    tables: list[str] = field(default_factory=list)

    def table_source(self, table: str) -> str:
        return f"{self.source}:{table}"


def open_database(url: str) -> Database:
    """Connect to ``url`` (read only for a DuckDB file) and list its tables.

    Raises
    ------
    DataError
        The URL names a database file that does not exist, the backend is not installed,
        or the connection fails (the message names the redacted URL).
    """
    import ibis

    source = redact(url)
    path = _file_of(url)
    if path is not None and not path.is_file():
        raise DataError(source, f"database file {path} not found (a file database is never "
                                "created: check the path)")
    try:
        if urlsplit(url).scheme == "duckdb" and path is not None:
            con = ibis.duckdb.connect(str(path), read_only=True)
            # Ibis 12's list_tables calls an Arrow method DuckDB 2 no longer has
            tables = sorted(r[0] for r in con.con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()").fetchall())
        else:
            con = ibis.connect(url)
            tables = sorted(con.list_tables())
    except Exception as exc:  # a missing driver, refused connection, bad URL, bad file
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(source, f"could not connect ({type(exc).__name__}: "
                                f"{message.replace(url, source)})") from exc
    return Database(url, source, con, tables)


def schema_problems(db: Database, table: str) -> list[Problem]:
    """Missing columns and columns whose database type cannot hold the schema's kind
    (:func:`analysis.store.sources.schema_problems` on the table's Arrow schema)."""
    from analysis.store import sources

    return sources.schema_problems(db.con.table(table).schema().to_pyarrow(), table,
                                   db.table_source(table), "database")


def table_chunks(db: Database, table: str, rows: int) -> Iterator[tuple[str, pd.DataFrame]]:
    """``(source, chunk)`` pairs of ``table``'s schema columns, ``rows`` rows at a time.

    DuckDB streams through its own Arrow reader (Ibis 12's ``to_pyarrow_batches`` fails
    on DuckDB 2); other backends through Ibis' ``to_pyarrow_batches``.
    """
    expr = db.con.table(table).select(*COLUMNS[table])
    source = db.table_source(table)
    try:
        if db.con.name == "duckdb":
            reader = db.con.con.sql(str(db.con.compile(expr))).to_arrow_reader(rows)
        else:
            reader = expr.to_pyarrow_batches(chunk_size=rows)
        for batch in reader:
            if batch.num_rows:
                yield source, batch.to_pandas()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(source, f"table could not be read ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc


def read_table(db: Database, table: str, rows: int = 100_000) -> pd.DataFrame:
    """A whole table, validated chunk by chunk (``check-data``).

    Raises
    ------
    DataError
        Missing columns, columns of the wrong type, or rows breaking the schema.
    """
    problems = schema_problems(db, table)
    if problems:
        raise DataError.from_problems(db.table_source(table), problems)
    frames, offset = [], 0
    for source, chunk in table_chunks(db, table, rows):
        try:
            frames.append(validate(chunk, table, source))
        except DataError as exc:
            problems += [replace(p, rows=tuple(r + offset for r in p.rows))
                         for p in exc.problems]
        offset += len(chunk)
    if problems:  # one problem per column and rule over all chunks, as the clean step
        from analysis.store.sources import _merge

        raise DataError.from_problems(db.table_source(table), _merge(problems))
    return pd.concat(frames, ignore_index=True) if frames else validate(
        pd.DataFrame(columns=list(COLUMNS[table])), table, db.table_source(table))


def fingerprint(url: str, tables: tuple[str, ...]) -> dict[str, list[float]]:
    """Per table found: rows and the sums of its numeric schema columns, so that the
    pipeline reruns the clean step when the database's data change (an edit that keeps
    every count and sum goes unnoticed: rerun with ``--force`` then)."""
    db = open_database(url)
    out: dict[str, list[float]] = {}
    for t in tables:
        if t not in db.tables:
            continue
        table = db.con.table(t)
        cols = [c for c, k in COLUMNS[t].items() if k != "str" and c in table.columns]
        row = table.aggregate(n=table.count(), **{f"s_{c}": table[c].cast("float64").sum()
                                                 for c in cols}).to_pandas().iloc[0]
        out[t] = [float(v) if pd.notna(v) else 0.0 for v in row.tolist()]
    return out
