"""Figures shared by several steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd


def reliability_figure(curves: Mapping[str, pd.DataFrame], xlabel: str, ylabel: str,
                       title: str, lim: float | None = None,
                       figsize: tuple[float, float] = (5.5, 4.5)) -> Any:
    """Observed against predicted probability per model, with the diagonal.

    ``curves`` maps a model name to a frame with ``predicted`` and ``observed``; the axes
    run to ``lim`` (default: 5% beyond the largest value plotted).
    """
    if lim is None:
        lim = 1.05 * max(float(max(c["predicted"].max(), c["observed"].max()))
                         for c in curves.values())
    fig, ax = plt.subplots(figsize=figsize)
    ax.plot([0, lim], [0, lim], ":", color="grey", label="perfect calibration")
    for name, c in curves.items():
        ax.plot(c["predicted"], c["observed"], "o-", ms=4, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig
