"""Step ``clean``: load and validate the data folder, write the tidy tables.

The store's tables are staged as validated Parquet (:mod:`analysis.store.sources`: the
SQLite database or Parquet files, read in chunks) and cleaned in the configured engine
(:mod:`analysis.store.cleaning`; the rules of :mod:`analysis.store.rules`), so memory does
not grow with the store.

Outputs in ``results_dir/clean/``: ``clients.parquet``, ``purchases.parquet`` (when the
data has purchases), ``colours.parquet``, ``products.parquet``, ``campaign_ids.json`` and
``quality.json`` (the data-quality summary shown in the report).

Run alone with ``python -m analysis.steps.clean`` or ``shopbayes run clean``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.config import Config
from analysis.io import read_json, write_json
from analysis.leftovers import tagged
from analysis.pipeline import StepSkipped, step_dir
from analysis.store.aggregates import id_table
from analysis.store.cleaning import clean_store
from analysis.store.database import open_database
from analysis.store.engine import connect
from analysis.store.id_files import campaign_groups
from analysis.store.sources import stage_folder
from analysis.store.tables import IdRanges, id_ranges, open_table
from analysis.store.text_files import read_as_usual


def run(cfg: Config) -> dict[str, Any]:
    out = step_dir(cfg, "clean")
    out.mkdir(parents=True, exist_ok=True)
    con = connect(cfg.engine, memory_limit=cfg.engine_memory)
    with tempfile.TemporaryDirectory(prefix=tagged("staged"), dir=out) as staging:
        database = open_database(cfg.database) if cfg.database else None
        staged = stage_folder(cfg.data_dir, Path(staging), con, database)
        quality = clean_store(con, staged, out)
        if "purchases" not in staged.paths:
            for name in ("purchases", "colours", "products"):
                (out / f"{name}.parquet").unlink(missing_ok=True)
        if staged.positive is not None and staged.negative is not None:
            clients = con.read_parquet(str(out / "clients.parquet"))
            known = clients.semi_join(id_table([*staged.positive.ids,
                                                *staged.negative.ids]), "id")
            groups = campaign_groups(staged.positive, staged.negative,
                                     set(known.select("id").to_pandas()["id"].tolist()))
            quality["campaign1_ids"] = groups.report()
            write_json({"treated": list(groups.treated), "control": list(groups.control),
                        "report": groups.report()}, out / "campaign_ids.json")
    write_json(quality, out / "quality.json")
    notes = [f"{k.removesuffix('_text')} read as {v}" for k, v in quality["sources"].items()
             if k.endswith("_text") and not read_as_usual(v)]
    notes += [v for k, v in quality["sources"].items() if k.endswith("_note")]
    dup = quality.get("duplicates_across_client_tables") or {}
    if dup.get("conflicting"):
        notes.append(f"{dup['conflicting']} ids in both client tables with different values "
                     f"({dup['rule']})")
    unknown = quality.get("purchase_rows_unknown_client", 0)
    if unknown:
        notes.append(f"{unknown:,} purchase rows of unknown clients dropped")
    return {"clients": quality["clients"],
            "purchases": quality.get("purchase_rows", 0) - unknown,
            "engine": cfg.engine, "message": "; ".join(notes)}


#: pandas dtypes of the cleaned clients as the steps read them (nullable integers, as the
#: schema validation types them), whichever engine wrote the file
CLIENT_DTYPES = {"id": "Int64", "gender": "Int64", "age": "Int64", "country": "Int64",
                 "city": "Int64", "gender_known": "bool", "personal_coef": "Float64"}


def read_clients(cfg: Config) -> pd.DataFrame:
    """Cleaned client table written by this step."""
    return pd.read_parquet(step_dir(cfg, "clean") / "clients.parquet").astype(CLIENT_DTYPES)


def purchases_path(cfg: Config) -> Path:
    """The cleaned purchases' Parquet file; raises :class:`StepSkipped` when the data has
    no purchases."""
    path = step_dir(cfg, "clean") / "purchases.parquet"
    if not path.exists():
        raise StepSkipped("the data folder has no purchases table (the real purchases were "
                          "never published); this step needs it")
    return path


def purchase_ranges(cfg: Config, con: Any) -> IdRanges | None:
    """Client-id ranges of the cleaned purchases for the per-client aggregations
    (:func:`analysis.store.tables.id_ranges`, ``engine_part_rows`` rows each); ``None``
    when one part holds them (every store up to about a million clients) or the store
    has no purchases."""
    path = step_dir(cfg, "clean") / "purchases.parquet"
    if not path.exists():
        return None
    return id_ranges(open_table(con, path, {"id": "integer"}, "purchases"),
                     cfg.engine_part_rows)


def read_campaign_ids(cfg: Config) -> dict[str, Any]:
    path = step_dir(cfg, "clean") / "campaign_ids.json"
    if not path.exists():
        raise StepSkipped("the data folder has no campaign id files")
    return read_json(path)


if __name__ == "__main__":
    # the same as `shopbayes run clean [--data DIR] [--results DIR] [--force]`
    from analysis.cli import main

    sys.exit(main(["run", "clean", *sys.argv[1:]]))
