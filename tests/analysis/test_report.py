from pathlib import Path

from analysis.report import parse_qmd, render_project
from tests.conftest import quick_one_click

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


def test_full_report_on_small_synthetic_results(demo_copy, one_click_demo, tmp_path):
    """Every step on small data, then the report: sections, figures, key numbers, no error."""
    import re
    import shutil

    from analysis import pipeline
    from analysis.config import SamplerConfig, load_config

    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    cfg = cfg.__class__(**{**cfg.__dict__, "sampler": SamplerConfig(draws=200, tune=200),
                           "sampler_overrides": {}})
    cfg = quick_one_click(cfg, one_click_demo)
    res = {r["step"]: r for r in pipeline.run(cfg)}
    assert all(r["status"] == "ok" for r in res.values()), res
    shutil.copytree(ROOT / "report", tmp_path / "report", ignore=shutil.ignore_patterns("_site"))
    html, oc_html = render_project(tmp_path / "report",
                                   {"results_dir": str(tmp_path / "res")})
    assert oc_html.name == "one_click.html"
    oc = oc_html.read_text()
    for section in ("The answer first", "The data and its cleaning",
                    "Two models of P(activity declines)", "Why: what drives a decline",
                    "What to do: segments and offers", "Appendix: priors and diagnostics"):
        assert section in oc, section
    assert "cross-validated ROC-AUC" in oc and "They agree on" in oc
    assert "What to offer." in oc and "стандартт -&gt; стандарт" in oc
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64', oc)) >= 4
    assert "no result to show" not in oc and "Traceback" not in oc[oc.index("<body"):]
    text = html.read_text()
    for section in ("The answer first", "Data quality", "Gender restoration",
                    "Campaign 1: did the personal discount pay off?",
                    "Segments: who the clients are",
                    "Campaign 2: billboard discount days in city 1134",
                    "Propensity: whom to contact in city 1188, and about what",
                    "Appendix: methods, priors and diagnostics"):
        assert section in text, section
    assert "P(conversion uplift &gt; 0)" in text or "P(conversion uplift > 0)" in text
    assert "Recommendation:" in text and "Placebo" in text
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64', text)) >= 12
    assert "ICL chose k =" in text and "Held-out clients: discrimination and calibration" in text
    assert "How to work with each cluster" in text and "targets.csv" in text
    # the renderer raises on a failing chunk; no stderr or traceback output may be shown
    body = text[text.index("<body"):]
    assert "Traceback" not in body and "jupyter.stderr\"" not in body
    # a failed convergence check must be visible, never silent
    import json

    for step in ("uplift", "campaign2", "propensity"):
        s = json.loads((tmp_path / "res" / step / "summary.json").read_text())
        if not s["convergence"]["ok"]:
            assert "failed convergence" in text.lower() or "FAILED" in text
    assert "no result to show" not in text
