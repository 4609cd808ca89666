"""Step ``clean``: load and validate the data folder, write the tidy tables.

Outputs in ``results_dir/clean/``: ``clients.parquet``, ``purchases.parquet`` (when the
data has purchases), ``colours.parquet``, ``products.parquet``, ``campaign_ids.json`` and
``quality.json`` (the data-quality summary shown in the report).

Run alone with ``python -m analysis.clean`` or ``shopbayes run clean``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.cleaning import clean
from analysis.config import Config
from analysis.id_files import campaign_groups
from analysis.io import read_json, write_json, write_parquet
from analysis.loaders import load_folder
from analysis.pipeline import StepSkipped, step_dir
from analysis.text_files import read_as_usual


def run(cfg: Config) -> dict[str, Any]:
    raw = load_folder(cfg.data_dir)
    data = clean(raw)
    out = step_dir(cfg, "clean")
    quality = dict(data.quality)
    if raw.positive is not None and raw.negative is not None:
        groups = campaign_groups(raw.positive, raw.negative, set(data.clients["id"].tolist()))
        quality["campaign1_ids"] = groups.report()
        write_json({"treated": list(groups.treated), "control": list(groups.control),
                    "report": groups.report()}, out / "campaign_ids.json")
    write_parquet(data.clients, out / "clients.parquet")
    if data.purchases is not None:
        write_parquet(data.purchases.drop(columns=["colour"]), out / "purchases.parquet")
        write_parquet(data.colours, out / "colours.parquet")
        write_parquet(data.products, out / "products.parquet")
    write_json(quality, out / "quality.json")
    notes = [f"{k.removesuffix('_text')} read as {v}" for k, v in data.quality["sources"].items()
             if k.endswith("_text") and not read_as_usual(v)]
    dup = quality.get("duplicates_across_client_tables") or {}
    if dup.get("conflicting"):
        notes.append(f"{dup['conflicting']} ids in both client tables with different values "
                     f"({dup['rule']})")
    unknown = quality.get("purchase_rows_unknown_client", 0)
    if unknown:
        notes.append(f"{unknown:,} purchase rows of unknown clients dropped")
    return {"clients": len(data.clients),
            "purchases": 0 if data.purchases is None else len(data.purchases),
            "message": "; ".join(notes)}


def read_clients(cfg: Config) -> pd.DataFrame:
    """Cleaned client table written by this step."""
    return pd.read_parquet(step_dir(cfg, "clean") / "clients.parquet")


def purchases_path(cfg: Config) -> Path:
    """The cleaned purchases' Parquet file; raises :class:`StepSkipped` when the data has
    no purchases."""
    path = step_dir(cfg, "clean") / "purchases.parquet"
    if not path.exists():
        raise StepSkipped("the data folder has no purchases table (the real purchases were "
                          "never published); this step needs it")
    return path


def read_purchases(cfg: Config) -> pd.DataFrame:
    """Cleaned purchases; raises :class:`StepSkipped` when the data has none."""
    return pd.read_parquet(purchases_path(cfg))


def read_campaign_ids(cfg: Config) -> dict[str, Any]:
    path = step_dir(cfg, "clean") / "campaign_ids.json"
    if not path.exists():
        raise StepSkipped("the data folder has no campaign id files")
    return read_json(path)


if __name__ == "__main__":
    # the same as `shopbayes run clean [--data DIR] [--results DIR] [--force]`
    from analysis.cli import main

    sys.exit(main(["run", "clean", *sys.argv[1:]]))
