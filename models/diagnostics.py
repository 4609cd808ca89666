"""Convergence checks every MCMC fit must pass (Vehtari et al. 2021).

r_hat <= 1.01, bulk and tail ESS >= 400, no divergent transitions, E-BFMI >= 0.3.
A failed check is reported, never hidden: :class:`Convergence` lists every problem and
``raise_if_failed`` turns it into an error where a caller wants one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import arviz as az
import numpy as np

RHAT_MAX = 1.01
ESS_MIN = 400
BFMI_MIN = 0.3


class ConvergenceError(RuntimeError):
    """An MCMC fit failed its convergence checks."""


@dataclass(frozen=True)
class Convergence:
    """Result of the convergence checks of one fit."""

    max_r_hat: float
    min_ess_bulk: float
    min_ess_tail: float
    divergences: int
    min_bfmi: float
    n_draws: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}

    def caveat(self, what: str) -> str:
        """A warning sentence to put before any conclusion drawn from a failed fit."""
        if self.ok:
            return ""
        return (f"WARNING: {what} failed its convergence checks ("
                + "; ".join(self.problems) + "), so its numbers are not reliable. ")

    def raise_if_failed(self, what: str = "model") -> None:
        if not self.ok:
            raise ConvergenceError(f"{what} failed convergence checks: " + "; ".join(self.problems))


def _constant_elements(idata: az.InferenceData, var_names: Sequence[str] | None) -> int:
    """How many scalar elements of the checked variables have one value in every draw."""
    post = idata.posterior
    names = list(var_names) if var_names else list(post.data_vars)
    total = 0
    for name in names:
        if name in post:
            v = post[name]
            total += int((v.max(("chain", "draw")) == v.min(("chain", "draw"))).sum())
    return total


def check_convergence(idata: az.InferenceData, var_names: Sequence[str] | None = None,
                      ess_min: float = ESS_MIN) -> Convergence:
    """Check r_hat, bulk/tail ESS, divergences and E-BFMI of a posterior.

    Parameters
    ----------
    idata
        Fitted posterior with ``sample_stats``.
    var_names
        Variables to check (default: every free and deterministic variable).
    ess_min
        ESS threshold (default 400).
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # constant draws: NaN, said below
        summ = az.summary(idata, var_names=list(var_names) if var_names else None,
                          kind="diagnostics", round_to="none")
    rhat = float(np.nanmax(summ["r_hat"])) if len(summ) else float("nan")
    ess_b = float(np.nanmin(summ["ess_bulk"])) if len(summ) else float("nan")
    ess_t = float(np.nanmin(summ["ess_tail"])) if len(summ) else float("nan")
    stats = idata.sample_stats
    div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    try:
        bfmi = float(np.min(az.bfmi(idata)))
    except (KeyError, ValueError, AttributeError, TypeError):  # no energy recorded
        bfmi = float("nan")
    n = int(idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"])
    problems = []
    if not rhat <= RHAT_MAX:
        worst = summ["r_hat"].idxmax()
        problems.append(f"max r_hat {rhat:.3f} > {RHAT_MAX} (at {worst})")
    if not ess_b >= ess_min:
        worst = summ["ess_bulk"].idxmin()
        problems.append(f"min bulk ESS {ess_b:.0f} < {ess_min:.0f} (at {worst})")
    if not ess_t >= ess_min:
        worst = summ["ess_tail"].idxmin()
        problems.append(f"min tail ESS {ess_t:.0f} < {ess_min:.0f} (at {worst})")
    # r_hat and ESS are undefined (NaN) for a quantity whose draws are all equal (a
    # structural zero, a pinned element); any other NaN is a failed check, not a skip
    undefined = int(summ[["r_hat", "ess_bulk", "ess_tail"]].isna().any(axis=1).sum())
    if undefined > _constant_elements(idata, var_names):
        problems.append(f"r_hat or ESS undefined for {undefined} quantities whose draws vary")
    if div:
        problems.append(f"{div} divergent transitions")
    if bfmi == bfmi and bfmi < BFMI_MIN:
        problems.append(f"E-BFMI {bfmi:.2f} < {BFMI_MIN}")
    return Convergence(rhat, ess_b, ess_t, div, bfmi, n, problems)
