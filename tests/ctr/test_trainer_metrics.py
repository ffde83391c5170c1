"""Learning-rate schedules, optimizers, loss options and evaluation metrics."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, precision_score, recall_score, roc_auc_score

from fusionrec.ctr.config import EvalMetrics, LearningRate, load_config
from fusionrec.ctr.metrics import evaluate_metrics, grouped_auc, max_f1
from fusionrec.ctr.trainer import Trainer, learning_rate_at
from tests.ctr.test_pipeline import WIDE_AND_DEEP, edits, taobao  # noqa: F401  (fixture)


def test_exponential_decay_is_floored_and_staircased():
    schedule = LearningRate(exponential_decay_learning_rate={"initial_learning_rate": 0.001, "decay_steps": 1000,
                                                             "decay_factor": 0.5, "min_learning_rate": 1e-5})  # fmt: skip
    assert learning_rate_at(999, schedule) == pytest.approx(0.001)
    assert learning_rate_at(1000, schedule) == pytest.approx(0.0005)
    assert learning_rate_at(100_000, schedule) == pytest.approx(1e-5)


def test_cosine_decay_with_warmup_and_hold():
    schedule = LearningRate(cosine_decay_learning_rate={"learning_rate_base": 0.01, "total_steps": 100,
                                                        "warmup_learning_rate": 0.001, "warmup_steps": 10,
                                                        "hold_base_rate_steps": 10})  # fmt: skip
    assert learning_rate_at(0, schedule) == pytest.approx(0.001)
    assert learning_rate_at(5, schedule) == pytest.approx(0.0055)
    assert learning_rate_at(15, schedule) == pytest.approx(0.01)
    assert learning_rate_at(60, schedule) == pytest.approx(0.005)
    assert learning_rate_at(100, schedule) == pytest.approx(0.0, abs=1e-12)


def test_metrics_against_references(rng):
    labels = (rng.random(400) < 0.3).astype(float)
    proba = np.clip(0.3 * labels + rng.random(400) * 0.7, 0, 1)
    users = rng.integers(0, 20, 400)
    metrics = [EvalMetrics(auc={}), EvalMetrics(gauc={"uid_field": "u"}),
               EvalMetrics(session_auc={"session_id_field": "u", "reduction": "mean_by_sample_num"}),
               EvalMetrics(accuracy={}), EvalMetrics(max_f1={}), EvalMetrics(mean_squared_error={}),
               EvalMetrics(root_mean_squared_error={}), EvalMetrics(mean_absolute_error={}), EvalMetrics(recall={}),
               EvalMetrics(precision={})]  # fmt: skip
    result = evaluate_metrics(metrics, labels, proba, {"u": users})
    assert result["auc"] == pytest.approx(roc_auc_score(labels, proba))
    per_user = [(roc_auc_score(labels[users == u], proba[users == u]), (users == u).sum()) for u in np.unique(users)
                if 0 < labels[users == u].sum() < (users == u).sum()]  # fmt: skip
    assert result["gauc"] == pytest.approx(np.mean([a for a, _ in per_user]))
    assert result["session_auc"] == pytest.approx(sum(a * n for a, n in per_user) / sum(n for _, n in per_user))
    assert result["accuracy"] == pytest.approx(np.mean((proba >= 0.5) == labels))
    assert result["mean_squared_error"] == pytest.approx(np.mean((proba - labels) ** 2))
    assert result["root_mean_squared_error"] == pytest.approx(math.sqrt(result["mean_squared_error"]))
    assert result["mean_absolute_error"] == pytest.approx(mean_absolute_error(labels, proba))
    assert result["recall"] == pytest.approx(recall_score(labels, proba >= 0.5))
    assert result["precision"] == pytest.approx(precision_score(labels, proba >= 0.5))
    best = max(2 * ((proba >= t) & (labels == 1)).sum() / ((proba >= t).sum() + labels.sum()) for t in proba)
    assert result["max_f1"] == pytest.approx(best)
    assert math.isnan(grouped_auc(np.ones(3), proba[:3], np.zeros(3), "mean"))
    assert max_f1(np.zeros(3, bool), proba[:3]) == 0.0


@pytest.mark.parametrize(
    "optimizer",
    [
        {"adagrad_optimizer": {"learning_rate": {"constant_learning_rate": {"learning_rate": 0.05}}}},
        {"momentum_optimizer": {"learning_rate": {"cosine_decay_learning_rate": {"learning_rate_base": 0.01,
                                                                                  "total_steps": 4, "warmup_steps": 1}}}},
    ],  # fmt: skip
    ids=["adagrad", "momentum"],
)
def test_other_optimizers_train_and_resume(taobao, tmp_path, optimizer):  # noqa: F811
    extra = {"train_config.optimizer_config": [optimizer]}
    trainer = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m", **extra)))
    report = trainer.train(progress=False)
    assert report["steps"] == 4 and np.isfinite(report["eval"]["logloss"])
    extra["train_config.num_steps"] = 5
    resumed = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m", **extra)))
    assert resumed.train(continue_train=True, progress=False)["steps"] == 5


def test_sample_weight_clipping_num_examples_and_time_checkpoints(taobao, tmp_path):  # noqa: F811
    extra = {"data_config.sample_weight": "buy", "train_config.gradient_clipping_by_norm": 1.0,
             "eval_config.num_examples": 100, "train_config.save_checkpoints_secs": 1,
             "train_config.save_checkpoints_steps": 1000}  # fmt: skip
    trainer = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m", **extra)))
    assert not any(t.sparse for t in trainer._embedding_tables())  # clipping needs dense gradients
    trainer.train(progress=False)
    assert json.loads((tmp_path / "m" / "eval_result.json").read_text())["n_rows"] == 100
    # loss: the rows' weighted cross-entropy over the count of non-zero weights (tf.losses' reduction)
    logits, labels, weights = torch.tensor([0.0, 2.0, 1.0]), torch.tensor([1.0, 0.0, 1.0]), torch.tensor([3.0, 1.0, 0.0])
    expected = (3 * math.log(2) + 1 * (2 + math.log1p(math.exp(-2)))) / 2
    trainer.l2_regularization = 0.0
    trainer.config.model_config_.embedding_regularization = 0.0
    assert float(trainer.loss(logits, labels, weights, {})) == pytest.approx(expected)


def test_wide_and_deep_group_kind_is_refused(tmp_path):
    text = WIDE_AND_DEEP.read_text().replace("wide_deep: WIDE\n", "wide_deep: WIDE_AND_DEEP\n", 1)
    path = tmp_path / "c.config"
    path.write_text(text)
    from fusionrec.errors import FusionrecError

    with pytest.raises(FusionrecError, match="WIDE_AND_DEEP is not implemented yet"):
        load_config(path)


def test_variational_dropout_adds_its_penalty_per_feature_group(taobao, tmp_path):
    config = load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m", **{
        "model_config.variational_dropout": {"regularization_lambda": 0.5}, "model_config.embedding_regularization": 0}))  # fmt: skip
    trainer = Trainer(config)
    assert len(trainer.variational_dropouts) == len(config.model_config_.feature_groups)
    logits, labels = torch.zeros(8), torch.ones(8)
    with_penalty = float(trainer.loss(logits, labels, None, {}))
    trainer.variational_dropouts = []
    penalties = sum(0.5 / 8 * float((1 - torch.sigmoid(m.logit_p)).sum()) for m in trainer.model.modules()
                    if hasattr(m, "logit_p"))  # fmt: skip
    assert with_penalty - float(trainer.loss(logits, labels, None, {})) == pytest.approx(penalties, rel=1e-5)
    assert trainer.train(progress=False)["steps"] == 4


@pytest.mark.parametrize("aucs, steps, best_step", [([0.6, 0.55, 0.58, 0.7], 3, 1), ([0.5, 0.6, 0.7, 0.8, 0.9, 0.95], 6, None)])
def test_early_stop_when_the_metric_has_not_improved_for_max_check_steps(aucs, steps, best_step, taobao, tmp_path):
    """EasyRec's enable_early_stop (TensorFlow's stop_if_no_increase_hook on best_exporter_metric)."""
    config = load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m", **{
        "train_config.num_steps": 6, "train_config.save_checkpoints_steps": 1,
        "export_config.enable_early_stop": True, "export_config.max_check_steps": 2}))  # fmt: skip
    trainer = Trainer(config)
    results = iter(aucs + [0.0] * 10)
    trainer.evaluate = lambda: {"auc": next(results)}
    report = trainer.train(progress=False)
    assert report["steps"] == steps
    if best_step is None:
        assert "early_stopped" not in report
    else:
        assert report["early_stopped"] == {"best_step": best_step, "best_metric": 0.6}


@pytest.mark.parametrize("reduction", ["mean", "mean_by_sample_num", "mean_by_positive_num"])
def test_grouped_auc_equals_one_roc_auc_score_per_group(reduction):
    """The one-sort grouped AUC against scikit-learn's roc_auc_score group by group, with tied
    scores inside groups, string and integer group ids, one-class and one-row groups."""
    rng = np.random.default_rng(11)
    for trial in range(12):
        n = int(rng.integers(1, 1500))
        groups = rng.integers(0, max(1, n // int(rng.integers(1, 25))), n)
        if trial % 3 == 0:
            groups = np.array([f"user{g}" for g in groups])
        proba = np.round(rng.random(n), int(rng.integers(1, 4)))  # 10 to 1000 distinct scores: ties
        labels = (rng.random(n) < proba).astype(float)
        total = weight = 0.0
        for g in np.unique(groups):
            member = groups == g
            positive = labels[member] >= 0.5
            if positive.all() or not positive.any():
                continue
            w = {"mean": 1.0, "mean_by_sample_num": member.sum(), "mean_by_positive_num": positive.sum()}[reduction]
            total += w * roc_auc_score(positive, proba[member])
            weight += w
        expected = total / weight if weight else float("nan")
        got = grouped_auc(labels, proba, groups, reduction)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)


def test_the_optimizers_are_made_only_when_training_needs_them(taobao, tmp_path):  # noqa: F811
    """Evaluation and export never build torch optimizers (their first constructor imports
    torch._dynamo, seconds of start-up); the tables' sparse-gradient choice is made at once."""
    trainer = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m")))
    # adam_optimizer takes sparse table gradients (TFAdam), chosen before any optimizer exists
    assert trainer._optimizer is None and all(t.sparse for t in trainer._embedding_tables())
    trainer.train(progress=False)
    assert trainer._optimizer is not None
    evaluator = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m")))
    evaluator.evaluate(evaluator.checkpoints()[-1][1])
    assert evaluator._optimizer is None


def test_auc_is_scikit_learns_with_ties_and_nan_for_one_class():
    rng = np.random.default_rng(3)
    labels = (rng.random(2_000) < 0.1).astype(np.float64)
    proba = np.round(rng.random(2_000), 2)  # many tied scores
    result = evaluate_metrics([EvalMetrics(auc={})], labels, proba, {})
    assert result["auc"] == pytest.approx(roc_auc_score(labels, proba), abs=1e-12)
    assert math.isnan(evaluate_metrics([EvalMetrics(auc={})], np.zeros(5), proba[:5], {})["auc"])
