"""Cleaning in the engine gives the in-memory reference's tables and quality summary."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.store.cleaning import clean_store
from analysis.store.engine import connect
from analysis.store.loaders import load_folder
from analysis.store.rules import clean
from analysis.store.sources import stage_folder


@pytest.fixture(scope="module")
def reference(small_demo: Path):
    return clean(load_folder(small_demo))


def _clean(con, folder: Path, out: Path) -> dict:
    return clean_store(con, stage_folder(folder, out / "staged", con), out)


def _same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal as tables (row order aside; the engine does not promise the input's)."""
    cols = list(expected.columns)
    assert list(got.columns) == cols
    a = got.astype(expected.dtypes.to_dict()).sort_values(cols, ignore_index=True)
    pd.testing.assert_frame_equal(a, expected.sort_values(cols, ignore_index=True))


def test_engine_cleaning_equals_the_in_memory_reference(small_demo, reference, tmp_path,
                                                        spark_or_none):
    engines = {"duckdb": connect("duckdb")}
    if spark_or_none is not None:
        engines["spark"] = spark_or_none
    for name, con in engines.items():
        out = tmp_path / name
        quality = _clean(con, small_demo, out)
        expected = {k: v for k, v in reference.quality.items() if k != "sources"}
        assert {k: quality[k] for k in expected} == expected, name
        # clients come back sorted by id, as the reference writes them
        clients = pd.read_parquet(out / "clients.parquet")
        pd.testing.assert_frame_equal(clients.astype(reference.clients.dtypes.to_dict()),
                                      reference.clients)
        _same(pd.read_parquet(out / "purchases.parquet"),
              reference.purchases.drop(columns="colour"))
        _same(pd.read_parquet(out / "colours.parquet"), reference.colours)
        _same(pd.read_parquet(out / "products.parquet"), reference.products)
    # the rules did something on this data: flags, colour sets, unknown clients
    assert reference.quality["cost_extreme_rows"] > 0
    assert reference.quality["colour_set_rows"] > 0
    assert reference.quality["product_keys"] < reference.quality["product_names"]
