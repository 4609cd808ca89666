"""Uplift evaluation of a targeting ranking, and the budget curve of a contact list.

Held-out rows carry an outcome ``y`` (0/1), a treatment ``t`` (contacted, 0/1) and a
weight ``w`` (clients the row stands for, times an inverse-probability-of-treatment
weight when contact was not random). For a ranking score, the top share ``phi`` of the
weighted rows gives

* ``uplift_at(phi)`` = treated buy rate - untreated buy rate among them (points);
* the **Qini curve** ``Q(phi) = Y_T(phi) - Y_C(phi) * N_T(phi) / N_C(phi)``: extra buyers
  among the treated of the top share, per row of the whole population (Radcliffe 2007,
  "Using control groups to target on predicted lift"; the definition of scikit-uplift's
  ``qini_curve``);
* the **Qini coefficient**: the area between the Qini curve and the line of random
  targeting (Radcliffe 2007), and **AUUC**, the area under the uplift curve
  ``U(phi) = uplift_at(phi) * phi`` minus random targeting's (Gutierrez and Gerardy
  2017, "Causal inference and uplift modelling: a review of the literature").

Intervals come from the Bayesian bootstrap (Rubin 1981, "The Bayesian bootstrap"):
every client gets an Exp(1) weight shared by its rows, and a cell of ``w`` clients a
Gamma(``w``, 1) one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from models.bootstrap import ClientBootstrap
from models.uplift import HDI_PROB

#: shares of the ranked population at which uplift is reported
TOP_SHARES = (0.1, 0.2, 0.3)


def _curves(y: np.ndarray, t: np.ndarray, w: np.ndarray, grid: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Qini and uplift-rate at each share of ``grid`` for rows already ranked (best
    first): arrays of shape ``(len(grid),)``."""
    cw = np.cumsum(w)
    total = cw[-1]
    nt, nc = np.cumsum(w * t), np.cumsum(w * (1 - t))
    yt, yc = np.cumsum(w * t * y), np.cumsum(w * (1 - t) * y)
    pos = np.clip(np.searchsorted(cw, grid * total, side="left"), 0, len(cw) - 1)
    nt, nc, yt, yc = nt[pos], nc[pos], yt[pos], yc[pos]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where((nt > 0) & (nc > 0), yt / nt - yc / nc, np.nan)
        qini = np.where(nc > 0, yt - yc * nt / nc, np.nan) / total
    return qini, rate


def uplift_evaluation(y: np.ndarray, t: np.ndarray, w: np.ndarray, score: np.ndarray,
                      unit: np.ndarray | None = None, draws: int = 200, seed: int = 0,
                      points: int = 50) -> dict[str, Any]:
    """Qini curve, Qini coefficient, AUUC and uplift at the top shares of a ranking, each
    with a 94% Bayesian-bootstrap interval.

    Parameters
    ----------
    y, t : array of shape (rows,)
        Outcome and treatment (0/1).
    w : array of shape (rows,)
        Weights (clients each row stands for, times an inverse-probability weight).
    score : array of shape (rows,)
        Predicted uplift (larger = contact first); ties keep the rows' order.
    unit : array of shape (rows,), optional
        Client of each row (rows of one client share a bootstrap weight); a negative unit
        is a cell of ``w`` clients (weight Gamma(w, 1)). Default: every row its own unit.
    draws, seed
        Bootstrap replicates and their seed.
    points
        Points of the returned curve.

    Returns
    -------
    dict
        ``qini_coefficient``, ``auuc`` and ``uplift_at_<share>`` (each ``mean`` of the
        point estimate, ``low``/``high``: 94% interval), ``curve`` (DataFrame: ``share``,
        ``qini``, ``qini_low``, ``qini_high``, ``random``) and ``rows``.

    Raises
    ------
    ValueError
        If the arrays differ in length, or no treated or no untreated weight is left.
    """
    y, t, w, score = (np.asarray(a, float) for a in (y, t, w, score))
    if not len(y) == len(t) == len(w) == len(score):
        raise ValueError("y, t, w and score must have the same length")
    if (w * t).sum() <= 0 or (w * (1 - t)).sum() <= 0:
        raise ValueError("uplift evaluation needs treated and untreated rows")
    order = np.argsort(-score, kind="stable")
    y, t, w = y[order], t[order], w[order]
    unit = np.arange(len(y)) if unit is None else np.asarray(unit)[order]
    grid = np.linspace(0.0, 1.0, 201)[1:]
    shares = np.asarray(TOP_SHARES)

    def stats(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        qini, rate = _curves(y, t, weights, np.r_[grid, shares])
        qini, rate, at = qini[:len(grid)], rate[:len(grid)], rate[len(grid):]
        random_line = grid * qini[-1]
        q_coef = float(np.trapezoid(np.r_[0.0, qini - random_line], np.r_[0.0, grid]))
        u = np.nan_to_num(rate) * grid
        auuc = float(np.trapezoid(np.r_[0.0, u - grid * u[-1]], np.r_[0.0, grid]))
        return np.r_[q_coef, auuc, at], qini, random_line

    point, qini, random_line = stats(w)
    rng = np.random.default_rng(seed)
    boot = ClientBootstrap(w, unit)
    reps, curves = [], []
    for _ in range(draws):
        s, q, _ = stats(boot.draw(rng)[0])
        reps.append(s)
        curves.append(q)
    reps, curves = np.array(reps), np.array(curves)
    lo_q, hi_q = (1 - HDI_PROB) / 2, 1 - (1 - HDI_PROB) / 2
    names = ["qini_coefficient", "auuc"] + [f"uplift_at_{int(100 * s)}" for s in shares]
    with warnings.catch_warnings():
        # a share too small to hold both arms is NaN in that replicate (and in the curve)
        warnings.simplefilter("ignore", RuntimeWarning)
        out: dict[str, Any] = {
            n: {"mean": float(point[i]), "low": float(np.nanquantile(reps[:, i], lo_q)),
                "high": float(np.nanquantile(reps[:, i], hi_q))}
            for i, n in enumerate(names)}
        keep = np.linspace(0, len(grid) - 1, points).astype(int)
        out["curve"] = pd.DataFrame({
            "share": np.r_[0.0, grid[keep]], "qini": np.r_[0.0, qini[keep]],
            "qini_low": np.r_[0.0, np.nanquantile(curves, lo_q, axis=0)[keep]],
            "qini_high": np.r_[0.0, np.nanquantile(curves, hi_q, axis=0)[keep]],
            "random": np.r_[0.0, random_line[keep]]})
    out["rows"] = int(len(y))
    return out


def draw_quantiles(draws: np.ndarray, q: Any) -> np.ndarray:
    """Quantiles ``q`` of posterior draws over the first axis: NumPy's default
    (``method="linear"``, Hyndman and Fan 1996, definition 7), by a full sort.

    For a few hundred draws of many quantities (draws x rows) a sort along the draws is
    about five times faster than :func:`numpy.quantile`, which partitions along that
    non-contiguous axis; the values agree with it to rounding (one unit in the last
    place).

    Parameters
    ----------
    draws : array of shape (draws, ...)
    q : float or sequence of float in [0, 1]

    Returns
    -------
    array of shape ``np.shape(q) + draws.shape[1:]``

    Raises
    ------
    ValueError
        If there are no draws or a ``q`` is outside [0, 1].
    """
    x = np.sort(np.asarray(draws, float), axis=0)
    n = x.shape[0] if x.ndim else 0
    qa = np.asarray(q, float)
    if n == 0:
        raise ValueError("no draws to take quantiles of")
    if ((qa < 0) | (qa > 1)).any():
        raise ValueError(f"quantiles must lie in [0, 1], got {q}")
    pos = qa * (n - 1)
    lo = np.clip(np.floor(pos).astype(np.intp), 0, n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).reshape(qa.shape + (1,) * (x.ndim - 1))
    a, b = x[lo], x[hi]
    return np.where(frac >= 0.5, b - (b - a) * (1 - frac), a + (b - a) * frac)


def budget_curve(gain_draws: np.ndarray | Callable[[np.ndarray], np.ndarray],
                 contact_cost: float = 0.0, clients: int | None = None,
                 block: int = 2_000) -> pd.DataFrame:
    """Cumulative expected incremental profit of contacting clients in order of their
    expected gain, with its 94% interval, and the marginal gain of each next contact.

    Parameters
    ----------
    gain_draws : array of shape (draws, clients), or callable
        Posterior draws of each client's incremental profit of contact (money, before
        the contact's cost); or a function of client positions (integer array) returning
        their draws, shape (draws, positions), the same draws on every call: the clients
        are then read ``block`` at a time, so memory holds draws x ``block`` values
        whatever the number of clients (the draws are computed twice: once for the
        order, once for the sums).
    contact_cost
        Cost of one contact (money).
    clients
        Number of clients (positions ``0 .. clients - 1``); required with a callable.
    block
        Clients per block of the callable.

    Returns
    -------
    DataFrame
        One row per client in contact order: ``rank`` (1-based), ``client`` (column of
        ``gain_draws``), ``expected_gain`` (of that client, net of the cost),
        ``cumulative_mean``, ``cumulative_low``, ``cumulative_high`` (money, 94%) and
        ``p_cumulative_positive``. The same numbers for the array and the callable.

    Raises
    ------
    ValueError
        If ``gain_draws`` is a callable and ``clients`` is not given.
    """
    if not callable(gain_draws):
        draws = np.asarray(gain_draws, float)
        clients = draws.shape[1]

        def gain_draws(idx: np.ndarray) -> np.ndarray:
            return draws[:, idx]

        block = max(clients, 1)  # one block: no copy beyond what the sums need
    elif clients is None:
        raise ValueError("budget_curve needs the number of clients with a callable")
    blocks = [np.arange(lo, min(lo + block, clients)) for lo in range(0, clients, block)]
    mean = (np.concatenate([(gain_draws(idx) - contact_cost).mean(axis=0) for idx in blocks])
            if blocks else np.zeros(0))
    order = np.argsort(-mean, kind="stable")
    lo_q, hi_q = (1 - HDI_PROB) / 2, 1 - (1 - HDI_PROB) / 2
    stats: dict[str, list[np.ndarray]] = {k: [] for k in ("mean", "low", "high", "p")}
    carry: np.ndarray | float = 0.0
    for lo in range(0, clients, block):
        g = gain_draws(order[lo:lo + block]) - contact_cost
        g[:, 0] += carry  # the running sums go on from the last block's (same additions)
        cum = np.cumsum(g, axis=1)
        carry = cum[:, -1].copy()
        stats["mean"].append(cum.mean(axis=0))
        low, high = draw_quantiles(cum, [lo_q, hi_q])
        stats["low"].append(low)
        stats["high"].append(high)
        stats["p"].append((cum > 0).mean(axis=0))
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in stats.items()}
    return pd.DataFrame({
        "rank": np.arange(1, len(order) + 1), "client": order,
        "expected_gain": mean[order], "cumulative_mean": cat["mean"],
        "cumulative_low": cat["low"], "cumulative_high": cat["high"],
        "p_cumulative_positive": cat["p"]})


def stop_point(curve: pd.DataFrame) -> int:
    """Number of clients to contact: those whose expected gain, net of the contact's
    cost, is positive (the cumulative expected profit peaks there)."""
    return int((curve["expected_gain"] > 0).sum())
