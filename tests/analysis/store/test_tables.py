"""Client-id ranges and range-by-range materialisation (analysis.store.tables)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.store.engine import connect
from analysis.store.tables import (
    id_ranges,
    in_range,
    materialised,
    open_table,
    parquet_batches,
)


@pytest.fixture()
def purchases(tmp_path):
    rng = np.random.default_rng(5)
    ids = rng.integers(10, 5_000, 20_000)
    p = pd.DataFrame({"id": ids, "dt": rng.integers(0, 59, len(ids)),
                      "revenue": rng.gamma(2.0, 500.0, len(ids))})
    p.to_parquet(tmp_path / "purchases.parquet")
    clients = pd.DataFrame({"id": np.arange(1, 6_000)})  # some clients beyond every purchase
    clients.to_parquet(tmp_path / "clients.parquet")
    con = connect("duckdb")
    return (con, open_table(con, tmp_path / "purchases.parquet", {"id": "integer"}),
            open_table(con, tmp_path / "clients.parquet", {"id": "integer"}), p)


def test_one_part_needs_no_ranges_and_ranges_cover_every_id(purchases):
    con, p, _, raw = purchases
    assert id_ranges(p, 20_000) is None
    ranges = id_ranges(p, 3_000)
    assert len(ranges) == 7  # ceil(20,000 / 3,000)
    assert ranges[0][0] is None and ranges[-1][1] is None  # open ends
    counts = [int(in_range(p, r).count().to_pandas()) for r in ranges]
    assert sum(counts) == len(raw) and min(counts) > 0
    edges = [r[1] for r in ranges[:-1]]
    assert edges == sorted(edges) and [r[0] for r in ranges[1:]] == edges


def test_a_per_client_table_written_range_by_range_equals_the_one_query(purchases, tmp_path):
    con, p, clients, _ = purchases
    per_client = p.group_by("id").aggregate(orders=p.dt.nunique(), revenue=p.revenue.sum())
    expr = clients.left_join(per_client, "id").drop("id_right").order_by("id")
    with materialised(con, expr, tmp_path) as (whole, _):
        expected = whole.to_pandas()
    ranges = id_ranges(p, 3_000)
    with materialised(con, expr, tmp_path, ranges) as (parts, path):
        got = parts.to_pandas()  # read back in file order: the ids stay sorted
        assert len(list(path.glob("*.parquet"))) == len(ranges)
    assert got["id"].is_monotonic_increasing and len(got) == 5_999
    pd.testing.assert_frame_equal(got, expected)


def test_parquet_batches_do_not_keep_what_they_have_read(tmp_path):
    # pyarrow's pre-buffering kept every row group read, up to the whole compressed file
    # (549 MiB of the 10-million-client store's purchases by the last batch)
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 1_000_000
    frame = pd.DataFrame({"id": rng.integers(0, 10**6, n),
                          "product": rng.choice([f"товар {i}" for i in range(500)], n),
                          "cost": rng.random(n)})
    path = tmp_path / "purchases.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path,
                   row_group_size=50_000)
    base, held, rows = pa.total_allocated_bytes(), 0, 0
    for batch in parquet_batches(path, 25_000):
        rows += len(batch)
        del batch
        held = max(held, pa.total_allocated_bytes() - base)
    assert rows == n
    assert held < path.stat().st_size / 3  # about one row group, not the file
