from __future__ import annotations

import os

# Under pytest-xdist (`make test`: two worker processes on two cores) each worker's
# OpenMP code (scikit-learn's boosting, k-means) runs on one thread: two workers of two
# threads each on two cores spent most of their time waiting for each other's threads
# (the one-click model search test took 16.9 s under xdist, 5.4 s alone; with one thread
# per worker it left the 40 slowest). BLAS keeps its thread count
# (OpenBLAS would otherwise read OMP_NUM_THREADS), so the numbers are those of one process.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    os.environ["OMP_NUM_THREADS"] = "1"

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.demo.store import DemoSpec, write_demo

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """Run ``code`` in a new Python process from the project's root (a fresh process: new
    object addresses, nothing imported or set by the tests); its output captured as text.
    Fails the test, with the end of its standard error, when the process fails."""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return run
SHARED = ROOT.parent / "shared" / "data"
SKILLBOX = SHARED / "skillbox"


def needs_shared(*parts: str):
    """Skip a test cleanly when ../shared/data (or a file under it) is absent."""
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"{path} absent (real data not here)")


@pytest.fixture(scope="session", autouse=True)
def session_compile_cache(tmp_path_factory: pytest.TempPathFactory):
    """One compile cache (analysis.compile_cache) for every pipeline run of the session:
    a model that several tests fit on the same data is compiled once, then loaded."""
    import os

    folder = tmp_path_factory.mktemp("compiled")
    before = os.environ.get("SHOPBAYES_COMPILE_CACHE")
    os.environ["SHOPBAYES_COMPILE_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("SHOPBAYES_COMPILE_CACHE", None)
    else:
        os.environ["SHOPBAYES_COMPILE_CACHE"] = before


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic data folder (3,000 clients), generated once per session."""
    out = tmp_path_factory.mktemp("demo")
    write_demo(out, DemoSpec(clients=3000, seed=11))
    return out


@pytest.fixture()
def demo_copy(small_demo: Path, tmp_path: Path) -> Path:
    """A private copy of the small demo folder that a test may damage."""
    dest = tmp_path / "data"
    shutil.copytree(small_demo, dest)
    return dest


def write_tables(db: Path, tables: dict[str, pd.DataFrame]) -> None:
    con = sqlite3.connect(db)
    for name, df in tables.items():
        df.to_sql(name, con, index=False, if_exists="replace")
    con.close()


def read_table(db: Path, name: str) -> pd.DataFrame:
    con = sqlite3.connect(db)
    df = pd.read_sql_query(f"SELECT * FROM {name}", con)
    con.close()
    return df


@pytest.fixture(scope="session")
def one_click_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-click stand-in (1,300 clients, same schema and quirks), written once."""
    from analysis.demo.one_click import write_one_click_demo

    out = tmp_path_factory.mktemp("one_click")
    write_one_click_demo(out, clients=1300, seed=5)
    return out


def copy_one_click(src: Path, tmp_path: Path) -> Path:
    """A private copy of a one-click folder that a test may damage."""
    dest = tmp_path / "oc"
    shutil.copytree(src, dest)
    return dest


def rewrite_csv(folder: Path, name: str, edit) -> None:
    """Apply ``edit`` to the rows of ``folder/name`` and write it back as the file was
    (CRLF)."""
    f = folder / name
    df = edit(pd.read_csv(f, dtype=str))
    df.to_csv(f, index=False, lineterminator="\r\n")


def quick_one_click(cfg, folder: Path):
    """``cfg`` with the one-click case on ``folder`` and small CV / MCMC settings."""
    from dataclasses import replace

    # two outer folds of two inner ones: the nested search fits 224 candidates, not 504
    oc = replace(cfg.one_click, data_dir=str(folder), outer_folds=2, inner_folds=2,
                 permutation_repeats=2, shap_clients_per_fold=20, shap_nsamples=100)
    overrides = {**cfg.sampler_overrides, "one_click": {"draws": 600, "tune": 500}}
    return replace(cfg, one_click=oc, sampler_overrides=overrides)


def ended_process_id() -> int:
    """The id of a process that has ended and been collected (no process has it now,
    unless the system gives it to a new one)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def demo_store_frame(folder: Path, spec: DemoSpec) -> tuple[pd.DataFrame, dict]:
    """Write a demo folder and return its campaign-1 store frame (the planted segments as
    clusters) and the planted truth of campaign 1 (``truth.json``)."""
    import json

    from analysis.steps.campaign1_data import store_frame
    from analysis.store.id_files import campaign_groups
    from analysis.store.loaders import load_folder
    from analysis.store.rules import clean

    write_demo(folder, spec)
    raw = load_folder(folder)
    data = clean(raw)
    g = campaign_groups(raw.positive, raw.negative)
    seg = pd.read_parquet(folder / "truth_clients.parquet")[["id", "segment"]]
    df, _ = store_frame(data.clients, data.purchases, list(g.treated), list(g.control),
                        seg.rename(columns={"segment": "cluster"}))
    return df, json.loads((folder / "truth.json").read_text())["campaign1"]


@pytest.fixture(autouse=True)
def steps_one_after_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run the pipeline's steps in this process (``jobs`` 1), where their monkey
    patches reach; the tests of the concurrent runner ask for workers themselves."""
    monkeypatch.setenv("SHOPBAYES_JOBS", "1")
