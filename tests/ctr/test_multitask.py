"""Multi-task models (EasyRec's ESMM, MMoE, PLE, DBMTL, SimpleMultiTask): task towers in the
config, the towers' losses against hand-computed references, the gates and relations, and
train -> evaluate -> export -> predict with every tower's outputs."""

import copy
import json

import numpy as np
import pytest
import torch
import yaml

from fusionrec.ctr.config import config_from_dict
from fusionrec.ctr.data import iter_batches
from fusionrec.ctr.export import export, predict
from fusionrec.ctr.models.multitask.base import Gate
from fusionrec.ctr.models.multitask.esmm import esmm_loss
from fusionrec.ctr.trainer import Trainer
from fusionrec.errors import FusionrecError
from tests.ctr.test_pipeline import EXAMPLES, edits, taobao  # noqa: F401  (fixture)

MMOE = next(p for p in EXAMPLES if p.name == "taobao_mmoe.yaml")
ESMM = next(p for p in EXAMPLES if p.name == "taobao_esmm.yaml")


def mmoe_dict() -> dict:
    return yaml.safe_load(MMOE.read_text())


def with_model(base: dict, model_class: str, block: str, params: dict) -> dict:
    data = copy.deepcopy(base)
    groups = data["model_config"]["feature_groups"]
    data["model_config"] = {"model_class": model_class, "feature_groups": groups, block: params}
    return data


def towers(*specs: dict) -> list[dict]:
    return [{"dnn": {"hidden_units": [8]}, "metrics_set": [{"auc": {}}], **spec} for spec in specs]


def small(data: dict, root, model_dir, **extra) -> dict:
    data = copy.deepcopy(data)
    for key, value in json.loads(edits(root, model_dir, **extra)).items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


# ------------------------------------------------------------------ config
def test_towers_learn_their_label_name_or_the_label_at_their_position():
    data = with_model(mmoe_dict(), "SimpleMultiTask", "simple_multi_task",
                      {"task_towers": towers({"tower_name": "a"}, {"tower_name": "b"})})  # fmt: skip
    config = config_from_dict(data)
    assert config.head_labels() == {"_a": "clk", "_b": "buy"}
    assert config.model_config_.head_suffixes == ("_a", "_b")
    data["model_config"]["simple_multi_task"]["task_towers"][0]["label_name"] = "buy"
    assert config_from_dict(data).head_labels() == {"_a": "buy", "_b": "buy"}
    three = with_model(mmoe_dict(), "SimpleMultiTask", "simple_multi_task",
                       {"task_towers": towers({"tower_name": "a"}, {"tower_name": "b"}, {"tower_name": "c"})})  # fmt: skip
    with pytest.raises(FusionrecError, match=r"task tower 'c' \(number 3\) sets no label_name.*only 2"):
        config_from_dict(three)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["mmoe"]["task_towers"][1].update(label_name="cart"), r"label_name 'cart' is not one of data_config.label_fields"),
    (lambda m: m["mmoe"]["task_towers"][1].update(tower_name="ctr"), r"tower_name must be unique"),
    (lambda m: m["mmoe"]["task_towers"][1].update(tower_name="c-v-r"), r"letters, digits and _ only"),
    (lambda m: m.update(loss_type="L2_LOSS"), r"loss_type: MMoE is a multi-task model; set loss_type on each task tower"),
    (lambda m: m["mmoe"].update(num_expert=0), r"expert_dnn needs num_expert >= 1"),
    (lambda m: m["mmoe"]["task_towers"][0].update(task_space_indicator_label="price"),
     r"task_space_indicator_label 'price' is not one of data_config.label_fields"),
    (lambda m: m["mmoe"]["task_towers"][0].update(loss_type="L2_LOSS", metrics_set=[{"auc": {}}]),
     r"metrics_set auc is not a metric of a regression task"),
])  # fmt: skip
def test_bad_task_towers_are_config_errors(change, message):
    data = mmoe_dict()
    change(data["model_config"])
    with pytest.raises(FusionrecError, match=message):
        config_from_dict(data)


def test_dbmtl_relations_name_earlier_towers_and_esmm_ctr_tower_is_binary():
    dbmtl = with_model(mmoe_dict(), "DBMTL", "dbmtl", {"task_towers": towers(
        {"tower_name": "ctr", "relation_tower_names": ["cvr"]}, {"tower_name": "cvr"})})  # fmt: skip
    with pytest.raises(FusionrecError, match=r"relation_tower_names 'cvr' is not a tower declared before it"):
        config_from_dict(dbmtl)
    esmm = yaml.safe_load(ESMM.read_text())
    esmm["model_config"]["esmm"]["ctr_tower"]["loss_type"] = "L2_LOSS"
    esmm["model_config"]["esmm"]["ctr_tower"]["metrics_set"] = []
    with pytest.raises(FusionrecError, match="ESMM: ctr_tower must be binary"):
        config_from_dict(esmm)


def test_best_exporter_metric_names_a_tower_metric():
    data = mmoe_dict()
    data["export_config"] = {"exporter_type": "best", "best_exporter_metric": "auc_cvr"}
    assert config_from_dict(data).export_config.best_exporter_metric == "auc_cvr"
    data["export_config"]["best_exporter_metric"] = "auc"
    with pytest.raises(FusionrecError, match=r"'auc' is not computed.*auc_ctr"):
        config_from_dict(data)
    esmm = yaml.safe_load(ESMM.read_text())
    assert set(config_from_dict(esmm).metric_names()) == {
        "auc_ctcvr", "logloss_ctcvr", "auc_cvr_masked", "logloss_cvr_masked", "auc_ctr", "gauc_ctr", "logloss_ctr"}


# ------------------------------------------------------------------ layers and losses
def test_gate_mixes_the_experts_by_a_softmax_of_the_selector(rng):
    gate = Gate(5, 3)
    selector = torch.tensor(rng.normal(size=(4, 5)), dtype=torch.float32)
    experts = torch.tensor(rng.normal(size=(4, 3, 2)), dtype=torch.float32)
    scores = selector.numpy() @ gate.linear.weight.detach().numpy().T + gate.linear.bias.detach().numpy()
    weights = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    expected = np.einsum("be,bed->bd", weights, experts.numpy())
    np.testing.assert_allclose(gate(selector, experts).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def bce(logits, labels):
    p = 1 / (1 + np.exp(-logits))
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))


def test_multi_task_loss_is_the_weighted_sum_of_the_tower_losses(rng):
    data = with_model(mmoe_dict(), "SimpleMultiTask", "simple_multi_task", {"task_towers": towers(
        {"tower_name": "ctr", "label_name": "clk", "weight": 0.5},
        {"tower_name": "cvr", "label_name": "buy", "weight": 2.0, "task_space_indicator_label": "clk",
         "in_task_space_weight": 1.0, "out_task_space_weight": 0.0},
        {"tower_name": "unweighted", "label_name": "buy", "use_sample_weight": False},
    )})  # fmt: skip
    data["data_config"]["input_fields"].append({"input_name": "w", "input_type": "FLOAT"})
    data["data_config"]["sample_weight"] = "w"
    trainer = Trainer(config_from_dict(data), model_dir="unused")
    n = 64
    clk, buy = rng.integers(0, 2, n).astype(np.float32), rng.integers(0, 2, n).astype(np.float32)
    w = rng.uniform(0.5, 2.0, n).astype(np.float32)
    w[:5] = 0
    heads = {s: torch.tensor(rng.normal(size=n), dtype=torch.float32) for s in ("_ctr", "_cvr", "_unweighted")}
    labels = {"clk": torch.tensor(clk), "buy": torch.tensor(buy)}
    got = float(trainer.multi_task_loss(heads, labels, torch.tensor(w)))

    def reduced(values, weights):  # TensorFlow's SUM_BY_NONZERO_WEIGHTS
        return (values * weights).sum() / max((weights != 0).sum(), 1)

    ctr = reduced(bce(heads["_ctr"].numpy(), clk), 0.5 * w)
    cvr = reduced(bce(heads["_cvr"].numpy(), buy), 2.0 * w * (clk > 0))
    unweighted = bce(heads["_unweighted"].numpy(), buy).mean()
    assert got == pytest.approx(ctr + cvr + unweighted, rel=1e-5)


def test_esmm_loss_is_ctr_plus_ctcvr_cross_entropy_summed_over_impressions(rng):
    config = config_from_dict(yaml.safe_load(ESMM.read_text()))
    n = 50
    ctr_logits, cvr_logits = rng.normal(size=n), rng.normal(size=n)
    clk = rng.integers(0, 2, n).astype(np.float64)
    buy = clk * rng.integers(0, 2, n)
    heads = {"_ctr": torch.tensor(ctr_logits), "_cvr": torch.tensor(cvr_logits)}
    got = float(esmm_loss(heads, {"clk": torch.tensor(clk), "buy": torch.tensor(buy)}, config, None))
    p_ctcvr = 1 / (1 + np.exp(-ctr_logits)) / (1 + np.exp(-cvr_logits))
    ctcvr = -(buy * clk * np.log(p_ctcvr) + (1 - buy * clk) * np.log(1 - p_ctcvr)).sum()
    assert got == pytest.approx(bce(ctr_logits, clk).sum() + ctcvr, rel=1e-5)


def test_dbmtl_relations_flow_from_earlier_towers_only(taobao, tmp_path):
    data = with_model(mmoe_dict(), "DBMTL", "dbmtl", {
        "bottom_dnn": {"hidden_units": [16]}, "expert_dnn": {"hidden_units": [8]}, "num_expert": 2,
        "task_towers": towers({"tower_name": "ctr", "relation_dnn": {"hidden_units": [4]}},
                              {"tower_name": "cvr", "relation_tower_names": ["ctr"], "relation_dnn": {"hidden_units": [4]}}),
    })  # fmt: skip
    trainer = Trainer(config_from_dict(small(data, taobao, tmp_path / "m")))
    model = trainer.model.eval()
    reader = trainer._reader()
    from fusionrec.ctr.data import iter_batches

    batch = next(iter_batches(reader, [str(taobao / "test.csv")], 32, shuffle=False, shuffle_rows=0, seed=0))
    features = trainer.transform(batch.columns)
    heads = model.forward_heads(features)
    ctr_relation = model.towers.relation_dnns[0].net[0].weight
    cvr_relation = model.towers.relation_dnns[1].net[0].weight
    (grad_ctr_on_ctr,) = torch.autograd.grad(heads["_ctr"].sum(), ctr_relation, retain_graph=True)
    grad_cvr = torch.autograd.grad(heads["_cvr"].sum(), [ctr_relation, cvr_relation], retain_graph=True)
    grad_ctr_on_cvr = torch.autograd.grad(heads["_ctr"].sum(), cvr_relation, allow_unused=True)[0]
    assert grad_ctr_on_ctr.abs().sum() > 0 and grad_cvr[0].abs().sum() > 0 and grad_cvr[1].abs().sum() > 0
    assert grad_ctr_on_cvr is None or float(grad_ctr_on_cvr.abs().sum()) == 0.0  # ctr does not read cvr


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize("model_class", ["ESMM", "MMoE", "PLE", "DBMTL", "SimpleMultiTask"])
def test_multi_task_model_trains_evaluates_exports_and_predicts_every_tower(model_class, taobao, tmp_path):
    if model_class == "ESMM":
        data = yaml.safe_load(ESMM.read_text())
    elif model_class == "MMoE":
        data = mmoe_dict()
    elif model_class == "PLE":
        data = with_model(mmoe_dict(), "PLE", "ple", {"extraction_networks": [
            {"network_name": "layer1", "expert_num_per_task": 2, "share_num": 1, "task_expert_net": {"hidden_units": [8]},
             "share_expert_net": {"hidden_units": [8]}},
            {"network_name": "layer2", "expert_num_per_task": 1, "task_expert_net": {"hidden_units": [8]}},
        ], "task_towers": towers({"tower_name": "ctr"}, {"tower_name": "cvr"})})  # fmt: skip
    elif model_class == "DBMTL":
        data = with_model(mmoe_dict(), "DBMTL", "dbmtl", {"bottom_dnn": {"hidden_units": [16]}, "task_towers": towers(
            {"tower_name": "ctr"}, {"tower_name": "cvr", "relation_tower_names": ["ctr"], "relation_dnn": {"hidden_units": [4]}})})
    else:
        data = with_model(mmoe_dict(), "SimpleMultiTask", "simple_multi_task",
                          {"task_towers": towers({"tower_name": "ctr"}, {"tower_name": "cvr"})})  # fmt: skip
    config = config_from_dict(small(data, taobao, tmp_path / "m"))
    trainer = Trainer(config)
    report = trainer.train(progress=False)
    expected_metrics = set(config.metric_names())
    assert expected_metrics <= set(report["eval"])
    assert all(name.endswith(("_ctr", "_cvr", "_ctcvr", "_cvr_masked")) for name in expected_metrics)
    export(trainer, tmp_path / "export")
    out = tmp_path / "pred.csv"
    outputs = ["logits_ctr", "probs_ctr", "logits_cvr", "probs_cvr"] + (["probs_ctcvr"] if model_class == "ESMM" else [])
    result = predict(str(taobao / "test.csv"), str(out), str(tmp_path / "export"), reserved_cols="clk",
                     output_cols=",".join(f"{name} double" for name in outputs))  # fmt: skip
    assert result["rows_written"] == 300
    lines = out.read_text().splitlines()
    assert lines[0].split("\x01") == outputs + ["clk"]
    values = np.array([[float(v) for v in line.split("\x01")[: len(outputs)]] for line in lines[1:]])
    _, in_memory, _ = trainer.predict_table([str(taobao / "test.csv")], trainer._reader(), heads=True)
    np.testing.assert_allclose(values[:, 1], in_memory["_ctr"], atol=1e-5)
    np.testing.assert_allclose(values[:, 3], in_memory["_cvr"], atol=1e-5)
    np.testing.assert_allclose(values[:, 1], 1 / (1 + np.exp(-values[:, 0])), atol=1e-5)
    if model_class == "ESMM":
        np.testing.assert_allclose(values[:, 4], values[:, 1] * values[:, 3], atol=1e-6)
    with pytest.raises(FusionrecError, match=r"--output_cols 'probs double'.*probs_ctr"):
        predict(str(taobao / "test.csv"), str(tmp_path / "p2.csv"), str(tmp_path / "export"), output_cols="probs double")


def test_each_label_is_checked_against_its_own_tower_task(taobao, tmp_path):
    data = with_model(mmoe_dict(), "SimpleMultiTask", "simple_multi_task", {"task_towers": towers(
        {"tower_name": "ctr", "label_name": "clk"},
        {"tower_name": "amount", "label_name": "buy", "loss_type": "L2_LOSS", "metrics_set": [{"mean_absolute_error": {}}]},
    )})  # fmt: skip
    lines = (taobao / "train.csv").read_text().splitlines()
    fields = lines[3].split(",")
    fields[1] = "2.5"  # buy: a regression label may be any finite number
    lines[3] = ",".join(fields)
    (tmp_path / "ok.csv").write_text("\n".join(lines) + "\n")
    for field in data["data_config"]["input_fields"]:
        if field["input_name"] == "buy":
            field["input_type"] = "FLOAT"
    config = config_from_dict(small(data, taobao, tmp_path / "m", train_input_path=str(tmp_path / "ok.csv")))
    report = Trainer(config).train(progress=False)
    assert report["input"]["rows_skipped"] == 0 and "mean_absolute_error_amount" in report["eval"]
    fields[0] = "2"  # clk: a binary tower's label must be 0 / 1 or a probability
    lines[3] = ",".join(fields)
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    config = config_from_dict(small(data, taobao, tmp_path / "m2", train_input_path=str(tmp_path / "bad.csv")))
    with pytest.raises(FusionrecError, match=r"line 4.*'clk'.*not a binary label"):
        Trainer(config).train(progress=False)


def test_order_calibrate_loss_penalizes_a_tower_above_its_relation_tower(rng):
    data = with_model(mmoe_dict(), "DBMTL", "dbmtl", {"task_towers": towers(
        {"tower_name": "ctr", "label_name": "clk"},
        {"tower_name": "cvr", "label_name": "buy", "relation_tower_names": ["ctr"],
         "losses": [{"loss_type": "CLASSIFICATION"}, {"loss_type": "ORDER_CALIBRATE_LOSS", "weight": 0.5}]},
    )})  # fmt: skip
    trainer = Trainer(config_from_dict(data), model_dir="unused")
    n = 32
    clk, buy = rng.integers(0, 2, n).astype(np.float32), rng.integers(0, 2, n).astype(np.float32)
    heads = {"_ctr": torch.tensor(rng.normal(size=n), dtype=torch.float32), "_cvr": torch.tensor(rng.normal(size=n), dtype=torch.float32)}
    got = float(trainer.multi_task_loss(heads, {"clk": torch.tensor(clk), "buy": torch.tensor(buy)}, None))
    p_ctr, p_cvr = 1 / (1 + np.exp(-heads["_ctr"].numpy())), 1 / (1 + np.exp(-heads["_cvr"].numpy()))
    expected = bce(heads["_ctr"].numpy(), clk).mean() + bce(heads["_cvr"].numpy(), buy).mean() + 0.5 * np.maximum(p_cvr - p_ctr, 0).mean()
    assert got == pytest.approx(expected, rel=1e-5)
    one_task = mmoe_dict()
    one_task["model_config"] = {"model_class": "MultiTower", "feature_groups": one_task["model_config"]["feature_groups"],
                                "multi_tower": {"towers": [{"input": "all", "dnn": {"hidden_units": [4]}}]},
                                "losses": [{"loss_type": "ORDER_CALIBRATE_LOSS"}]}  # fmt: skip
    with pytest.raises(FusionrecError, match="ORDER_CALIBRATE_LOSS compares a task tower"):
        config_from_dict(one_task)


@pytest.mark.parametrize("name", ["dbmtl_cmbf_on_movielens", "dbmtl_uniter_on_movielens"])
def test_dbmtl_on_a_multimodal_bottom_runs_once_its_exporter_metric_is_one_it_computes(name, tmp_path):
    """EasyRec's samples name best_exporter_metric 'gauc', which a multi-task model does not
    compute (its metrics are per tower, gauc_classify ...): refused as EasyRec would fail. With
    a metric the towers compute, DBMTL over CMBF's / UNITER's fused features runs end to end."""
    from pathlib import Path

    from tests.ctr.easyrec_samples import N_ROWS, sample_run

    source = Path(__file__).resolve().parents[3] / "shared" / "easyrec" / "configs" / f"{name}.config"
    if not source.exists():
        pytest.skip("EasyRec's sample configs are absent")
    with pytest.raises(FusionrecError, match="best_exporter_metric 'gauc' is not computed"):
        sample_run(source, tmp_path)
    fixed = tmp_path / f"{name}.config"
    fixed.write_text(source.read_text().replace('best_exporter_metric: "gauc"', 'best_exporter_metric: "logloss_classify"'))
    (tmp_path / "fixed").mkdir()
    result = sample_run(fixed, tmp_path / "fixed")
    assert result["rows_read"] == N_ROWS and result["rows_written"] == N_ROWS


# ------------------------------------------------------------------ JRC_LOSS and ZILN_LOSS towers
def jrc_ziln_towers() -> dict:
    return with_model(mmoe_dict(), "SimpleMultiTask", "simple_multi_task", {"task_towers": towers(
        {"tower_name": "ctr", "label_name": "clk", "num_class": 2,
         "losses": [{"loss_type": "JRC_LOSS", "jrc_loss": {"session_name": "user_id", "alpha": 0.5}}]},
        {"tower_name": "ltv", "label_name": "buy", "num_class": 3, "losses": [{"loss_type": "ZILN_LOSS"}],
         "metrics_set": [{"auc": {}}, {"mean_absolute_error": {}}]},
    )})  # fmt: skip


@pytest.mark.parametrize("change, message", [
    (lambda t: t[0].update(num_class=1), r"task tower 'ctr': losses: JRC_LOSS needs num_class 2.*got num_class 1"),
    (lambda t: t[1].update(num_class=2), r"task tower 'ltv': losses: ZILN_LOSS needs num_class 3"),
    (lambda t: t[0]["losses"].append({"loss_type": "F1_REWEIGHTED_LOSS"}), r"JRC_LOSS shapes the outputs .*cannot be combined"),
    (lambda t: t[0]["losses"][0].pop("jrc_loss"), r"JRC_LOSS needs its jrc_loss \{ session_name"),
    (lambda t: t[0]["losses"][0]["jrc_loss"].update(session_name="session"), r"jrc_loss.session_name 'session' is not an input_field"),
    (lambda t: t[0]["losses"][0]["jrc_loss"].update(loss_weight_strategy="uncertainty"), r"'uncertainty'.*not implemented"),
    (lambda t: t[1].update(metrics_set=[{"max_f1": {}}]), r"metrics_set max_f1 is not a metric of a ziln task"),
])  # fmt: skip
def test_jrc_and_ziln_towers_follow_easyrec_rules(change, message):
    data = jrc_ziln_towers()
    change(data["model_config"]["simple_multi_task"]["task_towers"])
    with pytest.raises(FusionrecError, match=message):
        config_from_dict(data)


def test_jrc_and_ziln_towers_train_evaluate_and_export_easyrec_outputs(taobao, tmp_path):
    config = config_from_dict(small(jrc_ziln_towers(), taobao, tmp_path / "m"))
    trainer = Trainer(config)
    assert trainer.session_fields == ["user_id"]
    report = trainer.train(progress=False)
    assert {"auc_ctr", "logloss_ctr", "auc_ltv", "mean_absolute_error_ltv", "mean_squared_error_ltv"} <= set(report["eval"])
    export(trainer, tmp_path / "export")
    out = tmp_path / "pred.csv"
    outputs = ["pos_logits_ctr", "probs_ctr", "probs_ltv", "y_ltv"]
    predict(str(taobao / "test.csv"), str(out), str(tmp_path / "export"),
            output_cols=",".join(f"{name} double" for name in outputs))  # fmt: skip
    values = np.array([[float(v) for v in line.split("\x01")[:4]] for line in out.read_text().splitlines()[1:]])
    _, in_memory, _ = trainer.predict_table([str(taobao / "test.csv")], trainer._reader(), heads=True)
    np.testing.assert_allclose(values[:, 1], in_memory["_ctr"], atol=1e-5)  # softmax(logits)[:, 1]
    np.testing.assert_allclose(values[:, 2:], in_memory["_ltv"], rtol=1e-5, atol=1e-6)  # p(value > 0), the mean
    assert np.all(values[:, 3] <= values[:, 2] * np.exp(20.0))
    batch = next(iter_batches(trainer._reader(), [str(taobao / "test.csv")], 300, shuffle=False, shuffle_rows=0, seed=0))
    with torch.no_grad():
        logits = trainer.model.forward_heads(trainer.transform(batch.columns))["_ctr"]
    assert logits.shape == (300, 2)
    np.testing.assert_allclose(values[:, 0], logits[:, 1].numpy(), atol=1e-5)
