"""Config front ends: EasyRec text format and YAML into one typed config; errors give the field's path."""

from pathlib import Path

import pytest
import yaml

from fusionrec.ctr.config import dump_config, load_config
from fusionrec.errors import FusionrecError

ROOT = Path(__file__).resolve().parents[2]
TAOBAO = ROOT / "examples" / "ctr" / "taobao_wide_and_deep.config"


def test_the_wide_and_deep_tutorials_taobao_config_parses_with_its_values():
    config = load_config(TAOBAO)
    assert config.data_config.batch_size == 4096 and config.data_config.label_fields == ["clk"]
    assert config.train_config.num_steps == 2500 and config.train_config.sync_replicas is True
    adam = config.train_config.optimizer_config[0].adam_optimizer
    assert adam.learning_rate.exponential_decay_learning_rate.decay_steps == 1000
    model = config.model_config_
    assert model.wide_and_deep.wide_output_dim == 16 and model.wide_and_deep.dnn.hidden_units == [128, 64, 32]
    att = model.feature_groups[1].sequence_features[0].seq_att_map[0]
    assert att.key == ["brand", "cate_id"] and att.hist_seq == ["tag_brand_list", "tag_category_list"]
    assert len(config.features) == 18


def test_yaml_with_the_same_fields_gives_the_same_config(tmp_path):
    config = load_config(TAOBAO)
    path = tmp_path / "same.yaml"
    path.write_text(yaml.safe_dump(dump_config(config)))
    assert load_config(path) == config


def write(tmp_path, text, name="c.config"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_unknown_text_format_field_names_line_and_field(tmp_path):
    text = TAOBAO.read_text().replace("num_steps: 2500", "num_steps: 2500\n  not_a_field: 3")
    with pytest.raises(FusionrecError, match=r"c\.config: invalid pipeline config\n  line 25: train_config\.not_a_field: unknown field: EasyRec's TrainConfig has no field 'not_a_field'"):
        load_config(write(tmp_path, text))


def test_easyrec_field_not_implemented_says_so(tmp_path):
    text = TAOBAO.read_text().replace("num_steps: 2500", "num_steps: 2500\n  freeze_gradient: 'x'")
    with pytest.raises(FusionrecError, match=r"line 25: train_config\.freeze_gradient: EasyRec field 'freeze_gradient' \(in TrainConfig\) is not implemented yet"):
        load_config(write(tmp_path, text))


def test_yaml_errors_give_the_field_path(tmp_path):
    data = dump_config(load_config(TAOBAO))
    data["model_config"]["wide_and_deep"]["dnn"]["hidden_units"] = ["many"]
    with pytest.raises(FusionrecError, match=r"model_config\.wide_and_deep\.dnn\.hidden_units\.0"):
        load_config(write(tmp_path, yaml.safe_dump(data), "c.yaml"))
    data = dump_config(load_config(TAOBAO))
    data["train_config"]["bogus"] = 1
    with pytest.raises(FusionrecError, match=r"train_config\.bogus: unknown field"):
        load_config(write(tmp_path, yaml.safe_dump(data), "c.yaml"))
    data = dump_config(load_config(TAOBAO))
    data["model_config"]["kd"] = []
    with pytest.raises(FusionrecError, match=r"model_config\.kd: EasyRec field 'kd' \(in EasyRecModel\) is not implemented yet"):
        load_config(write(tmp_path, yaml.safe_dump(data), "c.yaml"))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("use_moving_average: false", "use_moving_average: true", "use_moving_average: true is not implemented"),
        ('model_class: "WideAndDeep"', 'model_class: "DSSM"', "model_class 'DSSM' is not implemented"),
        ("label_fields: 'clk'", "label_fields: 'click'", "label_fields: 'click' is not one of the input_fields"),
        ("feature_names: 'pid'\n    wide_deep: WIDE", "feature_names: 'nope'\n    wide_deep: WIDE", "feature 'nope' is not in feature_configs"),
        ('key: "brand"', 'key: "brandx"', "seq_att_map: feature 'brandx'"),
        ("hidden_units: [128, 64, 32]", "hidden_units: [128, 0, 32]", "hidden_units must be positive"),
        ("hash_bucket_size: 10\n", "hash_bucket_size: 10\n  num_buckets: 4\n", "set exactly one of hash_bucket_size"),
    ],
)
def test_semantic_errors(tmp_path, old, new, message):
    text = TAOBAO.read_text()
    assert old in text
    with pytest.raises(FusionrecError, match=message):
        load_config(write(tmp_path, text.replace(old, new, 1)))


def _line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line holding ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence - 1]


@pytest.mark.parametrize(
    "old, new, where, message",
    [
        ("input_names: 'cate_id'", "input_names: 'cate_idx'", "feature_configs.2.input_names.0",
         "feature 'cate_idx': input_names 'cate_idx' is not an input_field"),
        ("input_names: 'customer'", "input_names: 'cate_id'", "feature_configs.4", "feature 'cate_id' is defined twice"),
        ("feature_names: 'price'\n    feature_names: 'pid'", "feature_names: 'price'\n    feature_names: 'pidx'",
         "model_config.feature_groups.0.feature_names.14", "feature_groups 'wide': feature 'pidx' is not in feature_configs"),
    ],
)  # fmt: skip
def test_cross_reference_errors_give_the_line_of_the_offending_entry(tmp_path, old, new, where, message):
    """A feature reading a missing input, a duplicate feature, a group naming an unknown feature:
    the entry's path and line, in the text format and in YAML (it said "(top level)")."""
    text = TAOBAO.read_text()
    assert old in text
    bad = text.replace(old, new, 1)
    changed = new.splitlines()[-1].strip()
    with pytest.raises(FusionrecError) as caught:
        load_config(write(tmp_path, bad))
    line = _line_of(bad, changed) if "twice" not in message else _line_of(bad, "feature_configs", 5)
    assert f"line {line}: {where}: {message}" in str(caught.value), str(caught.value)
    as_yaml = yaml.safe_dump(dump_config_unchecked(bad, tmp_path), sort_keys=False)
    with pytest.raises(FusionrecError) as caught:
        load_config(write(tmp_path, as_yaml, "c.yaml"))
    assert f": {where}: {message}" in str(caught.value) and "(top level)" not in str(caught.value)
    assert str(caught.value).split("\n")[1].strip().startswith("line "), str(caught.value)


def dump_config_unchecked(text: str, tmp_path) -> dict:
    """The plain data of a text-format config, before validation (to write it as YAML)."""
    from fusionrec.ctr.config import _text_format_to_dict

    return _text_format_to_dict(text, "c.config", {})


def test_edit_config_json_and_its_errors():
    config = load_config(TAOBAO, '{"train_config.num_steps": 7, "data_config.batch_size": 8}')
    assert config.train_config.num_steps == 7 and config.data_config.batch_size == 8
    with pytest.raises(FusionrecError, match="--edit_config_json: not valid JSON"):
        load_config(TAOBAO, "{oops")
    with pytest.raises(FusionrecError, match=r"data_config\.batch_size"):
        load_config(TAOBAO, '{"data_config.batch_size": 0}')


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FusionrecError, match="nope.config"):
        load_config(tmp_path / "nope.config")


def test_text_format_is_read_with_merge_semantics(tmp_path):
    """As EasyRec's text_format.Merge: a singular field given twice keeps the last value, a
    singular message given twice is merged, repeated fields keep every value."""
    text = TAOBAO.read_text().replace("num_steps: 2500", "num_steps: 2500\n  log_step_count_steps: 7\n  num_steps: 30")
    text = text.replace("eval_config {", "eval_config {\n  num_examples: 5\n}\neval_config {", 1)
    config = load_config(write(tmp_path, text))
    assert config.train_config.num_steps == 30 and config.train_config.log_step_count_steps == 7
    assert config.eval_config.num_examples == 5 and config.eval_config.metrics_set[0].name == "auc"
    assert [f.input_name for f in config.data_config.input_fields][:3] == ["clk", "buy", "pid"]


def test_text_format_values_as_protobuf_writes_them(tmp_path):
    """Octal escapes (EasyRec's separator \\001), lists in brackets, comments, `<...>` messages."""
    text = TAOBAO.read_text().replace("  label_fields: 'clk'", "  label_fields: ['clk']  # a list\n  separator: '\\001'")
    text = text.replace("eval_config {", "eval_config <\n  num_examples: 5\n>\neval_config {", 1)
    config = load_config(write(tmp_path, text))
    assert config.data_config.separator == "\x01" and config.data_config.label_fields == ["clk"]
    assert config.eval_config.num_examples == 5
    with pytest.raises(FusionrecError, match=r"c\.config line \d+ column \d+: .*expected '}' to close the message opened on line"):
        load_config(write(tmp_path, TAOBAO.read_text() + "\nexport_config {\n"))


def test_fields_with_no_effect_are_accepted(tmp_path):
    text = TAOBAO.read_text().replace("num_steps: 2500", "num_steps: 2500\n  dead_line: '20991231'")
    text += "\nexport_config {\n  multi_placeholder: false\n}\n"
    assert 'model_class: "WideAndDeep"' in text
    text = text.replace('model_class: "WideAndDeep"', 'model_class: "WideAndDeep"\n  model_name: "wide and deep"')
    config = load_config(write(tmp_path, text))
    assert config.train_config.num_steps == 2500


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("initial_learning_rate: 0.001", "initial_learning_rate: inf",
         r"train_config\.optimizer_config\.0\.adam_optimizer\.learning_rate\.exponential_decay_learning_rate\."
         r"initial_learning_rate: Input should be a finite number"),
        ("initial_learning_rate: 0.001", "initial_learning_rate: nan", r"initial_learning_rate: Input should be a finite"),
        ("      learning_rate: {", "      beta1: 2.0\n      learning_rate: {", r"adam_optimizer\.beta1: Input should be less than 1"),
        ("      learning_rate: {", "      beta2: -0.1\n      learning_rate: {", r"adam_optimizer\.beta2: Input should be greater"),
    ],
)  # fmt: skip
def test_numbers_out_of_range_are_refused_with_the_field_path(tmp_path, old, new, message):
    text = TAOBAO.read_text()
    assert old in text
    with pytest.raises(FusionrecError, match=message):
        load_config(write(tmp_path, text.replace(old, new, 1)))


def test_min_val_above_max_val_is_refused(tmp_path):
    data = yaml.safe_load((ROOT / "examples" / "ctr" / "taobao_dcn.yaml").read_text())
    raw = next(f for f in data["feature_config"]["features"] if f.get("feature_type") == "RawFeature" or f["input_names"] == ["price"])
    raw.update(feature_type="RawFeature", min_val=10.0, max_val=1.0)
    for key in ("num_buckets", "hash_bucket_size", "embedding_dim", "vocab_list", "boundaries"):
        raw.pop(key, None)
    with pytest.raises(FusionrecError, match=r"min_val 10\.0 is greater than max_val 1\.0"):
        load_config(write(tmp_path, yaml.safe_dump(data), "c.yaml"))


def test_every_easyrec_train_distribute_strategy_is_one_process_training():
    from fusionrec.ctr.config import DISTRIBUTION_STRATEGIES, TrainConfig

    for strategy in DISTRIBUTION_STRATEGIES:
        assert TrainConfig(train_distribute=strategy).train_distribute == strategy
    with pytest.raises(ValueError, match="'RingStrategy' is not an EasyRec strategy"):
        TrainConfig(train_distribute="RingStrategy")
