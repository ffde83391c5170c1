"""Fitting averaging weights on out-of-fold predictions.

The weights are non-negative and sum to 1. They are searched by scipy's bounded Powell
method over raw values in [0, 1] that are normalized inside the objective: Powell needs no
gradient, so non-smooth metrics such as AUC and accuracy work as well as log loss. The
result is never worse on the given predictions than equal weights or any single model,
because those are tried as well and the best is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from fusionrec.errors import FusionrecError
from fusionrec.fusion.combine import METHODS, as_prediction_stack, combine, prepare
from fusionrec.fusion.metrics import Metric, get_metric, is_classification_metric


@dataclass(frozen=True)
class WeightFit:
    """Fitted weights (summing to 1), the fused score and each model's own score."""

    weights: np.ndarray
    score: float
    model_scores: np.ndarray
    metric: str


def optimize_weights(
    predictions, y, *, metric=None, method: str = "weighted", sample_weight=None, power: float = 2.0,
    classification: bool | None = None, normalize_rows: bool = False, max_iter: int = 2000,
) -> WeightFit:  # fmt: skip
    """Weights for :func:`fusionrec.fusion.average` that maximize ``metric`` on ``predictions``.

    ``predictions`` are out-of-fold predictions of m models, each (n,) or (n, k) with class
    probability columns in label order. ``normalize_rows`` renormalizes fused (n, k) rows to
    sum to 1 before scoring (what a classifier's ``predict_proba`` does).
    """
    stack = as_prediction_stack(predictions)
    y = np.asarray(y)
    if classification is None:
        classification = stack.ndim == 3 or is_classification_metric(metric)
    scorer: Metric = get_metric(metric, classification=classification)
    n_models = len(stack)
    method = "mean" if method == "weighted" else method
    if method not in METHODS:
        raise FusionrecError(f"method={method!r} is not an averaging method; use one of {list(METHODS)}")

    if method == "median":
        def fuse(w):  # noqa: E306
            keep = w > 0
            return combine(stack[keep], "median", w[keep])
    else:
        transformed, inverse = prepare(stack, method, power=power)

        def fuse(w):
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                return inverse(np.tensordot(w, transformed, axes=1))

    def score(w) -> float:
        fused = fuse(w)
        if normalize_rows and fused.ndim == 2:
            fused = fused / fused.sum(axis=1, keepdims=True)
        if not np.all(np.isfinite(fused)):
            return -np.inf
        return scorer.score(y, fused, sample_weight)

    def normalized(raw) -> np.ndarray:
        raw = np.clip(np.asarray(raw, dtype=np.float64), 0.0, 1.0)
        total = raw.sum()
        return raw / total if total > 0 else np.full(n_models, 1.0 / n_models)

    candidates = [np.full(n_models, 1.0 / n_models)] + list(np.eye(n_models))
    model_scores = np.array([score(c) for c in candidates[1:]])
    if n_models > 1:
        result = minimize(
            lambda raw: -score(normalized(raw)), x0=np.full(n_models, 0.5), method="Powell",
            bounds=[(0.0, 1.0)] * n_models, options={"maxiter": max_iter, "xtol": 1e-4, "ftol": 1e-10},
        )  # fmt: skip
        candidates.append(normalized(result.x))
    scores = [score(c) for c in candidates]
    best = int(np.argmax(scores))
    oriented = scores[best]
    sign = 1.0 if scorer.greater_is_better else -1.0
    return WeightFit(candidates[best], sign * oriented, sign * model_scores, scorer.name)
