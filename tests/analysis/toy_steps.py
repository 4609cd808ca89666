"""Steps for the tests of the concurrent runner: each records when it ran, in which
process, and what its upstream wrote (importable by spawned workers)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from analysis.config import Config


def _record(cfg: Config, name: str, seconds: float, reads: tuple[str, ...] = ()) -> dict:
    start = time.time()
    seen = {r: json.loads((cfg.results_dir / r / "out.json").read_text())["value"]
            for r in reads if (cfg.results_dir / r / "out.json").exists()}
    time.sleep(seconds)
    out = cfg.results_dir / name
    out.mkdir(parents=True, exist_ok=True)
    value = cfg.seed * 10 + sum(seen.values())  # what a result would derive from inputs
    (out / "out.json").write_text(json.dumps({
        "value": value, "start": start, "end": time.time(), "pid": os.getpid(),
        "parent": os.getppid(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}))
    return {"value": value}


def first(cfg: Config) -> dict:
    return _record(cfg, "first", 1.0)


def second(cfg: Config) -> dict:
    return _record(cfg, "second", 0.5, reads=("first",))


def beside(cfg: Config) -> dict:
    return _record(cfg, "beside", 1.0)


def last(cfg: Config) -> dict:
    return _record(cfg, "last", 0.1, reads=("second", "beside"))


def fails(cfg: Config) -> dict:
    raise ValueError("planted failure")


def dies(cfg: Config) -> dict:
    os._exit(3)  # as a worker killed for memory would


def killed(cfg: Config) -> dict:
    """Killed while it writes a result and keeps a materialised table (as a run killed
    for memory would be): both temporary names stay behind."""
    import tempfile

    from analysis.io import atomic_path
    from analysis.leftovers import tagged

    out = cfg.results_dir / "killed"
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "summary.json") as tmp, \
            tempfile.TemporaryDirectory(prefix=tagged("materialised"), dir=out) as table:
        tmp.write_text("{")
        (Path(table) / "result.parquet").write_bytes(b"partial")
        os._exit(9)


def killed_rerun(cfg: Config) -> dict:
    """The same step run again: it lists what it finds in its folder."""
    out = cfg.results_dir / "killed"
    return {"found": sorted(p.name for p in out.iterdir())}


def read_value(results: Path, name: str) -> int:
    return json.loads((results / name / "out.json").read_text())["value"]


def big(cfg: Config) -> dict:
    """Holds about 400 MiB for a moment, then frees it."""
    import numpy as np

    block = np.ones(50_000_000)
    block[::4096] = 2.0  # every page touched
    value = float(block.sum())
    del block
    return _record(cfg, "big", 0.0) | {"held": value}


def small(cfg: Config) -> dict:
    return _record(cfg, "small", 0.0)


def sleeper(cfg: Config) -> dict:
    """Says where it runs (``sleeper.pid``), then takes two minutes."""
    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    (cfg.results_dir / "sleeper.pid").write_text(str(os.getpid()))
    return _record(cfg, "sleeper", 120.0)


def memmapped(cfg: Config) -> dict:
    """Runs joblib on two processes with an array over joblib's 1 MB memmapping threshold
    (as scikit-learn's ``n_jobs`` does with a large training set): joblib shares it
    through a temporary folder, which the halves the workers send back still map when
    the step ends."""
    import numpy as np
    from joblib import Parallel, delayed

    block = np.arange(500_000, dtype=float)  # 4 MB
    halves = Parallel(n_jobs=2)(delayed(np.asarray)(block[i::2]) for i in range(2))
    return _record(cfg, "memmapped", 0.0) | {"sum": float(sum(h.sum() for h in halves))}


def log_level(cfg: Config) -> dict:
    """The level of PyMC's predictive-sampling logger where the step runs."""
    import logging

    level = logging.getLogger("pymc.sampling.forward").level
    return _record(cfg, "log_level", 0.0) | {"level": level}
