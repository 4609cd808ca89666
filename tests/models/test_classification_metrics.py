import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models.classification_metrics import auc_bootstrap


def _data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(float)
    w = rng.integers(1, 4, n).astype(float)
    good = np.round(rng.random(n) + 0.8 * y, 2)  # ties on purpose
    weak = rng.random(n) + 0.2 * y
    return y, w, good, weak


def test_auc_is_scikit_learns_weighted_auc_and_the_paired_difference_is_found():
    y, w, good, weak = _data()
    r = auc_bootstrap(y, w, {"good": good, "weak": weak}, draws=200, seed=1)
    assert r["good"]["mean"] == pytest.approx(roc_auc_score(y, good, sample_weight=w))
    assert r["weak"]["mean"] == pytest.approx(roc_auc_score(y, weak, sample_weight=w))
    for k in ("good", "weak", "difference vs weak"):
        assert r[k]["low"] < r[k]["mean"] < r[k]["high"]
    assert r["difference vs weak"]["low"] > 0  # planted: good separates far better


def test_the_same_model_twice_differs_by_exactly_zero_in_every_replicate():
    y, w, good, _ = _data()
    r = auc_bootstrap(y, w, {"a": good, "b": good.copy()}, draws=50)
    assert r["difference vs b"] == {"mean": 0.0, "low": 0.0, "high": 0.0}


def test_rows_of_one_client_share_a_weight_so_the_interval_is_wider():
    y, w, good, _ = _data(n=1500, seed=3)
    rep = 6  # every client has six identical rows
    yy, ww, pp = (np.repeat(a, rep) for a in (y, w, good))
    clients = np.repeat(np.arange(len(y)), rep)
    as_rows = auc_bootstrap(yy, ww, {"m": pp}, draws=300, seed=2)["m"]
    as_clients = auc_bootstrap(yy, ww, {"m": pp}, unit=clients, draws=300, seed=2)["m"]
    width = {k: v["high"] - v["low"] for k, v in (("rows", as_rows), ("clients", as_clients))}
    assert width["clients"] > 1.8 * width["rows"]  # about sqrt(6) = 2.4 times


def test_a_cell_row_weighs_as_the_clients_it_stands_for():
    # a cell of w clients (negative unit) varies like w clients of one row each
    y, w, good, _ = _data(n=2000, seed=5)
    w = np.full(len(y), 4.0)
    cells = auc_bootstrap(y, w, {"m": good}, unit=np.full(len(y), -1), draws=300)["m"]
    yy, pp = np.repeat(y, 4), np.repeat(good, 4)
    single = auc_bootstrap(yy, np.ones(len(yy)), {"m": pp}, draws=300)["m"]
    assert (cells["high"] - cells["low"]) == pytest.approx(single["high"] - single["low"],
                                                          rel=0.25)


def test_bad_input_is_refused():
    y, w, good, _ = _data(n=100)
    with pytest.raises(ValueError, match="no predictions"):
        auc_bootstrap(y, w, {})
    with pytest.raises(ValueError, match="same length"):
        auc_bootstrap(y, w, {"m": good[:-1]})
    with pytest.raises(ValueError, match="both outcomes"):
        auc_bootstrap(np.zeros(100), w, {"m": good})


def test_the_replicates_computed_at_once_change_memory_not_numbers(monkeypatch):
    import models.classification_metrics as cm

    y, w, good, weak = _data()
    preds = {"good": good, "weak": weak}
    unit = np.arange(len(y)) // 3
    at_25 = auc_bootstrap(y, w, preds, unit=unit, draws=60, seed=4, block=25)
    assert auc_bootstrap(y, w, preds, unit=unit, draws=60, seed=4, block=7) == at_25
    # the default block shrinks with the rows: here to 2 replicates at a time
    monkeypatch.setattr(cm, "BLOCK_BYTES", 2 * cm.BYTES_PER_ROW_REPLICATE * len(y))
    assert auc_bootstrap(y, w, preds, unit=unit, draws=60, seed=4) == at_25
