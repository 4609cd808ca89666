"""The ``shopbayes`` command line.

::

    shopbayes demo-data [--out data/demo] [--clients N] [--seed S] [--design store|randomized]
                        [--format sqlite|parquet] [--chunk-clients N]
                        [--one-click | --apparel]
    shopbayes check-data [DIR]
    shopbayes run [STEP] [--data DIR] [--results DIR] [--force]
    shopbayes run one-click [--data DIR]
    shopbayes run next-purchase [--data DIR]   (the store's folder, or the apparel case's)
    shopbayes report [DIR] [-P name:value] [--results DIR] [--to html|typst|all]
    shopbayes steps
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from analysis.config import load_config
from analysis.store.engine import ENGINES


def _stand_in(case: str, out: Path, clients: int, seed: int, if_needed: bool) -> None:
    """Write a second case's synthetic stand-in (``one_click`` or ``apparel``: its module
    ``analysis.demo.<case>``), or with ``if_needed`` say that ``out`` holds it already."""
    import importlib

    module = importlib.import_module(f"analysis.demo.{case}")
    label = {"one_click": "one-click", "apparel": "apparel"}[case]
    if if_needed and module.is_current(out, clients, seed):
        print(f"{label.capitalize()} stand-in in {out} is current.")
        return
    written = getattr(module, f"write_{case}_demo")(out, clients, seed)
    print(f"Wrote the {label} stand-in ({clients:,} clients) to {out}: {len(written)} files")


def _demo_data(args: argparse.Namespace) -> int:
    from analysis.config import CASE_DEMO_DIRS
    from analysis.demo.store import DemoSpec, write_demo

    cfg = load_config(args.config)
    for case in CASE_DEMO_DIRS:
        if getattr(args, case):  # --one-click, --apparel: that case's stand-in only
            _stand_in(case, Path(args.out or CASE_DEMO_DIRS[case]),
                      args.clients or getattr(cfg, case).demo_clients, args.seed,
                      args.if_needed)
            return 0
    args.out = args.out or "data/demo"
    spec = DemoSpec(clients=args.clients or 104_989, seed=args.seed, design=args.design)
    for case, demo_dir in CASE_DEMO_DIRS.items():  # the cases' stand-ins, when they are used
        if args.if_needed and cfg.case_dir(case).resolve() == demo_dir.resolve():
            _stand_in(case, demo_dir, getattr(cfg, case).demo_clients, args.seed, True)
    if args.if_needed:
        if not cfg.uses_demo_data:
            print(f"Real data configured ({cfg.data_dir}); no demo data needed.")
            return 0
        truth = Path(args.out) / "truth.json"
        if truth.exists() and _same_spec(truth, spec):
            print(f"Demo data in {args.out} is current "
                  f"(seed {spec.seed}, {spec.clients:,} clients).")
            return 0
    t0 = time.perf_counter()
    print(f"Generating synthetic store data: {spec.clients:,} clients, seed {spec.seed}, "
          f"{args.format} ...")
    if args.format == "parquet":
        from analysis.demo.parquet import write_demo_parquet

        written = write_demo_parquet(args.out, spec, args.chunk_clients)
    else:
        written = write_demo(args.out, spec)
    print(f"Wrote {len(written)} files to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _same_spec(truth: Path, spec: object) -> bool:
    import json
    from dataclasses import asdict

    try:
        saved = json.loads(truth.read_text(encoding="utf-8"))["spec"]
    except (ValueError, KeyError):
        return False
    want = json.loads(json.dumps(asdict(spec)))  # tuples become lists, as when saved
    return saved == want and (truth.parent / "shop_database.db").exists()


def _check_data(args: argparse.Namespace) -> int:
    from analysis.store.check_data import check_folder, format_report

    cfg = load_config(args.config)
    folder = Path(args.dir) if args.dir else cfg.data_dir
    problems, sizes = check_folder(folder, args.database or cfg.database or None)
    print(format_report(folder, problems, sizes))
    return 1 if any(p.severity == "fatal" for p in problems) else 0


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from analysis import pipeline

    if args.jobs is not None and args.jobs < 1:
        print(f"error: --jobs {args.jobs}: at least 1 step must run at a time", file=sys.stderr)
        return 2
    step = args.step.replace("-", "_") if args.step else None
    if step == "next_purchase" and args.data:
        from analysis.steps.apparel_data import is_apparel_folder

        if is_apparel_folder(args.data):  # the apparel case's schema: its own step
            step = "apparel"
    case = pipeline.get_step(step).case if step in pipeline.step_names() else "store"
    if case != "store":  # a second case reads its own folder
        cfg = load_config(args.config, results_dir=args.results)
        if args.data:
            cfg = replace(cfg, **{case: replace(getattr(cfg, case), data_dir=args.data)})
        print(f"Data: {cfg.case_dir(case)}   results: {cfg.results_dir}")
        results = pipeline.run(cfg, only=step, force=args.force, jobs=args.jobs)
        return 1 if any(r["status"] == "failed" for r in results) else 0
    overrides = {"engine": args.engine} if args.engine else {}
    if args.database:
        overrides["database"] = args.database
    cfg = load_config(args.config, data_dir=args.data, results_dir=args.results, **overrides)
    from analysis.store.database import redact

    where = f"   database: {redact(cfg.database)}" if cfg.database else ""
    print(f"Data: {cfg.data_dir}{where}   results: {cfg.results_dir}   engine: {cfg.engine}")
    if not cfg.data_dir.exists():
        print(f"error: data folder {cfg.data_dir} not found "
              "(make demo data with `shopbayes demo-data`)", file=sys.stderr)
        return 2
    try:
        results = pipeline.run(cfg, only=step, force=args.force, jobs=args.jobs)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    failed = [r["step"] for r in results if r["status"] == "failed"]
    if failed:
        print(f"FAILED steps: {', '.join(failed)} (see their manifest.json)", file=sys.stderr)
        return 1
    return 0


def _results_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot feed the report (missing, or holding no step's results)."""
    if not folder.is_dir():
        return (f"results folder {folder} not found: run the analysis first (`shopbayes run`"
                " or `make report`), or pass the folder with --results / -P results_dir:")
    if not any((d / "manifest.json").exists() or (d / "summary.json").exists()
               for d in folder.iterdir() if d.is_dir()):
        return (f"results folder {folder} holds no step's results (no <step>/manifest.json):"
                " run the analysis first (`shopbayes run`), or point --results at the "
                "folder it wrote")
    return None


def _report(args: argparse.Namespace) -> int:
    from analysis.render.report import RenderError, last_render, render_project

    params = {}
    for item in args.param or []:
        key, _, value = item.partition(":")
        # folders are read by chunks that run in report/: a relative path means one
        # relative to where the user runs the command, so it is made absolute here
        params[key] = str(Path(value).resolve()) if key.endswith("_dir") else value
    results = Path(args.results) if args.results else load_config(args.config).results_dir
    params.setdefault("results_dir", str(results.resolve()))
    problem = _results_problem(Path(params["results_dir"]))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    kept = None if args.force else last_render(args.dir, params, to=args.to)
    if kept:
        print("Report unchanged (the same results, sources and options as at its last "
              "render; --force renders it again):")
        for out in kept:
            print(f"  {out}")
        return 0
    try:
        outputs = render_project(args.dir, params, to=args.to)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for out in outputs:
        print(f"Report written to {out}")
    return 0


def _steps(args: argparse.Namespace) -> int:
    from analysis.pipeline import STEPS

    for s in STEPS:
        print(f"{s.name:<12} {s.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shopbayes", description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="TOML config (default: shopbayes.toml)")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo-data", help="write synthetic store data with known truth")
    d.add_argument("--out", default=None,
                   help="output folder (default data/demo, or data/demo_one_click)")
    d.add_argument("--clients", type=int, default=None,
                   help="clients (default 104,989 for the store, 1,300 for --one-click, "
                        "5,000 for --apparel)")
    d.add_argument("--one-click", action="store_true",
                   help="write the stand-in for the one-click case instead")
    d.add_argument("--apparel", action="store_true",
                   help="write the stand-in for the apparel next-purchase case instead")
    d.add_argument("--seed", type=int, default=2024)
    d.add_argument("--design", choices=("store", "randomized"), default="store",
                   help="campaign 1 as the real store ran it (controls picked among window "
                        "buyers; default) or a clean randomized test")
    d.add_argument("--format", choices=("sqlite", "parquet"), default="sqlite",
                   help="the real store's SQLite database (default), or Parquet tables "
                        "written in chunks (for stores of millions of clients)")
    d.add_argument("--chunk-clients", type=int, default=200_000,
                   help="--format parquet: clients generated at a time (memory per chunk)")
    d.add_argument("--if-needed", action="store_true",
                   help="only when no real data is configured and data/demo is not current")
    d.set_defaults(func=_demo_data)
    c = sub.add_parser("check-data", help="validate a data folder and list its problems")
    c.add_argument("dir", nargs="?", default=None)
    c.add_argument("--database", default=None, metavar="URL",
                   help="check the tables of this Ibis connection URL (as `run --database`)")
    c.set_defaults(func=_check_data)
    r = sub.add_parser("run", help="run every analysis step, or one")
    r.add_argument("step", nargs="?", default=None)
    r.add_argument("--data", default=None,
                   help="data folder (default from config); for `run one-click` the "
                        "folder with the case's four files; for `run next-purchase` a "
                        "folder with apparel-purchases.csv runs the apparel case")
    r.add_argument("--results", default=None, help="results folder (default data/results)")
    r.add_argument("--force", action="store_true",
                   help="rerun every step even when its inputs are unchanged (a step named "
                        "on the command line always runs)")
    r.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="steps run at once, each in its own process (default: the config's "
                        "jobs, 2); 1 runs them one after the other; results are the same")
    r.add_argument("--engine", choices=ENGINES, default=None,
                   help="query engine for the aggregates (default from config: duckdb)")
    r.add_argument("--database", default=None, metavar="URL",
                   help="read the store's tables from this Ibis connection URL (e.g. "
                        "duckdb:///store.duckdb, postgres://user@host/db) instead of the "
                        "data folder's files (default from config)")
    r.set_defaults(func=_run)
    rp = sub.add_parser("report", help="render the Quarto report without Quarto")
    rp.add_argument("dir", nargs="?", default="report")
    rp.add_argument("-P", "--param", action="append", help="name:value, as quarto -P")
    rp.add_argument("--results", default=None, help="results folder for the report")
    rp.add_argument("--to", choices=["html", "typst", "all"], default=None,
                    help="output format, as quarto render --to (typst = PDF); default: "
                         "every format in _quarto.yml")
    rp.add_argument("--force", action="store_true",
                    help="render even when the results, the sources and the options are "
                         "those of the last render (whose documents are otherwise kept)")
    rp.set_defaults(func=_report)
    s = sub.add_parser("steps", help="list the analysis steps")
    s.set_defaults(func=_steps)
    return p


def main(argv: list[str] | None = None) -> int:
    # PyTensor looks for a system BLAS for its C code and warns in every step when there
    # is none (the wheels' OpenBLAS uses private symbol names). Sampling runs through
    # nutpie's numba-compiled model, and the benchmarks were measured without a BLAS, so
    # the missing BLAS is stated here (and in the README) instead.
    os.environ.setdefault("PYTENSOR_FLAGS", "blas__ldflags=")
    from analysis.logs import quiet_library_logs

    quiet_library_logs()
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
