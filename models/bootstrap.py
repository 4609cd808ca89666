"""Bayesian-bootstrap weights for rows that stand for clients and cells of clients.

The Bayesian bootstrap (Rubin 1981, "The Bayesian bootstrap", Annals of Statistics 9)
replaces each unit's count by an Exp(1) weight per replicate. Here a unit is a client:
all rows of one client share its weight (times the row's own weight ``w``, e.g. an
inverse sampling share); a row of a negative unit is a cell of ``w`` clients and gets
Gamma(``w``, 1), the sum of their weights. :func:`models.targeting.uplift_evaluation`
and :func:`models.classification_metrics.auc_bootstrap` draw their replicates here.
"""

from __future__ import annotations

import numpy as np


class ClientBootstrap:
    """Replicate weights of rows grouped by client (see the module docstring).

    Parameters
    ----------
    w : array of shape (rows,)
        Weight of each row (clients it stands for; of a cell row, its clients).
    unit : array of shape (rows,), optional
        Client of each row; negative for a cell row. Default: every row its own client.
    """

    def __init__(self, w: np.ndarray, unit: np.ndarray | None = None) -> None:
        self.w = np.asarray(w, float)
        unit = np.arange(len(self.w)) if unit is None else np.asarray(unit)
        self.cells = unit < 0
        codes, self.inverse = np.unique(np.where(self.cells, -1, unit), return_inverse=True)
        self.units = len(codes)
        self.has_cells = bool(self.cells.any())

    def draw(self, rng: np.random.Generator, replicates: int = 1) -> np.ndarray:
        """Weights of ``replicates`` replicates, shape (replicates, rows). Each replicate
        draws its clients' Exp(1) weights, then its cells' Gamma weights, from ``rng``,
        so one replicate at a time or several at once give the same numbers."""
        out = np.empty((replicates, len(self.w)))
        for r in range(replicates):
            out[r] = self.w * rng.exponential(1.0, self.units)[self.inverse]
            if self.has_cells:
                out[r, self.cells] = rng.gamma(np.maximum(self.w[self.cells], 1e-12), 1.0)
        return out
