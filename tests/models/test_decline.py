import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from analysis.steps.one_click_data import CATEGORICAL, NUMERIC, load_one_click
from models.classification_metrics import binary_metrics
from models.decline import FAMILIES, nested_cv, outer_folds, search, search_space


@pytest.fixture(scope="module")
def data(one_click_demo):
    d = load_one_click(one_click_demo)
    return d.X.iloc[:700], d.y[:700]


def test_search_space_covers_five_families():
    fams = {type(g["model"][0]) for g in search_space()}
    assert fams == set(FAMILIES)


def test_search_keeps_preprocessing_inside_and_predicts_probabilities(data):
    X, y = data
    res = search(X, y, CATEGORICAL, NUMERIC, folds=3)
    assert isinstance(res.best, Pipeline) and list(res.best.named_steps) == ["pre", "model"]
    assert set(res.candidates["family"]) == set(FAMILIES.values())
    p = res.best.predict_proba(X)[:, 1]
    assert p.shape == (len(X),) and 0 <= p.min() and p.max() <= 1
    # an unseen category at predict time is encoded as all zeros (documented), no crash
    X2 = X.head(5).assign(category="Новая категория")
    assert np.isfinite(res.best.predict_proba(X2)).all()


def test_nested_cv_scores_every_client_once_on_held_out_folds(data):
    X, y = data
    # two outer folds of two inner ones: 224 candidate fits (3 x 3 took 504, 48 s)
    splits = outer_folds(y, 2, random_state=0)
    n = nested_cv(X, y, CATEGORICAL, NUMERIC, splits, inner_folds=2, permutation_repeats=2)
    assert not np.isnan(n.oof).any() and len(n.folds) == 2
    m = binary_metrics(y, n.oof)
    assert m["roc_auc"] > 0.7  # planted signal; a leak-free score, not 0.99
    assert set(n.importance["feature"]) == set(X.columns)
    top = n.importance["feature"].head(5).tolist()
    assert "pages_per_visit" in top or "minutes_m0" in top  # the strongest planted effects


def test_outer_folds_are_stratified():
    y = np.r_[np.ones(40), np.zeros(60)].astype(int)
    for _, te in outer_folds(y, 5):
        assert y[te].mean() == pytest.approx(0.4)


def test_search_refuses_a_class_with_fewer_members_than_its_folds(data):
    X, y = data
    y = np.zeros(len(y), int)
    y[:2] = 1
    with pytest.raises(ValueError, match=r"^class 1 has 2 members; a 3-fold search needs at "
                                         r"least 3 of each class$"):
        search(X, y, CATEGORICAL, NUMERIC, folds=3)


def test_nested_cv_refuses_outer_training_parts_too_small_for_the_inner_folds(data):
    X, y = data
    y = np.zeros(len(y), int)
    y[:3] = 1  # one per outer test fold: every outer training part keeps 2 < 3 inner folds
    splits = outer_folds(y, 3, random_state=0)
    with pytest.raises(ValueError, match=r"^class 1 has 2 members; a 3-fold search"):
        nested_cv(X, y, CATEGORICAL, NUMERIC, splits, inner_folds=3)
