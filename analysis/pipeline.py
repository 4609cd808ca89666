"""The step runner: runs analysis steps, skipping those whose inputs are unchanged.

Each step writes into ``results_dir/<step>/`` and leaves a ``manifest.json`` holding the
hash of what it read (data files, its part of the config, the manifests of the steps it
builds on) and of the code that computed it (the analysis and model sources and the
versions of the numerical libraries). A rerun compares hashes, so a stale result, also
one from an older version of shopbayes, is detected and recomputed, never silently
reused; a step whose upstream failed is not run.

Steps run ``jobs`` at a time (config ``jobs``, ``--jobs``; default 2), each in a fresh
worker process as soon as the steps it builds on have finished, the longest chain of
steps first (:func:`run_concurrently`); with ``jobs`` 1 they run one after the other in
this process, each giving back the memory it freed before the next
(:func:`release_memory`). Either way the results are the same. ``run.json`` in the
results folder records the last run that computed a step: its wall time and each step's
start and end.
"""

from __future__ import annotations

import importlib
import os
import resource
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analysis import leftovers
from analysis.compile_cache import CompileCache
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
    #: about how long the step takes on the real-scale demo (2 cores, alone): orders the
    #: steps of a concurrent run that has no earlier run's manifests (critical_path)
    typical_seconds: float = 60.0

    def load(self) -> Callable[[Config], dict[str, Any]]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


STEPS: tuple[Step, ...] = (
    Step("clean", "analysis.steps.clean:run", (), ("min_city_clients", "database"),
         "load, validate and clean the data folder", typical_seconds=10),
    Step("gender", "analysis.steps.gender:run", ("clean",), ("seed", "gender"),
         "restore the lost gender (scikit-learn, cross-validated)", typical_seconds=25),
    Step("segments", "analysis.steps.segments:run", ("clean",), ("seed", "segments"),
         "Gaussian mixture clusters chosen by evidence, profiled", uses=("gender",),
         typical_seconds=25),
    Step("uplift", "analysis.steps.uplift:run", ("clean",),
         ("seed", "sampler", "sampler_overrides", "business", "min_city_clients",
          "max_cities", "uplift_store_sample"),
         "campaign 1: trust checks, Bayesian A/B and hierarchical uplift", uses=("segments",),
         typical_seconds=55),
    Step("campaign2", "analysis.steps.campaign2:run", ("clean",),
         ("seed", "sampler", "sampler_overrides", "business"),
         "campaign 2: billboard days in city 1134 against comparable cities",
         typical_seconds=60),
    Step("next_purchase", "analysis.steps.next_purchase:run", ("clean",),
         ("seed", "sampler", "sampler_overrides", "business", "next_purchase"),
         "who buys again soon and what each client is worth (BG/NBD, Gamma-Gamma)",
         uses=("gender", "segments"), typical_seconds=67),
    Step("propensity", "analysis.steps.propensity:run", ("clean",),
         ("seed", "sampler", "sampler_overrides", "business", "propensity"),
         "who in city 1188 buys which category when contacted",
         uses=("gender", "segments"), typical_seconds=145),
    Step("targets", "analysis.steps.targets:run", ("propensity",), ("seed",),
         "the contact list: city 1188's ranked clients with what each is worth",
         uses=("next_purchase",), typical_seconds=5),
    Step("apparel", "analysis.steps.apparel:run", (),
         ("seed", "sampler", "sampler_overrides", "apparel"),
         "apparel case: who buys within 90 days (BG/NBD and boosting with mailing features)",
         case="apparel", typical_seconds=30),
    Step("one_click", "analysis.steps.one_click:run", (),
         ("seed", "sampler", "sampler_overrides", "one_click"),
         "second case: which online-store clients will buy less, and what to offer",
         case="one_click", typical_seconds=85),
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


def reset_peak_rss() -> None:
    """Start this process's peak resident memory afresh (Linux: writing 5 to
    ``/proc/self/clear_refs`` resets ``VmHWM``; elsewhere nothing), so that a step run
    after others in the same process reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss_mib() -> float:
    """Peak resident memory of this process since :func:`reset_peak_rss` (MiB):
    :func:`analysis.background.peak_rss_mib`, else the peak since the process started
    (``ru_maxrss``)."""
    from analysis.background import peak_rss_mib

    peak = peak_rss_mib()
    return peak if peak is not None else (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def release_memory() -> None:
    """Give memory the last step freed back to the system: collect Python's garbage
    (a step's engine connection closes there), then return the unused pages of Arrow's
    allocator (``MemoryPool.release_unused``) and of the C heap (glibc's ``malloc_trim``;
    skipped elsewhere). Steps run one after the other in one process otherwise add up:
    at 10 million clients the propensity step peaked 465 MiB higher after the six steps
    before it than alone."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    if libc and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            pass


def compile_cache_dir(cfg: Config) -> Path:
    """Where compiled models are kept: ``SHOPBAYES_COMPILE_CACHE`` when set (one folder
    for several results folders, as the tests use), else ``<results_dir>/.compiled``."""
    return Path(os.environ.get("SHOPBAYES_COMPILE_CACHE") or cfg.results_dir / ".compiled")


#: warnings of the libraries that say nothing to whoever runs a step (message patterns):
#: ArviZ's for nutpie's trace without warm-up draws (its warm-up groups have none).
#: ``models.sampling`` silences it around its own calls, but ``warnings.catch_warnings``
#: is process-wide state, not thread-safe: with the next-purchase step's classifier in a
#: second thread (scikit-learn enters ``catch_warnings`` too) it reached the CLI output
KNOWN_WARNINGS = (sampling.EMPTY_WARMUP_WARNING,)


def quiet_known_warnings() -> None:
    """Ignore :data:`KNOWN_WARNINGS` in this process (a step's worker, or the CLI's
    process when steps run in it)."""
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", pattern, UserWarning)


def run_step(cfg: Config, step: Step, force: bool = False) -> dict[str, Any]:
    """Run one step (or skip it when current) and write its manifest."""
    if not force and is_current(cfg, step):
        return _reused(cfg, step)
    # temporary files and folders of an earlier run of this step that was killed
    removed = len(leftovers.sweep(step_dir(cfg, step.name)))
    for up in step.needs:
        m = manifest(cfg, up)
        if not m or m.get("status") != "ok":
            status = "skipped"
            why = f"upstream step '{up}' has no successful result"
            if m and m.get("status") == "skipped":
                why += f" ({m.get('message')})"
            return _finish(cfg, step, status, why, 0.0, {}, removed)
    t0 = time.perf_counter()
    reset_peak_rss()
    sampling.reset_log()
    sampling.use_compile_store(CompileCache(compile_cache_dir(cfg))
                               if cfg.compile_cache else None)
    quiet_known_warnings()
    try:
        summary = step.load()(cfg) or {}
        status, message = "ok", summary.pop("message", "")
    except StepSkipped as exc:
        summary, status, message = {}, "skipped", str(exc)
    except Exception as exc:  # the runner reports every failure and carries on
        summary, status = {"traceback": traceback.format_exc(limit=6)}, "failed"
        message = f"{type(exc).__name__}: {exc}"
    return _finish(cfg, step, status, message, time.perf_counter() - t0, summary, removed)


def _reused(cfg: Config, step: Step) -> dict[str, Any]:
    """The result of a step whose results are current: its manifest, marked reused.
    Temporary files of a later run of the step that was killed (a ``--force`` run
    killed before it replaced these results) are removed."""
    leftovers.sweep(step_dir(cfg, step.name))
    return {**(manifest(cfg, step.name) or {}), "status": "ok", "reused": True}


def _finish(cfg: Config, step: Step, status: str, message: str, seconds: float,
            summary: dict[str, Any], leftovers_removed: int = 0) -> dict[str, Any]:
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
        "mcmc": mcmc, "leftovers_removed": leftovers_removed,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_dir": str(data_folder(cfg, step)), "summary": summary,
    }
    write_json(m, step_dir(cfg, step.name) / "manifest.json")
    return {**m, "reused": False}


def run(cfg: Config, only: str | None = None, force: bool = False,
        echo: Callable[[str], None] = print, jobs: int | None = None,
        steps: tuple[Step, ...] | None = None) -> list[dict[str, Any]]:
    """Run every step (or just ``only``), printing one progress line per step.

    With ``jobs`` (default ``cfg.jobs``) above 1 the steps run in worker processes,
    ``jobs`` at a time, each as soon as the steps it builds on (``needs`` and ``uses``)
    have finished (:func:`run_concurrently`); with 1, one after the other in this process.
    Either way each step reads the same inputs and seeds, so the results are the same.
    Returns the steps' results in pipeline order.
    """
    plan = [get_step(only)] if only else list(steps or STEPS)
    jobs = cfg.jobs if jobs is None else jobs
    t0, began = time.perf_counter(), datetime.now(UTC)
    if jobs > 1 and len(plan) > 1:
        results = run_concurrently(cfg, plan, force=force, echo=echo, jobs=jobs, t0=t0)
    else:
        jobs, results = 1, []
        for i, step in enumerate(plan, 1):
            echo(f"[{i}/{len(plan)}] {step.name}: {step.description} ...")
            sys.stdout.flush()
            start = time.perf_counter() - t0
            res = run_step(cfg, step, force=force or only is not None)
            release_memory()
            res.update(run_start=round(start, 2), run_end=round(time.perf_counter() - t0, 2))
            echo(_outcome(res))
            results.append(res)
    if only is None and not all(r.get("reused") for r in results):
        # the record describes the last run that computed something (a rerun that reuses
        # every step leaves it, and the report, as they were)
        write_run_record(cfg, results, jobs, began, time.perf_counter() - t0)
    return results


def write_run_record(cfg: Config, results: list[dict[str, Any]], jobs: int,
                     began: datetime, seconds: float) -> None:
    """``run.json`` in the results folder: when the whole run began, its wall seconds, the
    steps run at once, and when each step started and ended (seconds from the start;
    reused steps take none)."""
    write_json({"began": began.isoformat(timespec="seconds"), "seconds": round(seconds, 2),
                "jobs": jobs,
                "steps": [{"step": r["step"], "status": r["status"],
                           "reused": bool(r.get("reused")), "start": r.get("run_start"),
                           "end": r.get("run_end")} for r in results]},
               cfg.results_dir / "run.json")


def _outcome(res: dict[str, Any], name: str = "") -> str:
    """The progress line of a finished step (``name`` first when steps interleave)."""
    extra = f" - {res['message']}" if res.get("message") else ""
    who = f"{name}: " if name else ""
    if res.get("reused"):
        return f"      {who}unchanged, reused (it ran in {res['seconds']:.1f} s){extra}"
    mc = res.get("mcmc") or {}
    loaded = (f" ({mc['compiles_loaded']} of {mc['compiles']} loaded from earlier runs)"
              if mc.get("compiles_loaded") else "")
    split = (f"; MCMC compile {mc['compile_seconds']:.1f} s{loaded}, sampling "
             f"{mc['sample_seconds']:.1f} s, other {mc['other_seconds']:.1f} s"
             if "other_seconds" in mc else "")
    n = res.get("leftovers_removed") or 0
    swept = (f"; removed {n} temporary file{'s' if n > 1 else ''} of an earlier run that "
             "was killed" if n else "")
    return (f"      {who}{res['status']} in {res['seconds']:.1f} s "
            f"(peak RSS {res['peak_rss_mib']:.0f} MiB{split}{swept}){extra}")


def critical_path(cfg: Config, plan: list[Step]) -> dict[str, float]:
    """Seconds from each step's start to the end of the longest chain of steps that wait
    for it, from the seconds each step took last time (its manifest; its
    ``typical_seconds`` when it never ran): steps on the longest chain start first (Hu
    1961's level scheduling)."""
    took = {s.name: float((manifest(cfg, s.name) or {}).get("seconds") or s.typical_seconds)
            for s in plan}
    waiting = {s.name: [t.name for t in plan if s.name in t.needs + t.uses] for s in plan}
    level: dict[str, float] = {}

    def walk(name: str) -> float:
        if name not in level:
            level[name] = took[name] + max(map(walk, waiting[name]), default=0.0)
        return level[name]

    for s in plan:
        walk(s.name)
    return level


#: ``os.nice`` increment of a step that does not head the longest chain of steps left
BACKGROUND_NICE = 10


def _run_in_worker(cfg: Config, step: Step, nice: int = 0) -> dict[str, Any]:
    """One step in a worker process (its own MCMC log and peak RSS), at scheduling
    priority ``nice`` (``os.nice``: a step off the longest chain yields the cores to the
    one on it and takes what that leaves idle).

    Idle pool processes a library keeps for reuse (joblib's loky workers, which
    scikit-learn's ``n_jobs`` starts) are ended with the step: a worker process waits for
    its children before it exits, and loky's idle for up to 300 s (the one-click step's
    kept its worker, and the pipeline's second slot, for 250 s after its result)."""
    import multiprocessing

    if nice:
        os.nice(nice)
    try:
        return run_step(cfg, step, force=True)
    finally:
        end_joblib_pool()
        for child in multiprocessing.active_children():
            child.terminate()
            child.join(10)


def end_joblib_pool() -> None:
    """End joblib's reusable worker pool (scikit-learn's ``n_jobs``) in this process, if
    it has one, and delete the folders it shares large arrays through.

    A worker leaves with ``os._exit``, which skips the exit handlers joblib cleans those
    folders (``/dev/shm/joblib_memmapping_folder_*``) with, so the resource tracker found
    them at its shutdown and printed a warning listing every one of them (11 after the
    one-click step's nested search) into the run's output. ``MemmappingExecutor.terminate``
    is what joblib itself calls to end the pool and remove its folders."""
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None)
    if executor is not None and hasattr(executor, "terminate"):
        executor.terminate(kill_workers=True)


#: the environment of every worker, set before it loads any numerical library: one
#: OpenMP thread (scikit-learn's boosting; OpenBLAS reads it too). Two steps share the two
#: cores, each with its own sampler, engine or OpenMP pool; OpenMP threads that wait for
#: work spin, and two steps' spinning threads took each other's time. Measured (3 boosting
#: fits, 60,000 rows, beside two busy threads at normal priority): the default 2 threads
#: 6.1 s at nice 0 and 54.6 s at nice 10; ``OMP_WAIT_POLICY=PASSIVE`` (the threads
#: sleep; the earlier setting) 9.8 and 54.0 s; one thread 3.8 and 32.3 s. Alone on the
#: machine one thread takes 0.9 s a fit against 0.6 s with two, and PASSIVE 4.4 to 5.7 s
#: (each of boosting's many short parallel regions waits for sleeping threads to wake).
#: Boosting's results do not depend on its thread count (checked: identical
#: probabilities with one and two threads); a BLAS product's do (a sum split between
#: threads rounds differently: 2e-16 in a logistic regression's probabilities), so BLAS
#: keeps the thread count the sequential run has (:func:`worker_env`).
WORKER_ENV = {"OMP_NUM_THREADS": "1"}


def worker_env() -> dict[str, str]:
    """:data:`WORKER_ENV` and the BLAS thread count of this process's environment
    (``OPENBLAS_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs this process may
    use: what OpenBLAS takes), so a step's numbers in a worker are the sequential run's."""
    blas = (os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
            or str(len(os.sched_getaffinity(0))))
    return {**WORKER_ENV, "OPENBLAS_NUM_THREADS": blas}


def _worker_init(env: dict[str, str], run_pid: int) -> None:
    """Runs first in every worker (``env``: :func:`worker_env` of the run, for what the
    worker starts); the worker ends when the run's process ``run_pid`` does, however it
    ends (:func:`analysis.background.end_with`: a run killed with SIGKILL or by the
    out-of-memory killer leaves no worker computing for nobody)."""
    from analysis.background import end_with
    from analysis.logs import quiet_library_logs

    end_with(run_pid)
    os.environ.update(env)
    quiet_library_logs()


def worker_context(plan: list[Step], env: dict[str, str]) -> Any:
    """The multiprocessing context the steps' workers start from: a fork server that has
    imported the plan's step modules (and with them PyMC, ArviZ, scikit-learn, Ibis) once,
    under ``env`` (:func:`worker_env`); each worker is a fork of it, a fresh process for one step
    that starts with those modules loaded.

    A spawned interpreter per step imported them again for every step: 6 to 13 s each
    (``python -c "import analysis.steps.propensity"`` 12.0 s, ``...clean`` 7.2 s on the
    2-core machine; 13.5 s for all of them at once), about 90 s of CPU per run and a
    third of a minute on the longest chain. The server has run nothing but those imports
    (its one other thread is OpenBLAS's idle worker, which OpenBLAS starts again in a
    fork; checked: a fork has one thread), never OpenMP, the engine or a sampler
    (Python's ``forkserver`` start method; modules it fails to import are imported by
    the worker itself, as with ``spawn``). A server already running in this process
    (an earlier run's) serves as it is. The run's first step starts at once in a
    spawned worker while the server imports; the later ones are its forks."""
    import multiprocessing
    from multiprocessing import forkserver

    ctx = multiprocessing.get_context("forkserver")
    modules = ["analysis.pipeline"] + sorted({s.target.split(":")[0] for s in plan})
    ctx.set_forkserver_preload(modules)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the server's environment, inherited by every fork
    try:
        forkserver.ensure_running()  # starts it now: it imports while the run plans
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return ctx


class MemoryPlan:
    """Which ready step may start beside the running ones within a memory budget.

    A step's expected peak RSS is the larger of its peak in its last run (its manifest)
    and the peaks measured in this run of the steps it builds on, directly or not (every
    store step builds on ``clean``, which reads every purchase row: a store larger than
    last time shows there first); a step with neither is expected to take an equal share
    of the budget (``budget_mib / jobs``). A step starts beside running ones only when the
    expected peaks of all of them stay below ``budget_mib``, so two steps of unknown size
    do not start together (the first run of a store: ``clean`` runs alone, and what it
    took then sizes the rest); a step alone always starts.

    Parameters
    ----------
    cfg
        The run's config (``memory_budget_mib``; 0: no limit).
    plan
        The steps of the run.
    jobs
        Steps run at once at most.
    """

    def __init__(self, cfg: Config, plan: list[Step], jobs: int) -> None:
        self.budget_mib = float(cfg.memory_budget_mib)
        self.share_mib = self.budget_mib / max(jobs, 1)
        self.history = {s.name: float((manifest(cfg, s.name) or {}).get("peak_rss_mib") or 0)
                        for s in plan}
        planned = {s.name for s in plan}
        direct = {s.name: [d for d in s.needs + s.uses if d in planned] for s in plan}
        self.upstream: dict[str, set[str]] = {}

        def walk(name: str) -> set[str]:
            if name not in self.upstream:
                self.upstream[name] = set()  # a cycle is reported by the runner
                self.upstream[name] = set(direct[name]).union(*map(walk, direct[name]))
            return self.upstream[name]

        for s in plan:
            walk(s.name)
        self.measured: dict[str, float] = {}

    def measure(self, name: str, peak_mib: float | None) -> None:
        """Record a finished step's peak RSS in this run."""
        if peak_mib:
            self.measured[name] = float(peak_mib)

    def expected_mib(self, name: str) -> float:
        """The step's expected peak RSS (MiB)."""
        known = [self.history.get(name, 0.0)] + [self.measured.get(u, 0.0)
                                                  for u in self.upstream.get(name, ())]
        return max(known) if max(known) > 0 else self.share_mib

    def admits(self, name: str, running: list[str]) -> bool:
        """Whether step ``name`` may start beside the steps ``running``."""
        if self.budget_mib <= 0 or not running:
            return True
        return (self.expected_mib(name) + sum(map(self.expected_mib, running))
                < self.budget_mib)


def run_concurrently(cfg: Config, plan: list[Step], force: bool = False,
                     echo: Callable[[str], None] = print, jobs: int = 2,
                     t0: float | None = None) -> list[dict[str, Any]]:
    """Run ``plan`` in ``jobs`` worker processes: a step starts when every step it builds
    on (``needs``, and ``uses`` when planned) has finished, the longest chain first
    (:func:`critical_path`), so one step's single-threaded work (compiling a model,
    scikit-learn, the engine) overlaps another's sampling. The step heading the longest
    chain of steps left runs at normal priority, the others at ``BACKGROUND_NICE``: they
    use what it leaves idle rather than slow the chain that decides the run's length.

    Each step runs in a fresh process (forked, one per step, from a server that has
    imported the step modules: :func:`worker_context`) with the same config and
    seed and reads only its inputs and its upstream steps' results, as in the sequential
    run, so the results are the same; a step whose results are current is reused here
    without a worker. A worker that dies (killed, out of memory) fails its own step, whose
    manifest says so; the other steps go on.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    order = {s.name: i for i, s in enumerate(plan)}
    planned = set(order)
    waits_for = {s.name: [d for d in s.needs + s.uses if d in planned] for s in plan}
    level = critical_path(cfg, plan)
    done: dict[str, dict[str, Any]] = {}
    stale: set[str] = set()  # ready steps found not current: their inputs are final
    # a pool of one fresh process per step: a worker that dies takes no other step along
    running: dict[Any, tuple[Step, float, ProcessPoolExecutor]] = {}
    ended: list[ProcessPoolExecutor] = []
    started = 0
    t0 = time.perf_counter() if t0 is None else t0
    context = None  # the fork server, started when the first step needs a worker
    env = worker_env()
    memory = MemoryPlan(cfg, plan, jobs)
    held: set[str] = set()  # steps said to wait for memory
    try:
        while len(done) < len(plan):
            busy = {s.name for s, _, _ in running.values()}
            ready = sorted((s for s in plan if s.name not in done and s.name not in busy
                            and all(d in done for d in waits_for[s.name])),
                           key=lambda s: (-level[s.name], order[s.name]))
            progressed = False
            for step in ready:
                if not force and step.name not in stale and is_current(cfg, step):
                    started += 1
                    echo(f"[{started}/{len(plan)}] {step.name}: {step.description} ...")
                    now = round(time.perf_counter() - t0, 2)
                    done[step.name] = {**_reused(cfg, step), "run_start": now, "run_end": now}
                    echo(_outcome(done[step.name], step.name))
                    progressed = True
                    break  # what is ready may have changed
                stale.add(step.name)
                names = [s.name for s, _, _ in running.values()]
                if len(running) < jobs and not memory.admits(step.name, names):
                    if step.name not in held:
                        held.add(step.name)
                        echo(f"      {step.name} waits: expected peak "
                             f"{memory.expected_mib(step.name):,.0f} MiB beside "
                             f"{sum(map(memory.expected_mib, names)):,.0f} MiB running "
                             f"({', '.join(names)}) would not stay below the memory budget of "
                             f"{memory.budget_mib:,.0f} MiB (memory_budget_mib)")
                    continue
                if len(running) < jobs:
                    started += 1
                    echo(f"[{started}/{len(plan)}] {step.name}: {step.description} ... "
                         "(started)")
                    sys.stdout.flush()
                    # the step heading the longest chain left runs first; others yield
                    longest = max(level[s.name] for s in plan if s.name not in done)
                    nice = 0 if level[step.name] >= longest else BACKGROUND_NICE
                    if context is None:  # the server imports while the first step runs
                        context = worker_context(plan, env)
                        mp_context = multiprocessing.get_context("spawn")
                    else:
                        mp_context = context
                    pool = ProcessPoolExecutor(1, mp_context=mp_context,
                                               initializer=_worker_init,
                                               initargs=(env, os.getpid()))
                    running[pool.submit(_run_in_worker, cfg, step, nice)] = (
                        step, time.perf_counter(), pool)
                    progressed = True
            if progressed:
                continue
            if not running:  # nothing runs and nothing can start: a cycle in the steps
                raise RuntimeError("steps wait for each other: "
                                   + ", ".join(sorted(set(order) - set(done))))
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                step, t1, pool = running.pop(fut)
                try:
                    res = fut.result()
                except BrokenProcessPool as exc:
                    res = _finish(cfg, step, "failed", "the worker process running it died "
                                  f"(killed, or out of memory?): {exc}",
                                  time.perf_counter() - t1, {})
                pool.shutdown(wait=False)  # its process ends on its own; joined below
                ended.append(pool)
                res.update(run_start=round(t1 - t0, 2), run_end=round(time.perf_counter() - t0, 2))
                done[step.name] = res
                memory.measure(step.name, res.get("peak_rss_mib"))
                echo(_outcome(res, step.name))
    finally:
        for fut, (_, _, pool) in running.items():
            fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
        for pool in ended:
            pool.shutdown(wait=True)
    return [done[s.name] for s in plan]
