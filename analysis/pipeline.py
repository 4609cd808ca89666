"""The step runner: runs analysis steps in order, skipping those whose inputs are unchanged.

Each step writes into ``results_dir/<step>/`` and leaves a ``manifest.json`` holding the
hash of what it read (data files, its part of the config, the manifests of the steps it
builds on) and of the code that computed it (the analysis and model sources and the
versions of the numerical libraries). A rerun compares hashes, so a stale result, also
one from an older version of shopbayes, is detected and recomputed, never silently
reused; a step whose upstream failed is not run.
"""

from __future__ import annotations

import importlib
import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analysis.config import Config
from analysis.io import digest_of, file_digest, read_json, write_json
from models import sampling

VERSION = "0.1.0"
# code that only draws the report or parses the command line cannot change a result
#: code that does not change results: the CLI and the renderer of the report
_NOT_RESULTS = ("analysis/cli.py", "analysis/render/")
_LIBRARIES = ("numpy", "pandas", "scipy", "scikit-learn", "pymc", "pytensor", "nutpie",
              "arviz", "duckdb", "ibis-framework", "pyspark")
_CODE_DIGEST: list[str] = []


def code_digest() -> str:
    """Digest of the sources that compute results and of the numerical libraries' versions.

    Part of every step's input hash, so updating shopbayes (or a library) reruns the
    steps instead of reusing results an older version wrote. Computed once per process.
    """
    if not _CODE_DIGEST:
        from importlib.metadata import PackageNotFoundError, version

        libs = {}
        for name in _LIBRARIES:
            try:
                libs[name] = version(name)
            except PackageNotFoundError:
                libs[name] = None
        root = Path(__file__).resolve().parents[1]
        _CODE_DIGEST.append(digest_of({"sources": source_digest(root), "libraries": libs}))
    return _CODE_DIGEST[0]


def source_digest(root: Path) -> str:
    """Digest of ``analysis/`` and ``models/`` under ``root``, less the report's code."""
    files = sorted(p for pkg in ("analysis", "models") for p in (root / pkg).rglob("*")
                   if p.is_file() and p.suffix in (".py", ".json", ".lua")
                   and not p.relative_to(root).as_posix().startswith(_NOT_RESULTS)
                   and "__pycache__" not in p.parts)
    return digest_of({p.relative_to(root).as_posix(): file_digest(p) for p in files})


class StepSkipped(Exception):
    """Raised by a step that cannot run on this data (e.g. no purchases table)."""


@dataclass(frozen=True)
class Step:
    """One pipeline step: ``module:function`` taking a :class:`Config`, returning a summary."""

    name: str
    target: str
    needs: tuple[str, ...] = ()
    config_keys: tuple[str, ...] = ("seed",)
    description: str = ""
    uses: tuple[str, ...] = ()  # optional upstream: used when it succeeded, never required
    case: str = "store"  # whose data folder: the store's (data_dir), "one_click", "apparel"

    def load(self) -> Callable[[Config], dict[str, Any]]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


STEPS: tuple[Step, ...] = (
    Step("clean", "analysis.steps.clean:run", (), ("min_city_clients", "database"),
         "load, validate and clean the data folder"),
    Step("gender", "analysis.steps.gender:run", ("clean",), ("seed", "gender"),
         "restore the lost gender (scikit-learn, cross-validated)"),
    Step("segments", "analysis.steps.segments:run", ("clean",), ("seed", "segments"),
         "Gaussian mixture clusters chosen by evidence, profiled", uses=("gender",)),
    Step("uplift", "analysis.steps.uplift:run", ("clean",),
         ("seed", "sampler", "sampler_overrides", "business", "min_city_clients",
          "max_cities", "uplift_store_sample"),
         "campaign 1: trust checks, Bayesian A/B and hierarchical uplift", uses=("segments",)),
    Step("campaign2", "analysis.steps.campaign2:run", ("clean",),
         ("seed", "sampler", "sampler_overrides", "business"),
         "campaign 2: billboard days in city 1134 against comparable cities"),
    Step("next_purchase", "analysis.steps.next_purchase:run", ("clean",),
         ("seed", "sampler", "sampler_overrides", "business", "next_purchase"),
         "who buys again soon and what each client is worth (BG/NBD, Gamma-Gamma)",
         uses=("gender", "segments")),
    Step("propensity", "analysis.steps.propensity:run", ("clean",),
         ("seed", "sampler", "sampler_overrides", "business", "propensity"),
         "who in city 1188 buys which category when contacted",
         uses=("gender", "segments", "next_purchase")),
    Step("apparel", "analysis.steps.apparel:run", (),
         ("seed", "sampler", "sampler_overrides", "apparel"),
         "apparel case: who buys within 90 days (BG/NBD and boosting with mailing features)",
         case="apparel"),
    Step("one_click", "analysis.steps.one_click:run", (),
         ("seed", "sampler", "sampler_overrides", "one_click"),
         "second case: which online-store clients will buy less, and what to offer",
         case="one_click"),
)


def step_names() -> list[str]:
    return [s.name for s in STEPS]


def get_step(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    raise KeyError(f"unknown step '{name}'; steps are {step_names()}")


def step_dir(cfg: Config, name: str) -> Path:
    return cfg.results_dir / name


def manifest(cfg: Config, name: str) -> dict[str, Any] | None:
    path = step_dir(cfg, name) / "manifest.json"
    if not path.exists():
        return None
    try:
        return read_json(path)
    except ValueError:
        return None


def succeeded(cfg: Config, name: str) -> bool:
    """Whether step ``name`` has a successful result."""
    return (manifest(cfg, name) or {}).get("status") == "ok"


def optional_table(cfg: Config, con: Any, name: str, file: str,
                   columns: dict[str, str]) -> Any | None:
    """A Parquet result of an optional upstream step (``Step.uses``) opened in the engine
    ``con`` (:func:`analysis.store.tables.open_table`, ``columns`` checked), or ``None``
    when that step has no successful result (a failed run keeps the earlier files, which
    must not be mixed with today's data)."""
    from analysis.store.tables import open_table

    path = step_dir(cfg, name) / file
    if not succeeded(cfg, name) or not path.exists():
        return None
    return open_table(con, path, columns, f"{name}_{Path(file).stem}")


_DATA_DIGESTS: dict[tuple[str, float, int], str] = {}


def _cached_digest(f: Path) -> str:
    st = f.stat()
    key = (str(f.resolve()), st.st_mtime, st.st_size)
    if key not in _DATA_DIGESTS:
        _DATA_DIGESTS[key] = file_digest(f)
    return _DATA_DIGESTS[key]


def data_digest(folder: Path) -> dict[str, str]:
    """Digest of every file in the data folder (cached by path, mtime and size); a table
    stored as a folder of Parquet part files (``purchases.parquet/part-0.parquet``, as
    Spark writes it) gets the digest of its parts."""
    out = {}
    for f in sorted(folder.glob("*")) if folder.is_dir() else []:
        if f.name.startswith("."):
            continue
        if f.is_file():
            out[f.name] = _cached_digest(f)
        elif f.is_dir() and f.suffix == ".parquet":
            parts = sorted(p for p in f.rglob("*") if p.is_file()
                           and not p.name.startswith((".", "_")))
            out[f.name] = digest_of({str(p.relative_to(f)): _cached_digest(p) for p in parts})
    return out


def _database_fingerprint(cfg: Config) -> dict[str, list[float]] | None:
    """Rows and column sums of the configured database's tables (``None`` without one, or
    when it cannot be reached: the clean step then runs and says why)."""
    if not cfg.database:
        return None
    from analysis.errors import DataError
    from analysis.store.database import fingerprint
    from analysis.store.loaders import DB_TABLES

    try:
        return fingerprint(cfg.database, tuple(DB_TABLES))
    except DataError:
        return {"unreachable": [time.time()]}


def data_folder(cfg: Config, step: Step) -> Path:
    """The data folder a step reads."""
    return cfg.data_dir if step.case == "store" else cfg.case_dir(step.case)


def input_hash(cfg: Config, step: Step) -> str:
    conf = cfg.as_dict()
    parts = {
        "version": VERSION,
        "code": code_digest(),
        "step": step.name,
        "data": data_digest(data_folder(cfg, step)),
        # a database's tables change without a file changing: their counts and sums
        "database": _database_fingerprint(cfg) if step.name == "clean" else None,
        "config": {k: conf[k] for k in step.config_keys},
        "upstream": {n: (manifest(cfg, n) or {}).get("input_hash")
                     for n in step.needs + step.uses},
    }
    return digest_of(parts)


def is_current(cfg: Config, step: Step) -> bool:
    m = manifest(cfg, step.name)
    return bool(m and m.get("status") == "ok" and m.get("input_hash") == input_hash(cfg, step))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_step(cfg: Config, step: Step, force: bool = False) -> dict[str, Any]:
    """Run one step (or skip it when current) and write its manifest."""
    if not force and is_current(cfg, step):
        m = manifest(cfg, step.name) or {}
        return {**m, "status": "ok", "reused": True}
    for up in step.needs:
        m = manifest(cfg, up)
        if not m or m.get("status") != "ok":
            status = "skipped"
            why = f"upstream step '{up}' has no successful result"
            if m and m.get("status") == "skipped":
                why += f" ({m.get('message')})"
            return _finish(cfg, step, status, why, 0.0, {})
    t0 = time.perf_counter()
    sampling.reset_log()
    try:
        summary = step.load()(cfg) or {}
        status, message = "ok", summary.pop("message", "")
    except StepSkipped as exc:
        summary, status, message = {}, "skipped", str(exc)
    except Exception as exc:  # the runner reports every failure and carries on
        summary, status = {"traceback": traceback.format_exc(limit=6)}, "failed"
        message = f"{type(exc).__name__}: {exc}"
    return _finish(cfg, step, status, message, time.perf_counter() - t0, summary)


def _finish(cfg: Config, step: Step, status: str, message: str, seconds: float,
            summary: dict[str, Any]) -> dict[str, Any]:
    mcmc = sampling.summarize_log()
    if mcmc["compiles"] or mcmc["runs"]:
        # where the time went: compiling and sampling the step's MCMC fits, and the rest
        mcmc["other_seconds"] = round(seconds - mcmc["compile_seconds"]
                                      - mcmc["sample_seconds"], 2)
    sampling.reset_log()
    m = {
        "step": step.name, "status": status, "message": message,
        "input_hash": input_hash(cfg, step) if status == "ok" else None,
        "seconds": round(seconds, 2), "peak_rss_mib": round(_peak_rss_mib(), 1),
        "mcmc": mcmc,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_dir": str(data_folder(cfg, step)), "summary": summary,
    }
    write_json(m, step_dir(cfg, step.name) / "manifest.json")
    return {**m, "reused": False}


def run(cfg: Config, only: str | None = None, force: bool = False,
        echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every step in order (or just ``only``), printing one progress line per step."""
    steps = [get_step(only)] if only else list(STEPS)
    results = []
    for i, step in enumerate(steps, 1):
        echo(f"[{i}/{len(steps)}] {step.name}: {step.description} ...")
        sys.stdout.flush()
        res = run_step(cfg, step, force=force or only is not None)
        extra = f" - {res['message']}" if res.get("message") else ""
        if res.get("reused"):
            echo(f"      unchanged, reused (it ran in {res['seconds']:.1f} s){extra}")
        else:
            mc = res.get("mcmc") or {}
            split = (f"; MCMC compile {mc['compile_seconds']:.1f} s, sampling "
                     f"{mc['sample_seconds']:.1f} s, other {mc['other_seconds']:.1f} s"
                     if "other_seconds" in mc else "")
            echo(f"      {res['status']} in {res['seconds']:.1f} s "
                 f"(peak RSS {res['peak_rss_mib']:.0f} MiB{split}){extra}")
        results.append(res)
    return results
