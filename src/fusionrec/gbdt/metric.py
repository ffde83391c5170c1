"""Evaluation metrics, all weighted, computed on ``Objective.metric_input`` values.

Classifier metrics see probabilities (``binary:logitraw`` margins pass through the
sigmoid first); ``aucpr`` is the average precision (area under the step-wise
precision-recall curve).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.ranking import parse_rank_metric, rank_metric

EPS = 1e-16


def _avg(values: np.ndarray, w: np.ndarray | None) -> float:
    return float(np.average(values, weights=w))


def rmse(y, p, w):
    return float(np.sqrt(_avg((y - p) ** 2, w)))


def mae(y, p, w):
    return _avg(np.abs(y - p), w)


def logloss(y, p, w):
    p = np.clip(p, EPS, 1 - EPS)
    return _avg(-(y * np.log(p) + (1 - y) * np.log(1 - p)), w)


def error(y, p, w):
    return _avg(((p > 0.5) != (y > 0.5)).astype(np.float64), w)


def _binary_curve(y, p, w):
    """Cumulative weighted positives/negatives at each distinct score, highest score first."""
    order = np.argsort(-p, kind="stable")
    p_sorted = p[order]
    y_sorted = y[order]
    w_sorted = np.ones_like(p_sorted) if w is None else w[order]
    distinct = np.flatnonzero(np.diff(p_sorted)) if p_sorted.size > 1 else np.zeros(0, np.int64)
    ends = np.r_[distinct, p_sorted.size - 1]
    tp = np.cumsum(w_sorted * y_sorted)[ends]
    fp = np.cumsum(w_sorted * (1 - y_sorted))[ends]
    return tp, fp


def auc(y, p, w):
    """Area under the ROC curve; tied scores count one half (trapezoids)."""
    tp, fp = _binary_curve(y, p, w)
    if tp[-1] <= 0 or fp[-1] <= 0:
        return float("nan")
    tp = np.r_[0.0, tp]
    fp = np.r_[0.0, fp]
    return float(np.trapezoid(tp, fp) / (tp[-1] * fp[-1]))


def aucpr(y, p, w):
    tp, fp = _binary_curve(y, p, w)
    if tp[-1] <= 0:
        return float("nan")
    precision = tp / np.maximum(tp + fp, EPS)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mlogloss(y, p, w):
    probs = np.clip(p[np.arange(y.shape[0]), y.astype(np.int64)], EPS, 1.0)
    return _avg(-np.log(probs), w)


def merror(y, p, w):
    return _avg((np.argmax(p, axis=1) != y).astype(np.float64), w)


def poisson_nloglik(y, p, w):
    p = np.maximum(p, EPS)
    return _avg(p - y * np.log(p) + gammaln(y + 1.0), w)


METRIC_FUNCTIONS = {
    "rmse": rmse,
    "mae": mae,
    "logloss": logloss,
    "error": error,
    "auc": auc,
    "aucpr": aucpr,
    "mlogloss": mlogloss,
    "merror": merror,
    "poisson-nloglik": poisson_nloglik,
}
_MULTI = {"mlogloss", "merror"}
_BINARY = {"logloss", "error", "auc", "aucpr"}


def check_metric_fits(name: str, n_groups: int, objective_name: str) -> None:
    if parse_rank_metric(name) is not None:
        if n_groups > 1:
            raise FusionrecError(f"parameter eval_metric={name!r}: a ranking metric, but objective {objective_name!r} has {n_groups} classes")
        return
    if name in _MULTI and n_groups < 2:
        raise FusionrecError(f"parameter eval_metric={name!r}: needs a multi:* objective, not {objective_name!r}")
    if name in _BINARY and n_groups > 1:
        raise FusionrecError(f"parameter eval_metric={name!r}: a binary metric, but objective {objective_name!r} has {n_groups} classes")


def evaluate(name: str, y: np.ndarray, metric_input: np.ndarray, w: np.ndarray | None, dataset=None, exp_gain: bool = True) -> float:
    """The metric ``name`` of predictions ``metric_input``; ranking metrics (ndcg@k, map@k,
    pre@k) average over the query groups of ``dataset`` (the whole data is one query when it
    has none, as in XGBoost) with its per-query weights."""
    if parse_rank_metric(name) is not None:
        group_ptr = getattr(dataset, "group_ptr", None)
        if group_ptr is None:
            group_ptr = np.array([0, y.shape[0]], np.int64)
        scores = metric_input if metric_input.ndim == 1 else metric_input[:, 0]
        return rank_metric(name, y, scores, group_ptr, getattr(dataset, "group_weight", None), exp_gain)
    return METRIC_FUNCTIONS[name](y, metric_input, w)
