"""Segmentation benchmark: the k search on every client with a purchase (about 81,000 of
the 105,000 real-scale demo clients), not only those with enough history."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from models.segment_features import client_behaviour
from models.segments import GaussianMixtureSegmenter


def search_every_buyer(results: str) -> dict[str, float]:
    clean = Path(results) / "clean"
    purchases = pd.read_parquet(clean / "purchases.parquet")
    ages = pd.read_parquet(clean / "clients.parquet").set_index("id")["age"].astype(float)
    behaviour = client_behaviour(purchases).join(ages)
    t = time.perf_counter()
    model = GaussianMixtureSegmenter(k_range=(2, 10)).fit(behaviour)
    return {"inner_seconds": time.perf_counter() - t, "clients": len(behaviour),
            "chosen_k": model.n_clusters_}
