"""Small helpers the report's chunks use to read results and show them safely.

Every piece of text that comes from data is HTML-escaped here, so the report never
runs script from the data.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.display import HTML


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


def box(kind: str, text: str) -> HTML:
    """A visible callout box (``warning`` or ``info``) with escaped text."""
    colours = {"warning": ("#fff3cd", "#856404", "#ffe08a"),
               "info": ("#e7f1ff", "#084298", "#b6d4fe")}
    bg, fg, border = colours.get(kind, colours["info"])
    label = "Warning" if kind == "warning" else "Note"
    return HTML(f'<div class="callout callout-{kind}" style="background:{bg};color:{fg};'
                f'border:1px solid {border};border-radius:6px;padding:10px 14px;margin:10px 0">'
                f"<strong>{label}:</strong> {html.escape(text)}</div>")


def missing_step_box(results: Path, step: str, title: str) -> HTML:
    m = step_manifest(results, step)
    if m is None:
        why = "this step has not been run (or is not built yet)"
    else:
        why = f"the step {m.get('status', 'failed')}: {m.get('message', '')}"
    return box("warning", f"{title}: no result to show; {why}.")


def table(df: pd.DataFrame, caption: str | None = None) -> HTML:
    """An escaped HTML table (pandas escapes cell text by default)."""
    body = df.to_html(index=False, escape=True, border=0, classes="table table-sm")
    cap = f"<p><em>{html.escape(caption)}</em></p>" if caption else ""
    return HTML(cap + body)


def figure(path: Path, alt: str) -> HTML:
    """An embedded PNG with alt text (for figures inside chunks without a ``fig-cap``)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return HTML(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')


def fmt_interval(row: dict[str, Any], name: str, scale: float = 1.0) -> str:
    """``mean (94% HDI low to high)`` of a summary row."""
    m, lo, hi = (scale * row[f"{name}_{k}"] for k in ("mean", "hdi_low", "hdi_high"))
    digits = 2 if abs(m) < 100 else 0
    return f"{m:,.{digits}f} (94% HDI {lo:,.{digits}f} to {hi:,.{digits}f})"


def convergence_box(model: str, c: dict[str, Any]) -> HTML:
    """The convergence verdict of one fit: an info box when it passed, a warning when not."""
    status = "passed" if c["ok"] else "FAILED: " + "; ".join(c["problems"])
    return box("info" if c["ok"] else "warning",
               f"{model} convergence {status}. max r_hat {c['max_r_hat']:.3f}, "
               f"min bulk ESS {c['min_ess_bulk']:.0f}, min tail ESS {c['min_ess_tail']:.0f}, "
               f"{c['divergences']} divergences, min E-BFMI {c['min_bfmi']:.2f} "
               f"({c['n_draws']} draws).")


def priors_table(priors: dict[str, list[Any]], caption: str) -> HTML:
    """Priors as written in a summary (``name: [family, arg, ...]``)."""
    rows = [{"parameter": k, "prior": f"{v[0]}({', '.join(map(str, v[1:]))})"}
            for k, v in priors.items()]
    return table(pd.DataFrame(rows), caption=caption)
