"""Pipeline configs: YAML and text format say the same thing; every error names the file, the line and the field."""

import copy

import pytest

from fusionrec.errors import FusionrecError
from fusionrec.pipeline.config import load_pipeline

from .helpers import TREES, WIDE_AND_DEEP, pipeline_dict, write_yaml


@pytest.fixture
def base(tmp_path):
    return pipeline_dict(tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "run")


def error_of(tmp_path, document) -> str:
    path = write_yaml(tmp_path / "p.yaml", document)
    with pytest.raises(FusionrecError) as raised:
        load_pipeline(path)
    return str(raised.value)


def test_a_valid_config_loads_with_its_models_in_order(tmp_path, base):
    spec, base_dir = load_pipeline(write_yaml(tmp_path / "p.yaml", base))
    assert [m.name for m in spec.models] == ["trees", "shallow_trees"]
    assert [m.kind for m in spec.models] == ["gbdt", "gbdt"]
    assert spec.split.k_folds == 3 and spec.fusion.kind == "stacking" and base_dir == tmp_path


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["models"].pop(), "a fusion needs at least two models"),
    (lambda d: d["models"].append({"name": "x", "svm": {}}), "unknown field 'svm'"),
    (lambda d: d["models"].append({"name": "trees", "gbdt": {}}), "names ['trees'] appear more than once"),
    (lambda d: d["models"][0]["gbdt"].update(columns={"price": "onehot"}), "'onehot' is not an encoding"),
    (lambda d: d["models"][0]["gbdt"].update(columns={"clk": "numeric"}), "'clk' is not a (non-label) input field"),
    (lambda d: d["models"][0]["gbdt"]["params"].update(objective="reg:squarederror"), "binary:logistic"),
    (lambda d: d.update(fusion={"average": {"method": "rank"}}), "a rank average depends on the other rows"),
    (lambda d: d.update(fusion={"average": {}, "stacking": {}}), "exactly one of average, stacking, ensemble_selection"),
    (lambda d: d.update(fusion={"average": {"weights": [1, 2, 3]}}), "3 weights for 2 models"),
    (lambda d: d.update(split={"k_folds": 3, "time_split": {"column": "pid"}}), "give k_folds or time_split, not both"),
    (lambda d: d.update(split={"time_split": {"column": "day"}}), "'day' is not an input field"),
    (lambda d: d["models"].append({"name": "leafy", "leaf_features": {"trees": "nope", "ctr": copy.deepcopy(WIDE_AND_DEEP)}}),
     "must name a gbdt model listed before it"),
    (lambda d: d["models"].append({"name": "deep", "ctr": {}}), "pipeline_config_path (an EasyRec config) or model_config"),
    (lambda d: d["models"][0].update(name="9 trees"), "letters, digits and _"),
])  # fmt: skip
def test_bad_configs_are_refused_with_the_field_and_the_rule(tmp_path, base, edit, expected):
    edit(base)
    message = error_of(tmp_path, base)
    assert expected in message
    assert str(tmp_path / "p.yaml") in message


def test_yaml_errors_give_the_line(tmp_path, base):
    base["models"][1]["gbdt"]["num_boost_round"] = -3
    message = error_of(tmp_path, base)
    text = (tmp_path / "p.yaml").read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if "num_boost_round: -3" in t)
    assert f"line {line}: models.1.gbdt.num_boost_round" in message


def test_text_format_reads_like_yaml_and_names_lines(tmp_path, base):
    text = f'''
run_dir: "{tmp_path / 'run'}"
data {{
  pipeline_config_path: "{tmp_path / 'easyrec.yaml'}"
}}
split {{ k_folds: 4 }}
models {{ name: "trees" gbdt {{ params {{ max_depth: 3 eta: 0.3 }} num_boost_round: 8 }} }}
models {{ name: "deep" ctr {{ pipeline_config_path: "{tmp_path / 'easyrec.yaml'}" }} }}
fusion {{ average {{ method: "logit" fit_metric: "auc" }} }}
'''
    easyrec = {"train_input_path": str(tmp_path / "train.csv"), "data_config": base["data"]["data_config"],
               "feature_configs": base["data"]["feature_configs"], **copy.deepcopy(WIDE_AND_DEEP)}
    write_yaml(tmp_path / "easyrec.yaml", easyrec)
    (tmp_path / "p.config").write_text(text)
    spec, _ = load_pipeline(tmp_path / "p.config")
    assert spec.models[0].gbdt.params == {"max_depth": 3, "eta": 0.3} and spec.split.k_folds == 4
    assert spec.fusion.average.method == "logit" and spec.fusion.average.fit_metric == "auc"
    assert spec.data.train_input_path == str(tmp_path / "train.csv")  # taken from the EasyRec config
    assert len(spec.data.feature_configs) == len(base["data"]["feature_configs"])
    (tmp_path / "bad.config").write_text(text.replace("k_folds: 4", "k_folds: 1"))
    with pytest.raises(FusionrecError, match=r"line 6: split.k_folds"):
        load_pipeline(tmp_path / "bad.config")


def test_a_deep_model_config_is_checked_against_the_pipeline_data(tmp_path, base):
    from fusionrec.pipeline.config import ctr_config_for

    deep = copy.deepcopy(WIDE_AND_DEEP)
    deep["model_config"]["feature_groups"][0]["feature_names"].append("no_such_feature")
    base["models"].append({"name": "deep", "ctr": deep})
    with pytest.raises(FusionrecError, match=r"(?s)line \d+: models.2.ctr: models.deep.ctr: .*feature_names.5: .*no_such_feature") as raised:
        load_pipeline(write_yaml(tmp_path / "p.yaml", base))  # when the config loads, not when the model's fit starts
    assert str(tmp_path / "p.yaml") in str(raised.value)
    base["models"][-1]["ctr"]["model_config"]["feature_groups"][0]["feature_names"].pop()
    spec, base_dir = load_pipeline(write_yaml(tmp_path / "p.yaml", base))
    assert ctr_config_for(spec, spec.models[-1].ctr, base_dir, "models.deep.ctr").model_config_.model_class == "WideAndDeep"


def test_gbdt_params_are_checked_when_the_config_loads(tmp_path, base):
    """An unknown or bad XGBoost parameter names the file, the line and the key path before any
    data is read (the training file does not even exist here)."""
    base["models"][1]["gbdt"]["params"] = {"max_dept": 3}
    message = error_of(tmp_path, base)
    text = (tmp_path / "p.yaml").read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if "max_dept:" in t)
    assert str(tmp_path / "p.yaml") in message
    assert f"line {line}: models.1.gbdt.params.max_dept: unknown parameter 'max_dept'; did you mean 'max_depth'?" in message
    base["models"][1]["gbdt"]["params"] = {"max_depth": 3, "subsample": 1.5}
    assert "models.1.gbdt.params.subsample: parameter subsample=1.5: must be" in error_of(tmp_path, base)


def test_cross_reference_errors_name_the_entry_and_its_line(tmp_path, base):
    base["data"]["feature_configs"][2]["input_names"] = ["no_such_field"]
    message = error_of(tmp_path, base)
    text = (tmp_path / "p.yaml").read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if "no_such_field" in t)
    assert f"line {line}: data.feature_configs.2.input_names.0: feature 'no_such_field': input_names 'no_such_field' is not " in message
    assert "(top level)" not in message
    base["data"]["feature_configs"][2]["input_names"] = ["cate_id"]
    base["models"][0]["gbdt"]["columns"] = {"nope": "numeric"}
    assert "models.0.gbdt.columns.nope: models.0 'trees': gbdt.columns 'nope'" in error_of(tmp_path, base)


def test_trees_params_keep_xgboost_names(tmp_path, base):
    base["models"][0]["gbdt"] = {**TREES, "params": {"max_depth": 4, "colsample_bytree": 0.5, "lambda": 2.0}}
    spec, _ = load_pipeline(write_yaml(tmp_path / "p.yaml", base))
    assert spec.models[0].gbdt.params == {"max_depth": 4, "colsample_bytree": 0.5, "lambda": 2.0}


def test_edits_reach_every_deep_model_the_leaf_model_included(tmp_path, base):
    from fusionrec.pipeline.config import ctr_config_for
    from fusionrec.pipeline.members import LEAF_FIELD, leaf_ctr_config

    edits = {"train_config.num_steps": 0, "data_config.num_epochs": 2, "data_config.batch_size": 64}
    deep = {**copy.deepcopy(WIDE_AND_DEEP), "edit_config_json": edits}
    base["models"] += [{"name": "deep", "ctr": deep}, {"name": "leafy", "leaf_features": {"trees": "trees", "ctr": deep}}]
    spec, base_dir = load_pipeline(write_yaml(tmp_path / "p.yaml", base))
    plain = ctr_config_for(spec, spec.models[2].ctr, base_dir, "models.deep.ctr")
    leafy = leaf_ctr_config(spec, spec.models[3], base_dir, ["1", "2"])
    for config in (plain, leafy):
        assert (config.train_config.num_steps, config.data_config.num_epochs, config.data_config.batch_size) == (0, 2, 64)
    assert LEAF_FIELD in leafy.model_config_.feature_groups[0].feature_names
    base["models"][2]["ctr"]["edit_config_json"] = {"data_config.input_fields": []}
    with pytest.raises(FusionrecError, match=r"\['data_config.input_fields'\] change the pipeline's data"):
        load_pipeline(write_yaml(tmp_path / "p.yaml", base))  # found when the config loads


def test_a_multi_task_deep_model_is_refused_by_name(tmp_path, base):

    deep = copy.deepcopy(WIDE_AND_DEEP)
    groups = deep["model_config"]["feature_groups"]
    names = [n for g in groups for n in g["feature_names"]]
    deep["model_config"] = {"model_class": "SimpleMultiTask", "feature_groups": [{"group_name": "all", "feature_names": names}],
                            "simple_multi_task": {"task_towers": [{"tower_name": "ctr", "dnn": {"hidden_units": [4]}}]}}  # fmt: skip
    base["models"].append({"name": "deep", "ctr": deep})
    with pytest.raises(FusionrecError, match="SimpleMultiTask is a multi-task model; .* not supported yet"):
        load_pipeline(write_yaml(tmp_path / "p.yaml", base))  # found when the config loads
