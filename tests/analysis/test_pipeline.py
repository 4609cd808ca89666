import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from analysis import pipeline
from analysis.cli import main
from analysis.config import load_config
from tests.conftest import ended_process_id

#: every step of the pipeline (the fixture below leaves only `clean` in pipeline.STEPS)
ALL_STEPS = pipeline.STEPS


@pytest.fixture(autouse=True)
def clean_step_only(monkeypatch):
    """The runner's behaviour does not depend on which steps exist: test it on `clean`."""
    monkeypatch.setattr(pipeline, "STEPS", (pipeline.get_step("clean"),))


def test_run_reuses_unchanged_steps_and_detects_changes(demo_copy, tmp_path, capsys):
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    first = pipeline.run(cfg)
    assert [r["status"] for r in first] == ["ok"] * len(first)
    second = pipeline.run(cfg)
    assert all(r["reused"] for r in second)
    (demo_copy / "ids_first_company_negative.txt").write_text("1;2;3")
    third = pipeline.run(cfg, only=None)
    assert not third[0]["reused"]


def test_results_of_other_code_are_not_reused(demo_copy, tmp_path, monkeypatch):
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    pipeline.run(cfg)
    assert pipeline.is_current(cfg, pipeline.get_step("clean"))
    # as after updating shopbayes: the sources (or a library version) differ
    monkeypatch.setattr(pipeline, "_CODE_DIGEST", ["another version"])
    assert not pipeline.is_current(cfg, pipeline.get_step("clean"))
    assert not pipeline.run(cfg)[0]["reused"]


def test_source_digest_changes_with_model_code_not_with_the_report(tmp_path):
    import shutil

    root = Path(pipeline.__file__).resolve().parents[1]
    for pkg in ("analysis", "models"):
        shutil.copytree(root / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    first = pipeline.source_digest(tmp_path)
    assert first == pipeline.source_digest(root)
    with (tmp_path / "analysis" / "render" / "report.py").open("a") as fh:
        fh.write("# drawing only\n")
    assert pipeline.source_digest(tmp_path) == first
    with (tmp_path / "models" / "uplift.py").open("a") as fh:
        fh.write("# a changed model\n")
    assert pipeline.source_digest(tmp_path) != first


def test_failed_step_keeps_earlier_results(demo_copy, tmp_path):
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    pipeline.run(cfg)
    out = tmp_path / "res" / "clean" / "clients.parquet"
    before = out.read_bytes()
    (demo_copy / "shop_database.db").write_bytes(b"garbage")
    res = pipeline.run(cfg)
    assert res[0]["status"] == "failed" and "not an SQLite database" in res[0]["message"]
    assert out.read_bytes() == before


def test_check_data_cli_exit_codes(demo_copy, capsys):
    assert main(["check-data", str(demo_copy)]) == 0
    assert "0 fatal problem(s)" in capsys.readouterr().out
    (demo_copy / "ids_first_company_positive.txt").write_text("no ids at all")
    (demo_copy / "shop_database.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    assert main(["check-data", str(demo_copy)]) == 1
    out = capsys.readouterr().out
    assert "no digits" in out and "shop_database.db" in out


def test_unknown_step_is_a_clear_error(demo_copy, tmp_path, capsys):
    rc = main(["run", "nope", "--data", str(demo_copy), "--results", str(tmp_path)])
    assert rc == 2 and "unknown step 'nope'" in capsys.readouterr().err


def test_unknown_config_setting(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text("marginn = 1\n")
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(f)


def test_a_table_stored_as_a_folder_of_parquet_parts_is_part_of_the_data_digest(tmp_path):
    from analysis.pipeline import data_digest

    parts = tmp_path / "purchases.parquet"
    parts.mkdir()
    (parts / "part-0.parquet").write_bytes(b"one")
    (parts / "_SUCCESS").write_bytes(b"")
    (tmp_path / "ids_first_company_positive.txt").write_text("1,2")
    before = data_digest(tmp_path)
    assert set(before) == {"purchases.parquet", "ids_first_company_positive.txt"}
    (parts / "part-1.parquet").write_bytes(b"two")
    assert data_digest(tmp_path)["purchases.parquet"] != before["purchases.parquet"]


def test_the_manifest_and_progress_line_say_where_a_steps_mcmc_time_went(demo_copy, tmp_path,
                                                                         monkeypatch):
    import time

    from models import sampling

    def fake_step(cfg):
        # what a Sampler and sample_checked record while a step fits a model
        sampling.MCMC_LOG.append({"event": "compile", "seconds": 0.01})
        sampling.MCMC_LOG.append({"event": "sample", "seconds": 0.02, "draws": 100,
                                  "tune": 50, "chains": 2})
        sampling.MCMC_LOG.append({"event": "checked", "min_ess_bulk": 450.0,
                                  "min_ess_tail": 410.0, "ok": True, "reran": False})
        time.sleep(0.05)
        return {"message": "fitted"}

    class FakeStep(pipeline.Step):
        def load(self):
            return fake_step

    monkeypatch.setattr(pipeline, "STEPS", (FakeStep("fake", "unused:run"),))
    sampling.MCMC_LOG.append({"event": "compile", "seconds": 99.0})  # before the step
    lines = []
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    res = pipeline.run(cfg, echo=lines.append)[0]
    mc = res["mcmc"]
    assert (mc["compiles"], mc["runs"], mc["draws"], mc["checked_fits"]) == (1, 1, 200, 1)
    assert (mc["min_ess_bulk"], mc["min_ess_tail"], mc["failed_checks"]) == (450.0, 410.0, 0)
    assert mc["other_seconds"] == pytest.approx(res["seconds"] - 0.03, abs=0.01)
    assert "MCMC compile 0.0 s, sampling 0.0 s" in lines[-1]
    assert sampling.MCMC_LOG == []
    assert pipeline.manifest(cfg, "fake")["mcmc"] == mc


def test_a_rerun_loads_the_models_it_compiled(demo_copy, tmp_path, monkeypatch):
    """A step forced to run again loads its compiled models from the results folder."""
    pytest.importorskip("nutpie")
    import numpy as np
    import pymc as pm

    from models import compiled, sampling

    if not compiled.supported():
        pytest.skip("nutpie release not followed by models.compiled")

    def fitting_step(cfg):
        with pm.Model() as m:
            shape = pm.HalfNormal("shape", 2.0)
            pm.Gamma("y", alpha=shape, beta=shape / 10.0, observed=np.arange(1.0, 30.0))
        s = sampling.Sampler(m, sampling.SamplerSettings(backend="nutpie"))
        return {"message": f"loaded {s.compile_loaded}"}

    class FitStep(pipeline.Step):
        def load(self):
            return fitting_step

    monkeypatch.delenv("SHOPBAYES_COMPILE_CACHE", raising=False)  # the results folder's
    monkeypatch.setattr(pipeline, "STEPS", (FitStep("fit", "unused:run"),))
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    lines: list[str] = []
    first = pipeline.run(cfg, echo=lines.append)[0]
    again = pipeline.run(cfg, force=True, echo=lines.append)[0]
    assert first["message"] == "loaded False" and first["mcmc"]["compiles_loaded"] == 0
    assert again["message"] == "loaded True" and again["mcmc"]["compiles_loaded"] == 1
    assert "(1 of 1 loaded from earlier runs)" in lines[-1]
    assert len(list((tmp_path / "res" / ".compiled").glob("*.nbc"))) == 2
    off = pipeline.run(replace(cfg, compile_cache=False), force=True, echo=lines.append)[0]
    assert off["mcmc"]["compiles_loaded"] == 0


def _toy(name: str, needs: tuple[str, ...] = (), uses: tuple[str, ...] = ()) -> pipeline.Step:
    return pipeline.Step(name, f"tests.analysis.toy_steps:{name}", needs, uses=uses,
                         description=f"toy {name}")


TOYS = (_toy("first"), _toy("second", ("first",)), _toy("beside"),
        _toy("last", ("second",), uses=("beside",)))


def test_concurrent_steps_wait_for_their_upstream_and_overlap_the_rest(demo_copy, tmp_path):
    """Two workers: `beside` runs while `first` does; `second` starts after `first`,
    `last` after both; results equal the sequential run's; an unchanged rerun reuses
    every step without a worker."""
    from tests.analysis.toy_steps import read_value

    seq = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "seq")
    # no memory budget: two steps never run before would otherwise not start together
    con = replace(load_config(None, data_dir=demo_copy, results_dir=tmp_path / "con"),
                  memory_budget_mib=0)
    lines: list[str] = []
    policy = os.environ.get("OMP_NUM_THREADS")
    a = pipeline.run(seq, steps=TOYS, jobs=1, echo=lambda s: None)
    b = pipeline.run(con, steps=TOYS, jobs=2, echo=lines.append)
    assert [r["status"] for r in b] == ["ok"] * 4 and [r["step"] for r in b] == [
        "first", "second", "beside", "last"]
    for name in ("first", "second", "beside", "last"):
        assert read_value(tmp_path / "con", name) == read_value(tmp_path / "seq", name)
        assert b[[r["step"] for r in b].index(name)]["summary"] == a[
            [r["step"] for r in a].index(name)]["summary"]
    t = {n: json.loads((tmp_path / "con" / n / "out.json").read_text()) for n in
         ("first", "second", "beside", "last")}
    assert t["beside"]["start"] < t["first"]["end"] and t["first"]["start"] < t["beside"]["end"]
    assert t["second"]["start"] >= t["first"]["end"]
    assert t["last"]["start"] >= max(t["second"]["end"], t["beside"]["end"])
    assert len({v["pid"] for v in t.values()} | {os.getpid()}) == 5  # a process per step
    # the first worker is spawned by the run; the others are forks of one server that
    # imported the step modules meanwhile, and every worker has the workers' environment
    assert t["first"]["parent"] == os.getpid()  # heads the longest chain: started first
    servers = {v["parent"] for n, v in t.items() if n != "first"}
    assert len(servers) == 1 and os.getpid() not in servers
    assert {v["omp_num_threads"] for v in t.values()} == {"1"}
    blas = pipeline.worker_env()["OPENBLAS_NUM_THREADS"]
    assert {v["blas_threads"] for v in t.values()} == {blas}
    assert os.environ.get("OMP_NUM_THREADS") == policy  # the run's own is left as it was
    assert any(line.strip().startswith("beside: ok in") for line in lines)
    record = pipeline.read_json(tmp_path / "con" / "run.json")
    assert record["jobs"] == 2 and [r["step"] for r in record["steps"]] == [r["step"] for r in b]
    assert record["seconds"] >= max(r["end"] for r in record["steps"]) > 0
    again = pipeline.run(con, steps=TOYS, jobs=2, echo=lambda s: None)
    assert all(r["reused"] for r in again)
    # a rerun that computed nothing leaves the record of the last one that did
    assert pipeline.read_json(tmp_path / "con" / "run.json") == record


def test_a_failed_or_dead_worker_fails_its_step_and_the_rest_goes_on(demo_copy, tmp_path):
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    steps = (_toy("fails"), _toy("second", ("fails",)), _toy("dies"), _toy("beside"),
             _toy("first"))
    res = {r["step"]: r for r in pipeline.run(cfg, steps=steps, jobs=2, echo=lambda s: None)}
    assert res["fails"]["status"] == "failed" and "planted failure" in res["fails"]["message"]
    assert res["second"]["status"] == "skipped" and "fails" in res["second"]["message"]
    assert res["dies"]["status"] == "failed" and "died" in res["dies"]["message"]
    assert pipeline.manifest(cfg, "dies")["status"] == "failed"
    assert res["beside"]["status"] == res["first"]["status"] == "ok"  # not taken along


def test_a_killed_steps_temporary_files_are_removed_when_it_runs_again(tmp_path):
    """A worker killed mid-write leaves a temporary result and a materialised table; the
    step's next run removes them before it starts (and says how many in its manifest)."""
    cfg = load_config(None, results_dir=tmp_path / "res")
    first = {r["step"]: r for r in pipeline.run(cfg, steps=(_toy("killed"), _toy("beside")),
                                                 jobs=2, echo=lambda s: None)}
    assert first["killed"]["status"] == "failed" and "died" in first["killed"]["message"]
    left = sorted(p.name for p in (tmp_path / "res" / "killed").iterdir()
                  if p.name != "manifest.json")
    assert len(left) == 2 and left[0].startswith(".materialised.pid")
    assert left[1].startswith(".summary.json.pid") and left[1].endswith(".tmp")
    again = pipeline.Step("killed", "tests.analysis.toy_steps:killed_rerun")
    lines: list[str] = []
    res = pipeline.run(cfg, steps=(again,), jobs=1, echo=lines.append)
    assert res[0]["status"] == "ok" and res[0]["summary"]["found"] == ["manifest.json"]
    assert "removed 2 temporary files of an earlier run that was killed" in lines[-1]
    assert pipeline.manifest(cfg, "killed")["leftovers_removed"] == 2
    # a --force run killed before it replaced current results: the run that reuses them
    # removes what it left
    left = tmp_path / "res" / "killed" / f".materialised.pid{ended_process_id()}.abcd1234"
    left.mkdir()
    for jobs in (1, 2):
        again = pipeline.run(cfg, steps=(pipeline.Step(
            "killed", "tests.analysis.toy_steps:killed_rerun"), _toy("beside")), jobs=jobs,
            echo=lambda s: None)
        assert {r["step"]: r for r in again}["killed"]["reused"] and not left.exists()
        left.mkdir()


def test_the_longest_chain_of_steps_starts_first(demo_copy, tmp_path):
    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    level = pipeline.critical_path(cfg, list(TOYS))  # never ran: 60 s each
    assert level == {"first": 180.0, "second": 120.0, "beside": 120.0, "last": 60.0}


def test_jobs_come_from_the_environment_and_must_be_a_whole_number(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOPBAYES_JOBS", "3")
    assert load_config(None).jobs == 3 and load_config(None, jobs=1).jobs == 1
    monkeypatch.setenv("SHOPBAYES_JOBS", "two")
    with pytest.raises(ValueError, match="SHOPBAYES_JOBS"):
        load_config(None)
    monkeypatch.delenv("SHOPBAYES_JOBS")
    (tmp_path / "s.toml").write_text("jobs = 0\n")
    with pytest.raises(ValueError, match="jobs"):
        load_config(tmp_path / "s.toml")


def _same_results(a: Path, b: Path) -> list[str]:
    """What differs between two results folders, less run times and paths: Parquet as
    rows in any order (the engine writes in parallel), CSV and JSON exactly. A saved
    model's checksum is left out: a pickled scikit-learn boosting keeps the OpenMP thread
    count it binned with (``_BinMapper.n_threads``; one in a worker, the CPUs in the
    sequential run), while its predictions, written beside it, are compared exactly."""
    import json as _json

    import pandas as pd

    timing = ("seconds", "timing", "finished", "peak_rss", "mcmc", "data_dir", "run_start",
              "run_end", "sha256")

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if not any(t in k for t in timing)}
        return [strip(v) for v in o] if isinstance(o, list) else o

    diffs = []
    for f in sorted(p for p in a.rglob("*") if p.is_file() and p.name != "run.json"):
        g = b / f.relative_to(a)
        if not g.exists():
            diffs.append(f"{f.relative_to(a)}: missing")
        elif f.suffix == ".parquet":
            x, y = pd.read_parquet(f), pd.read_parquet(g)
            cols = [c for c in x.columns if not any(t in c for t in timing)]
            x, y = (d[cols].sort_values(cols).reset_index(drop=True) for d in (x, y))
            if not x.equals(y):
                diffs.append(f"{f.relative_to(a)}: rows differ")
        elif f.suffix in (".json", ".csv"):
            same = (strip(_json.loads(f.read_text())) == strip(_json.loads(g.read_text()))
                    if f.suffix == ".json" else f.read_bytes() == g.read_bytes())
            if not same:
                diffs.append(f"{f.relative_to(a)}: differs")
    return diffs


@pytest.mark.slow
def test_the_concurrent_run_gives_the_sequential_runs_results(demo_copy, one_click_demo,
                                                              tmp_path):
    """Every step of the pipeline on small data, one after the other in this process and
    two at a time in workers: every result file the same (draws sized by the checks, so
    the number of draws is itself a result that must match). About 7 minutes."""
    from dataclasses import replace

    from analysis.config import SamplerConfig
    from analysis.demo.apparel import write_apparel_demo
    from tests.conftest import copy_one_click, quick_one_click

    write_apparel_demo(tmp_path / "apparel", clients=1500, seed=3)
    base = load_config(None, data_dir=demo_copy)
    base = replace(base, sampler=SamplerConfig(draws=1000, tune=200, min_draws=150),
                   sampler_overrides={},
                   apparel=replace(base.apparel, data_dir=str(tmp_path / "apparel"),
                                   shap_clients=200),
                   next_purchase=replace(base.next_purchase, shap_clients=200,
                                         predict_draws=100))
    base = quick_one_click(base, copy_one_click(one_click_demo, tmp_path))
    runs = {}
    for jobs in (1, 2):
        cfg = replace(base, results_dir=tmp_path / f"jobs{jobs}")
        runs[jobs] = {r["step"]: r for r in pipeline.run(cfg, jobs=jobs, steps=ALL_STEPS,
                                                         echo=lambda s: None)}
        assert all(r["status"] == "ok" for r in runs[jobs].values()), {
            k: r["message"] for k, r in runs[jobs].items() if r["status"] != "ok"}
    assert _same_results(tmp_path / "jobs1", tmp_path / "jobs2") == []
    record = pipeline.read_json(tmp_path / "jobs2" / "run.json")
    spans = {r["step"]: (r["start"], r["end"]) for r in record["steps"]}
    assert record["jobs"] == 2 and any(  # two steps did run at once
        spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
        for a in spans for b in spans if a < b)


def test_jobs_below_one_are_refused_by_the_cli(demo_copy, tmp_path, capsys):
    assert main(["run", "--jobs", "0", "--data", str(demo_copy), "--results",
                 str(tmp_path / "r")]) == 2
    assert "--jobs 0" in capsys.readouterr().err


def test_arvizs_empty_warm_up_warning_is_quiet_in_a_step():
    """nutpie's trace without warm-up draws made ArviZ warn "More chains (2) than draws
    (0)" in the CLI output of steps that fit in two threads; a step's process ignores it
    (and only it)."""
    import warnings

    import arviz as az
    import numpy as np

    def warned() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if quiet:
                pipeline.quiet_known_warnings()
            az.from_dict(posterior={"x": np.zeros((2, 50))},
                         warmup_posterior={"x": np.zeros((2, 0))}, save_warmup=True)
            warnings.warn("More chains than expected", UserWarning, stacklevel=1)
        return [str(w.message) for w in caught]

    quiet = False
    assert any(m.startswith("More chains (2) than draws (0)") for m in warned())
    quiet = True
    assert warned() == ["More chains than expected"]


def test_memory_a_step_freed_goes_back_before_the_next():
    import gc

    def rss_mib() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs Linux /proc")
    gc.disable()  # what a step leaves: objects in reference cycles, freed only by gc
    try:
        before = rss_mib()
        cycles = []
        for i in range(300_000):
            a: list = [str(i) * 20]
            a.append(a)
            cycles.append(a)
        grown = rss_mib() - before
        del cycles, a
        pipeline.release_memory()
        assert grown > 50 and rss_mib() - before < 0.3 * grown, (before, grown, rss_mib())
    finally:
        gc.enable()


def test_a_step_after_others_in_the_same_process_reports_its_own_peak(tmp_path):
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc")
    cfg = load_config(None, results_dir=tmp_path / "res")
    res = {r["step"]: r for r in pipeline.run(cfg, steps=(_toy("big"), _toy("small")),
                                               jobs=1, echo=lambda s: None)}
    assert res["big"]["status"] == res["small"]["status"] == "ok"
    # big held 381 MiB; small, run next in the same process, did not
    assert res["big"]["peak_rss_mib"] > res["small"]["peak_rss_mib"] + 300, res


def test_workers_end_when_the_run_is_killed(tmp_path):
    """SIGKILL of the run (no chance to clean up) still ends its workers: each watches
    the run's process (the fork server, their parent, lives as long as they do)."""
    import signal
    import subprocess
    import sys

    from tests.analysis.processes import ends_within, wait_for_pid

    if not sys.platform.startswith("linux"):
        pytest.skip("pidfd_open is Linux's")
    res = tmp_path / "res"
    code = ("from analysis import pipeline\nfrom analysis.config import load_config\n"
            "from tests.analysis.test_pipeline import _toy\n"
            f"cfg = load_config(None, results_dir=r'{res}')\n"
            "pipeline.run(cfg, steps=(_toy('beside'), _toy('sleeper')), jobs=2,"
            " echo=lambda s: None)\n")
    run = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    try:
        worker = wait_for_pid(res / "sleeper.pid")
        assert worker != run.pid
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        assert ends_within(worker, 15.0), "the worker outlived the killed run"
    finally:
        if run.poll() is None:
            run.kill()


def test_a_workers_joblib_pool_leaves_no_shared_folders_behind(tmp_path):
    """A step whose joblib pool shared an array through a temporary folder ends in a
    worker that leaves with os._exit: the folder is removed with the pool, not found
    later by the resource tracker, which then prints a 'leaked folder objects' warning
    into the run's output."""
    from tests.conftest import run_python

    code = ("from analysis import pipeline\nfrom analysis.config import load_config\n"
            "from tests.analysis.test_pipeline import _toy\n"
            f"cfg = load_config(None, results_dir=r'{tmp_path / 'res'}', memory_budget_mib=0)\n"
            # twice: the step runs in the worker the run spawns, then (with the timings of
            # the first run ordering the steps) in one forked from the server
            "for force in (False, True):\n"
            "    res = pipeline.run(cfg, steps=(_toy('memmapped'), _toy('beside')), jobs=2,"
            " echo=lambda s: None, force=force)\n"
            "    assert [r['status'] for r in res] == ['ok', 'ok'], res\n")
    run = run_python(code)
    assert "leaked folder" not in run.stderr, run.stderr[-3000:]


def test_workers_keep_pymcs_sampling_lines_out_of_the_progress_display(tmp_path):
    """The CLI's logging setting is not inherited by a fork server's children: each
    worker makes it again ("Sampling: [...]" lines came back with --jobs 2)."""
    import logging

    cfg = load_config(None, results_dir=tmp_path / "res", memory_budget_mib=0)
    steps = (_toy("log_level"), _toy("beside"), _toy("first"))
    res = {r["step"]: r for r in pipeline.run(cfg, steps=steps, jobs=2, echo=lambda s: None)}
    assert res["log_level"]["summary"]["level"] == logging.WARNING


def _manifest(results: Path, name: str, peak_mib: float) -> None:
    (results / name).mkdir(parents=True, exist_ok=True)
    (results / name / "manifest.json").write_text(json.dumps(
        {"step": name, "status": "ok", "peak_rss_mib": peak_mib, "seconds": 1.0}))


def test_memory_plan_expects_last_peaks_and_what_upstream_steps_measured(tmp_path):
    cfg = load_config(None, data_dir=tmp_path, results_dir=tmp_path / "res")
    cfg = replace(cfg, memory_budget_mib=2700)
    _manifest(tmp_path / "res", "second", 1400.0)
    _manifest(tmp_path / "res", "beside", 1200.0)
    plan = pipeline.MemoryPlan(cfg, list(TOYS), jobs=2)
    # last peaks; a step that never ran: an equal share of the budget
    assert plan.expected_mib("second") == 1400 and plan.expected_mib("first") == 1350
    assert plan.admits("second", ["beside"]) and plan.admits("first", ["second"]) is False
    assert plan.admits("first", [])  # a step alone always runs
    # two steps never run before: an equal share each, together not below the budget
    fresh = pipeline.MemoryPlan(replace(cfg, results_dir=tmp_path / "new"), list(TOYS), 2)
    assert not fresh.admits("first", ["beside"])
    # `last` builds on `second`, which builds on `first`: a large `first` in this run
    # (a store larger than last time) raises what both are expected to take
    plan.measure("first", 2000.0)
    assert plan.expected_mib("second") == 2000 and plan.expected_mib("last") == 2000
    assert plan.expected_mib("beside") == 1200 and not plan.admits("second", ["beside"])
    assert pipeline.MemoryPlan(replace(cfg, memory_budget_mib=0), list(TOYS), 2).admits(
        "first", ["second", "beside"])


def test_steps_whose_peaks_do_not_fit_together_run_one_after_the_other(demo_copy, tmp_path):
    """`first` and `beside` are independent and would run at once; with last peaks of
    800 MiB each and a budget of 1,000 MiB they do not, and the run says why."""
    res = tmp_path / "res"
    cfg = replace(load_config(None, data_dir=demo_copy, results_dir=res),
                  memory_budget_mib=1000)
    for name in ("first", "second", "beside", "last"):
        _manifest(res, name, 800.0)
    lines: list[str] = []
    out = pipeline.run(cfg, steps=TOYS, jobs=2, force=True, echo=lines.append)
    assert [r["status"] for r in out] == ["ok"] * 4
    t = {n: json.loads((res / n / "out.json").read_text()) for n in ("first", "beside")}
    assert t["beside"]["start"] >= t["first"]["end"] or t["first"]["start"] >= t["beside"]["end"]
    assert any("beside waits: expected peak 800 MiB beside 800 MiB running (first) would not "
               "stay below the memory budget of 1,000 MiB" in line for line in lines)
