"""Query engines by name: DuckDB embedded (the default) or Spark on a local session.

Both are reached through Ibis, so an aggregation written once runs on either
(https://ibis-project.org/backends/duckdb, .../backends/pyspark).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: engines :func:`connect` knows
ENGINES = ("duckdb", "spark")


class EngineUnavailable(RuntimeError):
    """The configured engine is unknown, not installed, or cannot start (the message says
    which and how to fix it)."""


def connect(engine: str = "duckdb", threads: int | None = None,
            memory_limit: str | None = None) -> Any:
    """An Ibis backend for ``engine``.

    Parameters
    ----------
    engine
        ``"duckdb"`` (an in-memory DuckDB database; tables are read from Parquet files) or
        ``"spark"`` (a local Spark session, ``local[threads]``, shared by every call in
        the process).
    threads
        Worker threads (default: every core for DuckDB, 2 for Spark).
    memory_limit
        DuckDB's memory limit (``"2GB"``); beyond it DuckDB spills to a folder under the
        system's temporary directory. Default: DuckDB's (80% of the machine's memory).

    Returns
    -------
    ibis.BaseBackend

    Raises
    ------
    EngineUnavailable
        An unknown name, a missing package (``pip install 'shopbayes[spark]'``; ``make
        install`` installs it) or no Java for Spark.
    """
    if engine == "duckdb":
        try:
            import ibis
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise EngineUnavailable(f"engine 'duckdb' needs ibis-framework[duckdb] "
                                    f"({exc.name} is not installed)") from exc
        con = ibis.duckdb.connect()
        if threads:
            con.raw_sql(f"SET threads = {int(threads)}")
        if memory_limit:
            spill = Path(tempfile.gettempdir()) / "shopbayes-duckdb"
            con.raw_sql(f"SET memory_limit = '{memory_limit}'")
            con.raw_sql(f"SET temp_directory = '{spill}'")
        return con
    if engine == "spark":
        return _spark_backend(int(threads or 2))
    raise EngineUnavailable(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")


def spark_problem() -> str | None:
    """Why Spark cannot run here, or ``None``."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return ("engine 'spark' needs PySpark, which is not installed: "
                "pip install 'shopbayes[spark]' (make install installs it)")
    java_home = os.environ.get("JAVA_HOME")
    if not shutil.which("java") and not (java_home and os.path.exists(
            os.path.join(java_home, "bin", "java"))):
        return "engine 'spark' needs Java 17 or later: no java on PATH and no JAVA_HOME"
    return None


@functools.lru_cache(maxsize=1)
def _spark_backend(threads: int) -> Any:
    problem = spark_problem()
    if problem:
        raise EngineUnavailable(problem)
    import ibis
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master(f"local[{threads}]").appName("shopbayes")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               # small aggregates: a few shuffle partitions, not Spark's default 200
               .config("spark.sql.shuffle.partitions", str(max(2, 2 * threads)))
               .config("spark.sql.session.timeZone", "UTC")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    return ibis.pyspark.connect(session)



def stop_spark() -> None:
    """Stop the local Spark session :func:`connect` started, if any (its JVM holds about a
    gigabyte); the next ``connect("spark")`` starts a new one."""
    if not _spark_backend.cache_info().currsize:
        return
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
    _spark_backend.cache_clear()
