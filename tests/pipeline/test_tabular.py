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
    encoder = encoder_for({"item": "frequency", "hist": "count", "price": "numeric", "day": "skip"}).fit(fit)
    ordinal = encoder_for({"item": "ordinal"}, max_categories=5).fit(fit)
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
    encoder = encoder_for({"item": "ordinal"}, max_categories=1).fit(table)
    unseen = Counter()
    codes = encoder.transform(pa.table({"item": ["a", "b", "z", ""]}), unseen)[:, 0]
    assert codes[0] == 0 and np.isnan(codes[1:]).all()
    assert unseen == Counter({"item": 1})  # 'b' was seen (rare), 'z' never, '' is missing


def test_state_round_trips_through_json(rng):
    fit, new = random_table(rng), random_table(rng)
    encoder = encoder_for({"item": "ordinal", "hist": "count", "price": "numeric"}, max_categories=3).fit(fit)
    again = TabularEncoder.from_state(json.loads(json.dumps(encoder.state())), "encoder.json")
    np.testing.assert_array_equal(encoder.transform(new), again.transform(new))
    state = encoder.state()
    state["columns"][0]["numbers"] = state["columns"][0]["numbers"][:1]
    with pytest.raises(FusionrecError, match="encoder.json: not a valid tabular encoder .*values but 1 numbers"):
        TabularEncoder.from_state(state, "encoder.json")
    with pytest.raises(FusionrecError, match="not a fusionrec tabular encoder"):
        TabularEncoder.from_state({"format": "x"}, "encoder.json")


def test_a_missing_column_is_named():
    encoder = encoder_for({"item": "frequency"}).fit(pa.table({"item": ["a"]}))
    with pytest.raises(FusionrecError, match="input column 'item' is missing"):
        encoder.transform(pa.table({"other": ["a"]}))
