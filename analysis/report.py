"""``shopbayes report``: render the Quarto project in ``report/`` without Quarto.

Quarto cannot be installed on every machine, so this renderer executes the same ``.qmd``
files the way ``quarto render report`` does and writes the same output path
(``report/_site/<name>.html``, self-contained):

* front matter and ``report/_quarto.yml`` (``execute`` defaults, ``output-dir``);
* Python chunks with ``#|`` options: ``echo``, ``output``, ``warning``, ``fig-cap``,
  ``label`` and ``tags: [parameters]``;
* parameters overridden like ``quarto render -P name:value`` (a cell injected after the
  ``parameters`` cell, as papermill does).

Chunks run in a Jupyter kernel (nbclient) with the report folder as working directory;
a chunk that raises fails the render and names the chunk.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

from analysis.io import write_text

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


def _notebook(parts: list[str | Chunk], params: dict[str, Any]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for part in parts:
        if isinstance(part, str):
            nb.cells.append(nbformat.v4.new_markdown_cell(part))
            continue
        tags = part.options.get("tags") or []
        cell = nbformat.v4.new_code_cell(part.code, metadata={"tags": list(tags),
                                                              "quarto": part.options})
        nb.cells.append(cell)
        if "parameters" in tags and params:
            lines = [f"{k} = {v!r}" for k, v in params.items()]
            nb.cells.append(nbformat.v4.new_code_cell(
                "\n".join(lines), metadata={"tags": ["injected-parameters"],
                                            "quarto": {"echo": False}}))
    return nb


def _apply_options(nb: nbformat.NotebookNode, defaults: dict[str, Any]) -> None:
    """Honour echo / output / warning / fig-cap / label after execution."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            cells.append(cell)
            continue
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
            _alt_text(cell, str(opts["fig-cap"]))
            cells.append(nbformat.v4.new_markdown_cell(f"*{opts['fig-cap']}*"))
    nb.cells = cells


def _alt_text(cell: nbformat.NotebookNode, caption: str) -> None:
    """Give a captioned chunk's images the caption as alt text (for screen readers)."""
    for out in cell.outputs:
        png = out.get("data", {}).get("image/png") if out.output_type in (
            "display_data", "execute_result") else None
        if png:
            src = png if isinstance(png, str) else "".join(png)
            out.data = {"text/html": f'<img alt="{html.escape(caption)}" '
                                     f'src="data:image/png;base64,{src.strip()}">'}


def render_file(qmd: Path, project: dict[str, Any], params: dict[str, Any],
                timeout: int = 600) -> Path:
    """Execute one ``.qmd`` and write its self-contained HTML; return the output path."""
    meta, parts = parse_qmd(qmd.read_text(encoding="utf-8"))
    nb = _notebook(parts, params)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {meta.get('title', qmd.stem)}"))
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout, allow_errors=False,
                            resources={"metadata": {"path": str(qmd.parent)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        raise RenderError(f"{qmd}: a chunk failed:\n{str(exc)[-3000:]}") from None
    defaults = dict(project.get("execute", {}))
    defaults.update(meta.get("execute", {}) or {})
    _apply_options(nb, defaults)
    exporter = HTMLExporter(template_name="lab", exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    exporter.register_preprocessor(_tag_remover(), enabled=True)
    nb.metadata["title"] = meta.get("title", qmd.stem)
    body, _ = exporter.from_notebook_node(
        nb, resources={"metadata": {"name": nb.metadata["title"]}})
    out_dir = qmd.parent / project.get("project", {}).get("output-dir", "_site")
    out = out_dir / f"{qmd.stem}.html"
    write_text(body, out)
    return out


def _tag_remover() -> Any:
    from nbconvert.preprocessors import TagRemovePreprocessor

    pre = TagRemovePreprocessor()
    pre.remove_input_tags = {"remove_input"}
    pre.remove_cell_tags = {"remove_cell"}
    return pre


def render_project(report_dir: str | Path = "report", params: dict[str, Any] | None = None
                   ) -> list[Path]:
    """Render every ``.qmd`` of the Quarto project in ``report_dir``."""
    report_dir = Path(report_dir)
    cfg_file = report_dir / "_quarto.yml"
    project = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) if cfg_file.exists() else {}
    return [render_file(q, project or {}, params or {})
            for q in sorted(report_dir.glob("*.qmd"))]
