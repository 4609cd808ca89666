"""One way to sample every PyMC model: nutpie when installed (compiled once, fast NUTS),
PyMC's own NUTS otherwise. Both return ArviZ ``InferenceData`` with ``sample_stats``."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing PyMC takes seconds; the CLI and config must not pay for it
    import arviz as az
    import pymc as pm


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

    @classmethod
    def from_any(cls, obj: Any) -> SamplerSettings:
        if obj is None:
            return cls()
        if isinstance(obj, cls):
            return obj
        keys = ("draws", "tune", "chains", "target_accept", "backend")
        src = obj if isinstance(obj, dict) else {k: getattr(obj, k) for k in keys}
        return cls(**{k: src[k] for k in keys if k in src})


def nutpie_available() -> bool:
    return importlib.util.find_spec("nutpie") is not None


def chosen_backend(settings: SamplerSettings) -> str:
    if settings.backend == "auto":
        return "nutpie" if nutpie_available() else "pymc"
    return settings.backend


def sample(model: pm.Model, settings: SamplerSettings | None = None, seed: int = 0
           ) -> az.InferenceData:
    """Sample ``model`` with NUTS; same seed, same draws."""
    s = settings or SamplerSettings()
    if chosen_backend(s) == "nutpie":
        import nutpie

        compiled = nutpie.compile_pymc_model(model)
        idata = nutpie.sample(compiled, draws=s.draws, tune=s.tune, chains=s.chains, seed=seed,
                              target_accept=s.target_accept, progress_bar=False, cores=s.chains)
        return idata
    import pymc as pm

    with model:
        return pm.sample(draws=s.draws, tune=s.tune, chains=s.chains, cores=min(s.chains, 2),
                         target_accept=s.target_accept, random_seed=seed, progressbar=False,
                         compute_convergence_checks=False)
