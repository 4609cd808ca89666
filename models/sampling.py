"""One way to sample every PyMC model: nutpie when installed (compiled once, fast NUTS),
PyMC's own NUTS otherwise. Both return ArviZ ``InferenceData`` with ``sample_stats``."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing PyMC takes seconds; the CLI and config must not pay for it
    import arviz as az
    import pymc as pm

    from models.diagnostics import Convergence


@dataclass(frozen=True)
class SamplerSettings:
    """Settings of one MCMC run; the ``[sampler]`` table of the config.

    2,500 draws per chain: hierarchical scale parameters need them for tail ESS >= 400.
    """

    draws: int = 2500
    tune: int = 1000
    chains: int = 2
    target_accept: float = 0.9
    backend: str = "auto"
    #: nutpie's low-rank modified mass matrix (Seyboldt 2024, nutpie docs): adapts to the
    #: correlated directions of a posterior as well as the scales; ignored by PyMC's NUTS
    low_rank: bool = False

    @classmethod
    def from_any(cls, obj: Any) -> SamplerSettings:
        if obj is None:
            return cls()
        if isinstance(obj, cls):
            return obj
        keys = ("draws", "tune", "chains", "target_accept", "backend", "low_rank")
        src = obj if isinstance(obj, dict) else {k: getattr(obj, k) for k in keys}
        return cls(**{k: src[k] for k in keys if k in src})


#: What every :class:`Sampler` in this process did, in order: ``{"event": "compile",
#: "seconds"}``, ``{"event": "sample", "seconds", "draws", "tune", "chains"}`` and, from
#: :func:`sample_checked` (or :func:`log_check`), ``{"event": "checked", "min_ess_bulk",
#: "min_ess_tail", "ok", "reran"}``. The pipeline resets it before a step and summarises
#: it after (:func:`summarize_log`); fits in other processes (a worker pool) are not in it.
MCMC_LOG: list[dict[str, Any]] = []


def reset_log() -> None:
    """Empty :data:`MCMC_LOG`."""
    MCMC_LOG.clear()


def summarize_log(log: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Where the MCMC time of :data:`MCMC_LOG` (or ``log``) went: compilations and their
    seconds, sampling runs (tuning and draws) and their seconds, checked fits, the lowest
    bulk and tail ESS they reached and how many failed their checks (after any rerun)."""
    log = MCMC_LOG if log is None else log
    comp = [e for e in log if e["event"] == "compile"]
    runs = [e for e in log if e["event"] == "sample"]
    checked = [e for e in log if e["event"] == "checked"]
    out: dict[str, Any] = {
        "compiles": len(comp), "compile_seconds": round(sum(e["seconds"] for e in comp), 2),
        "runs": len(runs), "sample_seconds": round(sum(e["seconds"] for e in runs), 2),
        "draws": int(sum(e["draws"] * e["chains"] for e in runs)),
        "checked_fits": len(checked), "reruns": sum(bool(e["reran"]) for e in checked),
        "failed_checks": sum(not e["ok"] for e in checked)}
    if checked:
        out["min_ess_bulk"] = round(min(e["min_ess_bulk"] for e in checked), 1)
        out["min_ess_tail"] = round(min(e["min_ess_tail"] for e in checked), 1)
    return out


def nutpie_available() -> bool:
    return importlib.util.find_spec("nutpie") is not None


def chosen_backend(settings: SamplerSettings) -> str:
    if settings.backend == "auto":
        return "nutpie" if nutpie_available() else "pymc"
    return settings.backend


class Sampler:
    """A model compiled once and sampled on one or more data sets.

    Cross-validation refits the same model on each fold's training rows: with nutpie the
    model is compiled once and each fold swaps the values of its ``pm.Data`` containers
    (``CompiledModel.with_data``); with PyMC's NUTS ``pm.set_data`` does the same.

    Parameters
    ----------
    model
        A PyMC model; data to be swapped must be ``pm.Data`` containers.
    settings
        Sampler settings (backend ``auto`` picks nutpie when installed).

    Examples
    --------
    >>> sampler = Sampler(model, SamplerSettings(draws=1000))  # doctest: +SKIP
    >>> idata = sampler.sample(seed=1, data={"x": X_fold, "y": y_fold})  # doctest: +SKIP
    """

    def __init__(self, model: pm.Model, settings: SamplerSettings | None = None) -> None:
        self.model = model
        self.settings = settings or SamplerSettings()
        self.backend = chosen_backend(self.settings)
        self._compiled: Any = None
        #: wall seconds spent compiling (nutpie; PyMC's NUTS compiles inside ``sample``)
        self.compile_seconds = 0.0
        if self.backend == "nutpie":
            import nutpie

            t0 = time.perf_counter()
            self._compiled = nutpie.compile_pymc_model(model)
            self.compile_seconds = time.perf_counter() - t0
            MCMC_LOG.append({"event": "compile", "seconds": self.compile_seconds})

    def sample(self, seed: int = 0, data: dict[str, Any] | None = None) -> az.InferenceData:
        """Sample with NUTS (same seed and data, same draws), optionally on new data."""
        t0 = time.perf_counter()
        try:
            return self._sample(seed, data)
        finally:
            s = self.settings
            MCMC_LOG.append({"event": "sample", "seconds": time.perf_counter() - t0,
                             "draws": s.draws, "tune": s.tune, "chains": s.chains})

    def _sample(self, seed: int, data: dict[str, Any] | None) -> az.InferenceData:
        s = self.settings
        if self.backend == "nutpie":
            import nutpie

            compiled = self._compiled.with_data(**data) if data else self._compiled
            return nutpie.sample(compiled, draws=s.draws, tune=s.tune, chains=s.chains,
                                 seed=seed, target_accept=s.target_accept, progress_bar=False,
                                 cores=s.chains, low_rank_modified_mass_matrix=s.low_rank,
                                 # nothing reads the tuning draws: not kept (less memory,
                                 # a smaller netCDF file, faster conversion)
                                 save_warmup=False)
        import pymc as pm

        with self.model:
            if data:
                pm.set_data(data)
            return pm.sample(draws=s.draws, tune=s.tune, chains=s.chains,
                             cores=min(s.chains, 2), target_accept=s.target_accept,
                             random_seed=seed, progressbar=False,
                             compute_convergence_checks=False)


def sample(model: pm.Model, settings: SamplerSettings | None = None, seed: int = 0
           ) -> az.InferenceData:
    """Sample ``model`` with NUTS; same seed, same draws."""
    return Sampler(model, settings).sample(seed)


def sample_checked(sampler: Sampler, seed: int,
                   check: Callable[[az.InferenceData], Convergence],
                   retry_draws: int, retry_target_accept: float = 0.95,
                   data: dict[str, Any] | None = None
                   ) -> tuple[az.InferenceData, Convergence, dict[str, Any] | None]:
    """Sample, check, and when the checks fail sample once more on the same compiled
    model: longer (``retry_draws``), and with smaller steps (``retry_target_accept``) when
    the first run diverged. ``data``: new values of the model's ``pm.Data`` containers
    (:meth:`Sampler.sample`), used by both runs.

    A lean default (fast on the data it was tuned on) can leave a scale parameter short
    of ESS or r_hat on other data; the second run's checks are the ones reported, so a
    fit that still fails is reported as failed.

    Returns
    -------
    (idata, convergence, resampled_with)
        ``resampled_with`` is ``None`` when the first run passed, else the second run's
        ``draws`` and ``target_accept`` and the first run's problems.
    """
    idata = sampler.sample(seed=seed, data=data)
    conv = check(idata)
    if conv.ok:
        log_check(conv, reran=False)
        return idata, conv, None
    first = sampler.settings
    # smaller steps only against divergences; r_hat or ESS short needs more draws only
    accept = (max(retry_target_accept, first.target_accept)
              if conv.divergences else first.target_accept)
    sampler.settings = replace(first, draws=max(retry_draws, first.draws), target_accept=accept)
    resampled = {"draws": sampler.settings.draws,
                 "target_accept": sampler.settings.target_accept,
                 "first_run_problems": conv.problems}
    try:
        idata = sampler.sample(seed=seed, data=data)
    finally:
        sampler.settings = first
    conv = check(idata)
    log_check(conv, reran=True)
    return idata, conv, resampled


def log_check(conv: Convergence, reran: bool = False) -> None:
    """Record in :data:`MCMC_LOG` what a fit's convergence checks reached (for a model that
    samples and checks without :func:`sample_checked`)."""
    MCMC_LOG.append({"event": "checked", "min_ess_bulk": float(conv.min_ess_bulk),
                     "min_ess_tail": float(conv.min_ess_tail), "ok": bool(conv.ok),
                     "reran": reran})
