import arviz as az
import numpy as np

from models.diagnostics import check_convergence


def _idata(chains):
    return az.from_dict(posterior={"x": chains},
                        sample_stats={"diverging": np.zeros_like(chains, dtype=bool)})


def test_good_chains_pass():
    rng = np.random.default_rng(0)
    assert check_convergence(_idata(rng.normal(size=(2, 2000)))).ok


def test_stuck_chains_fail_loudly():
    rng = np.random.default_rng(0)
    bad = np.stack([rng.normal(0, 1, 500), rng.normal(3, 1, 500)])
    res = check_convergence(_idata(bad))
    assert not res.ok and any("r_hat" in p for p in res.problems)
    assert any("ESS" in p for p in res.problems)


def test_divergences_are_counted():
    rng = np.random.default_rng(0)
    idata = az.from_dict(posterior={"x": rng.normal(size=(2, 2000))},
                         sample_stats={"diverging": np.r_[np.ones(3), np.zeros(3997)]
                                       .reshape(2, 2000).astype(bool)})
    res = check_convergence(idata)
    assert res.divergences == 3 and not res.ok


def test_constant_quantities_are_skipped_quietly_and_nan_draws_fail():
    import warnings

    rng = np.random.default_rng(0)
    zero = np.zeros((2, 2000))  # a structural zero (a pinned level): r_hat and ESS are NaN
    idata = az.from_dict(posterior={"x": rng.normal(size=(2, 2000)), "zero": zero},
                         sample_stats={"diverging": np.zeros((2, 2000), dtype=bool)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing printed for it
        assert check_convergence(idata).ok
    bad = rng.normal(size=(2, 2000))
    bad[0, 5] = np.nan  # NaN diagnostics for draws that vary: a failed check
    idata = az.from_dict(posterior={"x": bad},
                         sample_stats={"diverging": np.zeros((2, 2000), dtype=bool)})
    res = check_convergence(idata)
    assert not res.ok and any("undefined" in p for p in res.problems)
