from types import SimpleNamespace

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
