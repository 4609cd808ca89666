"""The Parquet tables a step reads, opened in an engine and checked before any query.

A table that is missing, or a column that is absent or of another type than the
aggregates need, is a :class:`~analysis.errors.DataError` naming the file and column,
raised before the engine plans a query (whose own error would name neither).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import DataError, Problem

#: the kinds of column the aggregates rely on, checked against the Parquet schema
KINDS = {"integer": "is_integer", "number": "is_numeric", "string": "is_string",
         "boolean": "is_boolean"}


def open_table(con: Any, path: Path, columns: dict[str, str], name: str | None = None
               ) -> Any:
    """Open the Parquet file ``path`` in the Ibis backend ``con`` and check its columns.

    Parameters
    ----------
    con
        An Ibis backend (:func:`analysis.store.engine.connect`).
    path
        A Parquet file (or a folder of Parquet files, as Spark writes them).
    columns
        ``{column: kind}`` with kind ``integer``, ``number`` (integer or floating),
        ``string`` or ``boolean``; other columns of the file are allowed.
    name
        The table's name in the engine (default: the file's stem).

    Returns
    -------
    ibis.Table

    Raises
    ------
    DataError
        The file does not exist, or a column is missing or of another kind (every such
        column listed at once).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "table not found (expected a Parquet file)")
    table = con.read_parquet(str(path), table_name=name or path.stem.replace("-", "_"))
    schema = table.schema()
    problems = []
    for column, kind in columns.items():
        if column not in schema:
            problems.append(Problem(str(path), f"column missing (needs {kind}); found "
                                    f"{', '.join(schema.names)}", column))
        elif not getattr(schema[column], KINDS[kind])():
            problems.append(Problem(str(path), f"type {schema[column]} where {kind} is "
                                    "needed", column, rule=f"type {kind}"))
    if problems:
        raise DataError.from_problems(path, problems)
    return table


def parquet_files(path: Path) -> list[Path]:
    """The data files of a Parquet table: the file itself, or the part files of a folder
    (in name order; hidden and ``_``-prefixed files such as ``_SUCCESS`` left out)."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and not p.name.startswith((".", "_")))


def parquet_batches(path: Path, rows: int, columns: list[str] | None = None
                    ) -> Iterator[pd.DataFrame]:
    """Read a Parquet table (a file or a folder of part files) ``rows`` rows at a time,
    in order, as pandas frames.

    Files are read one row group after another without read-ahead, so memory holds about
    one batch (plus one row group) whatever the table's size.
    """
    import pyarrow.parquet as pq

    for f in parquet_files(path):
        reader = pq.ParquetFile(f)
        try:
            for batch in reader.iter_batches(batch_size=rows, columns=columns,
                                             use_threads=False):
                if batch.num_rows:
                    yield batch.to_pandas()
        finally:
            reader.close()
