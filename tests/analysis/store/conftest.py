"""Fixtures shared by the data-layer tests: one local Spark session for all of them."""

from __future__ import annotations

import pytest

from analysis.store.engine import connect, spark_problem, stop_spark


@pytest.fixture(scope="session")
def spark_or_none():
    """One local Spark session for every data-layer test (stopped after them) where Spark
    can run here, else ``None``."""
    if spark_problem():
        yield None
        return
    yield connect("spark")
    stop_spark()
