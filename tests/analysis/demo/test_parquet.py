"""The chunked Parquet demo store: same rules as the in-memory one, disjoint ids, same
bytes for the same spec, and the pipeline's first step reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.demo.parquet import chunk_sizes, parquet_rows, write_demo_parquet
from analysis.demo.store import DemoSpec
from analysis.store.cleaning import clean_store
from analysis.store.engine import connect
from analysis.store.id_files import read_id_file
from analysis.store.sources import stage_folder


@pytest.fixture(scope="module")
def chunked(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pq")
    write_demo_parquet(out, DemoSpec(clients=5000, seed=3), chunk_clients=2000)
    return out


def test_chunks_cover_the_clients():
    assert chunk_sizes(5000, 2000) == [2000, 2000, 1000]
    assert chunk_sizes(4000, 2000) == [2000, 2000]
    with pytest.raises(ValueError, match="must be >= 1"):
        chunk_sizes(0, 10)


def test_the_chunked_store_follows_the_store_rules(chunked):
    rows = parquet_rows(chunked)
    assert rows["personal_data_coeffs"] == 5000
    coeffs = pd.read_parquet(chunked / "personal_data_coeffs.parquet")
    assert coeffs["id"].is_unique  # ids of different chunks never collide
    known = pd.read_parquet(chunked / "personal_data.parquet")
    lost = pd.read_csv(chunked / "personal_data.csv.gz")
    assert len(known) + len(lost) == 5000 and "gender" not in lost
    assert set(known["id"]).isdisjoint(lost["id"])
    truth = json.loads((chunked / "truth.json").read_text())
    assert truth["chunks"] == 3 and truth["campaign1"]["att"]["clients"] > 0
    # the keys the steps' demo checks read, as in the in-memory store's truth
    assert truth["n_segments"] == 4 and len(truth["segments"]) == 4
    # the store design: every control bought in the window (days 5..16)
    control = set(read_id_file(chunked / "ids_first_company_negative.txt").ids)
    treated = set(read_id_file(chunked / "ids_first_company_positive.txt").ids)
    assert control and treated and control.isdisjoint(treated)
    p = pd.read_parquet(chunked / "purchases.parquet", columns=["id", "dt"])
    window_buyers = set(p.loc[p["dt"].between(5, 16), "id"])
    assert control <= window_buyers
    assert len(treated & window_buyers) < len(treated)  # treated were not picked on it


def test_same_spec_same_bytes(chunked, tmp_path):
    write_demo_parquet(tmp_path, DemoSpec(clients=5000, seed=3), chunk_clients=2000)
    for f in ("purchases.parquet", "personal_data.csv.gz", "ids_first_company_negative.txt"):
        assert (tmp_path / f).read_bytes() == (chunked / f).read_bytes(), f


def test_the_clean_step_reads_the_chunked_store(chunked, tmp_path):
    con = connect("duckdb")
    quality = clean_store(con, stage_folder(chunked, tmp_path / "staged", con), tmp_path)
    assert quality["clients"] == 5000
    assert quality["purchase_rows"] == parquet_rows(chunked)["purchases"]
    assert quality["purchase_rows_unknown_client"] == 0


def test_every_chunk_sells_from_one_catalogue(chunked):
    """A store has one catalogue: chunks that drew their own sold differently named
    products at prices that differed by up to 20% on average."""
    from analysis.demo.store import catalogue, id_space

    names = set(catalogue(DemoSpec(clients=5000, seed=3))["name"])
    p = pd.read_parquet(chunked / "purchases.parquet", columns=["id", "product", "cost",
                                                                "base_sale"])
    p["chunk"] = p["id"] // id_space(2000)
    assert p["chunk"].nunique() == 3
    # names as the catalogue spells them (the rest are the store's spelling variants)
    exact = p["product"].isin(names).groupby(p["chunk"]).mean()
    assert (exact > 0.6).all(), exact
    # and one list price per product across the chunks: the most common price of each
    # product's items not on sale is the same in every chunk
    full = p[(p["base_sale"] == 0) & p["product"].isin(names)]
    price = full.groupby(["product", "chunk"])["cost"].agg(lambda c: c.mode().iloc[0])
    assert (price.groupby(level="product").nunique() == 1).mean() > 0.95
