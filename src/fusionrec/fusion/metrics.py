"""Metrics that fusion optimizes and reports, computed on predictions (not on estimators).

A metric sees ``y_true`` and either one score per row (a regression value, or the positive
class's probability of a binary task) or a matrix of class probabilities whose columns
follow the sorted class labels. :meth:`Metric.score` is oriented so that greater is better,
which is what weight optimization and ensemble selection maximize.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from fusionrec.errors import FusionrecError


@dataclass(frozen=True)
class Metric:
    """A named metric: ``func(y_true, y_pred, sample_weight) -> float``."""

    name: str
    func: Callable
    greater_is_better: bool = True

    def __call__(self, y_true, y_pred, sample_weight=None) -> float:
        return float(self.func(y_true, y_pred, sample_weight))

    def score(self, y_true, y_pred, sample_weight=None) -> float:
        """The metric with its sign flipped when smaller is better: greater is always better."""
        value = self(y_true, y_pred, sample_weight)
        return value if self.greater_is_better else -value


def make_metric(func: Callable, *, greater_is_better: bool = True, name: str | None = None) -> Metric:
    """Wrap ``func(y_true, y_pred)`` (or ``func(y_true, y_pred, sample_weight)``) as a :class:`Metric`."""

    def call(y_true, y_pred, sample_weight):
        if sample_weight is None:
            return func(y_true, y_pred)
        return func(y_true, y_pred, sample_weight=sample_weight)

    return Metric(name or getattr(func, "__name__", "custom"), call, greater_is_better)


def _positive_scores(y_pred: np.ndarray) -> np.ndarray:
    return y_pred[:, 1] if y_pred.ndim == 2 and y_pred.shape[1] == 2 else y_pred


def _normalized(y_pred: np.ndarray) -> np.ndarray:
    if y_pred.ndim == 2:
        total = y_pred.sum(axis=1, keepdims=True)
        return y_pred / np.where(total > 0, total, 1.0)
    return y_pred


def _auc(y_true, y_pred, sample_weight):
    y_pred = _positive_scores(y_pred)
    if y_pred.ndim == 2:  # one-vs-rest over the classes, as scikit-learn's roc_auc_score does
        return skm.roc_auc_score(y_true, _normalized(y_pred), multi_class="ovr", sample_weight=sample_weight,
                                 labels=np.arange(y_pred.shape[1]))  # fmt: skip
    return skm.roc_auc_score(y_true, y_pred, sample_weight=sample_weight)


def _log_loss(y_true, y_pred, sample_weight):
    y_pred = _normalized(y_pred)
    labels = np.arange(y_pred.shape[1]) if y_pred.ndim == 2 else [0, 1]
    return skm.log_loss(y_true, np.clip(y_pred, 1e-15, 1 - 1e-15), sample_weight=sample_weight, labels=labels)


def _accuracy(y_true, y_pred, sample_weight):
    labels = np.argmax(y_pred, axis=1) if y_pred.ndim == 2 else (y_pred > 0.5).astype(int)
    return skm.accuracy_score(y_true, labels, sample_weight=sample_weight)


def _rmse(y_true, y_pred, sample_weight):
    return np.sqrt(skm.mean_squared_error(y_true, y_pred, sample_weight=sample_weight))


METRICS: dict[str, Metric] = {
    "roc_auc": Metric("roc_auc", _auc, True),
    "log_loss": Metric("log_loss", _log_loss, False),
    "accuracy": Metric("accuracy", _accuracy, True),
    "mse": Metric("mse", lambda y, p, w: skm.mean_squared_error(y, p, sample_weight=w), False),
    "rmse": Metric("rmse", _rmse, False),
    "mae": Metric("mae", lambda y, p, w: skm.mean_absolute_error(y, p, sample_weight=w), False),
    "r2": Metric("r2", lambda y, p, w: skm.r2_score(y, p, sample_weight=w), True),
}
ALIASES = {"auc": "roc_auc", "logloss": "log_loss", "neg_log_loss": "log_loss", "acc": "accuracy"}
CLASSIFICATION_METRICS = ("roc_auc", "log_loss", "accuracy")


def get_metric(metric, *, classification: bool, owner: str = "metric") -> Metric:
    """Resolve a metric name, a :class:`Metric` or a plain callable (greater is better)."""
    if metric is None:
        return METRICS["log_loss" if classification else "mse"]
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        return make_metric(metric)
    if isinstance(metric, str):
        name = ALIASES.get(metric.lower(), metric.lower())
        if name in METRICS:
            if not classification and name in CLASSIFICATION_METRICS:
                raise FusionrecError(f"{owner}={metric!r} is a classification metric; a regressor takes one of "
                                     f"{[m for m in METRICS if m not in CLASSIFICATION_METRICS]}")  # fmt: skip
            return METRICS[name]
    raise FusionrecError(
        f"{owner}={metric!r} is not a known metric; use one of {sorted(METRICS)}, a fusionrec.fusion.Metric, "
        "or a callable(y_true, y_pred) where greater is better"
    )


def is_classification_metric(metric) -> bool:
    """Whether ``metric`` names one of the classification metrics (a Metric or callable: no)."""
    return isinstance(metric, str) and ALIASES.get(metric.lower(), metric.lower()) in CLASSIFICATION_METRICS
