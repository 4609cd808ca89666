"""The one-click case end to end: load, nested 5-fold search, Bayesian CV and fit with
diagnostics, segments, and the rendered report, on the real files when they sit beside the
project (``../shared/data/one_click``), else on the synthetic stand-in (same size)."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "one_click"


def whole_case(work: str) -> dict[str, float | bool | str]:
    from analysis import pipeline
    from analysis.config import load_config
    from analysis.demo.one_click import write_one_click_demo
    from analysis.render.report import render_file

    work_dir = Path(work)
    folder = REAL if (REAL / "market_file.csv").exists() else work_dir / "one_click_data"
    if folder != REAL:
        write_one_click_demo(folder)
    cfg = load_config(None, results_dir=work_dir / "res")
    cfg = replace(cfg, one_click=replace(cfg.one_click, data_dir=str(folder)))
    t = time.perf_counter()
    res = pipeline.run(cfg, only="one_click", echo=lambda s: None)[0]
    step_s = time.perf_counter() - t
    if res["status"] != "ok":
        raise RuntimeError(res["message"])
    report = work_dir / "report"
    shutil.rmtree(report, ignore_errors=True)
    shutil.copytree(ROOT / "report", report, ignore=shutil.ignore_patterns("_site"))
    t = time.perf_counter()
    render_file(report / "one_click.qmd", {}, {"results_dir": str(work_dir / "res")})
    render_s = time.perf_counter() - t
    import json

    s = json.loads((work_dir / "res" / "one_click" / "summary.json").read_text())
    return {"inner_seconds": step_s + render_s, "step_seconds": step_s,
            "render_seconds": render_s, "data": "real" if folder == REAL else "stand-in",
            "converged": s["convergence"]["ok"],
            **{f"auc_{k}": round(r["roc_auc"], 4) for k, r in
               zip(("search", "bayes"), s["metrics"], strict=True)},
            **s["timings_seconds"]}
