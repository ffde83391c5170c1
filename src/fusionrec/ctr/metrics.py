"""Evaluation metrics of ``eval_config.metrics_set`` (logloss is always reported)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from fusionrec.ctr.config import EvalMetrics


def _auc(labels: np.ndarray, proba: np.ndarray) -> float:
    positives = labels >= 0.5
    if positives.all() or not positives.any():
        return float("nan")
    return float(roc_auc_score(positives, proba))


def grouped_auc(labels, proba, groups, reduction: str) -> float:
    """AUC per group (user or session) averaged; groups with one class only are left out."""
    order = np.argsort(groups, kind="stable")
    groups, labels, proba = groups[order], labels[order], proba[order]
    bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
    total, weight = 0.0, 0.0
    for start, stop in zip(bounds[:-1], bounds[1:]):
        auc = _auc(labels[start:stop], proba[start:stop])
        if np.isnan(auc):
            continue
        w = {"mean": 1.0, "mean_by_sample_num": stop - start, "mean_by_positive_num": float((labels[start:stop] >= 0.5).sum())}[reduction]
        total += w * auc
        weight += w
    return total / weight if weight else float("nan")


def evaluate_metrics(metrics: list[EvalMetrics], labels: np.ndarray, proba: np.ndarray, columns: dict) -> dict:
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
        elif name == "mean_squared_error":
            result["mean_squared_error"] = float(np.mean((proba - labels) ** 2))
        elif name == "root_mean_squared_error":
            result["root_mean_squared_error"] = float(np.sqrt(np.mean((proba - labels) ** 2)))
        elif name == "mean_absolute_error":
            result["mean_absolute_error"] = float(np.mean(np.abs(proba - labels)))
        elif name in ("recall", "precision"):  # EasyRec's: the positive class at probability 0.5
            predicted, positives = proba >= 0.5, labels >= 0.5
            hits = float(np.sum(predicted & positives))
            total = float(np.sum(positives if name == "recall" else predicted))
            result[name] = hits / total if total else 0.0
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
