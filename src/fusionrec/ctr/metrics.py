"""Evaluation metrics of ``eval_config.metrics_set``, by task (``fusionrec.ctr.tasks``).

Always reported: ``logloss`` for binary and multi-class models, ``mean_squared_error`` for
regression. ``scores`` are what the model predicts: probabilities (binary (n,), multi-class
(n, num_class)) or the regression value.
"""

from __future__ import annotations

import numpy as np

from fusionrec.ctr.config import EvalMetrics
from fusionrec.ctr.tasks import MULTICLASS, REGRESSION, ZILN, Task


def _auc(labels: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC (ties counting a half), as the Mann-Whitney statistic of one group: what
    scikit-learn's roc_auc_score gives, without importing scikit-learn (a second of start-up
    for ``fusionrec ctr eval``)."""
    return grouped_auc(labels, proba, np.zeros(np.asarray(labels).shape[0], dtype=np.int64), "mean")


def grouped_auc(labels, proba, groups, reduction: str) -> float:
    """AUC per group (user or session) averaged; groups with one class only are left out.

    Every group at once, as the Mann-Whitney statistic (what ROC AUC is, ties counting a half):
    rows sorted by (group, score), tied scores of a group given their mean rank; a group's AUC is
    (sum of its positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg). One sort instead of a
    ROC AUC computation per group (tens of thousands of users)."""
    labels, proba = np.asarray(labels), np.asarray(proba, dtype=np.float64)
    n = labels.shape[0]
    if n == 0:
        return float("nan")
    _, group_ids = np.unique(np.asarray(groups), return_inverse=True)
    group_ids = group_ids.reshape(-1)
    order = np.lexsort((proba, group_ids))
    group_ids, proba, positive = group_ids[order], proba[order], labels[order] >= 0.5
    new_group = np.r_[True, group_ids[1:] != group_ids[:-1]]
    new_run = new_group | np.r_[True, proba[1:] != proba[:-1]]  # a run: equal scores in one group
    run_starts = np.flatnonzero(new_run)
    run_stops = np.r_[run_starts[1:], n]
    run_of_row = np.cumsum(new_run) - 1
    group_start_of_row = np.flatnonzero(new_group)[np.cumsum(new_group) - 1]
    # 1-based rank within the group, ties at their mean rank
    mean_rank = (run_starts + run_stops - 1)[run_of_row] / 2.0 - group_start_of_row + 1.0
    n_groups = int(group_ids[-1]) + 1
    n_pos = np.bincount(group_ids, weights=positive, minlength=n_groups)
    n_all = np.bincount(group_ids, minlength=n_groups).astype(np.float64)
    n_neg = n_all - n_pos
    rank_sum = np.bincount(group_ids, weights=np.where(positive, mean_rank, 0.0), minlength=n_groups)
    both = (n_pos > 0) & (n_neg > 0)
    if not both.any():
        return float("nan")
    auc = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2.0) / (n_pos[both] * n_neg[both])
    weight = {"mean": np.ones_like(auc), "mean_by_sample_num": n_all[both], "mean_by_positive_num": n_pos[both]}[reduction]
    return float((weight * auc).sum() / weight.sum())


def evaluate_metrics(metrics: list[EvalMetrics], labels: np.ndarray, proba: np.ndarray, columns: dict,
                     task: Task = Task("binary")) -> dict:  # fmt: skip
    if task.kind == MULTICLASS:
        result = _multiclass_metrics(metrics, labels.astype(np.int64), proba)
        if task.n_classes == 2:  # EasyRec: the AUCs of a two-class model score the second class
            aucs = [m for m in metrics if m.name in ("auc", "gauc", "session_auc")]
            binary = evaluate_metrics(aucs, labels, proba[:, 1], columns)
            result.update({k: v for k, v in binary.items() if k != "logloss"})
        return result
    if task.kind == ZILN:  # (n, 2): p(value > 0) for the AUCs, the predicted value for the errors
        result = {"mean_squared_error": float(np.mean((proba[:, 1] - labels) ** 2))}
        for metric in metrics:
            if metric.name in ("auc", "gauc", "session_auc"):
                result.update(evaluate_metrics([metric], (labels > 0).astype(np.float64), proba[:, 0], columns))
            else:
                result.update(_regression_metric(metric.name, labels, proba[:, 1]))
        result.pop("logloss", None)
        return result
    if task.kind == REGRESSION:
        result = {"mean_squared_error": float(np.mean((proba - labels) ** 2))}
        for metric in metrics:
            result.update(_regression_metric(metric.name, labels, proba))
        return result
    eps = 1e-7
    clipped = np.clip(proba, eps, 1 - eps)
    result = {"logloss": float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))}
    for metric in metrics:
        name = metric.name
        if name == "auc":
            result["auc"] = _auc(labels, proba)
        elif name == "gauc":
            result["gauc"] = grouped_auc(labels, proba, columns[metric.gauc.uid_field], metric.gauc.reduction)
        elif name == "session_auc":
            field = metric.session_auc.session_id_field
            result["session_auc"] = grouped_auc(labels, proba, columns[field], metric.session_auc.reduction)
        elif name == "accuracy":
            result["accuracy"] = float(np.mean((proba >= metric.accuracy.threshold) == (labels >= 0.5)))
        elif name == "max_f1":
            result["max_f1"] = max_f1(labels >= 0.5, proba)
        elif name in ("mean_squared_error", "root_mean_squared_error", "mean_absolute_error"):
            result.update(_regression_metric(name, labels, proba))
        elif name in ("recall", "precision"):  # EasyRec's: the positive class at probability 0.5
            predicted, positives = proba >= 0.5, labels >= 0.5
            hits = float(np.sum(predicted & positives))
            total = float(np.sum(positives if name == "recall" else predicted))
            result[name] = hits / total if total else 0.0
    return result


def _regression_metric(name: str, labels: np.ndarray, predicted: np.ndarray) -> dict:
    errors = predicted - labels
    if name == "mean_absolute_error":
        return {name: float(np.mean(np.abs(errors)))}
    mse = float(np.mean(errors**2))
    return {name: float(np.sqrt(mse)) if name == "root_mean_squared_error" else mse}


def _multiclass_metrics(metrics: list[EvalMetrics], labels: np.ndarray, proba: np.ndarray) -> dict:
    """Softmax logloss always; accuracy of the argmax; EasyRec's recall_at_topk (the share of
    rows whose class is among the k most probable) and precision_at_topk (that share / k: one
    true class per row, as tf.metrics.precision_at_k counts it)."""
    eps = 1e-7
    true_proba = np.clip(proba[np.arange(len(labels)), labels], eps, 1.0)
    result = {"logloss": float(-np.mean(np.log(true_proba)))}
    # rank of the true class: how many classes score strictly higher
    rank = (proba > proba[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    for metric in metrics:
        name = metric.name
        if name == "accuracy":
            result["accuracy"] = float(np.mean(proba.argmax(axis=1) == labels))
        elif name == "recall_at_topk":
            result["recall_at_topk"] = float(np.mean(rank < metric.recall_at_topk.topk))
        elif name == "precision_at_topk":
            k = metric.precision_at_topk.topk
            result["precision_at_topk"] = float(np.mean(rank < k)) / k
    return result


def max_f1(positives: np.ndarray, proba: np.ndarray) -> float:
    """The best F1 over all thresholds."""
    order = np.argsort(-proba, kind="stable")
    hits = positives[order].astype(np.float64)
    true_pos = np.cumsum(hits)
    predicted = np.arange(1, len(hits) + 1)
    n_pos = hits.sum()
    if n_pos == 0:
        return 0.0
    f1 = 2 * true_pos / (predicted + n_pos)
    return float(f1.max())
