"""PDF output of the report, as ``quarto render report --to typst`` makes it.

Quarto turns an executed notebook into pandoc Markdown and typesets it with typst. This
module does the same with the two registry packages that ship those tools inside their
wheels: ``pypandoc-binary`` (pandoc) and ``typst`` (the typst compiler as a library).

Each output is taken in Quarto's order for non-HTML formats: its ``text/markdown`` form
(the report helpers give every table and warning box one, with the data escaped), then
PNG/JPEG figures, then HTML converted by pandoc, then plain text. Conditional content
(``::: {.content-visible when-format="typst"}``, ``unless-format``) is kept or dropped as
Quarto does, and tables get typst's automatic column widths (``resources/pdf.lua``).
Numbered figure captions carry their chunk's label, so the links that
:func:`analysis.render.report.resolve_crossrefs` made from ``@fig-...`` land on them. The
format options of
``_quarto.yml`` (``toc``, ``papersize``, ``fontsize``, ``section-numbering``,
``margin``, ``shift-heading-level-by``) are passed to pandoc's typst template.
"""

from __future__ import annotations

import base64
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import nbformat

from analysis.io import atomic_path

FILTER = Path(__file__).parent / "resources" / "pdf.lua"
# where an image of this many pixels or wider spans the text width
FULL_WIDTH_PX = 1300
_ANCHOR = re.compile(r'<a id="[^"]*"></a>')
_DATA_IMG = re.compile(r'src="data:image/(png|jpeg);base64,([^"]+)"')


def missing_tools() -> str | None:
    """Why a PDF cannot be made here, or ``None`` when pandoc and typst are importable."""
    try:
        import pypandoc  # noqa: F401
        import typst  # noqa: F401
    except ImportError as exc:
        return (f"PDF output needs pandoc and typst ({exc.name} is not installed); "
                "install the extra: pip install 'shopbayes[pdf]' (make install does)")
    return None


def notebook_markdown(nb: nbformat.NotebookNode, media: Path) -> str:
    """The executed notebook as pandoc Markdown; figures are written to ``media``.

    Cells tagged ``remove_cell`` are left out, and so is the code of cells tagged
    ``remove_input`` (the tags :func:`analysis.render.report._apply_options` sets from ``echo``
    and ``output``).
    """
    media.mkdir(parents=True, exist_ok=True)
    blocks: list[str] = []
    figures = iter(range(1, 10**6))
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if "remove_cell" in tags or cell.metadata.get("shopbayes") == "title":
            continue
        if cell.cell_type == "markdown":
            label = cell.metadata.get("label") if cell.metadata.get(
                "shopbayes") == "caption" else None
            # a numbered caption carries its figure's label: @fig-... links land on it
            blocks.append(f"[{cell.source}]{{#{label}}}" if label
                          else _ANCHOR.sub("", cell.source))
            continue
        if cell.cell_type != "code":
            continue
        if "remove_input" not in tags and cell.source.strip():
            blocks.append(_fenced(cell.source, "python"))
        for out in cell.outputs:
            blocks.append(_output(out, media, figures))
    return "\n\n".join(b.strip("\n") for b in blocks if b and b.strip()) + "\n"


def _output(out: nbformat.NotebookNode, media: Path, figures: Any) -> str:
    if out.output_type == "stream":
        return _fenced(out.text, "")
    if out.output_type not in ("display_data", "execute_result"):
        return ""
    data = out.get("data", {})
    if "text/markdown" in data:
        return _text(data["text/markdown"])
    for mime, ext in (("image/png", "png"), ("image/jpeg", "jpg")):
        if mime in data:
            return _image(base64.b64decode(_text(data[mime])), ext, media, figures)
    if "text/html" in data:
        return _html(_text(data["text/html"]), media, figures)
    if "text/plain" in data:
        return _fenced(_text(data["text/plain"]), "")
    return ""


def _image(raw: bytes, ext: str, media: Path, figures: Any) -> str:
    name = f"figure-{next(figures)}.{ext}"
    (media / name).write_bytes(raw)
    width = _png_width(raw) if ext == "png" else None
    share = 100 if width is None else min(100, round(100 * width / FULL_WIDTH_PX))
    return f"![]({name}){{width={share}%}}"


def _png_width(raw: bytes) -> int | None:
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">I", raw[16:20])[0]


def _html(text: str, media: Path, figures: Any) -> str:
    """HTML without a Markdown form, converted by pandoc (embedded images become files)."""
    import pypandoc

    def extract(m: re.Match[str]) -> str:
        md = _image(base64.b64decode(m.group(2)), "png" if m.group(1) == "png" else "jpg",
                    media, figures)
        return f'src="{md[md.index("(") + 1:md.index(")")]}"'

    return pypandoc.convert_text(_DATA_IMG.sub(extract, text), "markdown", format="html",
                                 extra_args=["--wrap=none"])


def _fenced(text: str, lang: str) -> str:
    ticks = "`" * max(3, 1 + max((len(t) for t in re.findall(r"`+", text)), default=0))
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "".join(value)


def pandoc_options(typst_format: dict[str, Any]) -> list[str]:
    """Pandoc arguments for the ``format: typst:`` options of ``_quarto.yml``."""
    args = []
    if typst_format.get("toc"):
        args += ["--toc", f"--toc-depth={int(typst_format.get('toc-depth', 2))}"]
    if "shift-heading-level-by" in typst_format:
        args.append(f"--shift-heading-level-by={int(typst_format['shift-heading-level-by'])}")
    for key in ("papersize", "fontsize", "section-numbering", "page-numbering", "mainfont"):
        if key in typst_format:
            args += ["-V", f"{key}={typst_format[key]}"]
    margin = typst_format.get("margin") or {}
    for side, value in (margin.items() if isinstance(margin, dict) else []):
        args += ["-V", f"margin.{side}={value}"]
    return args


def write_pdf(nb: nbformat.NotebookNode, title: str, out: Path,
              typst_format: dict[str, Any] | None = None) -> Path:
    """Typeset the executed notebook ``nb`` as a PDF at ``out`` (written atomically).

    Raises
    ------
    RuntimeError
        When pandoc or typst is not installed (the message says how to install them).
    """
    reason = missing_tools()
    if reason:
        raise RuntimeError(reason)
    import pypandoc
    import typst

    with tempfile.TemporaryDirectory(prefix="shopbayes-pdf-") as tmp:
        work = Path(tmp)
        markdown = notebook_markdown(nb, work)
        source = work / "report.typ"
        pypandoc.convert_text(
            markdown, "typst", format="markdown", outputfile=str(source),
            extra_args=["--standalone", f"--lua-filter={FILTER}",
                        "-M", f"title={title}",
                        # wide tables: smaller type instead of running off the page
                        "-V", "header-includes=#show table: set text(size: 0.8em)",
                        *pandoc_options(typst_format or {})])
        with atomic_path(out) as dest:
            typst.compile(str(source), output=str(dest), root=str(work))
    return out
