"""One way to sample every PyMC model: nutpie when installed (compiled once, fast NUTS),
PyMC's own NUTS otherwise. Both return ArviZ ``InferenceData`` with ``sample_stats``."""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

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
    #: draws sized by the checks (nutpie, in :func:`sample_checked`): the first check after
    #: this many draws per chain, then the same chains go on to the draws the checks ask
    #: for, ``draws`` at most; 0 samples exactly ``draws`` (as PyMC's NUTS always does)
    min_draws: int = 0

    @classmethod
    def from_any(cls, obj: Any) -> SamplerSettings:
        if obj is None:
            return cls()
        if isinstance(obj, cls):
            return obj
        keys = ("draws", "tune", "chains", "target_accept", "backend", "low_rank",
                "min_draws")
        src = obj if isinstance(obj, dict) else {k: getattr(obj, k) for k in keys}
        return cls(**{k: src[k] for k in keys if k in src})


#: What every :class:`Sampler` in this process did, in order: ``{"event": "compile",
#: "seconds", "cached"}`` (``cached``: loaded from the compile store), ``{"event":
#: "sample", "seconds", "draws", "tune", "chains"}`` (``draws``: per chain, kept; a run
#: sized by its checks adds ``"checks"``, the draws at each) and, from
#: :func:`sample_checked` (or :func:`log_check`), ``{"event": "checked", "min_ess_bulk",
#: "min_ess_tail", "ok", "reran"}``. The pipeline resets it before a step and summarises
#: it after (:func:`summarize_log`); fits in other processes (a worker pool) are not in it.
MCMC_LOG: list[dict[str, Any]] = []

#: where nutpie's compiled callbacks are kept between runs (a
#: :class:`models.compiled.CFuncStore`, set by :func:`use_compile_store`); None: compiled
#: in every process, as nutpie does
_COMPILE_STORE: Any = None


def use_compile_store(store: Any) -> None:
    """Keep the compiled models of every later :class:`Sampler` of this process in
    ``store`` (a :class:`models.compiled.CFuncStore`) and load them from it when a model
    was compiled before (:func:`models.compiled.compile_model`); None: no store."""
    global _COMPILE_STORE
    _COMPILE_STORE = store


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
        "compiles_loaded": sum(bool(e.get("cached")) for e in comp),
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
        #: whether the compiled callbacks were loaded from the compile store
        self.compile_loaded = False
        if self.backend == "nutpie":
            from models.compiled import compile_model

            t0 = time.perf_counter()
            self._compiled, info = compile_model(model, _COMPILE_STORE)
            self.compile_seconds = time.perf_counter() - t0
            self.compile_loaded = info["cached"]
            MCMC_LOG.append({"event": "compile", "seconds": self.compile_seconds,
                             "cached": info["cached"]})

    def sample(self, seed: int = 0, data: dict[str, Any] | None = None) -> az.InferenceData:
        """Sample with NUTS (same seed and data, same draws), optionally on new data."""
        t0 = time.perf_counter()
        try:
            return self._sample(seed, data)
        finally:
            s = self.settings
            MCMC_LOG.append({"event": "sample", "seconds": time.perf_counter() - t0,
                             "draws": s.draws, "tune": s.tune, "chains": s.chains})

    @property
    def sizes_draws(self) -> bool:
        """Whether :meth:`sample_until` sizes the draws by the checks (nutpie and
        ``min_draws`` set); otherwise it samples ``draws`` and checks once."""
        return self.backend == "nutpie" and 0 < self.settings.min_draws < self.settings.draws

    def sample_until(self, seed: int, check: Callable[[az.InferenceData], Convergence],
                     data: dict[str, Any] | None = None
                     ) -> tuple[az.InferenceData, Convergence]:
        """Sample until the checks pass: draws sized by what the fit needs, not fixed.

        The chains run in the background towards ``settings.draws`` per chain (the
        ceiling). At ``min_draws`` per chain the checks run on the draws so far; when they
        fail for too few effective draws the same chains go on (no new tuning) to the next
        check, set where ESS, which grows about in proportion to the draws, should pass
        (``n * 400 / ESS`` plus 10%, at least 1.25 and at most 2 times ``n``; when only
        r_hat failed, ``n * (r_hat - 1) / 0.01`` plus 10%, 1.25 to 2 times ``n``:
        :func:`next_check`); a divergence or the ceiling ends the run with the checks
        of the draws so far, which then decide. Sampling stops at the first check that
        passes and returns exactly the draws it checked.

        Every check is at a number of draws that the earlier draws alone decide, and the
        first ``n`` draws of a chain do not depend on how long it runs (nutpie's chains are
        seeded apart; its tuning depends on ``tune`` only), so the same seed gives the same
        draws, however fast the machine. The checks are the full ones of the fit (r_hat,
        bulk and tail ESS >= 400, divergences, E-BFMI; Vehtari et al. 2021), and a fit
        reported as converged met every one of them on the very draws it returns. Stopping
        at the first look that passes favours a look whose noisy ESS estimate came out
        high; the looks are few (each at least 1.25 times the draws of the one before) and
        the threshold is the usual one, not lowered for them.

        Without nutpie, or with ``min_draws`` 0, this samples ``draws`` and checks once.

        Returns
        -------
        (idata, convergence)
            The draws kept (``min_draws`` to ``draws`` per chain) and their checks.
        """
        if not self.sizes_draws:
            idata = self.sample(seed=seed, data=data)
            return idata, check(idata)
        t0 = time.perf_counter()
        s = self.settings
        checks: list[int] = []
        try:
            idata, conv = self._sample_until(seed, check, data, checks)
        finally:
            MCMC_LOG.append({"event": "sample", "seconds": time.perf_counter() - t0,
                             "draws": checks[-1] if checks else 0, "tune": s.tune,
                             "chains": s.chains, "checks": checks})
        return idata, conv

    def _sample_until(self, seed: int, check: Callable[[az.InferenceData], Convergence],
                      data: dict[str, Any] | None, checks: list[int]
                      ) -> tuple[az.InferenceData, Convergence]:
        s = self.settings
        run = self._nutpie(seed, data, blocking=False)
        n = s.min_draws
        finished = False
        try:
            while True:
                if not finished:  # once finished, the whole trace serves every check
                    trace, finished = _trace_with(run, n)
                n = min(n, _draws_per_chain(trace))  # fewer only if the run ended early
                kept = trace.isel(draw=slice(0, n))
                checks.append(n)
                conv = check(kept)
                if conv.ok or conv.divergences or n >= s.draws:
                    return kept, conv
                n = next_check(n, conv, s.draws)
        finally:
            if not _finished(run):
                run.cancel()

    def _nutpie(self, seed: int, data: dict[str, Any] | None, blocking: bool = True) -> Any:
        """nutpie's run of the compiled model (on ``data`` when given): the trace, or
        with ``blocking=False`` the sampler running in the background."""
        import nutpie

        s = self.settings
        compiled = self._compiled.with_data(**data) if data else self._compiled
        with _quiet_chains_warning():
            return nutpie.sample(compiled, draws=s.draws, tune=s.tune, chains=s.chains,
                                 seed=seed, target_accept=s.target_accept,
                                 progress_bar=False, cores=s.chains,
                                 low_rank_modified_mass_matrix=s.low_rank,
                                 # nothing reads the tuning draws: not kept (less
                                 # memory, a smaller netCDF file, faster conversion)
                                 save_warmup=False, blocking=blocking)

    def _sample(self, seed: int, data: dict[str, Any] | None) -> az.InferenceData:
        s = self.settings
        if self.backend == "nutpie":
            return self._nutpie(seed, data)
        import pymc as pm

        with self.model:
            if data:
                pm.set_data(data)
            return pm.sample(draws=s.draws, tune=s.tune, chains=s.chains,
                             cores=min(s.chains, 2), target_accept=s.target_accept,
                             random_seed=seed, progressbar=False,
                             compute_convergence_checks=False)


def next_check(n: int, conv: Convergence, ceiling: int) -> int:
    """Draws per chain at the next check of :meth:`Sampler.sample_until`, after checks at
    ``n`` draws fell short, rounded up to a multiple of 50 and at most ``ceiling``.

    * ESS short: ESS grows about in proportion to the draws, so where the lowest bulk or
      tail ESS should reach the checks' minimum (400) with 10% to spare (between 1.25 and 2
      times ``n``). At few draws the estimate of a slowly mixing parameter is often far
      below what its chains reach later (the propensity model's ``sigma_tau``: tail ESS
      160 at 1,000 draws, 559 at 2,000): a longer jump would overshoot, so the next look
      comes at twice the draws at most.
    * ESS passed, r_hat short: for chains that mix, the expected excess ``r_hat - 1``
      falls about as ``1 / draws`` (the between-chain variance of the chain means shrinks
      with the draws; Gelman et al. 2013, *Bayesian Data Analysis*, 3rd ed., sec. 11.4;
      Vehtari et al. 2021, "Rank-normalization, folding, and localization", Bayesian
      Analysis 16), so where it should reach the checks' 1.01 with 10% to spare (between
      1.25 and 2 times ``n``).
    * Otherwise (E-BFMI short, or r_hat undefined): twice ``n``.

    The thresholds are those of :func:`models.diagnostics.check_convergence`.
    """
    from models.diagnostics import BFMI_MIN, ESS_MIN, RHAT_MAX  # loaded by the checks

    ess = min(conv.min_ess_bulk, conv.min_ess_tail)
    r_hat, bfmi = float(conv.max_r_hat), float(conv.min_bfmi)
    if ess < ESS_MIN:
        target = min(2.0 * n, max(1.25 * n, 1.1 * n * ESS_MIN / max(ess, 1.0)))
    elif np.isfinite(r_hat) and r_hat > RHAT_MAX and not bfmi < BFMI_MIN:
        target = min(2.0 * n, max(1.25 * n, 1.1 * n * (r_hat - 1.0) / (RHAT_MAX - 1.0)))
    else:
        target = 2.0 * n
    return int(min(ceiling, 50 * -(-int(target) // 50)))


def _draws_per_chain(trace: az.InferenceData) -> int:
    """Draws every chain of a nutpie trace has reached (``inspect`` pads the chains that
    are behind with NaN at the end)."""
    post = trace.posterior
    if not post.sizes.get("draw"):
        return 0
    var = next((v for v in post.data_vars.values() if v.dtype.kind == "f"), None)
    if var is None:
        return int(post.sizes["draw"])
    first = var.values.reshape(post.sizes["chain"], post.sizes["draw"], -1)[:, :, 0]
    return int((~np.isnan(first)).sum(axis=1).min())


def _finished(run: Any) -> bool:
    """Whether nutpie's background ``run`` has finished (nutpie 0.16 answers "not yet"
    with a ``TimeoutError``)."""
    try:
        return bool(run.is_finished)
    except TimeoutError:
        return False


#: ArviZ's warning for nutpie's trace without ``save_warmup``: its warm-up groups have no
#: draws (a message pattern for ``warnings.filterwarnings``)
EMPTY_WARMUP_WARNING = r"More chains \(\d+\) than draws \(0\)"


@contextmanager
def _quiet_chains_warning(pattern: str = EMPTY_WARMUP_WARNING) -> Iterator[None]:
    """Silence ArviZ's "More chains (2) than draws (n)" for nutpie's trace: without
    ``save_warmup`` its warm-up groups have no draws (``pattern`` by default), and a
    look while the chains start has few (``"More chains"``); the checks see every draw
    there is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", pattern, UserWarning)
        yield


def _trace_with(run: Any, n: int) -> tuple[az.InferenceData, bool]:
    """The trace of nutpie's background ``run`` once every chain has ``n`` draws, or the
    whole trace when it finishes first, and whether it finished. Looks as often as the
    chains' pace says it should: once they draw, about when ``n`` is due (each look
    copies the trace)."""
    pace: tuple[float, int] | None = None  # (time, draws) of the first look with draws
    wait = 0.5
    while True:
        if _finished(run):
            with _quiet_chains_warning():
                return run.wait(), True
        time.sleep(wait)
        with _quiet_chains_warning("More chains"):  # a look before each chain has 2 draws
            trace = run.inspect()
        have = _draws_per_chain(trace)
        if have >= n:
            return trace, False
        now = time.perf_counter()
        if have and pace is None:
            pace = (now, have)
        if pace and have > pace[1]:
            rate = (have - pace[1]) / (now - pace[0])  # draws per second per chain
            wait = min(10.0, max(0.2, 1.05 * (n - have) / rate))
        else:
            wait = min(2.0, wait * 1.5)  # still tuning


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
    fit that still fails is reported as failed. With ``min_draws`` set (nutpie) each run
    sizes its draws by the checks (:meth:`Sampler.sample_until`): a run short of ESS goes
    on with the same chains, so a second run is left for divergences (it stops at the
    first check that finds one) and for fits that reach the ceiling without passing.

    Returns
    -------
    (idata, convergence, resampled_with)
        ``resampled_with`` is ``None`` when the first run passed, else the second run's
        ``draws`` (per chain, kept) and ``target_accept`` and the first run's problems.
    """
    idata, conv = sampler.sample_until(seed, check, data)
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
        idata, conv = sampler.sample_until(seed, check, data)
    finally:
        sampler.settings = first
    posterior = getattr(idata, "posterior", None)
    if posterior is not None:  # draws sized by the checks: what the rerun kept
        resampled["draws"] = int(posterior.sizes["draw"])
    log_check(conv, reran=True)
    return idata, conv, resampled


def log_check(conv: Convergence, reran: bool = False) -> None:
    """Record in :data:`MCMC_LOG` what a fit's convergence checks reached (for a model that
    samples and checks without :func:`sample_checked`)."""
    MCMC_LOG.append({"event": "checked", "min_ess_bulk": float(conv.min_ess_bulk),
                     "min_ess_tail": float(conv.min_ess_tail), "ok": bool(conv.ok),
                     "reran": reran})
