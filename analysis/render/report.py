"""``shopbayes report``: render the Quarto project in ``report/`` without Quarto.

Quarto cannot be installed on every machine, so this renderer executes the same ``.qmd``
files the way ``quarto render report`` does and writes the same output path
(``report/_site/<name>.html``, self-contained; ``<name>.pdf`` for the ``typst`` format,
see :mod:`analysis.render.pdf`):

* front matter and ``report/_quarto.yml`` (``execute`` defaults, ``output-dir``);
* Python chunks with ``#|`` options: ``echo``, ``output``, ``warning``, ``fig-cap``,
  ``label`` and ``tags: [parameters]``;
* parameters overridden like ``quarto render -P name:value`` (a cell injected after the
  ``parameters`` cell, as papermill does).

Chunks run in a Jupyter kernel (nbclient) with the report folder as working directory;
a chunk that raises fails the render and names the chunk.
"""

from __future__ import annotations

import copy
import html
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

from analysis.io import write_json, write_text
from analysis.render.helpers import CHUNK_ERROR, HTML_FORM, error_box
from analysis.render.pdf import missing_tools, write_pdf

KNOWN_FORMATS = ("html", "typst")

_CHUNK = re.compile(r"^```\{python[^}]*\}[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_OPTION = re.compile(r"^#\|\s*([\w-]+)\s*:\s*(.*)$")


class RenderError(RuntimeError):
    """A chunk failed while rendering."""


@dataclass
class Chunk:
    code: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_qmd(text: str) -> tuple[dict[str, Any], list[str | Chunk]]:
    """Split a ``.qmd`` into front matter and a list of markdown strings and chunks."""
    meta: dict[str, Any] = {}
    if text.startswith("---"):
        end = text.index("\n---", 3)
        meta = yaml.safe_load(text[3:end]) or {}
        text = text[end + 4:]
    parts: list[str | Chunk] = []
    pos = 0
    for m in _CHUNK.finditer(text):
        if text[pos:m.start()].strip():
            parts.append(text[pos:m.start()].strip("\n"))
        opts, code = {}, []
        for line in m.group(1).splitlines():
            o = _OPTION.match(line)
            if o and not code:
                opts[o.group(1)] = yaml.safe_load(o.group(2))
            else:
                code.append(line)
        parts.append(Chunk("\n".join(code).strip("\n"), opts))
        pos = m.end()
    if text[pos:].strip():
        parts.append(text[pos:].strip("\n"))
    return meta, parts


def _notebook(parts: list[str | Chunk], params: dict[str, Any],
              defaults: dict[str, Any] | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for part in parts:
        if isinstance(part, str):
            nb.cells.append(nbformat.v4.new_markdown_cell(part))
            continue
        tags = list(part.options.get("tags") or [])
        if {**(defaults or {}), **part.options}.get("error"):
            tags.append("raises-exception")  # nbclient goes on, as Quarto's error: true
        cell = nbformat.v4.new_code_cell(part.code, metadata={"tags": list(tags),
                                                              "quarto": part.options})
        nb.cells.append(cell)
        if "parameters" in tags and params:
            lines = [f"{k} = {v!r}" for k, v in params.items()]
            nb.cells.append(nbformat.v4.new_code_cell(
                "\n".join(lines), metadata={"tags": ["injected-parameters"],
                                            "quarto": {"echo": False}}))
    return nb


def _apply_options(nb: nbformat.NotebookNode, defaults: dict[str, Any]) -> list[str]:
    """Honour echo / output / warning / fig-cap / label after execution.

    A chunk that raised (allowed by ``error: true``) shows a warning box instead of its
    traceback. Returns the errors, one line per failed chunk.
    """
    numbers = figure_numbers(nb, defaults)
    cells, errors = [], []
    for cell in nb.cells:
        if cell.cell_type != "code":
            if cell.cell_type == "markdown":
                cell.source, unresolved = resolve_crossrefs(cell.source, numbers)
                for ref in unresolved:  # as Quarto: a warning, and ?@fig-... in the text
                    warnings.warn(f"unable to resolve crossref @{ref} (no chunk labelled "
                                  f"{ref} with a fig-cap drew a figure)", stacklevel=2)
            cells.append(cell)
            continue
        _html_forms(cell)
        errors += _errors_to_boxes(cell)
        opts = {**defaults, **cell.metadata.get("quarto", {})}
        if opts.get("label"):
            cells.append(nbformat.v4.new_markdown_cell(f'<a id="{opts["label"]}"></a>'))
        if not opts.get("warning", True):
            cell.outputs = [o for o in cell.outputs
                            if not (o.output_type == "stream" and o.name == "stderr")]
        if opts.get("output", True) is False:
            cell.outputs = []
        cell.metadata.setdefault("tags", [])
        if not opts.get("echo", True):
            cell.metadata["tags"].append("remove_input")
        setup_only = not cell.source.strip() or {"parameters", "injected-parameters"} & set(
            cell.metadata["tags"])
        if setup_only and not cell.outputs:
            cell.metadata["tags"].append("remove_cell")
        cells.append(cell)
        if opts.get("fig-cap") and cell.outputs:
            caption = str(opts["fig-cap"])
            label = str(opts.get("label", ""))
            if label in numbers:
                caption = f"Figure {numbers[label]}: {caption}"
            _alt_text(cell, caption)
            cells.append(nbformat.v4.new_markdown_cell(
                f"*{caption}*", metadata={"shopbayes": "caption",
                                         **({"label": label} if label in numbers else {})}))
    nb.cells = cells
    return errors


def figure_numbers(nb: nbformat.NotebookNode, defaults: dict[str, Any]) -> dict[str, int]:
    """Quarto's figure numbers: ``{label: N}`` for the executed chunks whose ``label``
    starts with ``fig-`` and that have a ``fig-cap`` and an output, in document order."""
    numbers: dict[str, int] = {}
    for cell in nb.cells:
        opts = {**defaults, **cell.metadata.get("quarto", {})} if cell.cell_type == "code" \
            else {}
        label = str(opts.get("label", ""))
        if label.startswith("fig-") and opts.get("fig-cap") and cell.outputs \
                and opts.get("output", True) is not False:
            numbers.setdefault(label, len(numbers) + 1)
    return numbers


# a Quarto cross-reference: @fig-label not preceded by a word character (an e-mail
# address is not one); the label ends on a letter or digit ("see @fig-a." ends at a)
_CROSSREF = re.compile(r"(?<![\w@\\])@(fig-[\w-]*\w)")


def resolve_crossrefs(text: str, numbers: dict[str, int]) -> tuple[str, list[str]]:
    """Replace ``@fig-...`` by a link ``[Figure N](#fig-...)``, as Quarto does.

    A reference to no numbered figure becomes ``?@fig-...`` (Quarto's rendering of an
    unresolved reference) and is returned, so the renderer can report it.

    Returns
    -------
    tuple of (str, list of str)
        The text and the labels that did not resolve.
    """
    unresolved: list[str] = []

    def link(m: re.Match[str]) -> str:
        label = m.group(1)
        if label in numbers:
            return f"[Figure {numbers[label]}](#{label})"
        unresolved.append(label)
        return f"?\\@{label}"

    return _CROSSREF.sub(link, text), unresolved


_CDN_SCRIPT = re.compile(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>\s*')
# nbconvert's lab template also carries a module script that imports mermaid.js from a CDN
# when the page has Mermaid diagrams; the report has none
_MERMAID_SCRIPT = re.compile(
    r'<script type="module">(?:(?!</script>).)*?jp-Mermaid(?:(?!</script>).)*</script>\s*',
    re.S)
_HEADING = re.compile(r'<h([23]) id="([^"]+)">(.*?)(?:<a class="anchor-link"[^>]*>.*?</a>)?'
                      r'</h\1>', re.S)


def html_toc(body: str, depth: int = 3, title: str = "Table of contents") -> str:
    """Insert a table of contents (links to the ``##`` and ``###`` sections) before the
    first section, as Quarto's ``toc: true`` gives a page one (``toc-depth``, default 3,
    counts the title as level 1)."""
    found = [(int(lv), hid, re.sub(r"<[^>]+>", "", text).strip())
             for lv, hid, text in _HEADING.findall(body) if int(lv) <= depth]
    if not found:
        return body
    items = [f'<li style="margin-left: {1.2 * (lv - 2):g}em"><a href="#{hid}">{text}</a></li>'
             for lv, hid, text in found]
    nav = (f'<nav id="TOC" role="doc-toc"><h2 id="toc-title">{html.escape(title)}</h2>'
           f'<ul>{"".join(items)}</ul></nav>')
    first = body.index(f'<h{found[0][0]} id="{found[0][1]}"')
    return body[:first] + nav + body[first:]


_SECTION = re.compile(r'(<h([2-6]) id="[^"]+">)')


def number_sections(body: str) -> str:
    """Number the ``##`` .. ``######`` sections "1", "1.1", ... as Quarto's
    ``number-sections: true`` does for a document whose title is its only ``#`` heading
    (the number is a ``<span class="header-section-number">``, Quarto's markup)."""
    counters = [0] * 5

    def number(m: re.Match[str]) -> str:
        level = int(m.group(2)) - 2
        counters[level] += 1
        counters[level + 1:] = [0] * (4 - level)
        label = ".".join(str(c) for c in counters[:level + 1])
        return f'{m.group(1)}<span class="header-section-number">{label}</span> '

    return _SECTION.sub(number, body)


def _html_forms(cell: nbformat.NotebookNode) -> None:
    """Give outputs their HTML form back from the metadata (see ``report_helpers.Output``:
    Quarto never sees it, so it adds no CDN scripts; this renderer shows it)."""
    for out in cell.outputs:
        form = out.get("metadata", {}).get(HTML_FORM)
        if form is not None and out.output_type in ("display_data", "execute_result"):
            out.data["text/html"] = form


def _errors_to_boxes(cell: nbformat.NotebookNode) -> list[str]:
    """Replace ``error`` outputs by warning boxes; the chunk's errors, labelled."""
    where = cell.metadata.get("quarto", {}).get("label") or cell.source.split("\n", 1)[0]
    found, outputs = [], []
    for out in cell.outputs:
        if out.output_type == "error":
            found.append(f"{out.ename}: {out.evalue}")
            box = error_box(out.ename, out.evalue)
            out = nbformat.v4.new_output("display_data", data={
                "text/html": box.html, "text/markdown": box.markdown})
        elif CHUNK_ERROR in out.get("metadata", {}):
            found.append(out.metadata[CHUNK_ERROR])
        outputs.append(out)
    cell.outputs = outputs
    return [f"chunk {where!r}: {e}" for e in found]


def _alt_text(cell: nbformat.NotebookNode, caption: str) -> None:
    """Give a captioned chunk's images the caption as alt text (for screen readers).

    The PNG stays beside the ``<img>`` so the PDF still gets the figure.
    """
    for out in cell.outputs:
        png = out.get("data", {}).get("image/png") if out.output_type in (
            "display_data", "execute_result") else None
        if png and "text/html" not in out.data:
            src = png if isinstance(png, str) else "".join(png)
            out.data["text/html"] = (f'<img alt="{html.escape(caption)}" '
                                     f'src="data:image/png;base64,{src.strip()}">')


def formats_to_render(project: dict[str, Any], to: str | None) -> list[str]:
    """The output formats: ``to`` (``html``, ``typst`` or ``all``), else ``_quarto.yml``'s.

    Like ``quarto render``, no ``to`` renders every format the project lists. A listed
    ``typst`` format is skipped with a warning when pandoc/typst are not installed; an
    explicit ``to="typst"`` then fails.
    """
    listed = list((project.get("format") or {"html": {}}).keys())
    if to not in (None, "all", *KNOWN_FORMATS):
        raise RenderError(f"unknown format {to!r}; choose from {', '.join(KNOWN_FORMATS)}")
    wanted = listed if to is None else list(KNOWN_FORMATS) if to == "all" else [to]
    unknown = [f for f in wanted if f not in KNOWN_FORMATS]
    if unknown:
        raise RenderError(f"_quarto.yml lists formats this renderer does not make: {unknown}")
    if "typst" in wanted:
        reason = missing_tools()
        if reason and to is None:
            warnings.warn(f"PDF skipped: {reason}", stacklevel=2)
            wanted.remove("typst")
        elif reason:
            raise RenderError(reason)
    return wanted


def render_file(qmd: Path, project: dict[str, Any], params: dict[str, Any],
                timeout: int = 600, formats: tuple[str, ...] | list[str] = ("html",)
                ) -> tuple[list[Path], list[str]]:
    """Execute one ``.qmd`` once and write each of ``formats``.

    ``html`` is ``<output-dir>/<name>.html`` (self-contained); ``typst`` is
    ``<output-dir>/<name>.pdf``, as Quarto names them. Returns the written paths and the
    chunks that raised (shown as warning boxes when ``error: true`` let them go on).
    """
    meta, parts = parse_qmd(qmd.read_text(encoding="utf-8"))
    defaults = dict(project.get("execute", {}))
    defaults.update(meta.get("execute", {}) or {})
    nb = _notebook(parts, params, defaults)
    title = str(meta.get("title", qmd.stem))
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}",
                                                     metadata={"shopbayes": "title"}))
    # the kernel's own log (e.g. "running over TCP without encryption") is not the report's
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout, allow_errors=False,
                            resources={"metadata": {"path": str(qmd.parent)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    try:
        client.execute()
    except CellExecutionError as exc:
        raise RenderError(f"{qmd}: a chunk failed:\n{str(exc)[-3000:]}") from None
    errors = _apply_options(nb, defaults)
    for i, cell in enumerate(nb.cells):  # nbformat's ids are random: same results, same file
        cell.id = f"cell-{i}"
    out_dir = qmd.parent / project.get("project", {}).get("output-dir", "_site")
    outputs = []
    if "html" in formats:
        exporter = HTMLExporter(template_name="lab", exclude_input_prompt=True,
                                exclude_output_prompt=True, embed_images=True)
        exporter.register_preprocessor(_tag_remover(), enabled=True)
        nb.metadata["title"] = title
        body, _ = exporter.from_notebook_node(copy.deepcopy(nb),
                                              resources={"metadata": {"name": title}})
        # nbconvert's template loads require.js and MathJax from a CDN (and mermaid.js
        # when a page has diagrams); the report has no widgets, no math and no diagrams,
        # and a self-contained page must open the same offline
        body = _MERMAID_SCRIPT.sub("", _CDN_SCRIPT.sub("", body))
        html_format = (project.get("format") or {}).get("html") or {}
        if html_format.get("number-sections"):
            body = number_sections(body)
        if html_format.get("toc"):
            body = html_toc(body, int(html_format.get("toc-depth", 3)),
                            str(html_format.get("toc-title", "Table of contents")))
        outputs.append(write_text(body, out_dir / f"{qmd.stem}.html"))
    if "typst" in formats:
        typst_format = (project.get("format") or {}).get("typst") or {}
        try:
            outputs.append(write_pdf(nb, title, out_dir / f"{qmd.stem}.pdf", typst_format))
        except Exception as exc:  # pandoc or typst refused the document
            raise RenderError(f"{qmd}: PDF output failed: {exc}") from exc
    return outputs, [f"{qmd.name}, {e}" for e in errors]


def _tag_remover() -> Any:
    from nbconvert.preprocessors import TagRemovePreprocessor

    pre = TagRemovePreprocessor()
    pre.remove_input_tags = {"remove_input"}
    pre.remove_cell_tags = {"remove_cell"}
    return pre


STAMP_FILE = ".render-stamp.json"


def render_stamp(report_dir: Path, project: dict[str, Any], params: dict[str, Any],
                 formats: list[str]) -> str:
    """Digest of everything a render reads: the project's files (less its outputs), the
    shopbayes sources and numerical libraries (:func:`analysis.pipeline.code_digest`) and
    the renderer's own, the results folder's run record and every step's manifest (a
    step writes its manifest last, so new results always change it), the parameters
    and the formats. Equal stamps, equal documents: what Quarto's ``freeze`` does for
    computations, for the whole render."""
    from analysis.io import digest_of, file_digest
    from analysis.pipeline import code_digest

    out = project.get("project", {}).get("output-dir", "_site")
    root = Path(__file__).resolve().parents[2]
    mine = sorted(p for p in (root / "analysis" / "render").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)
    files = sorted(p for p in report_dir.rglob("*") if p.is_file()
                   and p.relative_to(report_dir).parts[0] not in (out, ".quarto")
                   and "__pycache__" not in p.parts)
    results = Path(params.get("results_dir", ""))
    written = sorted(results.glob("*/manifest.json")) + sorted(results.glob("run.json"))
    return digest_of({
        "code": code_digest(), "formats": formats, "params": params,
        "renderer": {p.relative_to(root).as_posix(): file_digest(p) for p in mine},
        "project": {p.relative_to(report_dir).as_posix(): file_digest(p) for p in files},
        "results": {p.relative_to(results).as_posix(): file_digest(p) for p in written}})


def _stamped(report_dir: str | Path, params: dict[str, Any] | None, to: str | None
             ) -> tuple[Path, dict[str, Any], list[str], Path, str]:
    """The project, its formats, where its render stamp lives and the stamp of now."""
    report_dir = Path(report_dir)
    cfg_file = report_dir / "_quarto.yml"
    project = (yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
               if cfg_file.exists() else {}) or {}
    formats = formats_to_render(project, to)
    out = report_dir / project.get("project", {}).get("output-dir", "_site")
    return (report_dir, project, formats, out / STAMP_FILE,
            render_stamp(report_dir, project, params or {}, formats))


def last_render(report_dir: str | Path = "report", params: dict[str, Any] | None = None,
                to: str | None = None) -> list[Path] | None:
    """The documents of the last render when nothing it read has changed since
    (:func:`render_stamp`) and they are all still there, else ``None``."""
    import json

    _, _, _, stamp_path, stamp = _stamped(report_dir, params, to)
    try:
        last = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kept = [Path(p) for p in last.get("outputs", [])]
    return kept if last.get("stamp") == stamp and kept and all(p.exists() for p in kept) \
        else None


def render_project(report_dir: str | Path = "report", params: dict[str, Any] | None = None,
                   to: str | None = None, strict: bool = True, reuse: bool = False
                   ) -> list[Path]:
    """Render every ``.qmd`` of the Quarto project in ``report_dir``.

    Parameters
    ----------
    report_dir
        The Quarto project (``_quarto.yml`` and ``*.qmd``).
    params
        Overrides of the ``parameters`` cell, as ``quarto render -P name:value``.
    to
        ``html``, ``typst`` (PDF) or ``all``; ``None`` renders the formats ``_quarto.yml``
        lists, like ``quarto render``.
    strict
        Raise :class:`RenderError` after writing every document when a chunk raised
        (those parts show a warning box instead of a traceback).
    reuse
        Keep the documents of the last render when nothing it read has changed
        (:func:`render_stamp`) and they are all there; a render that raised is never
        reused.

    Returns
    -------
    list of Path
        The written (or reused) files, document by document.
    """
    if reuse:
        kept = last_render(report_dir, params, to)
        if kept:
            return kept
    report_dir, project, formats, stamp_path, stamp = _stamped(report_dir, params, to)
    stamp_path.unlink(missing_ok=True)  # a render that stops half-way leaves no stamp
    paths, errors = [], []
    # the main page first (its outputs lead the list), then the others by name
    for qmd in sorted(report_dir.glob("*.qmd"), key=lambda q: (q.stem != "index", q.name)):
        written, failed = render_file(qmd, project or {}, params or {}, formats=formats)
        paths += written
        errors += failed
    if not errors:
        write_json({"stamp": stamp, "outputs": [str(p) for p in paths]}, stamp_path)
    if errors and strict:
        raise RenderError(
            f"{len(errors)} chunk(s) could not be drawn; the reports were written with a "
            f"warning box in their place ({', '.join(map(str, paths))}):\n"
            + "\n".join(errors))
    return paths
