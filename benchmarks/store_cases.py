"""The data layer's aggregates at real scale: the same campaign-2 panel from pandas (the
old path: every purchase row in memory), DuckDB and a local Spark session.

Each case runs in a fresh process (``benchmarks/run.py`` measures wall time and peak
RSS); the inner time excludes imports and, for Spark, the session's start.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def _clean_results(work: str) -> Path:
    """The clean step's folder under ``work/res`` (run once when missing)."""
    from analysis import pipeline
    from analysis.config import load_config

    folder = Path(work) / "res" / "clean"
    if not (folder / "purchases.parquet").exists():
        cfg = load_config(None, data_dir=Path(work) / "data", results_dir=Path(work) / "res")
        pipeline.run(cfg, only="clean", echo=lambda s: None)
    return folder


def city_day_panel(work: str, engine: str) -> dict[str, float | int | bool]:
    """Build the campaign-2 panel with ``engine`` (``pandas``, ``duckdb`` or ``spark``).

    Returns the inner seconds, the panel's rows, the peak RSS of the path itself
    (``peak_rss_engine_mib``; the case's peak includes the pandas reference built after it)
    and, for the engines, whether the panel equals the pandas panel exactly. The data is
    ``work/res/clean`` (the clean step is run once when it is missing).
    """
    import resource

    import pandas as pd

    folder = _clean_results(work)
    ids = json.loads((folder / "campaign_ids.json").read_text())
    exclude = set(ids["treated"]) | set(ids["control"])
    extra: dict[str, float | int | bool] = {}
    if engine == "pandas":
        from models.campaign2 import build_panel

        t = time.perf_counter()
        panel = build_panel(pd.read_parquet(folder / "purchases.parquet"),
                            pd.read_parquet(folder / "clients.parquet"), exclude)
        extra["inner_seconds"] = time.perf_counter() - t
    else:
        from analysis.store.aggregates import (
            PANEL_CLIENT_COLUMNS,
            PANEL_PURCHASE_COLUMNS,
        )
        from analysis.store.aggregates import city_day_panel as panel_in_engine
        from analysis.store.engine import connect
        from analysis.store.tables import open_table

        t = time.perf_counter()
        con = connect(engine)
        extra["connect_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        panel = panel_in_engine(
            open_table(con, folder / "purchases.parquet", PANEL_PURCHASE_COLUMNS),
            open_table(con, folder / "clients.parquet", PANEL_CLIENT_COLUMNS),
            exclude)
        extra["inner_seconds"] = time.perf_counter() - t
        # peak RSS of the engine path alone (before the pandas reference is built)
        extra["peak_rss_engine_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        from models.campaign2 import build_panel

        reference = build_panel(pd.read_parquet(folder / "purchases.parquet"),
                                pd.read_parquet(folder / "clients.parquet"), exclude)
        extra["equals_pandas"] = bool(panel.equals(reference.reset_index(drop=True)))
    extra["rows"] = len(panel)
    if engine == "pandas":
        extra["peak_rss_engine_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return extra
