"""The store's tables, from wherever they come, staged as validated Parquet for the engine.

A data folder holds the store's tables as

* ``shop_database.db`` (SQLite: ``personal_data``, ``personal_data_coeffs``,
  ``purchases``), as the real store delivered them; or
* Parquet, as a warehouse exports them: ``<table>.parquet`` for each of those tables (a
  file, or a folder of part files as Spark writes them); a Parquet table is used instead
  of the database's table of the same name;
* ``personal_data.csv`` (the client table when neither holds it),
  ``personal_data.csv.gz`` (the lost clients without gender) and the campaign id files,
  as before.

Every table is read in chunks of :data:`CHUNK_ROWS` rows, each checked by the same
pandera schema as the in-memory loader (:func:`analysis.store.schemas.validate`; row numbers
count from the table's first row), so memory does not grow with the store. Parquet columns
must have the schema's types: numbers where numbers are needed (integers may be stored as
floats, as pandas writes an integer column with gaps; a fraction among them is a row
error), text where text is: a text column where integers are needed is an error naming
file and column, not a silent cast. Ids that must be unique are
checked across chunks in the engine. Every problem of every table is raised at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.errors import SHOWN_ROWS, DataError, Problem
from analysis.store import loaders
from analysis.store.id_files import IdFile, read_id_file
from analysis.store.schemas import COLUMNS, validate
from analysis.store.tables import parquet_batches, parquet_files

#: rows read, checked and written at a time
CHUNK_ROWS = 100_000
#: the Arrow type each schema kind is staged as
ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
#: tables whose ``id`` is unique (checked across chunks)
UNIQUE_ID = ("personal_data", "personal_data_lost", "personal_data_coeffs")


def arrow_schema(table: str) -> pa.Schema:
    """The staged Parquet schema of ``table`` (columns of :data:`analysis.store.schemas.COLUMNS`,
    in that order)."""
    return pa.schema([(c, ARROW_TYPES[k]) for c, k in COLUMNS[table].items()])


def parquet_path(folder: Path, table: str) -> Path:
    return folder / f"{table}.parquet"


@dataclass
class StagedStore:
    """The store's tables as validated Parquet files, ready for the engine.

    ``paths`` maps ``personal_data``, ``personal_data_lost``, ``personal_data_coeffs``
    and ``purchases`` (those present) to staged Parquet; ``sources`` names where each came
    from (``file:table``), ``rows`` their sizes.
    """

    folder: Path
    paths: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    positive: IdFile | None = None
    negative: IdFile | None = None


def _type_ok(t: pa.DataType, kind: str) -> bool:
    """Whether a Parquet column of type ``t`` can hold the schema's ``kind``."""
    if pa.types.is_dictionary(t):  # pandas' category columns: judged by their values
        t = t.value_type
    if pa.types.is_null(t):  # a part whose column is all missing
        return True
    if kind == "int":
        # whole numbers stored as floats (pandas writes an integer column with gaps so),
        # as decimals without fractions (warehouse exports) or as booleans (a 0/1 flag
        # such as base_sale exported as true/false) are accepted; a fraction among them
        # is a row error of the schema
        return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                or (pa.types.is_decimal(t) and t.scale == 0))
    if kind == "float":
        return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def schema_problems(schema: pa.Schema, table: str, source: str, stored: str,
                    hint: str = "") -> list[Problem]:
    """Columns of ``table`` missing from ``schema`` (the Arrow schema of a file or a
    database table, ``source`` named in problems) or of a type that cannot hold the
    schema's kind (``stored``: ``Parquet`` or ``database``, as the messages say it);
    ``hint`` follows the missing-columns message."""
    spec = COLUMNS[table]
    problems = []
    missing = [c for c in spec if c not in schema.names]
    if missing:
        problems.append(Problem(source, f"missing column(s) {missing}; found "
                                f"{schema.names}{hint}", rule="required columns"))
    for col, kind in spec.items():
        if col in schema.names and not _type_ok(schema.field(col).type, kind):
            need = {"int": "integers", "float": "numbers", "str": "text"}[kind]
            problems.append(Problem(source, f"{stored} type {schema.field(col).type} "
                                    f"where {need} are needed", col, rule=f"type {need}"))
    return problems


def _parquet_problems(path: Path, table: str) -> list[Problem]:
    """Missing columns and columns whose Parquet type is not the schema's kind, checked
    in every part file of a folder table (each problem names its part)."""
    files = parquet_files(path)
    if path.is_dir() and not files:
        return [Problem(str(path), "the folder holds no Parquet part files")]
    problems: list[Problem] = []
    for f in files:
        try:
            schema = pq.read_schema(f)
        except (pa.ArrowInvalid, OSError) as exc:
            problems.append(Problem(str(f), "not a readable Parquet file "
                                    f"({str(exc).splitlines()[0]})"))
            continue
        hint = ""
        if path.is_dir() and any("=" in part for part in f.relative_to(path).parts[:-1]):
            hint = (" (columns in folder names such as dt=3/ are not read: write them "
                    "into the files)")
        problems += schema_problems(schema, table, str(f), "Parquet", hint)
    return problems


def read_parquet_table(path: Path, table: str) -> pd.DataFrame:
    """Read and validate a whole Parquet table (``check-data``; the clean step reads it in
    chunks), with the type checks of the chunked reader; each part of a folder table is
    validated on its own (problems name the part file and its rows).

    Raises
    ------
    DataError
        A missing column, a column of the wrong type, or rows breaking the schema.
    """
    problems = _parquet_problems(path, table)
    if problems:
        raise DataError.from_problems(path, problems)
    frames = []
    for f in parquet_files(path):
        frame = pq.read_table(f, columns=list(COLUMNS[table])).to_pandas()
        try:
            frames.append(validate(frame, table, str(f)))
        except DataError as exc:
            problems += exc.problems
    if problems:
        raise DataError.from_problems(path, problems)
    return pd.concat(frames, ignore_index=True) if frames else validate(
        pd.DataFrame(columns=list(COLUMNS[table])), table, str(path))


def _parquet_chunks(path: Path, table: str) -> Iterator[tuple[str, pd.DataFrame]]:
    """``(part file, chunk)`` pairs of a Parquet table; rows count within each part."""
    for f in parquet_files(path):
        for chunk in parquet_batches(f, CHUNK_ROWS, list(COLUMNS[table])):
            yield str(f) if path.is_dir() else str(path), chunk


def _sqlite_chunks(db: Path, table: str) -> Iterator[tuple[str, pd.DataFrame]]:
    con = loaders.connect_readonly(db)
    try:
        for chunk in pd.read_sql_query(f'SELECT * FROM "{table}"', con, chunksize=CHUNK_ROWS):
            yield f"{db}:{table}", chunk
    except Exception as exc:  # sqlite3.DatabaseError, pandas' DatabaseError
        raise DataError(f"{db}:{table}", f"table could not be read: {exc}") from exc
    finally:
        con.close()


def _merge(problems: list[Problem]) -> list[Problem]:
    """One problem per (file, column, rule) over all chunks: rows and counts summed, the
    first chunk's wording kept."""
    merged: dict[tuple, Problem] = {}
    for p in problems:
        key = (p.file, p.column, p.rule)
        if key not in merged:
            merged[key] = p
            continue
        q = merged[key]
        merged[key] = replace(q, rows=(q.rows + p.rows)[:SHOWN_ROWS],
                              n_rows=q.n_rows + p.n_rows)
    return list(merged.values())


def stage_table(chunks: Iterator[tuple[str, pd.DataFrame]], table: str, out: Path
                ) -> tuple[int, list[Problem]]:
    """Validate ``chunks`` of ``table`` and write them to ``out`` as Parquet.

    Parameters
    ----------
    chunks
        ``(source, frame)`` pairs in order: the file (``file:table``, or the part file of
        a folder table) named in problems, and at most :data:`CHUNK_ROWS` of its rows.
        Row numbers count from the first row of each source.
    table
        Schema name (:data:`analysis.schemas.SCHEMAS`).
    out
        The staged Parquet file (written only when every chunk is valid).

    Returns
    -------
    (rows, problems)
        Rows read and every problem found.
    """
    schema = arrow_schema(table)
    rows, offset, current, problems = 0, 0, None, []
    writer: pq.ParquetWriter | None = None
    try:
        for source, chunk in chunks:
            if source != current:
                current, offset = source, 0
            try:
                typed = validate(chunk, table, source)
            except DataError as exc:
                problems += [replace(p, rows=tuple(r + offset for r in p.rows))
                             for p in exc.problems]
                typed = None
            if typed is not None and not problems:
                if writer is None:
                    writer = pq.ParquetWriter(out, schema)
                writer.write_table(pa.Table.from_pandas(typed[schema.names], schema=schema,
                                                        preserve_index=False))
            offset += len(chunk)
            rows += len(chunk)
    finally:
        if writer is not None:
            writer.close()
    if not problems and writer is None:  # an empty table
        pq.write_table(schema.empty_table(), out)
    return rows, _merge(problems)


def duplicate_ids(con: Any, path: Path, source: str) -> list[Problem]:
    """Ids that occur more than once in a staged table (checked in the engine, across the
    chunks that :func:`stage_table` validated one at a time), with the rows they are on
    (0-based, in the order the table was read; a folder table's parts in name order) when
    the engine is DuckDB, which numbers the rows of a Parquet file."""
    t = con.read_parquet(str(path))
    dup = t.group_by("id").aggregate(n=t.count()).filter(lambda d: d.n > 1)
    n = int(dup.count().to_pyarrow().as_py())
    if not n:
        return []
    examples = dup.order_by("id").limit(3).to_pandas()["id"].tolist()
    rows: tuple[int, ...] = ()
    n_rows = 0
    if con.name == "duckdb":
        numbered = con.read_parquet(str(path), file_row_number=True)
        hit = numbered.semi_join(dup.select("id"), "id")
        n_rows = int(hit.count().to_pyarrow().as_py())
        rows = tuple(int(r) for r in hit.order_by("file_row_number").limit(SHOWN_ROWS)
                     .to_pandas()["file_row_number"])
    return [Problem(source, f"duplicated value(s) such as {', '.join(map(str, examples))} "
                    f"({n:,} ids occur more than once)", "id", "field_uniqueness",
                    rows=rows, n_rows=n_rows)]


def table_origins(folder: Path, present: list[str], database: Any = None
                  ) -> dict[str, tuple[str, Any]]:
    """Where each of the store's tables is read from: ``{table: (kind, where)}`` with kind
    ``database`` (a table of the configured connection, ``database``: an
    :class:`analysis.store.database.Database`; used before anything in the folder),
    ``parquet`` (``<table>.parquet``, used instead of the SQLite file's table), ``sqlite``
    (``present`` lists the tables of ``shop_database.db``) or ``csv``
    (``personal_data.csv`` when nothing else holds the client table;
    ``personal_data.csv.gz``, the lost clients). Tables found nowhere are absent. The one
    rule for the clean step and ``check-data``."""
    origins: dict[str, tuple[str, Any]] = {}
    for t in loaders.DB_TABLES:
        if database is not None and t in database.tables:
            origins[t] = ("database", database)
        elif parquet_path(folder, t).exists():
            origins[t] = ("parquet", parquet_path(folder, t))
        elif t in present:
            origins[t] = ("sqlite", folder / loaders.DB_FILE)
    if "personal_data" not in origins and (folder / loaders.CLIENTS_CSV).exists():
        origins["personal_data"] = ("csv", folder / loaders.CLIENTS_CSV)
    if (folder / loaders.LOST_FILE).exists():
        origins["personal_data_lost"] = ("csv", folder / loaders.LOST_FILE)
    return origins


def stage_folder(folder: str | Path, staging: Path, con: Any, database: Any = None
                 ) -> StagedStore:
    """Find, validate and stage every table of a data folder (see the module docstring).

    Parameters
    ----------
    folder
        The data folder (read only).
    staging
        Folder for the staged Parquet files (created).
    con
        The Ibis backend that checks ids across chunks.
    database
        An open :class:`analysis.store.database.Database` whose tables are used instead
        of the folder's, or ``None``.

    Returns
    -------
    StagedStore

    Raises
    ------
    DataError
        No client table, a missing table, a Parquet table with a missing column or a
        column of the wrong type, or rows breaking the schema: every problem of every
        file at once, each naming file, column, rule and rows.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "data folder not found")
    staging.mkdir(parents=True, exist_ok=True)
    store = StagedStore(folder)
    problems: list[Problem] = []
    db = folder / loaders.DB_FILE
    present: list[str] = []
    if db.exists():
        con_db = loaders.connect_readonly(db)
        present = loaders.db_tables(con_db)
        con_db.close()
    origins = table_origins(folder, present, database)
    for t, (kind, path) in origins.items():
        if kind == "parquet" and t in present:  # said in the clean line and quality.json
            store.sources[f"{t}_note"] = (f"{path.name} used; the table {t} of "
                                          f"{loaders.DB_FILE} is not")
        if kind == "database" and (t in present or parquet_path(folder, t).exists()):
            store.sources[f"{t}_note"] = (f"{database.table_source(t)} used; the data "
                                          f"folder's {t} is not")
    missing = [t for t in loaders.DB_TABLES if t not in origins]
    if database is not None and missing:
        problems.append(Problem(database.source, f"missing table(s) {missing} (found "
                                f"{database.tables}) and not in the data folder either"))
    elif "personal_data" in missing:
        problems.append(Problem(str(folder), "no client table: none of "
                                f"{loaders.DB_FILE}:personal_data, personal_data.parquet, "
                                f"{loaders.CLIENTS_CSV}"))
    elif missing and (db.exists() or any(kind == "parquet" for kind, _ in origins.values())):
        where = f"{db} (found {present})" if db.exists() else str(folder)
        problems.append(Problem(where, f"missing table(s) {missing}: neither in the database "
                                "nor as " + ", ".join(f"{t}.parquet" for t in missing)))
    for t, (kind, path) in origins.items():
        source = (f"{path}:{t}" if kind == "sqlite" else database.table_source(t)
                  if kind == "database" else str(path))
        out = staging / f"{t}.parquet"
        if kind == "database":
            from analysis.store.database import schema_problems, table_chunks

            found = schema_problems(database, t)
            if found:
                problems += found
                continue
            chunks: Iterator[tuple[str, pd.DataFrame]] = table_chunks(database, t,
                                                                      CHUNK_ROWS)
        elif kind == "parquet":
            found = _parquet_problems(path, t)
            if found:
                problems += found
                continue
            chunks = _parquet_chunks(path, t)
        elif kind == "sqlite":
            chunks = _sqlite_chunks(path, t)
        else:
            try:
                frame = loaders.read_client_csv(path, lost=t == "personal_data_lost")
            except DataError as exc:
                problems += exc.problems
                continue
            if frame.attrs.get("text"):
                store.sources[f"{t}_text"] = frame.attrs["text"]
            chunks = iter([(source, frame)])
        try:
            n, found = stage_table(chunks, t, out)
        except DataError as exc:
            problems += exc.problems
            continue
        if not found and n == 0 and t != "personal_data_lost":
            found = [Problem(source, "the table has no rows")]
        problems += found
        if not found and t in UNIQUE_ID:
            found = duplicate_ids(con, out, source)
            problems += found
        if not found:
            store.paths[t], store.sources[t], store.rows[t] = out, source, n
    for attr, name in loaders.ID_FILES.items():
        if (folder / name).exists():
            try:
                setattr(store, attr, read_id_file(folder / name))
                store.sources[attr] = str(folder / name)
            except DataError as exc:
                problems += exc.problems
    if problems:
        raise DataError.from_problems(folder, problems)
    return store
