from pathlib import Path

import pytest

from analysis import pipeline
from analysis.cli import main
from analysis.config import load_config


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
