from pathlib import Path

from analysis.report import parse_qmd, render_project

ROOT = Path(__file__).resolve().parents[2]


def test_parse_qmd_reads_front_matter_chunks_and_options():
    meta, parts = parse_qmd('---\ntitle: "T"\n---\n\nText\n\n```{python}\n#| label: a\n'
                            '#| echo: false\nx = 1\n```\n')
    assert meta["title"] == "T" and parts[0] == "Text"
    assert parts[1].options == {"label": "a", "echo": False} and parts[1].code == "x = 1"


def test_report_renders_with_missing_steps_as_warnings(tmp_path):
    import shutil

    shutil.copytree(ROOT / "report", tmp_path / "report",
                    ignore=shutil.ignore_patterns("_site"))
    (tmp_path / "results").mkdir()
    out = render_project(tmp_path / "report", {"results_dir": str(tmp_path / "results")})
    html = out[0].read_text()
    assert out[0] == tmp_path / "report" / "_site" / "index.html"
    assert "Campaign 1: no result to show" in html and "Traceback" not in html
    assert "<script>alert" not in html
