import numpy as np
import pandas as pd
import pytest

from models.segment_features import BehaviourEncoder, client_behaviour


def _purchases():
    return pd.DataFrame({
        "id": [1, 1, 1, 2, 2, 3],
        "dt": [0, 0, 20, 6, 30, 10],  # day 6 and day 10 fall in the excluded window
        "revenue": [100, 50, 200, 999, 300, 10],
        "base_sale": [1, 0, 0, 1, 1, 0],
        "category": ["носки", "кеды", "палатка", "носки", "носки", "самокат"],
        "product_key": ["носки", "детские кеды", "палатка", "носки", "носки", "самокат"],
    })


def test_behaviour_leaves_out_the_campaign_window_and_counts_exactly():
    b = client_behaviour(_purchases(), exclude_days=(5, 16), last_day=58)
    assert list(b.index) == [1, 2]  # client 3 bought only inside the window
    assert b.loc[1, "items"] == 3 and b.loc[1, "orders"] == 2
    assert b.loc[1, "sale_items"] == 1 and b.loc[1, "kids_items"] == 1
    assert b.loc[1, "recency"] == 38 and b.loc[2, "revenue"] == 300
    assert b.loc[2, "cat__носки"] == 1 and b.loc[1, "cat__палатка"] == 1


def test_behaviour_names_missing_columns():
    with pytest.raises(ValueError, match="product_key"):
        client_behaviour(_purchases().drop(columns="product_key"))


def _table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    items = rng.integers(1, 12, n)
    return pd.DataFrame({
        "items": items, "orders": np.minimum(items, rng.integers(1, 5, n)),
        "sale_items": rng.binomial(items, 0.3), "kids_items": rng.binomial(items, 0.2),
        "cat__a": rng.binomial(items, 0.5), "age": rng.integers(18, 70, n),
    }, index=pd.Index(np.arange(n), name="id")).assign(cat__b=lambda d: d["items"] - d["cat__a"])


def test_encoder_output_is_standardised_and_named():
    enc = BehaviourEncoder(n_category_components=3).fit(_table())
    Z = enc.transform(_table())
    assert Z.shape == (200, len(enc.feature_names_out_))
    assert np.allclose(Z.mean(axis=0), 0, atol=1e-9) and np.allclose(Z.std(axis=0), 1)
    assert enc.feature_names_out_[:3] == ["log_orders", "sale_logit", "kids_logit"]
    assert "category_pc1" in enc.feature_names_out_ and "category_pc2" not in enc.feature_names_out_


def test_constant_feature_is_dropped_with_a_warning():
    t = _table().assign(kids_items=0)
    with pytest.warns(UserWarning, match="kids_logit"):
        enc = BehaviourEncoder().fit(t)
    assert "kids_logit" in enc.dropped_ and "kids_logit" not in enc.feature_names_out_


def test_all_constant_features_raise():
    t = pd.DataFrame({"items": [2] * 5, "orders": [1] * 5, "sale_items": [0] * 5,
                      "kids_items": [0] * 5})
    with pytest.raises(ValueError, match="constant"), pytest.warns(UserWarning):
        BehaviourEncoder(use_age=False).fit(t)


def test_clients_without_purchases_are_refused_by_id():
    t = _table()
    t.loc[5, "items"] = 0
    with pytest.raises(ValueError, match=r"no purchases.*\[5\]"):
        BehaviourEncoder().fit(t)
