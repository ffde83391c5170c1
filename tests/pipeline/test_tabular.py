"""The trees' column encodings against a plain-Python reference, and their JSON state."""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from fusionrec.ctr.config import DataConfig, FeatureConfig
from fusionrec.errors import FusionrecError
from fusionrec.pipeline.tabular import TabularEncoder, default_encodings


def random_table(rng, n=500):
    ids = [str(v) for v in rng.zipf(1.5, n) % 50]
    ids = [v if rng.random() > 0.05 else "" for v in ids]
    lists = ["|".join(str(x) for x in rng.integers(0, 9, rng.integers(0, 5))) for _ in range(n)]
    lists = [v if rng.random() > 0.1 else "a||b|" for v in lists]  # empty entries are not counted
    return pa.table({"clk": rng.integers(0, 2, n), "item": pa.array(ids), "hist": pa.array(lists),
                     "price": pa.array(rng.integers(1, 10**5, n)), "day": pa.array(["d1"] * n)})  # fmt: skip


def encoder_for(encodings, max_categories=254):
    return TabularEncoder({k: (v, "|") for k, v in encodings.items()}, max_categories)


def fitted(encoder, table, y=None):
    encoder.fit_transform(table, np.zeros(table.num_rows) if y is None else y, 0)
    return encoder


def test_defaults_follow_field_types_and_the_features_that_read_them():
    config = DataConfig(input_fields=[{"input_name": n, "input_type": t} for n, t in
                                      [("clk", "INT32"), ("item", "STRING"), ("hist", "STRING"), ("price", "INT32"), ("day", "STRING")]],
                        label_fields=["clk"])  # fmt: skip
    features = [FeatureConfig(input_names=["item"], hash_bucket_size=9, embedding_dim=4),
                FeatureConfig(input_names=["hist"], feature_type="TagFeature", separator=";", hash_bucket_size=9, embedding_dim=4),
                FeatureConfig(input_names=["price"], num_buckets=10, embedding_dim=4)]  # fmt: skip
    assert default_encodings(config, features, {}) == {
        "item": ("frequency", "|"), "hist": ("count", ";"), "price": ("numeric", "|"), "day": ("skip", "|")}
    assert default_encodings(config, features, {"item": "ordinal", "day": "frequency"})["item"] == ("ordinal", "|")
    with pytest.raises(FusionrecError, match="'numeric' needs a numeric input field; 'item' is STRING"):
        default_encodings(config, features, {"item": "numeric"})


def test_frequency_ordinal_and_count_equal_a_plain_reference(rng):
    fit, new = random_table(rng), random_table(rng)
    encoder = encoder_for({"item": "frequency", "hist": "count", "price": "numeric", "day": "skip"})
    encoder.fit_transform(fit, fit.column("clk").to_numpy(), 0)
    ordinal = encoder_for({"item": "ordinal"}, max_categories=5)
    ordinal.fit_transform(fit, fit.column("clk").to_numpy(), 0)
    counts = Counter(v for v in fit.column("item").to_pylist() if v != "")
    ranked = sorted(counts, key=lambda v: (-counts[v], v))
    unseen = Counter()
    X = encoder.transform(new, unseen)
    O = ordinal.transform(new)
    assert encoder.feature_names == ["item", "hist.count", "price"]
    n_unseen = 0
    for i, (item, hist, price) in enumerate(zip(*(new.column(c).to_pylist() for c in ("item", "hist", "price")))):
        if item == "":
            assert np.isnan(X[i, 0]) and np.isnan(O[i, 0])
        else:
            assert X[i, 0] == counts.get(item, 0)
            rank = ranked.index(item) if item in counts else None
            assert (O[i, 0] == rank) if rank is not None and rank < 5 else np.isnan(O[i, 0])
            n_unseen += item not in counts
        assert X[i, 1] == len([t for t in hist.split("|") if t])
        assert X[i, 2] == np.float32(price)
    assert unseen == (Counter({"item": n_unseen}) if n_unseen else Counter())


def test_unseen_values_are_counted_and_rare_values_are_not(rng):
    table = pa.table({"item": ["a", "a", "b", "c"]})
    encoder = fitted(encoder_for({"item": "ordinal"}, max_categories=1), table)
    unseen = Counter()
    codes = encoder.transform(pa.table({"item": ["a", "b", "z", ""]}), unseen)[:, 0]
    assert codes[0] == 0 and np.isnan(codes[1:]).all()
    assert unseen == Counter({"item": 1})  # 'b' was seen (rare), 'z' never, '' is missing


def test_state_round_trips_through_json(rng):
    fit, new = random_table(rng), random_table(rng)
    encoder = fitted(encoder_for({"item": "ordinal", "hist": "count", "price": "numeric"}, max_categories=3), fit)
    again = TabularEncoder.from_state(json.loads(json.dumps(encoder.state())), "encoder.json")
    np.testing.assert_array_equal(encoder.transform(new), again.transform(new))
    state = encoder.state()
    state["columns"][0]["numbers"] = state["columns"][0]["numbers"][:1]
    with pytest.raises(FusionrecError, match="encoder.json: not a valid tabular encoder .*values but 1 numbers"):
        TabularEncoder.from_state(state, "encoder.json")
    with pytest.raises(FusionrecError, match="not a fusionrec tabular encoder"):
        TabularEncoder.from_state({"format": "x"}, "encoder.json")


def test_a_missing_column_is_named():
    encoder = fitted(encoder_for({"item": "frequency"}), pa.table({"item": ["a"]}))
    with pytest.raises(FusionrecError, match="input column 'item' is missing"):
        encoder.transform(pa.table({"other": ["a"]}))


def test_target_encoding_is_scikit_learns_cross_fitted_target_encoder(rng):
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import TargetEncoder

    fit, new = random_table(rng, 2000), random_table(rng, 300)
    y = fit.column("clk").to_numpy().astype(float)
    encoder = encoder_for({"item": "target"})
    X = encoder.fit_transform(fit, y, seed=3)
    values = np.asarray(fit.column("item").to_pylist(), dtype=object).reshape(-1, 1)
    reference = TargetEncoder(target_type="binary", cv=StratifiedKFold(5, shuffle=True, random_state=3))
    expected = reference.fit_transform(values, y.astype(int))[:, 0]
    empty = values[:, 0] == ""
    np.testing.assert_allclose(X[~empty, 0], expected[~empty], rtol=1e-6)
    assert np.isnan(X[empty, 0]).all()
    unseen = Counter()
    new_values = np.asarray(new.column("item").to_pylist(), dtype=object).reshape(-1, 1)
    Z = encoder.transform(new, unseen)[:, 0]
    seen = np.isin(new_values[:, 0], reference.categories_[0]) & (new_values[:, 0] != "")
    np.testing.assert_allclose(Z[seen], reference.transform(new_values)[seen, 0], rtol=1e-6)
    never = (~seen) & (new_values[:, 0] != "")
    np.testing.assert_allclose(Z[never], reference.target_mean_, rtol=1e-6)
    assert unseen == (Counter({"item": int(never.sum())}) if never.any() else Counter())
    again = TabularEncoder.from_state(json.loads(json.dumps(encoder.state())), "encoder.json")
    np.testing.assert_array_equal(again.transform(new), encoder.transform(new))


def test_matches_count_the_value_in_the_list(rng):
    table = pa.table({"cate": ["3", "4", "", "7", "1"], "hist": ["3|4|3", "", "1|2", "7", "11|1|"]})
    encoder = TabularEncoder({"cate": ("skip", "|"), "hist": ("skip", "|")}, matches=[("cate", "hist", "|")])
    X = encoder.fit_transform(table, np.zeros(5), 0)
    assert encoder.feature_names == ["cate.in.hist"]
    np.testing.assert_array_equal(X[:, 0], [2, 0, 0, 1, 1])
