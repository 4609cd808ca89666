"""The next test: profit across discount depths and the size of a randomized follow-up.

**Depth grid.** A campaign observed at one depth ``d`` says nothing direct about others;
the grid rests on a stated assumption: the extra list-price revenue the email brings grows
in proportion to the depth (none at depth 0). With ``L0`` the treated clients' list-price
revenue without the email (= their paid revenue without it) and ``L1 = R1 / (1 - d)``
with it (``R1`` is what they paid, net of the discount), at depth ``d'``::

    L(d') = L0 + (L1 - L0) * d' / d
    profit(d') = L(d') * (margin - d') - L0 * margin          (per treated client)

which equals :func:`models.uplift.profit_per_treated` at ``d' = d``.

**Assurance** (O'Hagan, Stevens & Campbell 2005, Pharm. Stat. 4:187): the probability that
a randomized follow-up with ``n`` clients per arm settles the decision, i.e. its posterior
gives P(profit > 0) >= ``settle`` or <= ``1 - settle``, when the true profit is drawn from
today's posterior. Normal approximation: today's posterior of the profit at the chosen
depth ``N(m, s^2)``; the follow-up's estimate ``N(theta, 2 sigma^2 / n)`` with ``sigma``
the SD of profit per client.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def profit_by_depth(arpu1: np.ndarray, arpu0: np.ndarray, margin: float, depth: float,
                    depths: np.ndarray | None = None) -> pd.DataFrame:
    """Expected incremental profit per treated client on a grid of depths (money).

    ``arpu1`` / ``arpu0``: posterior draws of paid revenue per treated client with and
    without the email at the observed ``depth``. Returns one row per depth with mean,
    3% and 97% quantiles and P(profit > 0).
    """
    depths = np.round(np.arange(0.0, min(margin, 0.3) + 1e-9, 0.025), 3) if depths is None \
        else np.asarray(depths, float)
    l1, l0 = np.asarray(arpu1) / (1 - depth), np.asarray(arpu0)
    rows = []
    for dd in depths:
        profit = (l0 + (l1 - l0) * dd / depth) * (margin - dd) - l0 * margin
        lo, hi = np.quantile(profit, [0.03, 0.97])
        rows.append({"depth": float(dd), "profit_mean": float(profit.mean()),
                     "profit_low": float(lo), "profit_high": float(hi),
                     "p_profit_positive": float((profit > 0).mean())})
    return pd.DataFrame(rows)


def assurance(prior_mean: float, prior_sd: float, sigma: float, n_per_arm: np.ndarray,
              settle: float = 0.9, draws: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """Probability that a randomized follow-up of ``n_per_arm`` clients settles the
    decision (see module docstring); ``sigma`` is the SD of profit per client (money)."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(prior_mean, prior_sd, draws)
    rows = []
    for n in np.asarray(n_per_arm, int):
        se2 = 2 * sigma**2 / n
        est = rng.normal(theta, np.sqrt(se2))
        post_var = 1 / (1 / prior_sd**2 + 1 / se2)
        post_mean = post_var * (prior_mean / prior_sd**2 + est / se2)
        p_pos = stats.norm.cdf(post_mean / np.sqrt(post_var))
        rows.append({"n_per_arm": int(n),
                     "assurance": float(((p_pos >= settle) | (p_pos <= 1 - settle)).mean())})
    return pd.DataFrame(rows)
