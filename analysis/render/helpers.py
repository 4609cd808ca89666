"""Small helpers the report's chunks use to read results and show them safely.

Every piece of text that comes from data is escaped here (HTML for the web page,
Markdown for the PDF), so the report never runs script from the data. Chunks that put
data into ``Markdown(...)`` themselves wrap it in :func:`md_escape`.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def run_record(results: Path) -> dict[str, Any] | None:
    """The last whole run's ``run.json`` (analysis.pipeline.write_run_record), or ``None``
    when there is none or it cannot be read."""
    path = Path(results) / "run.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    except ValueError:
        return None


def step_manifest(results: Path, step: str) -> dict[str, Any] | None:
    path = Path(results) / step / "manifest.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {"status": "failed", "message": "unreadable manifest.json"}


def load_summary(results: Path, step: str) -> dict[str, Any] | None:
    """The step's ``summary.json`` when the step succeeded, else ``None``."""
    m = step_manifest(results, step)
    path = Path(results) / step / "summary.json"
    if not m or m.get("status") != "ok" or not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


#: output metadata key holding an output's HTML form (see :class:`Output`)
HTML_FORM = "shopbayes/html"


class Output:
    """One chunk output in the forms Quarto chooses between.

    The display data carry Markdown (and a PNG for figures), never ``text/html``: Quarto
    adds require.js and jQuery from a CDN to any page whose chunk outputs hold
    ``text/html`` or ``application/javascript`` (quarto-cli, src/core/jupyter/widgets.ts),
    which a self-contained report read offline cannot load. Quarto renders the Markdown
    (tables, callouts) in HTML and PDF alike. The HTML form rides in the output's
    metadata (:data:`HTML_FORM`), which Quarto ignores and ``shopbayes report`` shows.
    """

    def __init__(self, html_text: str, markdown: str | None = None,
                 png: bytes | None = None) -> None:
        self.html, self.markdown, self.png = html_text, markdown, png

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None
                          ) -> tuple[dict[str, Any], dict[str, Any]]:
        data: dict[str, Any] = {"text/plain": self.markdown or ""}
        if self.markdown is not None:
            data["text/markdown"] = self.markdown
        if self.png is not None:
            data["image/png"] = base64.b64encode(self.png).decode("ascii")
        return data, {HTML_FORM: self.html}


_MD_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def md_escape(value: Any) -> str:
    """``value`` as literal Markdown text: every ASCII punctuation mark backslash-escaped.

    Pandoc and CommonMark both read ``\\<`` as a literal ``<``, so text from the data can
    neither inject HTML (``<script>``) nor Markdown structure (``*``, ``|``, ``#``).
    """
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


_BOX_COLOURS = {"warning": ("#fff3cd", "#856404", "#ffe08a", "#e0a800"),
                "info": ("#e7f1ff", "#084298", "#b6d4fe", "#6ea8fe")}


def box(kind: str, text: str) -> Output:
    """A visible warning or note box (``kind`` ``warning`` or ``info``) with escaped text.

    Its Markdown form is a Quarto callout for every format but typst, and a coloured
    typst block for typst (Quarto's conditional content, ``when-format`` /
    ``unless-format``): in typst, a Quarto callout imports the ``@preview/fontawesome``
    package (quarto-cli, ``src/resources/filters/customnodes/callout.lua``), which typst
    downloads, so a PDF with callouts cannot be rendered offline.
    """
    bg, fg, border, stroke = _BOX_COLOURS.get(kind, _BOX_COLOURS["info"])
    label = "Warning" if kind == "warning" else "Note"
    callout = "warning" if kind == "warning" else "note"
    body = f"**{label}:** {md_escape(text)}"
    typst_open = (f'#block(width: 100%, fill: rgb("{bg}"), stroke: 0.8pt + rgb("{stroke}"), '
                  "inset: 8pt, radius: 4pt, breakable: true)[")
    markdown = (f'::: {{.content-visible unless-format="typst"}}\n'
                f"::: {{.callout-{callout}}}\n{body}\n:::\n:::\n\n"
                f'::: {{.content-visible when-format="typst"}}\n'
                f"```{{=typst}}\n{typst_open}\n```\n\n{body}\n\n```{{=typst}}\n]\n```\n:::\n")
    return Output(
        f'<div class="callout callout-{kind}" style="background:{bg};color:{fg};'
        f'border:1px solid {border};border-radius:6px;padding:10px 14px;margin:10px 0">'
        f"<strong>{label}:</strong> {html.escape(text)}</div>",
        markdown)


CHUNK_ERROR = "shopbayes-chunk-error"


def error_box(ename: str, evalue: str) -> Output:
    """The warning shown where a chunk raised instead of the traceback."""
    return box("warning", f"This part of the report could not be drawn from the results "
                          f"({ename}: {evalue}). They may come from an older version of "
                          "shopbayes or an interrupted run: rerun `shopbayes run` (or "
                          "`shopbayes run STEP --force`) and render again.")


def show_errors_as_warnings() -> None:
    """Make a chunk that raises show :func:`error_box` instead of a traceback.

    Called in the report's setup chunk, so ``quarto render`` (with ``error: true`` in
    ``_quarto.yml``) shows the same box as ``shopbayes report``. The box carries the
    metadata key ``CHUNK_ERROR`` so the renderer can still count the failures.
    """
    from IPython import get_ipython
    from IPython.display import display

    def handler(shell: Any, etype: type, evalue: BaseException, tb: Any,
                tb_offset: int | None = None) -> list[str]:
        display(error_box(etype.__name__, str(evalue)),
                metadata={CHUNK_ERROR: f"{etype.__name__}: {evalue}"})
        return []

    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((Exception,), handler)


def missing_step_box(results: Path, step: str, title: str) -> Output:
    m = step_manifest(results, step)
    if m is None:
        why = "this step has not been run (or is not built yet)"
    else:
        why = f"the step {m.get('status', 'failed')}: {m.get('message', '')}"
    return box("warning", f"{title}: no result to show; {why}.")


def table(df: pd.DataFrame, caption: str | None = None) -> Output:
    """An escaped table: HTML (pandas escapes cell text) and a Markdown pipe table."""
    body = df.to_html(index=False, escape=True, border=0, classes="table table-sm")
    cap = f"<p><em>{html.escape(caption)}</em></p>" if caption else ""
    md_cap = f"*{md_escape(caption)}*\n\n" if caption else ""
    return Output(cap + body, md_cap + pipe_table(df))


#: the held-out metrics of a classifier comparison, as the report's tables name them
METRIC_COLUMNS = {"model": "model", "roc_auc": "ROC-AUC", "log_loss": "log loss",
                  "brier": "Brier score", "ece": "ECE", "top_decile_lift": "top-decile lift",
                  "base_rate": "base rate", "mean_prediction": "mean prediction"}


def metrics_table(records: list[dict[str, Any]], caption: str) -> Output:
    """The held-out metrics of the models compared (one record per model, with the
    columns of :data:`METRIC_COLUMNS`), rounded to 4 decimals, under readable names."""
    df = pd.DataFrame(records)[list(METRIC_COLUMNS)].round(4)
    return table(df.rename(columns=METRIC_COLUMNS), caption=caption)


def pipe_table(df: pd.DataFrame) -> str:
    """``df`` as a pandoc pipe table with escaped cells; numbers right-, text left-aligned.

    The dashes under each header are as long as the column's widest cell (its longest
    word for the header, which may wrap at underscores) plus room for the cell padding,
    so a table wider than a line gets column widths in proportion to its content where
    Quarto typesets it (``shopbayes report`` lets typst size the columns).
    """
    def text(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        return " ".join((f"{v:.6g}" if isinstance(v, float | np.floating) else str(v)).split())

    head = [text(c) for c in df.columns]
    body = [[text(v) for v in r] for r in df.itertuples(index=False, name=None)]
    widths = [3 + max(max(len(w) for w in re.split(r"[\s_]", h)),
                      *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    numeric = [pd.api.types.is_numeric_dtype(t) for t in df.dtypes]
    rule = ["-" * (w - 1) + ":" if num else ":" + "-" * (w - 1)
            for w, num in zip(widths, numeric, strict=True)]
    # a zero-width space after each underscore lets long snake_case headers wrap
    lines = [[md_escape(h).replace("\\_", "\\_\u200b") for h in head], rule,
             *([md_escape(c) for c in r] for r in body)]
    return "\n".join("| " + " | ".join(r) + " |" for r in lines) + "\n"


def figure(path: Path, alt: str) -> Output:
    """An embedded PNG with alt text (for figures inside chunks without a ``fig-cap``)."""
    raw = Path(path).read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    return Output(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">',
                  png=raw)


def fmt_interval(row: dict[str, Any], name: str | None, scale: float = 1.0) -> str:
    """``mean (94% HDI low to high)`` of a summary row (keys ``{name}_mean`` ...) or, with
    ``name=None``, of a dict with keys ``mean``, ``hdi_low``, ``hdi_high``."""
    prefix = f"{name}_" if name else ""
    m, lo, hi = (scale * row[f"{prefix}{k}"] for k in ("mean", "hdi_low", "hdi_high"))
    digits = 2 if abs(m) < 100 else 0
    return f"{m:,.{digits}f} (94% HDI {lo:,.{digits}f} to {hi:,.{digits}f})"


def convergence_box(model: str, c: dict[str, Any]) -> Output:
    """The convergence verdict of one fit: an info box when it passed, a warning when not."""
    status = "passed" if c["ok"] else "FAILED: " + "; ".join(c["problems"])
    return box("info" if c["ok"] else "warning",
               f"{model} convergence {status}. max r_hat {c['max_r_hat']:.3f}, "
               f"min bulk ESS {c['min_ess_bulk']:.0f}, min tail ESS {c['min_ess_tail']:.0f}, "
               f"{c['divergences']} divergences, min E-BFMI {c['min_bfmi']:.2f} "
               f"({c['n_draws']} draws).")


def priors_table(priors: dict[str, list[Any]], caption: str) -> Output:
    """Priors as written in a summary (``name: [family, arg, ...]``)."""
    rows = [{"parameter": k, "prior": f"{v[0]}({', '.join(map(str, v[1:]))})"}
            for k, v in priors.items()]
    return table(pd.DataFrame(rows), caption=caption)
