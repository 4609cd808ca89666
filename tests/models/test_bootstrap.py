import numpy as np

from models.bootstrap import ClientBootstrap


def test_rows_of_a_client_share_a_weight_and_a_cell_weighs_as_its_clients():
    w = np.array([2.0, 2.0, 1.0, 50.0])
    unit = np.array([7, 7, 3, -1])  # client 7 has two rows; the last row is a cell
    bw = ClientBootstrap(w, unit).draw(np.random.default_rng(0), 4000)
    assert bw.shape == (4000, 4)
    np.testing.assert_array_equal(bw[:, 0], bw[:, 1])
    assert np.all(bw[:, 0] != bw[:, 2])
    # Exp(1) times the row weight; Gamma(50, 1) for the cell: means w, variances w^2 / w
    np.testing.assert_allclose(bw.mean(axis=0), w, rtol=0.06)
    assert bw[:, 2].var() > 0.8 and 40 < bw[:, 3].var() < 60


def test_several_replicates_at_once_are_the_one_at_a_time_replicates():
    rng_w = np.random.default_rng(1)
    w, unit = rng_w.integers(1, 5, 300).astype(float), rng_w.integers(-1, 40, 300)
    boot = ClientBootstrap(w, unit)
    at_once = boot.draw(np.random.default_rng(2), 5)
    rng = np.random.default_rng(2)
    one_by_one = np.vstack([boot.draw(rng)[0] for _ in range(5)])
    np.testing.assert_array_equal(at_once, one_by_one)
