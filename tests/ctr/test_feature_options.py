"""EasyRec's feature options: RawFeature's raw_input_dim numbers in one field, embedding_dim (a
weighted projection) and num_buckets on the scaled value; shared_names; name ranges (``field[1-3]``)."""

import pyarrow as pa
import pytest
import torch

from fusionrec.ctr.config import DataConfig, FeatureConfig, FeatureGroupConfig, expand_range_name
from fusionrec.ctr.data import TableReader, table_to_columns
from fusionrec.ctr.embedding import RawProjectionSlot
from fusionrec.errors import FusionrecError


def vector_reader(**extra):
    fields = [{"input_name": "clk", "input_type": "INT32"}, {"input_name": "emb", "input_type": "STRING"}]
    return TableReader(DataConfig(input_fields=fields, label_fields=["clk"], **extra), vectors={"emb": (3, "|")})


def test_raw_input_dim_numbers_are_parsed_per_row_and_bad_rows_named(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("1,0.5|-2|3e2\n0,1|2\n1,1|x|3\n0,1|inf|2\n1, 4 |5|6\n")
    with pytest.raises(FusionrecError, match=r"v\.csv line 2, column 'emb': '1\|2' does not hold 3 numbers"):
        list(vector_reader().iter_tables([str(path)]))
    reader = vector_reader(ignore_error=True)
    table = pa.concat_tables(reader.iter_tables([str(path)]))
    columns = table_to_columns(table, reader.fields)
    torch.testing.assert_close(columns["emb"], torch.tensor([[0.5, -2.0, 300.0], [4.0, 5.0, 6.0]], dtype=torch.float64))
    report = reader.report.as_dict()
    assert report["rows_skipped"] == 3
    assert sum(n for reason, n in report["skipped_by_reason"].items() if "not a finite number" in reason) == 2


@pytest.mark.parametrize("mean", [False, True])
def test_raw_projection_is_tensorflows_weighted_embedding(mean):
    """Value i weighs row i; the mean combiner prunes non-positive values (safe_embedding_lookup_sparse)
    and divides by the sum of the rest; a row with none left is zeros."""
    slot = RawProjectionSlot("emb", 3, 4, mean)
    values = torch.tensor([[0.5, -2.0, 3.0], [1.0, 1.0, 1.0], [-1.0, 0.0, -3.0]])
    got = slot({"emb": values})
    weight = slot.weight.detach()
    for row in range(3):
        kept = [(v, weight[i]) for i, v in enumerate(values[row].tolist()) if not mean or v > 0]
        total = sum((v * w for v, w in kept), torch.zeros(4))
        if mean:
            total = total / sum(v for v, _ in kept) if kept else torch.zeros(4)
        torch.testing.assert_close(got[row], total)


def test_raw_feature_num_buckets_are_even_edges_of_the_scaled_value():
    feature = FeatureConfig(input_names=["price"], feature_type="RawFeature", num_buckets=4, min_val=0, max_val=100,
                            embedding_dim=8)  # fmt: skip
    assert feature.bucket_boundaries == [0.0, 0.25, 0.5, 0.75]
    with pytest.raises(ValueError, match="need embedding_dim > 0"):
        FeatureConfig(input_names=["price"], feature_type="RawFeature", num_buckets=4, min_val=0, max_val=100)
    assert FeatureConfig(input_names=["price"], feature_type="RawFeature", num_buckets=4).bucket_boundaries == []


def test_name_ranges_expand_as_easyrec_expands_them():
    assert expand_range_name("field[1-3]") == ["field1", "field2", "field3"]
    assert expand_range_name("field1") == ["field1"] and expand_range_name("a[b]") == ["a[b]"]
    group = FeatureGroupConfig(group_name="g", feature_names=["user", "c[2-4]"])
    assert group.feature_names == ["user", "c2", "c3", "c4"]
    fields = [{"input_name": "label", "input_type": "INT32"}, {"input_name": "f[1-2]", "input_type": "DOUBLE"}]
    data = DataConfig(input_fields=fields, label_fields=["label"], auto_expand_input_fields=True)
    assert [(f.input_name, f.input_type) for f in data.input_fields] == [("label", "INT32"), ("f1", "DOUBLE"), ("f2", "DOUBLE")]
    assert [f.input_name for f in DataConfig(input_fields=fields, label_fields=["label"]).input_fields] == ["label", "f[1-2]"]


def test_shared_names_give_each_named_field_the_same_feature_config():
    from fusionrec.ctr.config import config_from_dict

    config = config_from_dict({
        "data_config": {"input_fields": [{"input_name": "y", "input_type": "INT32"}, {"input_name": "f1"}, {"input_name": "f2"},
                                         {"input_name": "f3"}], "label_fields": ["y"]},
        "feature_configs": [{"input_names": ["f1"], "shared_names": ["f2", "f3"], "hash_bucket_size": 50, "embedding_dim": 4}],
        "model_config": {"model_class": "DeepFM", "feature_groups": [{"group_name": "deep", "feature_names": ["f[1-3]"]}],
                         "deepfm": {"dnn": {"hidden_units": [4]}}},
    })  # fmt: skip
    assert [(f.name, f.input_names, f.hash_bucket_size) for f in config.features] == [
        ("f1", ["f1"], 50), ("f2", ["f2"], 50), ("f3", ["f3"], 50)]


def lookup_config(**extra):
    from fusionrec.ctr.config import config_from_dict

    return config_from_dict({
        "data_config": {"input_fields": [{"input_name": "y", "input_type": "INT32"}, {"input_name": "item"},
                                         {"input_name": "clicks"}], "label_fields": ["y"], **extra},
        "feature_configs": [{"feature_name": "item_clicks", "input_names": ["item", "clicks"], "feature_type": "LookupFeature",
                             "kv_separator": ":", "hash_bucket_size": 997, "embedding_dim": 4, "lookup_max_sel_elem_num": 2}],
        "model_config": {"model_class": "DeepFM", "feature_groups": [{"group_name": "deep", "feature_names": ["item_clicks"]}],
                         "deepfm": {"dnn": {"hidden_units": [4]}}},
    })  # fmt: skip


def test_lookup_feature_selects_the_values_of_the_rows_key_from_its_map():
    """EasyRec's LookupFeature: the values of the map entries whose key is the row's key field,
    hashed (FNV-1a) into hash_bucket_size; the last lookup_max_sel_elem_num kept and counted."""
    from fusionrec.ctr.config import InputField
    from fusionrec.ctr.features import FeatureTransform, feature_counts
    from tests.ctr.test_features_layers import fnv1a_reference

    config = lookup_config()
    rows = [("a", "a:1|b:2|a:3"), ("b", "a:1"), ("c", ""), ("ab", "a:9|ab:7|b:1"), ("a", "a:1|a:2|a:3")]
    table = pa.table({"item": [r[0] for r in rows], "clicks": [r[1] for r in rows]})
    fields = [InputField(input_name="item"), InputField(input_name="clicks")]
    out = torch.jit.script(FeatureTransform(config))(table_to_columns(table, fields))
    for i, (key, entries) in enumerate(rows):
        values = [e.split(":")[1] for e in entries.split("|") if e and e.split(":")[0] == key][-2:]
        got = out["item_clicks"][i][out["item_clicks.mask"][i]].tolist()
        assert got == [fnv1a_reference(v.encode()) % 997 for v in values], (key, entries)
    assert int(feature_counts(out)["item_clicks.truncated"]) == 1


def test_lookup_map_entries_without_one_kv_separator_are_refused_by_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("1,a,a:1|b:2\n0,b,a1|b:2\n1,c,a:1:2\n")
    config = lookup_config(ignore_error=True)
    reader = TableReader(config.data_config, kv_maps=config.kv_maps())
    assert pa.concat_tables(reader.iter_tables([str(path)])).num_rows == 1
    assert reader.report.as_dict()["rows_skipped"] == 2
    with pytest.raises(FusionrecError, match=r"m\.csv line 2, column 'clicks': 'a1\|b:2' holds an entry that is not key:value"):
        list(TableReader(lookup_config().data_config, kv_maps=config.kv_maps()).iter_tables([str(path)]))


@pytest.mark.parametrize("combiner", ["mean", "sum"])
def test_weighted_tag_feature_pools_weight_times_embedding(combiner):
    """A TagFeature with kv_separator: tokens key:weight; EasyRec's weighted embedding
    (sum of w x e; under mean, non-positive weights dropped and divided by the weights' sum)."""
    from fusionrec.ctr.config import InputField, config_from_dict
    from fusionrec.ctr.embedding import BagSlot
    from fusionrec.ctr.features import FeatureTransform

    config = config_from_dict({
        "data_config": {"input_fields": [{"input_name": "y", "input_type": "INT32"}, {"input_name": "tags"}],
                        "label_fields": ["y"]},
        "feature_configs": [{"input_names": ["tags"], "feature_type": "TagFeature", "kv_separator": ":", "separator": "|",
                             "vocab_list": ["a", "b", "c"], "embedding_dim": 3, "combiner": combiner}],
        "model_config": {"model_class": "DeepFM", "feature_groups": [{"group_name": "deep", "feature_names": ["tags"]}],
                         "deepfm": {"dnn": {"hidden_units": [4]}}},
    })  # fmt: skip
    rows = ["a:0.5|c:2", "b:-1.25|a:+3.", "", "c:.5", "b:-2"]
    table = pa.table({"tags": rows})
    features = torch.jit.script(FeatureTransform(config))(table_to_columns(table, [InputField(input_name="tags")]))
    table_weights = torch.randn(3, 3)
    slot = BagSlot("tags", torch.nn.Embedding.from_pretrained(table_weights), combiner == "mean", weighted=True)
    got = slot(features)
    index = {"a": 0, "b": 1, "c": 2}
    for i, row in enumerate(rows):
        pairs = [(index[t.split(":")[0]], float(t.split(":")[1])) for t in row.split("|") if t]
        if combiner == "mean":
            pairs = [(k, w) for k, w in pairs if w > 0]
        total = sum((w * table_weights[k] for k, w in pairs), torch.zeros(3))
        if combiner == "mean" and pairs:
            total = total / sum(w for _, w in pairs)
        torch.testing.assert_close(got[i], total, rtol=1e-5, atol=1e-6)


def test_weighted_tag_weights_must_be_decimal_numbers(tmp_path):
    fields = [{"input_name": "y", "input_type": "INT32"}, {"input_name": "tags"}]
    path = tmp_path / "t.csv"
    path.write_text("1,a:0.5|b:2\n0,a:1e3\n1,a:x\n0,a\n")
    reader = TableReader(DataConfig(input_fields=fields, label_fields=["y"], ignore_error=True), kv_maps={"tags": ("|", ":", True)})
    assert pa.concat_tables(reader.iter_tables([str(path)])).num_rows == 1
    reasons = reader.report.as_dict()["skipped_by_reason"]
    assert sum(n for r, n in reasons.items() if "not a decimal number" in r) == 2
    assert sum(n for r, n in reasons.items() if "not key:value" in r) == 1


def test_pass_through_feature_gives_its_values_as_they_are():
    from fusionrec.ctr.config import FeatureConfig, InputField, config_from_dict
    from fusionrec.ctr.features import FeatureTransform

    config = config_from_dict({
        "data_config": {"input_fields": [{"input_name": "y", "input_type": "INT32"}, {"input_name": "ctr", "input_type": "DOUBLE"},
                                         {"input_name": "vec"}], "label_fields": ["y"]},
        "feature_configs": [{"input_names": ["ctr"], "feature_type": "PassThroughFeature"},
                            {"input_names": ["vec"], "feature_type": "PassThroughFeature", "raw_input_dim": 2}],
        "model_config": {"model_class": "DeepFM", "feature_groups": [{"group_name": "deep", "feature_names": ["ctr", "vec"]}],
                         "deepfm": {"dnn": {"hidden_units": [4]}}},
    })  # fmt: skip
    assert config.vector_inputs() == {"vec": (2, "|")}
    table = pa.table({"ctr": [0.25, 1234.5], "vec": pa.array([[1.0, -2.0], [3.0, 4.5]], pa.list_(pa.float64(), 2))})
    fields = [InputField(input_name="ctr", input_type="DOUBLE"), InputField(input_name="vec")]
    out = torch.jit.script(FeatureTransform(config))(table_to_columns(table, fields))
    assert out["ctr"].squeeze(1).tolist() == [0.25, 1234.5] and out["vec"].tolist() == [[1.0, -2.0], [3.0, 4.5]]
    with pytest.raises(ValueError, match="passes its value as it is"):
        FeatureConfig(input_names=["ctr"], feature_type="PassThroughFeature", min_val=0, max_val=10)


def raw_sequence_config(**feature):
    from fusionrec.ctr.config import config_from_dict

    fields = [{"input_name": "clk", "input_type": "INT32"}, {"input_name": "prices", "input_type": "STRING"}]
    return config_from_dict({
        "data_config": {"input_fields": fields, "label_fields": ["clk"]},
        "feature_configs": [{"input_names": ["prices"], "feature_type": "SequenceFeature", "sub_feature_type": "RawFeature",
                             "embedding_dim": 4, "separator": "|", **feature}],
        "model_config": {"model_class": "MultiTower", "feature_groups": [{"group_name": "g", "feature_names": ["prices"]}],
                         "multi_tower": {"towers": [{"input": "g", "dnn": {"hidden_units": [4]}}]}},
    })  # fmt: skip


def test_a_raw_sequence_is_bucketized_by_its_boundaries_or_weighs_one_row_per_number():
    """EasyRec's SequenceFeature with sub_feature_type RawFeature: numbers bucketized (boundaries,
    or num_buckets' even edges with min_val < max_val) into ids; without buckets, sequence_length
    positions each weighing the one embedding row, zeros after the numbers, all positions counted."""
    from fusionrec.ctr.config import InputField
    from fusionrec.ctr.features import FeatureTransform

    rows = ["1.5|30|700", "", "2000|-3", "5|5|5|5|5"]
    columns = table_to_columns(pa.table({"prices": rows}), [InputField(input_name="prices")])
    out = torch.jit.script(FeatureTransform(raw_sequence_config(boundaries=[10, 100, 1000])))(columns)
    edges = [10, 100, 1000]
    for i, text in enumerate(rows):
        values = [float(v) for v in text.split("|") if v]
        expected = [sum(v >= e for e in edges) for v in values]
        assert out["prices"][i][out["prices.mask"][i]].tolist() == expected
    config = raw_sequence_config(num_buckets=4, min_val=0, max_val=1)
    assert config.features[0].bucket_boundaries == [0.0, 0.25, 0.5, 0.75]
    out = torch.jit.script(FeatureTransform(raw_sequence_config(sequence_length=4)))(columns)
    assert out["prices"].shape == (4, 4) and bool(out["prices.mask"].all()) and int(out["prices"].abs().sum()) == 0
    torch.testing.assert_close(out["prices.weight"], torch.tensor(
        [[1.5, 30, 700, 0], [0, 0, 0, 0], [2000, -3, 0, 0], [5, 5, 5, 5]], dtype=torch.float32))  # the last 4 of 5 kept
    assert int(out["prices.truncated"]) == 1


def test_raw_sequence_elements_must_be_numbers_and_the_config_consistent(tmp_path):
    config = raw_sequence_config(boundaries=[10])
    path = tmp_path / "s.csv"
    path.write_text("1,1.5|30\n0,3|abc\n")
    reader = TableReader(config.data_config, number_lists=config.number_lists())  # (separator, seq_multi_sep)
    with pytest.raises(FusionrecError, match=r"s\.csv line 2, column 'prices': '3\|abc' holds an element that is not a decimal"):
        list(reader.iter_tables([str(path)]))
    with pytest.raises(FusionrecError, match="hash_bucket_size and vocabularies need sub_feature_type IdFeature"):
        raw_sequence_config(hash_bucket_size=10)
    with pytest.raises(ValueError, match="sub_feature_type is a SequenceFeature's"):
        FeatureConfig(input_names=["a"], feature_type="IdFeature", hash_bucket_size=5, embedding_dim=4, sub_feature_type="RawFeature")


def test_seq_multi_sep_positions_hold_several_ids_combined_per_position():
    """EasyRec's seq_multi_sep: "a;b|c" is a 3-D sequence (positions of several ids); the
    embedding combines each position's ids (combiner mean: their average), then the sequence
    pools over positions; max_seq_len keeps the last positions."""
    from fusionrec.ctr.config import InputField, config_from_dict
    from fusionrec.ctr.embedding import BagSlot, combine_positions
    from fusionrec.ctr.features import FeatureTransform
    from tests.ctr.test_features_layers import fnv1a_reference

    fields = [{"input_name": "clk", "input_type": "INT32"}, {"input_name": "tags", "input_type": "STRING"}]
    config = config_from_dict({
        "data_config": {"input_fields": fields, "label_fields": ["clk"]},
        "feature_configs": [{"input_names": ["tags"], "feature_type": "SequenceFeature", "hash_bucket_size": 97,
                             "embedding_dim": 3, "separator": "|", "seq_multi_sep": ";", "max_seq_len": 3}],
        "model_config": {"model_class": "MultiTower", "feature_groups": [{"group_name": "g", "feature_names": ["tags"]}],
                         "multi_tower": {"towers": [{"input": "g", "dnn": {"hidden_units": [4]}}]}},
    })  # fmt: skip
    rows = ["a;b|c", "", "x|y;z;w|q|r", "d;;e"]
    columns = table_to_columns(pa.table({"tags": rows}), [InputField(input_name="tags")])
    out = torch.jit.script(FeatureTransform(config))(columns)
    for i, text in enumerate(rows):
        positions = [[v for v in p.split(";") if v] for p in text.split("|") if p][-3:]
        got = [[int(v) for v, keep in zip(out["tags"][i, j], out["tags.multi_mask"][i, j]) if keep]
               for j in range(out["tags"].shape[1]) if out["tags.mask"][i, j]]  # fmt: skip
        assert got == [[fnv1a_reference(v.encode()) % 97 for v in p] for p in positions], text
    assert int(out["tags.truncated"]) == 1
    slot = BagSlot("tags", torch.nn.Embedding(97, 3), mean=True, multi_value=True)
    pooled = slot(out)
    table = slot.table.weight.detach()
    for i, text in enumerate(rows):
        positions = [[v for v in p.split(";") if v] for p in text.split("|") if p][-3:]
        means = [table[[fnv1a_reference(v.encode()) % 97 for v in p]].mean(0) for p in positions]
        expected = torch.stack(means).mean(0) if means else torch.zeros(3)
        torch.testing.assert_close(pooled[i].detach(), expected)
    embedded = torch.randn(1, 2, 2, 3)
    torch.testing.assert_close(combine_positions(embedded, torch.tensor([[[True, True], [True, False]]]), True)[0],
                               torch.stack([embedded[0, 0].mean(0), embedded[0, 1, 0]]))  # fmt: skip


def test_a_raw_sequence_of_raw_input_dim_numbers_projects_each_position():
    """EasyRec's 3-D raw sequence (sub_feature_type RawFeature, raw_input_dim K, seq_multi_sep):
    sequence_length positions of K numbers (fewer: zeros), each position sum_k number_k x row k
    of a K-row table; more than K numbers in a position is a bad row, named."""
    from fusionrec.ctr.config import InputField
    from fusionrec.ctr.embedding import BagSlot
    from fusionrec.ctr.features import FeatureTransform

    config = raw_sequence_config(raw_input_dim=3, seq_multi_sep=";", sequence_length=3, combiner="sum")
    rows = ["1;2;3|0.5", "", "-1;0;2|4;4|7;8;9|1"]
    columns = table_to_columns(pa.table({"prices": rows}), [InputField(input_name="prices")])
    out = torch.jit.script(FeatureTransform(config))(columns)
    expected = torch.zeros(3, 3, 3)
    for i, text in enumerate(rows):
        positions = [p for p in text.split("|") if p][-3:]
        for j, position in enumerate(positions):
            values = [float(v) for v in position.split(";")]
            expected[i, j, : len(values)] = torch.tensor(values)
    torch.testing.assert_close(out["prices.weight"], expected)
    assert out["prices"].shape == (3, 3, 3) and bool(out["prices.mask"].all()) and int(out["prices.truncated"]) == 1
    slot = BagSlot("prices", torch.nn.Embedding(3, 4), mean=False, scaled=True, multi_value=True)
    table = slot.table.weight.detach()
    torch.testing.assert_close(slot(out).detach(), torch.einsum("blk,kd->bd", expected, table))
    with pytest.raises(FusionrecError, match=r"raw_input_dim 3 holds that many unbucketized numbers"):
        raw_sequence_config(raw_input_dim=3, sequence_length=3)
    with pytest.raises(FusionrecError, match=r"set raw_input_dim >= 2"):
        raw_sequence_config(seq_multi_sep=";", sequence_length=3)


def test_a_raw_sequence_position_of_more_than_raw_input_dim_numbers_is_refused(tmp_path):
    config = raw_sequence_config(raw_input_dim=2, seq_multi_sep=";", sequence_length=3)
    path = tmp_path / "s.csv"
    path.write_text("1,1;2|3\n0,1;2;3|4\n")
    reader = TableReader(config.data_config, number_lists=config.number_lists())
    with pytest.raises(FusionrecError, match=r"s\.csv line 2, column 'prices': '1;2;3\|4' holds a position of more than 2"):
        list(reader.iter_tables([str(path)]))
