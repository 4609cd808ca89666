from dataclasses import replace
from types import SimpleNamespace

import pytest

from models.sampling import SamplerSettings, sample_checked


class _FakeSampler:
    """Records the settings of each run; returns the run number as the 'idata'."""

    def __init__(self) -> None:
        self.settings = SamplerSettings(draws=1000, target_accept=0.85)
        self.runs: list[SamplerSettings] = []
        self.data: list[object] = []

    def sample(self, seed: int = 0, data=None):
        self.runs.append(self.settings)
        self.data.append(data)
        return len(self.runs)

    def sample_until(self, seed, check, data=None):
        idata = self.sample(seed, data)
        return idata, check(idata)


def _check(ok_from_run: int):
    return lambda run: SimpleNamespace(ok=run >= ok_from_run, problems=[f"run {run} short"],
                                       divergences=3, min_ess_bulk=500.0, min_ess_tail=450.0)


def test_a_passing_run_is_not_repeated():
    s = _FakeSampler()
    idata, conv, resampled = sample_checked(s, 1, _check(1), retry_draws=3000)
    assert (idata, conv.ok, resampled) == (1, True, None) and len(s.runs) == 1


def test_a_failing_run_is_repeated_longer_with_smaller_steps_and_reported():
    s = _FakeSampler()
    idata, conv, resampled = sample_checked(s, 1, _check(2), retry_draws=3000)
    assert idata == 2 and conv.ok
    assert (s.runs[1].draws, s.runs[1].target_accept) == (3000, 0.95)
    assert resampled == {"draws": 3000, "target_accept": 0.95,
                         "first_run_problems": ["run 1 short"]}
    assert s.settings.draws == 1000  # the sampler keeps its own settings


def test_a_second_failure_is_what_is_reported():
    s = _FakeSampler()
    _, conv, resampled = sample_checked(s, 1, _check(3), retry_draws=3000)
    assert not conv.ok and conv.problems == ["run 2 short"] and resampled is not None


def test_a_run_short_of_ess_only_is_repeated_longer_at_the_same_step_size():
    s = _FakeSampler()
    check = lambda run: SimpleNamespace(ok=run >= 2, problems=["tail ESS"], divergences=0,  # noqa: E731
                                        min_ess_bulk=500.0, min_ess_tail=300.0)
    _, _, resampled = sample_checked(s, 1, check, retry_draws=3000)
    assert (s.runs[1].draws, s.runs[1].target_accept) == (3000, 0.85)
    assert resampled["target_accept"] == 0.85


def test_new_data_reach_both_runs():
    s = _FakeSampler()
    sample_checked(s, 1, _check(2), retry_draws=3000, data={"x": 1})
    assert s.data == [{"x": 1}, {"x": 1}]


def test_sample_checked_logs_what_the_checks_reached():
    from models.sampling import MCMC_LOG, reset_log, summarize_log

    reset_log()
    sample_checked(_FakeSampler(), 1, _check(2), retry_draws=3000)
    log = [e for e in MCMC_LOG if e["event"] == "checked"]
    assert len(log) == 1 and log[0]["reran"] and log[0]["ok"]
    s = summarize_log()
    assert (s["checked_fits"], s["reruns"], s["failed_checks"]) == (1, 1, 0)
    reset_log()
    assert summarize_log()["checked_fits"] == 0


def _conv(bulk: float, tail: float, ok: bool = False, r_hat: float = float("nan"),
          bfmi: float = 1.0) -> SimpleNamespace:
    return SimpleNamespace(ok=ok, min_ess_bulk=bulk, min_ess_tail=tail, divergences=0,
                           max_r_hat=r_hat, min_bfmi=bfmi)


def test_the_next_check_is_where_ess_should_pass():
    from models.sampling import next_check

    # ESS 250 at 500 draws: 400 needs about 800, plus 10% = 880, rounded up to 50
    assert next_check(500, _conv(250.0, 350.0), ceiling=5000) == 900
    # at least 1.25 times, at most 2 times the draws so far, never past the ceiling
    assert next_check(400, _conv(390.0, 395.0), ceiling=5000) == 500
    assert next_check(500, _conv(200.0, 350.0), ceiling=5000) == 1000
    assert next_check(250, _conv(10.0, 10.0), ceiling=5000) == 500
    assert next_check(2000, _conv(100.0, 100.0), ceiling=3000) == 3000
    # ESS passed but r_hat did not: r_hat - 1 falls about as 1 / draws, so where it should
    # reach 1.01 with 10% to spare (1.015 at 300 draws: 1.1 x 1.5 x 300 = 495 -> 500),
    # between 1.25 and 2 times the draws
    assert next_check(300, _conv(900.0, 800.0, r_hat=1.015), ceiling=5000) == 500
    assert next_check(400, _conv(900.0, 800.0, r_hat=1.0105), ceiling=5000) == 500
    assert next_check(300, _conv(900.0, 800.0, r_hat=1.08), ceiling=5000) == 600
    # E-BFMI short, or r_hat undefined: twice the draws
    assert next_check(300, _conv(900.0, 800.0, r_hat=1.015, bfmi=0.2), ceiling=5000) == 600
    assert next_check(300, _conv(900.0, 800.0), ceiling=5000) == 600


@pytest.fixture(scope="module")
def tiny_sampler():
    """A compiled eight-school-like model (nutpie); a few seconds to compile."""
    pytest.importorskip("nutpie")
    import numpy as np
    import pymc as pm

    from models.sampling import Sampler, SamplerSettings

    rng = np.random.default_rng(0)
    y = rng.normal(size=(8, 30)) + rng.normal(size=(8, 1))
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 1)
        tau = pm.HalfNormal("tau", 1)
        z = pm.Normal("z", 0, 1, shape=8)
        pm.Normal("y", mu + tau * z[:, None], 1, observed=y)
    return Sampler(model, SamplerSettings(draws=4000, tune=300, min_draws=100))


def _checked(idata):
    from models.diagnostics import check_convergence

    return check_convergence(idata, var_names=["mu", "tau"])


def test_draws_sized_by_the_checks_are_the_fixed_runs_first_draws(tiny_sampler):
    """The run stops at the first check that passes; what it keeps equals a fixed run of
    that many draws (same seed), and a second run gives the same draws."""
    import numpy as np

    from models.sampling import MCMC_LOG, Sampler, reset_log

    reset_log()
    idata, conv = tiny_sampler.sample_until(3, _checked)
    n = idata.posterior.sizes["draw"]
    checks = MCMC_LOG[-1]["checks"]
    assert conv.ok and conv.min_ess_bulk >= 400 and conv.min_ess_tail >= 400
    assert checks[0] == 100 and checks[-1] == n and len(checks) >= 2 and n < 4000
    assert not _checked(idata.isel(draw=slice(0, checks[-2]))).ok
    fixed = Sampler(tiny_sampler.model, replace(tiny_sampler.settings, draws=n, min_draws=0))
    fixed._compiled = tiny_sampler._compiled
    ref = fixed.sample(3)
    for name in ("mu", "tau", "z"):
        assert np.array_equal(ref.posterior[name].values, idata.posterior[name].values)
    again, _ = tiny_sampler.sample_until(3, _checked)
    assert np.array_equal(again.posterior["tau"].values, idata.posterior["tau"].values)


def test_a_fit_that_never_passes_stops_at_the_ceiling_and_says_so(tiny_sampler):
    from models.diagnostics import check_convergence

    never = lambda idata: check_convergence(idata, var_names=["tau"], ess_min=1e9)  # noqa: E731
    tiny_sampler.settings = replace(tiny_sampler.settings, draws=600)
    try:
        idata, conv = tiny_sampler.sample_until(4, never)
    finally:
        tiny_sampler.settings = replace(tiny_sampler.settings, draws=4000)
    assert idata.posterior.sizes["draw"] == 600 and not conv.ok
    assert any("ESS" in p for p in conv.problems)

