"""The Parquet tables a step reads, opened in an engine and checked before any query.

A table that is missing, or a column that is absent or of another type than the
aggregates need, is a :class:`~analysis.errors.DataError` naming the file and column,
raised before the engine plans a query (whose own error would name neither).

The engine's results go to Parquet the same way: :func:`write_parquet` (atomically),
:func:`materialised` (an aggregate computed once for several queries),
:func:`engine_batches` / :func:`parquet_batches` (into Python a batch at a time).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import DataError, Problem
from analysis.io import atomic_path
from analysis.leftovers import tagged

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
    one batch (plus one row group) whatever the table's size. Without ``pre_buffer``:
    with it (pyarrow's default) the reader kept what it had read: over the 77.6 million
    purchase rows of a 10-million-client store in 100,000-row batches, 549 MiB still
    allocated by Arrow at the end and 768 MiB resident, against 2 MiB and 237 MiB
    without (the growth apache/arrow#39808 reports for dataset scans).
    """
    import pyarrow.parquet as pq

    for f in parquet_files(path):
        reader = pq.ParquetFile(f, pre_buffer=False)
        try:
            for batch in reader.iter_batches(batch_size=rows, columns=columns,
                                             use_threads=False):
                if batch.num_rows:
                    yield batch.to_pandas()
        finally:
            reader.close()


def write_parquet(con: Any, expr: Any, path: Path) -> None:
    """Run ``expr`` in the engine and write its result to ``path`` without passing it
    through Python: one file atomically (DuckDB), or a folder of part files (Spark)
    renamed into place when complete."""
    if con.name == "duckdb":
        with atomic_path(path) as tmp:
            con.to_parquet(expr, str(tmp))
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    con.to_parquet(expr, str(tmp))
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    os.replace(tmp, path)


def engine_batches(con: Any, expr: Any, rows: int, workdir: Path) -> Iterator[pd.DataFrame]:
    """Stream the result of ``expr`` into Python ``rows`` rows at a time, in its order.

    The engine writes the result to a temporary Parquet file under ``workdir``
    (:func:`materialised`; removed when the batches are consumed or the generator is
    closed), which is then read with :func:`parquet_batches`: memory holds one batch,
    whatever the result's size (Ibis 12's ``to_pyarrow_batches`` fails on DuckDB 2).
    """
    with materialised(con, expr, workdir) as (_, path):
        yield from parquet_batches(path, rows)


IdRanges = list[tuple[int | None, int | None]]


def id_ranges(table: Any, rows_per_part: int) -> IdRanges | None:
    """Client-id ranges that split ``table`` (a table with an integer ``id``, such as the
    purchases) into parts of about ``rows_per_part`` rows, or ``None`` when one part holds
    it.

    Equal-width ranges of the ids ``[min, max]``: ``(None, e1), (e1, e2), ..., (ek, None)``
    (lower bound inclusive, upper exclusive, the first and last open so that no id of
    another table falls outside). A per-client GROUP BY run range by range keeps the
    engine's hash tables the size of one part: on the 10-million-client demo (77.6 million
    purchase rows, DuckDB at a 1 GB memory limit) the per-client behaviour took 69 s in one
    query and 40 s in ten ranges, 10x the 1-million-client time instead of 18x.
    """
    r = table.aggregate(n=table.count(), lo=table.id.min(), hi=table.id.max()).to_pandas()
    n, lo, hi = (r.iloc[0][c] for c in ("n", "lo", "hi"))
    parts = -(-int(n) // int(rows_per_part)) if n else 0
    if parts <= 1:
        return None
    lo, hi = int(lo), int(hi)
    edges = [lo + (hi - lo + 1) * i // parts for i in range(1, parts)]
    return list(zip([None, *edges], [*edges, None], strict=True))


def in_range(table: Any, bounds: tuple[int | None, int | None]) -> Any:
    """The rows of ``table`` whose ``id`` is in ``bounds`` (see :func:`id_ranges`)."""
    lo, hi = bounds
    if lo is not None:
        table = table.filter(table.id >= lo)
    if hi is not None:
        table = table.filter(table.id < hi)
    return table


@contextlib.contextmanager
def materialised(con: Any, expr: Any, workdir: Path, ranges: IdRanges | None = None
                 ) -> Iterator[tuple[Any, Path]]:
    """Compute ``expr`` once: the engine writes it to a temporary Parquet file under
    ``workdir`` (removed on exit), and the block gets ``(table, path)``: the file opened
    in the engine, for the several queries a step runs on one aggregate (counts, samples,
    batches), and its path, for :func:`parquet_batches`. An Ibis expression used several
    times is otherwise recomputed by each query (a GROUP BY over every purchase).

    With ``ranges`` (:func:`id_ranges`; DuckDB only, a distributed engine partitions by
    itself) ``expr`` (one row per client, an ``id`` column) is written range by range to
    a folder of part files, in id order: DuckDB pushes the range filter through the
    per-client GROUP BYs and joins on ``id`` down to the Parquet scans, so each part
    aggregates one range of clients.
    """
    import tempfile

    # the name carries this process's id: a killed step's folder is removed by the next
    # run of the step (analysis.leftovers)
    with tempfile.TemporaryDirectory(prefix=tagged("materialised"), dir=workdir) as tmp:
        if ranges and con.name == "duckdb":
            path = Path(tmp) / "result"
            path.mkdir()
            for i, bounds in enumerate(ranges):
                write_parquet(con, in_range(expr, bounds), path / f"part-{i:05d}.parquet")
            yield con.read_parquet(str(path / "*.parquet")), path
            return
        path = Path(tmp) / "result.parquet"
        write_parquet(con, expr, path)
        yield con.read_parquet(str(path)), path
