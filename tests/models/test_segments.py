"""Segmentation on synthetic data with planted segments (demo generator, 25,000 clients)."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from analysis.demo.store import DemoSpec, write_demo
from analysis.store.loaders import load_folder
from analysis.store.rules import clean
from models.segment_features import client_behaviour
from models.segments import GaussianMixtureSegmenter, cluster_actions, profile_clusters, stability


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seg")
    write_demo(folder, DemoSpec(clients=25_000, seed=5))
    data = clean(load_folder(folder))
    b = client_behaviour(data.purchases).join(
        data.clients.set_index("id")["age"].astype(float))
    truth = pd.read_parquet(folder / "truth_clients.parquet").set_index("id")["segment"]
    n_seg = json.loads((folder / "truth.json").read_text())["n_segments"]
    fit_set = b[b["items"] >= 6]
    model = GaussianMixtureSegmenter(k_range=(2, 7), random_state=3).fit(fit_set)
    return model, fit_set, b, truth.reindex(fit_set.index), n_seg


def test_chosen_k_is_the_planted_number_and_clusters_match_planted_segments(planted, capsys):
    model, fit_set, _, truth, n_seg = planted
    ari = adjusted_rand_score(truth, model.labels_)
    with capsys.disabled():
        print(f"\n  segments: chose k={model.n_clusters_} (planted {n_seg}), ARI {ari:.3f} "
              f"on {len(fit_set)} clients")
    assert model.n_clusters_ == n_seg
    assert ari >= 0.8
    sel = model.summary()
    assert sel["chosen"].sum() == 1 and set(sel["k"]) == set(range(2, 8))
    scores = ["bic", "icl", "silhouette", "calinski_harabasz", "davies_bouldin"]
    assert sel[scores].notna().all().all()


def test_same_seed_same_labels_and_other_seeds_agree(planted):
    model, fit_set, _, _, _ = planted
    again = GaussianMixtureSegmenter(k_range=(2, 7), random_state=3).fit(fit_set)
    assert np.array_equal(again.labels_, model.labels_)
    assert np.bincount(model.labels_).tolist() == sorted(np.bincount(model.labels_), reverse=True)
    stab = stability(model, fit_set, seeds=(11, 12))
    assert stab["ari"].mean() >= 0.9


def test_new_clients_get_membership_probabilities(planted):
    model, _, b, _, _ = planted
    thin = b[b["items"] < 6].head(500)
    p = model.predict_proba(thin)
    assert p.shape == (len(thin), model.n_clusters_)
    assert np.allclose(p.sum(axis=1), 1)
    assert np.array_equal(model.predict(thin), p.argmax(axis=1))


def test_profiles_and_actions_come_from_the_numbers(planted):
    model, fit_set, _, _, _ = planted
    labels = pd.Series(model.labels_, index=fit_set.index)
    prof, cats = profile_clusters(fit_set, labels)
    assert prof["clients"].sum() == len(fit_set)
    assert np.isclose(prof["share_of_clients"].sum(), 1)
    shares = cats.groupby("cluster")["share"].sum()
    assert np.allclose(shares, 1)
    acts = cluster_actions(prof)
    hunter = prof.loc[prof["discount_share"].idxmax()]
    row = acts.set_index("cluster").loc[hunter["cluster"]]
    assert "discount-driven" in row["name"] and f"{hunter['discount_share']:.0%}" in row["action"]
    up = pd.DataFrame({"cluster": prof["cluster"].astype(str),
                       "conversion_uplift_p_positive": 0.99,
                       "profit_per_client_p_positive": [0.95] + [0.1] * (len(prof) - 1)})
    acts = cluster_actions(prof, up)
    assert "paid off" in acts["action"].iloc[0] and "did not pay off" in acts["action"].iloc[1]


def test_k_range_larger_than_the_data_is_clipped_with_a_message():
    rng = np.random.default_rng(0)
    t = pd.DataFrame({"items": [3, 5, 8, 2, 9, 4], "orders": [1, 2, 3, 1, 4, 2],
                      "sale_items": [0, 2, 5, 1, 0, 3], "kids_items": [1, 0, 2, 0, 3, 1],
                      "age": rng.integers(20, 60, 6)})
    with pytest.warns(UserWarning, match="k range clipped to 2..5"):
        m = GaussianMixtureSegmenter(k_range=(2, 10), covariance_types=("diag",)).fit(t)
    assert m.selection_["k"].max() == 5 and m.notes_
    with pytest.raises(ValueError, match="k_range"):
        GaussianMixtureSegmenter(k_range=(7, 10)).fit(t)
    with pytest.raises(ValueError, match="criterion"):
        GaussianMixtureSegmenter(criterion="aic").fit(t)
