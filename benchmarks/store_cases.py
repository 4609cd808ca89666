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


def clean_step(data: str, results: str, engine: str = "duckdb") -> dict[str, float | int]:
    """The clean step (stage the folder as validated Parquet, clean in the engine) on
    ``data``; inner seconds and the cleaned rows."""
    from dataclasses import replace

    from analysis import pipeline
    from analysis.config import load_config

    cfg = replace(load_config(None, data_dir=Path(data), results_dir=Path(results)),
                  engine=engine)
    t = time.perf_counter()
    pipeline.run(cfg, only="clean", force=True, echo=lambda s: None)
    inner = time.perf_counter() - t
    q = json.loads((Path(results) / "clean" / "quality.json").read_text())
    if "clients" not in q:
        raise RuntimeError(f"the clean step failed: {Path(results) / 'clean'}")
    return {"inner_seconds": inner, "clients": q["clients"],
            "purchase_rows": q["purchase_rows"]}


def clean_in_memory(data: str) -> dict[str, float | int]:
    """The old path: every table in pandas (:func:`analysis.store.loaders.load_folder`, then
    :func:`analysis.store.rules.clean`)."""
    from analysis.store.loaders import load_folder
    from analysis.store.rules import clean

    t = time.perf_counter()
    d = clean(load_folder(data))
    return {"inner_seconds": time.perf_counter() - t, "clients": len(d.clients),
            "purchase_rows": len(d.purchases)}


def aggregates(results: str, engine: str = "duckdb", compare_with_duckdb: bool = False
               ) -> dict[str, float | int | bool]:
    """Every engine aggregate the steps use, on the clean step's tables in ``results``,
    the way the steps use them: the small ones come back to Python (the campaign-2 panel,
    the propensity category table and rows), the per-client ones are written by the
    engine to Parquet for the steps to stream (segment behaviour, campaign-1 period
    metrics, gender features, next-purchase summaries), range by range of client ids on
    DuckDB when the store has more than ``engine_part_rows`` purchases (``parts``).
    Seconds of each, rows, and (``compare_with_duckdb``) whether each equals DuckDB's
    result exactly."""
    import tempfile

    import ibis
    import pandas as pd

    from analysis.config import Config
    from analysis.steps.campaign1_data import PERIODS
    from analysis.store import aggregates as A
    from analysis.store.engine import connect
    from analysis.store.tables import id_ranges, materialised, open_table

    folder = Path(results) / "clean"
    ids = json.loads((folder / "campaign_ids.json").read_text())
    exclude = set(ids["treated"]) | set(ids["control"])
    out: dict[str, float | int | bool] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-aggregates-"))

    def run_all(con, tag: str) -> dict[str, pd.DataFrame | Path]:
        p = open_table(con, folder / "purchases.parquet", {"id": "integer"}, "purchases")
        c = open_table(con, folder / "clients.parquet", A.PANEL_CLIENT_COLUMNS, "clients")
        col = open_table(con, folder / "colours.parquet", {"id": "integer"}, "colours")
        treated = A.id_table(ids["treated"]).mutate(contacted=ibis.literal(True))
        cities = c.select("id", country=c.country.cast("int64"), city=c.city.cast("string"),
                          cluster=ibis.literal("all"), gender=ibis.literal("unknown"),
                          split=A.held_out(c.id, 0.2, 2024).ifelse("holdout", "train"))
        cities = cities.left_join(treated, "id").drop("id_right")
        cities = cities.mutate(contacted=cities.contacted.fill_null(False))

        ranges = id_ranges(p, Config().engine_part_rows) if con.name == "duckdb" else None
        out["parts"] = len(ranges or [None])

        def to_file(name, expr):
            # the steps' way: materialised (range by range), then read from the file(s)
            with materialised(con, expr.order_by("id"), tmp, ranges) as (_, path):
                keep = tmp / f"{tag}-{name}"
                path.rename(keep)
            return keep

        jobs = {
            "panel": lambda: A.city_day_panel(p, c, exclude),
            "behaviour": lambda: to_file("behaviour", A.behaviour_table(p)),
            "period_metrics": lambda: to_file("period", A.period_metrics_table(p, PERIODS)),
            "category_table": lambda: A.category_table(p),
            # the propensity model's data: exact cells and hash-sampled rows (fixed
            # shares, so the rows grow with the store like the cells they replace)
            "propensity_rows": lambda: A.propensity_rows(
                p, cities, (5, 16), sorted(A.category_table(p).index), {
                    ("train", False): 0.02, ("train", True): 0.2, ("holdout", False): 0.3},
                0.1, 2024, ranges),
            "gender_features": lambda: to_file("gender", A.gender_feature_table(p, col)),
            # the next-purchase step's client table of its calibration and holdout days
            "rfm": lambda: to_file("rfm", A.rfm_table(p, (0, 38), (39, 58))),
        }
        got = {}
        for name, job in jobs.items():
            t = time.perf_counter()
            got[name] = job()
            if tag == engine:  # the DuckDB reference of a comparison is not timed
                out[f"{name}_seconds"] = time.perf_counter() - t
        return got

    t = time.perf_counter()
    con = connect(engine, memory_limit=Config().engine_memory)
    out["connect_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    got = run_all(con, engine)
    out["inner_seconds"] = time.perf_counter() - t
    out["propensity_rows"] = len(got["propensity_rows"])
    out["panel_rows"] = len(got["panel"])
    if compare_with_duckdb:
        from analysis.store.engine import stop_spark

        stop_spark()
        reference = run_all(connect("duckdb", memory_limit=Config().engine_memory),
                            "reference")
        for name, frame in got.items():
            a, b = frame, reference[name]
            if isinstance(a, Path):
                a = pd.read_parquet(a).sort_values("id", ignore_index=True)
                b = pd.read_parquet(b).sort_values("id", ignore_index=True)
                a = a[b.columns].astype(b.dtypes.to_dict())
            out[f"{name}_equals_duckdb"] = bool(a.reset_index(drop=True).equals(
                b.reset_index(drop=True)))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return out


def pss_bytes(pids: list[int]) -> int:
    """Summed proportional set size of processes ``pids`` (e.g. a :func:`process_tree`;
    Linux ``/proc/<pid>/smaps_rollup``): a page shared by k processes counts 1/k in each,
    so the sum is the memory the tree holds. Summed RSS counts a shared page in every
    process that maps it: a step's worker forked from the server that imported the
    libraries shares those pages with it, and both RSS count them."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
    return total


def process_tree(pid: int) -> list[int]:
    """Process ``pid`` and all its descendants (Linux /proc)."""
    import os

    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def rss_bytes(pids: list[int]) -> int:
    """Summed resident memory of processes ``pids`` (Linux /proc)."""
    import os

    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    return total


def whole_pipeline(data: str, results: str, engine: str = "duckdb", jobs: int = 1,
                   one_click: str | None = None, keep: bool = False) -> dict[str, object]:
    """Every step of ``shopbayes run`` on the store in ``data`` (results in ``results``,
    rerun from scratch; ``keep``: every step forced to run again in the results folder
    of an earlier run, its compiled models there), ``jobs`` steps at a time: the wall
    seconds, the peak of the summed RSS of this process and its workers (MiB, sampled
    every 0.25 s), and per step
    the status, seconds, peak RSS (MiB; the step's own, also when steps share a process:
    :func:`analysis.pipeline.reset_peak_rss`) and, for the MCMC steps, where the MCMC
    time went and whether it converged. ``one_click``: the one-click case's folder
    (default: the config's)."""
    import json
    import os
    import shutil
    import threading
    import time
    from dataclasses import replace

    from analysis import pipeline
    from analysis.config import load_config

    if not keep:
        shutil.rmtree(results, ignore_errors=True)
    cfg = load_config(None, data_dir=data, results_dir=results, engine=engine, jobs=jobs)
    if one_click:
        cfg = replace(cfg, one_click=replace(cfg.one_click, data_dir=one_click))
    peak, stop = [0, 0], threading.Event()
    at = [0.0, 0.0]  # when each peak was read (seconds from the start)

    def watch() -> None:
        tick = 0
        while not stop.is_set():
            tree = process_tree(os.getpid())
            rss = rss_bytes(tree)
            if rss > peak[0]:
                peak[0], at[0] = rss, time.perf_counter() - t0
            if tick % 8 == 0:  # every 2 s: reading smaps_rollup costs about 10 ms per GiB
                pss = pss_bytes(tree)  # mapped, per process
                if pss > peak[1]:
                    peak[1], at[1] = pss, time.perf_counter() - t0
            tick += 1
            stop.wait(0.25)

    t0 = time.perf_counter()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        results_ = pipeline.run(cfg, force=True, echo=lambda s: None)
    finally:
        wall = time.perf_counter() - t0
        stop.set()
        watcher.join()
    steps: dict[str, object] = {}
    for res in results_:
        row = {k: res.get(k) for k in ("status", "seconds", "peak_rss_mib", "mcmc",
                                       "run_start", "run_end")}
        path = Path(results) / res["step"] / "summary.json"
        if res["status"] == "ok" and path.exists():
            s = json.loads(path.read_text())
            conv = s.get("convergence")
            if isinstance(conv, dict) and "ok" in conv:
                row["converged"] = conv["ok"]
            model = (s.get("hierarchical") or {}).get("timings_seconds") \
                or s.get("timings_seconds")
            if model:
                row["model_seconds"] = model
            worker = (s.get("observational") or {}).get("worker_peak_rss_mib")
            if worker:  # the background cross-check's process, beside the step's
                row["worker_peak_rss_mib"] = round(worker, 1)
        steps[res["step"]] = row

    def running(t: float) -> list[str]:  # the steps that ran at ``t`` s from the start
        return [name for name, r in steps.items()  # type: ignore[union-attr]
                if (r.get("run_start") or 0) <= t <= (r.get("run_end") or -1)]

    return {"steps": steps, "engine": engine, "jobs": jobs, "inner_seconds": round(wall, 1),
            "tree_peak_rss_mib": round(peak[0] / 2**20, 1),
            "tree_peak_pss_mib": round(peak[1] / 2**20, 1),
            "tree_peak_rss_during": running(at[0]), "tree_peak_pss_during": running(at[1]),
            "all_ok": all(r["status"] in ("ok", "skipped") for r in steps.values())}


def _import_seconds(module: str) -> float:
    """Seconds this process takes to import ``module`` (0 when it is already loaded)."""
    import importlib

    t = time.perf_counter()
    importlib.import_module(module)
    return time.perf_counter() - t


def worker_start(module: str = "analysis.steps.propensity") -> dict[str, float]:
    """Seconds from asking for a step's worker to its step module imported in it (issue
    22): a spawned interpreter (the runner's workers before) against a fork of the
    server that preloaded the step modules (:func:`analysis.pipeline.worker_context`;
    the first fork waits for the server's own imports, reported apart)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from analysis import pipeline

    def once(ctx: object) -> tuple[float, float]:
        t = time.perf_counter()
        with ProcessPoolExecutor(1, mp_context=ctx) as ex:  # type: ignore[arg-type]
            imported = ex.submit(_import_seconds, module).result()
        return time.perf_counter() - t, imported

    spawned, spawned_import = once(multiprocessing.get_context("spawn"))
    ctx = pipeline.worker_context(list(pipeline.STEPS), pipeline.worker_env())
    server, _ = once(ctx)
    forked, forked_import = once(ctx)
    return {"inner_seconds": round(forked, 2), "spawned_seconds": round(spawned, 2),
            "spawned_import_seconds": round(spawned_import, 2),
            "first_fork_seconds": round(server, 2),
            "forked_import_seconds": round(forked_import, 3)}
