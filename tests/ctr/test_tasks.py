"""Multi-class and regression models (EasyRec's num_class and loss_type), models with several
heads (RocketLaunching), and DLRM's interaction."""

import json

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import log_loss

from fusionrec.ctr.config import EvalMetrics, config_from_dict, load_config
from fusionrec.ctr.data import table_to_columns
from fusionrec.ctr.export import export, predict
from fusionrec.ctr.metrics import evaluate_metrics
from fusionrec.ctr.tasks import Task
from fusionrec.ctr.trainer import Trainer
from fusionrec.errors import FusionrecError
from tests.ctr.test_pipeline import EXAMPLES, WIDE_AND_DEEP, edits, taobao  # noqa: F401  (fixture)

DEEPFM = next(p for p in EXAMPLES if p.name == "taobao_deepfm.yaml")
DLRM = next(p for p in EXAMPLES if p.name == "taobao_dlrm.yaml")
MULTICLASS_METRICS = [{"accuracy": {}}, {"recall_at_topk": {"topk": 2}}, {"precision_at_topk": {"topk": 2}}]


def test_task_of_loss_type_and_num_class():
    assert Task.of("CLASSIFICATION", 1) == Task("binary")
    assert Task.of("CLASSIFICATION", 4) == Task("multiclass", 4)
    assert Task.of("SOFTMAX_CROSS_ENTROPY", 3).n_outputs == 3
    assert Task.of("L2_LOSS", 1) == Task("regression")
    assert Task.of("SIGMOID_L2_LOSS", 1).squash
    values = np.array([0, 1, 2, 2.5, -1, 3, np.nan])
    np.testing.assert_array_equal(Task("multiclass", 3).bad_labels(values), [0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(Task("regression").bad_labels(np.array([-7.5, 1e6, np.inf])), [0, 0, 1])
    np.testing.assert_array_equal(Task("regression", squash=True).bad_labels(np.array([0.5, 2.0])), [0, 1])


def test_multiclass_metrics_against_references(rng):
    n, k = 500, 5
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = [EvalMetrics(**m) for m in MULTICLASS_METRICS]
    result = evaluate_metrics(metrics, labels.astype(float), proba, {}, Task("multiclass", k))
    assert result["logloss"] == pytest.approx(log_loss(labels, proba, labels=range(k)), rel=1e-6)
    assert result["accuracy"] == pytest.approx(np.mean(proba.argmax(1) == labels))
    top2 = np.argsort(-proba, axis=1)[:, :2]
    in_top2 = np.array([labels[i] in top2[i] for i in range(n)])
    assert result["recall_at_topk"] == pytest.approx(in_top2.mean())
    assert result["precision_at_topk"] == pytest.approx(in_top2.mean() / 2)


def test_regression_metrics_against_references(rng):
    labels = rng.normal(3.0, 2.0, 200)
    predicted = labels + rng.normal(0, 0.5, 200)
    metrics = [EvalMetrics(mean_absolute_error={}), EvalMetrics(root_mean_squared_error={})]
    result = evaluate_metrics(metrics, labels, predicted, {}, Task("regression"))
    assert result["mean_squared_error"] == pytest.approx(np.mean((predicted - labels) ** 2))
    assert result["root_mean_squared_error"] == pytest.approx(np.sqrt(result["mean_squared_error"]))
    assert result["mean_absolute_error"] == pytest.approx(np.mean(np.abs(predicted - labels)))
    assert "logloss" not in result


@pytest.mark.parametrize("config_path", [WIDE_AND_DEEP, DEEPFM], ids=["wide_and_deep", "deepfm"])
def test_multiclass_trains_exports_and_predicts_every_output(config_path, taobao, tmp_path):
    config = load_config(config_path, edits(taobao, tmp_path / "model", **{
        "model_config.num_class": 3, "eval_config.metrics_set": MULTICLASS_METRICS}))  # fmt: skip
    trainer = Trainer(config)
    report = trainer.train(progress=False)
    assert set(report["eval"]) >= {"logloss", "accuracy", "recall_at_topk", "precision_at_topk"}
    assert 0.0 <= report["eval"]["accuracy"] <= 1.0
    export(trainer, tmp_path / "export")
    result = predict(str(taobao / "test.csv"), str(tmp_path / "pred.csv"), str(tmp_path / "export"), reserved_cols="clk")
    assert result["rows_written"] == 300
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0].split("\x01") == ["logits", "logits_y", "probs", "probs_y", "y", "clk"]  # EasyRec's outputs
    rows = [line.split("\x01") for line in lines[1:]]
    probs = np.array([[float(v) for v in row[2].split(",")] for row in rows])
    logits = np.array([[float(v) for v in row[0].split(",")] for row in rows])
    assert probs.shape == (300, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal([int(row[4]) for row in rows], logits.argmax(axis=1))
    np.testing.assert_allclose([float(row[3]) for row in rows], probs.max(axis=1), atol=1e-6)
    np.testing.assert_allclose([float(row[1]) for row in rows], logits.max(axis=1), atol=1e-5)
    _, in_memory, _ = trainer.predict_table([str(taobao / "test.csv")], trainer._reader())
    np.testing.assert_allclose(probs, in_memory, atol=1e-5)


def test_class_ids_outside_num_class_are_refused_with_file_line_and_rule(taobao, tmp_path):
    lines = (taobao / "train.csv").read_text().splitlines()
    fields = lines[5].split(",")
    fields[0] = "3"  # clk is the first field; class ids of num_class 3 are 0, 1, 2
    lines[5] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    extra = {"model_config.num_class": 3, "eval_config.metrics_set": MULTICLASS_METRICS, "train_input_path": str(bad)}
    trainer = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m1", **extra)))
    with pytest.raises(FusionrecError, match=r"bad\.csv.*line 6.*clk.*not a class id.*0 \.\. 2"):
        trainer.train(progress=False)
    lenient = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m2", **extra, **{"data_config.ignore_error": True})))
    lenient.train(progress=False)
    report = json.loads((tmp_path / "m2" / "train_input_report.json").read_text())
    assert report["rows_skipped"] == 1 and any("class id" in reason for reason in report["skipped_by_reason"])


@pytest.mark.parametrize("loss_type", ["L2_LOSS", "SIGMOID_L2_LOSS"])
def test_regression_trains_on_the_squared_error_and_predicts_y(loss_type, taobao, tmp_path):
    config = load_config(DEEPFM, edits(taobao, tmp_path / "model", **{
        "model_config.loss_type": loss_type, "eval_config.metrics_set": [{"mean_absolute_error": {}}]}))  # fmt: skip
    trainer = Trainer(config)
    logits = torch.tensor([0.3, -2.0, 4.0])
    labels = torch.tensor([1.0, 0.0, 0.5])
    predicted = torch.sigmoid(logits) if loss_type == "SIGMOID_L2_LOSS" else logits
    assert float(trainer.data_loss(logits, labels, None)) == pytest.approx(float(((predicted - labels) ** 2).mean()))
    weights = torch.tensor([2.0, 0.0, 1.0])  # TensorFlow's reduction: sum(w * loss) / count(w != 0)
    expected = float((weights * (predicted - labels) ** 2).sum() / 2)
    assert float(trainer.data_loss(logits, labels, weights)) == pytest.approx(expected)
    report = trainer.train(progress=False)
    assert set(report["eval"]) >= {"mean_squared_error", "mean_absolute_error"}
    export(trainer, tmp_path / "export")
    predict(str(taobao / "test.csv"), str(tmp_path / "pred.csv"), str(tmp_path / "export"), reserved_cols="clk")
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0].split("\x01") == ["y", "clk"]
    y = np.array([float(line.split("\x01")[0]) for line in lines[1:]])
    _, in_memory, _ = trainer.predict_table([str(taobao / "test.csv")], trainer._reader())
    np.testing.assert_allclose(y, in_memory, atol=1e-5)


@pytest.mark.parametrize("edit, message", [
    ({"model_config.num_class": 3}, "auc is not a metric of a multiclass model"),
    ({"model_config.loss_type": "SOFTMAX_CROSS_ENTROPY"}, "SOFTMAX_CROSS_ENTROPY needs num_class >= 2"),
    ({"model_config.loss_type": "L2_LOSS", "model_config.num_class": 2}, "predicts one value: num_class must be 1"),
    ({"model_config.loss_type": "JRC_LOSS"}, "loss_type 'JRC_LOSS' is not implemented yet"),
    ({"model_config.num_class": 2, "eval_config.metrics_set": [{"accuracy": {}}],
      "model_config.losses": [{"loss_type": "PAIR_WISE_LOSS"}]}, "binary ranking losses"),
])  # fmt: skip
def test_task_config_errors_name_the_rule(edit, message, taobao, tmp_path):
    with pytest.raises(FusionrecError, match=message):
        load_config(WIDE_AND_DEEP, edits(taobao, tmp_path, **edit))


def test_dlrm_dot_interaction_is_the_papers_pairwise_dot_products(taobao, tmp_path):
    """DLRM's logits recomputed by hand: the dot product of every pair among (dense vector,
    sparse embeddings), i < j, then the sparse embeddings, through top_dnn and the head."""
    trainer = Trainer(load_config(DLRM, edits(taobao, tmp_path / "model")))
    trainer.train(progress=False)
    model = trainer.model.eval()
    batch = next(iter(trainer._reader().iter_tables([str(taobao / "test.csv")])))
    features = trainer.transform(table_to_columns(batch.slice(0, 40), trainer._reader().fields))
    with torch.no_grad():
        dense = model.bottom(model.dense_input(features))
        sparse = model.sparse_input.fields(features)
        vectors = [dense] + sparse
        dots = [(vectors[i] * vectors[j]).sum(dim=1) for i in range(len(vectors)) for j in range(i + 1, len(vectors))]
        expected = model.head(model.top(torch.cat([torch.stack(dots, dim=1)] + sparse, dim=1))).squeeze(1)
        torch.testing.assert_close(model(features), expected)


def test_dlrm_dot_needs_one_width(taobao, tmp_path):
    with pytest.raises(FusionrecError, match="bot_dnn's last layer \\(8\\).*\\[16\\]"):
        Trainer(load_config(DLRM, edits(taobao, tmp_path, **{"model_config.dlrm.bot_dnn.hidden_units": [32, 8]})))



def rocket_config(taobao, tmp_path, **params):
    raw = yaml.safe_load(DEEPFM.read_text())
    features = [f["feature_name"] if "feature_name" in f else f["input_names"][0] for f in raw["feature_config"]["features"]]
    raw["model_config"] = {
        "model_class": "RocketLaunching", "num_class": 2,
        "feature_groups": [{"group_name": "all", "feature_names": features}],
        "rocket_launching": {"share_dnn": {"hidden_units": [32]}, "booster_dnn": {"hidden_units": [32, 16, 8]},
                             "light_dnn": {"hidden_units": [16, 8]}, **params},
    }  # fmt: skip
    raw["eval_config"] = {"metrics_set": [{"auc": {}}]}
    raw.update(train_input_path=str(taobao / "train.csv"), eval_input_path=str(taobao / "test.csv"), model_dir=str(tmp_path / "model"))
    raw["train_config"].update(num_steps=4, save_checkpoints_steps=100)
    raw["data_config"].update(batch_size=128)
    return config_from_dict(raw)


def test_rocket_launching_light_net_learns_without_moving_the_shared_layers(taobao, tmp_path):
    """Rocket Launching (Zhou et al. 2018): the light net's gradient stops at the shared input;
    the hint loss is the squared error of the light logits against the booster's, whose
    gradient is stopped too."""
    trainer = Trainer(rocket_config(taobao, tmp_path))
    model = trainer.model
    batch = next(iter(trainer._reader().iter_tables([str(taobao / "train.csv")])))
    features = trainer.transform(table_to_columns(batch.slice(0, 64), trainer._reader().fields))
    heads, hint = model.training_heads(features, None)
    assert set(heads) == {"_light", "_booster"} and heads["_light"].shape == (64, 2)
    torch.testing.assert_close(hint, ((heads["_light"] - heads["_booster"]) ** 2).mean())
    (heads["_light"].sum() + hint).backward()
    shared = list(model.share.parameters()) + list(model.input.parameters()) + list(model.booster.parameters())
    assert all(p.grad is None or not p.grad.any() for p in shared)
    assert any(p.grad is not None and p.grad.any() for p in model.light.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(features), model.forward_heads(features)["_light"])


@pytest.mark.parametrize("function", ["COSINE", "EUCLID"])
def test_rocket_launching_trains_evaluates_both_heads_and_predicts_easyrecs_outputs(function, taobao, tmp_path):
    trainer = Trainer(rocket_config(taobao, tmp_path, feature_based_distillation=True, feature_distillation_function=function))
    assert trainer.model.distilled_pairs == [(0, 1), (1, 2)]  # light 16, 8 <- booster layers 1 (16) and 2 (8)
    report = trainer.train(progress=False)
    assert {"auc_light", "auc_booster", "logloss_light", "logloss_booster"} <= set(report["eval"])
    export(trainer, tmp_path / "export")
    predict(str(taobao / "test.csv"), str(tmp_path / "pred.csv"), str(tmp_path / "export"), reserved_cols="clk")
    header = (tmp_path / "pred.csv").read_text().splitlines()[0].split("\x01")
    assert header == ["logits_booster", "logits_booster_y", "logits_light", "logits_light_y", "probs_booster",
                      "probs_booster_y", "probs_light", "probs_light_y", "y_booster", "y_light", "clk"]  # fmt: skip
