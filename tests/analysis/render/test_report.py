import re
from pathlib import Path

import pytest

from analysis.render.helpers import box, md_escape, pipe_table, table
from analysis.render.pdf import missing_tools
from analysis.render.report import RenderError, formats_to_render, parse_qmd, render_project
from tests.conftest import copy_one_click, quick_one_click, rewrite_csv

ROOT = Path(__file__).resolve().parents[3]
# a favourite category name that tries to run script and break Markdown and typst
HOSTILE = '<img src=x onerror=alert(1)>*x* | #panic("typst") $y$'


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
    out = render_project(tmp_path / "report", {"results_dir": str(tmp_path / "results")},
                         to="html")
    html = out[0].read_text()
    assert out[0] == tmp_path / "report" / "_site" / "index.html"
    assert "Campaign 1: no result to show" in html and "Traceback" not in html
    assert "<script>alert" not in html


def test_results_from_an_older_version_show_warning_boxes_not_tracebacks(tmp_path, capsys):
    """A summary written by an older version lacks keys the report now reads."""
    import json
    import re
    import shutil

    shutil.copytree(ROOT / "report", tmp_path / "report",
                    ignore=shutil.ignore_patterns("_site"))
    old = tmp_path / "results" / "uplift"
    old.mkdir(parents=True)
    (old / "manifest.json").write_text(json.dumps({"step": "uplift", "status": "ok"}))
    (old / "summary.json").write_text(json.dumps({"convergence": {"ok": True}}))
    from analysis.cli import main

    # the command line writes the report, then fails naming the chunk
    rc = main(["report", str(tmp_path / "report"), "--results", str(tmp_path / "results"),
               "--to", "html"])
    assert rc == 1
    assert "index.qmd, chunk 'executive-summary': KeyError" in capsys.readouterr().err
    html = (tmp_path / "report" / "_site" / "index.html").read_text()
    body = html[html.index("<body"):]
    assert re.search(r"could not be drawn from the results \(KeyError: (&#x27;|')hierarchical",
                     body)
    assert "Traceback" not in body and "jupyter.stderr" not in body
    # the rest of the report is still there
    assert "Gender restoration: no result to show" in body and "Appendix" in body
    out = render_project(tmp_path / "report", {"results_dir": str(tmp_path / "results")},
                         to="html", strict=False)
    assert out[0].read_text() == html


def test_data_text_is_escaped_in_markdown_and_tables():
    import pandas as pd

    assert md_escape("<b>x</b> *y* | 1,5") == r"\<b\>x\<\/b\> \*y\* \| 1\,5"
    t = table(pd.DataFrame({"name": ["<script>alert(1)</script>"], "p": [0.5]}), "Cap <i>")
    assert "<script>" not in t.html and "&lt;script&gt;" in t.html
    assert t.markdown.startswith(r"*Cap \<i\>*") and r"\<script\>" in t.markdown
    lines = pipe_table(pd.DataFrame({"a_b": [1.25], "t": ["x"]})).splitlines()
    assert lines[1].endswith("--: | :--- |") and lines[2] == r"| 1\.25 | x |"


def test_format_choice_follows_quarto_yml_and_refuses_unknown_formats():
    project = {"format": {"html": {}, "typst": {}}}
    assert formats_to_render(project, None) == ["html", "typst"]
    assert formats_to_render(project, "html") == ["html"]
    assert formats_to_render({}, None) == ["html"]
    with pytest.raises(RenderError, match="unknown format"):
        formats_to_render(project, "docx")


def test_pdf_needs_the_tools_and_says_how_to_install_them(monkeypatch):
    import analysis.render.report as report

    monkeypatch.setattr(report, "missing_tools", lambda: "PDF output needs pandoc and typst")
    with pytest.warns(UserWarning, match="PDF skipped"):
        assert formats_to_render({"format": {"html": {}, "typst": {}}}, None) == ["html"]
    with pytest.raises(RenderError, match="needs pandoc and typst"):
        formats_to_render({}, "typst")


@pytest.mark.slow
def test_full_report_on_small_synthetic_results(demo_copy, one_click_demo, tmp_path):
    """Every step on small data, then the report: sections, figures, key numbers, no error.

    Slow (250 to 330 s: every step, then the render), so it runs in ``make test-slow``; the
    default run renders the report on stored results in the tests below."""
    import re
    import shutil

    from analysis import pipeline
    from analysis.config import SamplerConfig, load_config

    cfg = load_config(None, data_dir=demo_copy, results_dir=tmp_path / "res")
    cfg = cfg.__class__(**{**cfg.__dict__, "sampler": SamplerConfig(draws=200, tune=200),
                           "sampler_overrides": {}})
    oc_data = copy_one_click(one_click_demo, tmp_path)
    rewrite_csv(oc_data, "market_file.csv", lambda df: df.replace(
        {"Популярная_категория": {df["Популярная_категория"].mode()[0]: HOSTILE}}))
    cfg = quick_one_click(cfg, oc_data)
    from dataclasses import replace

    from analysis.demo.apparel import write_apparel_demo

    write_apparel_demo(tmp_path / "apparel", clients=1500, seed=3)
    cfg = replace(cfg, apparel=replace(cfg.apparel, data_dir=str(tmp_path / "apparel"),
                                       shap_clients=200),
                  next_purchase=replace(cfg.next_purchase, shap_clients=200,
                                        predict_draws=100))
    res = {r["step"]: r for r in pipeline.run(cfg)}
    assert all(r["status"] == "ok" for r in res.values()), {
        k: (r["status"], r["message"]) for k, r in res.items()}
    shutil.copytree(ROOT / "report", tmp_path / "report", ignore=shutil.ignore_patterns("_site"))
    html, pdf, ap_html, ap_pdf, oc_html, oc_pdf = render_project(
        tmp_path / "report", {"results_dir": str(tmp_path / "res")})
    assert (oc_html.name, pdf.name, oc_pdf.name, ap_html.name, ap_pdf.name) == (
        "one_click.html", "index.pdf", "one_click.pdf", "apparel.html", "apparel.pdf")
    ap = ap_html.read_text()
    for section in ("The answer first", "Two models, one question", "What drives the forecast",
                    "Diagnostics"):
        assert section in ap, section
    assert "could not be drawn" not in ap and "Traceback" not in ap
    oc = oc_html.read_text()
    # the hostile category reaches the report (tables, offers) only as text
    assert not re.search(r"<[^<>]*onerror", oc), "data text became an HTML tag"
    assert "&lt;img src=x onerror=alert(1)&gt;" in oc
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
                    "Targeting city 1188: whom to contact, about what, how many",
                    "Who buys again soon, and what clients are worth",
                    "Appendix: methods, priors and diagnostics"):
        assert section in text, section
    assert "Expected margin over the next 90 days by cluster" in text
    assert "P(conversion uplift &gt; 0)" in text or "P(conversion uplift > 0)" in text
    assert "Recommendation:" in text and "Placebo" in text
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64', text)) >= 12
    assert "ICL chose k =" in text and "discrimination and calibration" in text
    assert "How to work with each cluster" in text and "targets.csv" in text
    assert "best-category score no other client has" in text and "expected gain" in text
    assert "Qini coefficient" in text and "X-learner" in text and "Budget curve" in text
    assert "city 1134, days 25, 35" in text and "discount days" in text
    assert re.search(r"inside the replicated 94% interval: \d+ of \d+ cluster", text)
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
    # every @fig-... of the text resolved to a link to its numbered figure
    refs = re.findall(r'<a href="#(fig-[\w-]+)">Figure (\d+)</a>', text)
    assert len(refs) >= 5 and "?@fig" not in text
    for label, n in refs:
        assert f'id="{label}"' in text and f"<em>Figure {n}: " in text
    _check_pdfs(pdf, oc_pdf)


def _check_pdfs(pdf, oc_pdf):
    """The PDFs carry the same sections, key numbers, figures and escaped data text."""
    from pypdf import PdfReader

    doc = PdfReader(pdf)
    text = " ".join(" ".join(p.extract_text().split()) for p in doc.pages)
    for section in ("1 The answer first", "2 Data quality", "3 Gender restoration",
                    "Campaign 1: did the personal discount pay off?", "Placebo",
                    "Appendix: methods, priors and diagnostics"):
        assert section in text, section
    assert "P(conversion uplift > 0)" in text and "Recommendation:" in text
    assert "convergence" in text and "Traceback" not in text
    assert re.search(r"in Figure \d+; what each cluster buys", text) and "?@fig" not in text
    images = sum(len(p.images) for p in doc.pages)
    assert images >= 12, images
    oc = PdfReader(oc_pdf)
    oc_text = " ".join(" ".join(p.extract_text().split()) for p in oc.pages)
    assert "cross-validated ROC-AUC" in oc_text and "What to offer." in oc_text
    assert 'onerror=alert(1)>*x* | #panic("typst") $y$' in oc_text
    assert sum(len(p.images) for p in oc.pages) >= 4


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_report_refuses_a_results_folder_without_results(tmp_path, capsys, monkeypatch, state):
    """Exit 1 naming the folder, not a report whose every section says 'not run'; a
    relative -P results_dir: is taken from where the command runs, not from report/."""
    from analysis.cli import main

    results = tmp_path / "res"
    if state == "empty":
        results.mkdir()
    monkeypatch.chdir(tmp_path)
    rc = main(["report", str(ROOT / "report"), "-P", "results_dir:res", "--to", "html"])
    err = capsys.readouterr().err
    assert rc == 1
    what = "not found" if state == "missing" else "holds no step's results"
    assert f"error: results folder {results} {what}" in err
    assert not (ROOT / "report" / "res").exists()


def test_papermill_injects_parameters_the_way_our_renderer_does():
    """Real Quarto hands `-P name:value` to papermill (a project dependency): the report's
    parameters cell is tagged for it, and both inject the same assignment after it."""
    from papermill.parameterize import parameterize_notebook

    from analysis.render.report import _notebook

    _, parts = parse_qmd((ROOT / "report" / "index.qmd").read_text(encoding="utf-8"))
    ours = _notebook(parts, {"results_dir": "/x/results"})
    plain = _notebook(parts, {})
    for cell in plain.cells:  # as in the notebook Quarto writes, every cell has tags
        cell.metadata.setdefault("tags", [])
    plain.metadata["papermill"] = {}  # papermill's execute_notebook sets it before
    theirs = parameterize_notebook(plain, {"results_dir": "/x/results"},
                                   kernel_name="python3", language="python")
    def injected(nb):
        i = next(i for i, c in enumerate(nb.cells)
                 if "injected-parameters" in c.metadata.get("tags", []))
        assert "parameters" in nb.cells[i - 1].metadata["tags"]
        return i, nb.cells[i].source
    (i_ours, src_ours), (i_theirs, src_theirs) = injected(ours), injected(theirs)
    assert i_ours == i_theirs
    assert "results_dir = '/x/results'" in src_ours
    assert 'results_dir = "/x/results"' in src_theirs


def test_numbered_visible_captions_and_a_table_of_contents(tmp_path):
    """As Quarto: a chunk labelled fig-... with fig-cap gets "Figure N: ..." under it (not
    only in the alt text), and toc: true gives the page a table of contents."""
    (tmp_path / "_quarto.yml").write_text(
        "project:\n  output-dir: _site\nformat:\n  html:\n    toc: true\n")
    chunk = ("```{{python}}\n#| label: {label}\n#| fig-cap: \"{cap}\"\n"
             "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\n```\n")
    (tmp_path / "doc.qmd").write_text(
        '---\ntitle: "T"\n---\n\n## First part\n\nRevenue is in @fig-two; write to '
        'a@fig-one.org.\n\n'
        + chunk.format(label="fig-one", cap="Orders by day.")
        + "\n### A detail\n\n"
        + chunk.format(label="not-a-figure", cap="Unnumbered.")
        + "\n## Second part\n\n"
        + chunk.format(label="fig-two", cap="Revenue by day."))
    out = render_project(tmp_path, {}, to="html")
    html = out[0].read_text()
    # @fig-two resolves to a link to the second figure; an e-mail address is left alone
    assert 'Revenue is in <a href="#fig-two">Figure 2</a>' in html
    assert "a@fig-one.org" in html and 'id="fig-two"' in html
    assert "<em>Figure 1: Orders by day.</em>" in html
    assert "<em>Figure 2: Revenue by day.</em>" in html
    assert "<em>Unnumbered.</em>" in html and 'alt="Figure 1: Orders by day."' in html
    nav = html[html.index('<nav id="TOC"'):html.index("</nav>")]
    assert [t for t in ("First part", "A detail", "Second part") if t in nav] == [
        "First part", "A detail", "Second part"]
    assert 'href="#First-part"' in nav and 'id="First-part"' in html
    assert html.index('<nav id="TOC"') < html.index('id="First-part"')


def test_a_copied_project_renders_with_its_own_code(tmp_path):
    """The chunks import the analysis package of the project the report sits in, not the
    tree the editable install points at."""
    import shutil

    copy = tmp_path / "moved"
    shutil.copytree(ROOT / "report", copy / "report", ignore=shutil.ignore_patterns("_site"))
    shutil.copytree(ROOT / "analysis", copy / "analysis",
                    ignore=shutil.ignore_patterns("__pycache__"))
    helpers = copy / "analysis" / "render" / "helpers.py"
    text = helpers.read_text(encoding="utf-8")
    marker = "def missing_step_box(results: Path, step: str, title: str) -> Output:\n"
    assert marker in text
    helpers.write_text(text.replace(marker, marker.replace("title: str", "title_: str")
                                    + "    title = title_ + ' (the moved copy)'\n"),
                       encoding="utf-8")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "clean").mkdir()  # a results folder with one step's files
    (tmp_path / "results" / "clean" / "manifest.json").write_text("{}")
    out = render_project(copy / "report", {"results_dir": str(tmp_path / "results")},
                         to="html")
    assert "Campaign 1 (the moved copy): no result to show" in out[0].read_text()


def test_chunk_outputs_give_quarto_no_reason_to_add_cdn_scripts(tmp_path):
    """Quarto adds require.js and jQuery from a CDN when a chunk output holds text/html or
    application/javascript (quarto-cli src/core/jupyter/widgets.ts): the executed report
    has none; the HTML form rides in the output metadata for shopbayes's renderer."""
    import re
    import shutil

    from nbclient import NotebookClient

    from analysis.render.helpers import HTML_FORM
    from analysis.render.report import _notebook

    shutil.copytree(ROOT / "report", tmp_path / "report",
                    ignore=shutil.ignore_patterns("_site"))
    (tmp_path / "results" / "clean").mkdir(parents=True)
    _, parts = parse_qmd((tmp_path / "report" / "index.qmd").read_text(encoding="utf-8"))
    nb = _notebook(parts, {"results_dir": str(tmp_path / "results")})
    NotebookClient(nb, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(tmp_path / "report")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type in ("display_data", "execute_result")]
    assert len(outputs) > 5  # the missing-step boxes
    assert not [o for o in outputs if {"text/html", "application/javascript"} & set(o.data)]
    assert all(HTML_FORM in o.metadata for o in outputs if "text/markdown" in o.data)
    # and shopbayes's own page still shows the HTML boxes
    out = render_project(tmp_path / "report", {"results_dir": str(tmp_path / "results")},
                         to="html")
    page = out[0].read_text()
    assert '<div class="callout callout-warning"' in page
    # nor does shopbayes's own page load anything (nbconvert's require.js, MathJax and
    # mermaid.js)
    assert re.findall(r'(?:src|href)="https?://[^"]*"|import\("https?://', page) == []


def test_crossrefs_resolve_and_unresolved_ones_warn_as_in_quarto():
    from analysis.render.report import resolve_crossrefs

    text, missing = resolve_crossrefs("See @fig-a, @fig-b-c. and @fig-zz; x@fig-a.",
                                      {"fig-a": 1, "fig-b-c": 3})
    assert text == ("See [Figure 1](#fig-a), [Figure 3](#fig-b-c). and ?\\@fig-zz; "
                    "x@fig-a.")
    assert missing == ["fig-zz"]


def test_number_sections_when_asked(tmp_path):
    (tmp_path / "_quarto.yml").write_text(
        "format:\n  html:\n    toc: true\n    number-sections: true\n")
    (tmp_path / "doc.qmd").write_text('---\ntitle: "T"\n---\n\n## Alpha\n\n### One\n\n'
                                      "### Two\n\n## Beta\n\n### Three\n")
    html = render_project(tmp_path, {}, to="html")[0].read_text()
    numbers = re.findall(r'<span class="header-section-number">([\d.]+)</span> (\w+)', html)
    assert numbers == [("1", "Alpha"), ("1.1", "One"), ("1.2", "Two"), ("2", "Beta"),
                       ("2.1", "Three")]
    nav = html[html.index('<nav id="TOC"'):html.index("</nav>")]
    assert "1.2 Two" in re.sub(r"<[^>]+>", "", nav)


@pytest.mark.skipif(missing_tools() is not None, reason="pandoc/typst not installed")
def test_pdf_captions_carry_labels_so_crossrefs_land(tmp_path):
    """typst refuses a link to a label that does not exist: the PDF compiling proves that
    @fig-... landed on the numbered caption; the caption text is in the PDF."""
    from pypdf import PdfReader

    (tmp_path / "_quarto.yml").write_text("format:\n  typst:\n    toc: false\n")
    (tmp_path / "doc.qmd").write_text(
        '---\ntitle: "T"\n---\n\n## Part\n\nSee @fig-one.\n\n```{python}\n'
        '#| label: fig-one\n#| fig-cap: "Orders by day."\nimport matplotlib.pyplot as plt\n'
        "plt.plot([1, 2])\nplt.show()\n```\n")
    pdf = render_project(tmp_path, {}, to="typst")[0]
    text = " ".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "See Figure 1." in text and "Figure 1: Orders by day." in text


def test_boxes_are_callouts_except_in_typst_which_needs_no_package():
    """Quarto's typst callouts import @preview/fontawesome (downloaded by typst): the
    box's typst form is a plain block; every other format gets the callout."""
    import pypandoc

    from analysis.render.pdf import FILTER

    md = box("warning", "Campaign 2 was skipped").markdown
    assert '::: {.content-visible unless-format="typst"}\n::: {.callout-warning}' in md
    typ = pypandoc.convert_text(md, "typst", format="markdown",
                                extra_args=[f"--lua-filter={FILTER}"])
    assert "callout" not in typ and "@preview" not in typ
    assert typ.count('fill: rgb("#fff3cd")') == 1 and "Campaign 2 was skipped" in typ
    html = pypandoc.convert_text(md, "html", format="markdown")
    assert "callout-warning" in html  # pandoc keeps both divs; Quarto keeps this one
    # no chunk or text of the report writes a callout of its own
    for qmd in (ROOT / "report").glob("*.qmd"):
        assert ".callout" not in qmd.read_text(encoding="utf-8"), qmd


def test_the_html_theme_needs_no_web_font():
    """cosmo imports Google Fonts unless $web-font-path is false (quarto-cli's cosmo.scss)."""
    import yaml

    project = yaml.safe_load((ROOT / "report" / "_quarto.yml").read_text(encoding="utf-8"))
    theme = project["format"]["html"]["theme"]
    layers = theme if isinstance(theme, list) else [theme]
    scss = [ROOT / "report" / t for t in layers if str(t).endswith(".scss")]
    assert scss, "a Bootswatch theme without an scss layer loads its web font"
    text = "".join(f.read_text(encoding="utf-8") for f in scss)
    assert re.search(r"^\$web-font-path:\s*false;", text, re.M)
    assert "http" not in text and "@import" not in text


def _network_namespace() -> bool:
    import shutil
    import subprocess

    return bool(shutil.which("unshare") and shutil.which("ip")) and subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True
    ).returncode == 0


@pytest.mark.skipif(missing_tools() is not None, reason="pandoc/typst not installed")
@pytest.mark.skipif(not _network_namespace(), reason="no user network namespace (unshare -rn)")
def test_report_renders_html_and_pdf_with_no_network(tmp_path):
    """``shopbayes report`` in a network namespace with only loopback (no DNS, no route): the
    PDF (warning boxes included: every step is missing) and the HTML are written, and the
    page references nothing on the network."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "report", tmp_path / "report",
                    ignore=shutil.ignore_patterns("_site"))
    shutil.copytree(ROOT / "analysis", tmp_path / "analysis",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "models", tmp_path / "models",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "results" / "clean").mkdir(parents=True)
    (tmp_path / "results" / "clean" / "manifest.json").write_text("{}")
    # the kernel talks to the renderer over loopback, the one interface brought up
    offline = "ip link set lo up && exec \"$@\""
    run = subprocess.run(
        ["unshare", "-rn", "sh", "-c", offline, "sh", sys.executable, "-m", "analysis.cli",
         "report", "--results", str(tmp_path / "results")], cwd=tmp_path,
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    site = tmp_path / "report" / "_site"
    assert (site / "index.pdf").stat().st_size > 10_000
    page = (site / "index.html").read_text(encoding="utf-8")
    assert "no result to show" in page
    assert re.findall(r"""(?:src|href)=["']?https?://|url\(["']?https?://|@import"""
                      r"""|import\(["']https?://""", page) == []


def test_an_unchanged_render_is_kept_and_any_change_renders_again(tmp_path, capsys):
    """As Quarto's freeze, for the whole render: the same results (manifests, run record),
    project files and options keep the last documents; a change to any renders again."""
    from analysis.cli import main
    from analysis.render.report import last_render

    proj, res = tmp_path / "proj", tmp_path / "res"
    proj.mkdir()
    (res / "clean").mkdir(parents=True)
    (res / "clean" / "manifest.json").write_text('{"status": "ok", "input_hash": "a"}')
    (proj / "_quarto.yml").write_text("project:\n  output-dir: _site\n")
    (proj / "doc.qmd").write_text('---\ntitle: "T"\n---\n\n```{python}\nprint(6 * 7)\n```\n')
    params = {"results_dir": str(res)}
    assert last_render(proj, params, to="html") is None  # never rendered
    out = render_project(proj, params, to="html")
    assert last_render(proj, params, to="html") == out
    first = out[0].stat().st_mtime_ns
    assert render_project(proj, params, to="html", reuse=True) == out
    assert out[0].stat().st_mtime_ns == first  # not written again
    assert last_render(proj, {**params, "x": "1"}, to="html") is None  # other options
    (res / "clean" / "manifest.json").write_text('{"status": "ok", "input_hash": "b"}')
    assert last_render(proj, params, to="html") is None  # new results
    render_project(proj, params, to="html")
    (proj / "doc.qmd").write_text('---\ntitle: "T"\n---\n\nEdited.\n')
    assert last_render(proj, params, to="html") is None  # an edited document
    out[0].unlink()
    assert last_render(proj, params, to="html") is None  # a document gone
    assert main(["report", str(proj), "--results", str(res), "--to", "html"]) == 0
    assert main(["report", str(proj), "--results", str(res), "--to", "html"]) == 0
    assert "Report unchanged" in capsys.readouterr().out
