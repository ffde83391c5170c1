"""Fusing predictions already made: averages of several kinds, hard voting, and stacking.

Every average here is a weighted quasi-arithmetic mean ``g⁻¹(Σ wᵢ g(pᵢ) / Σ wᵢ)``:
``g`` is the identity for ``mean``/``weighted``, ``log`` for ``geometric``, ``1/p`` for
``harmonic``, ``p**power`` for ``power``, the log-odds for ``logit`` (the "log fusion" of
Datawhale's model-fusion notes, Task 5) and the normalized rank for ``rank`` (whose result
is a score in [0, 1], not a probability: it is meant for rank-judged metrics such as AUC).
``median`` is the weighted median. Models with weight 0 are left out before anything is
computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import expit
from scipy.stats import rankdata
from sklearn.base import clone, is_classifier
from sklearn.linear_model import LinearRegression

from fusionrec.errors import FusionrecError

METHODS = ("mean", "weighted", "median", "geometric", "harmonic", "rank", "logit", "power")
_LOGIT_EPS = 1e-15


def check_weights(weights, n_models: int, *, name: str = "weights") -> np.ndarray:
    """``weights`` as a float array: one finite, non-negative value per model, not all zero."""
    try:
        values = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise FusionrecError(f"{name}={weights!r}: expected a list of {n_models} numbers") from None
    if values.ndim != 1 or len(values) != n_models:
        raise FusionrecError(f"{name}: {values.size} values given for {n_models} models; give one weight per model")
    for i, value in enumerate(values):
        if not np.isfinite(value):
            raise FusionrecError(f"{name}[{i}] = {value}: weights must be finite numbers")
        if value < 0:
            raise FusionrecError(f"{name}[{i}] = {value}: weights must not be negative")
    if not values.any():
        raise FusionrecError(f"{name}: all weights are zero; at least one model needs a positive weight")
    return values


def as_prediction_stack(predictions, *, name: str = "predictions") -> np.ndarray:
    """A list of m arrays of shape (n,) or (n, k) as one array (m, n) or (m, n, k), checked finite."""
    if isinstance(predictions, np.ndarray):
        predictions = list(predictions)
    if not isinstance(predictions, Sequence) or isinstance(predictions, str) or len(predictions) == 0:
        raise FusionrecError(f"{name}: expected a non-empty list of prediction arrays, got {type(predictions).__name__}")
    arrays = []
    for i, pred in enumerate(predictions):
        try:
            array = np.asarray(pred, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise FusionrecError(f"{name}[{i}]: not numeric ({exc})") from None
        if array.ndim not in (1, 2):
            raise FusionrecError(f"{name}[{i}]: shape {array.shape}; expected (n,) or (n, k)")
        if arrays and array.shape != arrays[0].shape:
            raise FusionrecError(f"{name}[{i}]: shape {array.shape} differs from {name}[0]'s {arrays[0].shape}")
        bad = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
        if bad.size:
            row = int(bad[0])
            raise FusionrecError(f"{name}[{i}] row {row}: {array[row]} is not finite ({bad.size} such rows)")
        arrays.append(array)
    return np.stack(arrays)


# the values each method is defined for: (low, high), both inclusive
DOMAINS = {"geometric": (0.0, np.inf), "harmonic": (0.0, np.inf), "power": (0.0, np.inf), "logit": (0.0, 1.0)}


def _require(stack: np.ndarray, ok: np.ndarray, rule: str, name: str) -> None:
    if ok.all():
        return
    model, row = (int(i[0]) for i in np.nonzero(~ok)[:2])
    value = stack[model, row]
    raise FusionrecError(f"{name}[{model}] row {row}: {value} — {rule}")


def prepare(stack: np.ndarray, method: str, *, power: float = 2.0, name: str = "predictions"):
    """``(g(stack), g⁻¹)`` for the quasi-arithmetic methods; the averages are taken in g-space.

    Weight optimization calls this once and then only forms weighted sums, so the per-trial
    cost is a dot product.
    """
    if method in ("mean", "weighted"):
        return stack, _identity
    if method == "geometric":
        _require(stack, stack >= 0, "the geometric mean needs predictions >= 0", name)
        with np.errstate(divide="ignore"):
            return np.log(stack), np.exp
    if method == "harmonic":
        _require(stack, stack >= 0, "the harmonic mean needs predictions >= 0", name)
        with np.errstate(divide="ignore", over="ignore"):
            return 1.0 / stack, _reciprocal
    if method == "power":
        if not np.isfinite(power) or power == 0:
            raise FusionrecError(f"power={power!r}: the power mean needs a finite, non-zero exponent")
        _require(stack, stack >= 0, f"the power mean (power={power}) needs predictions >= 0", name)
        with np.errstate(divide="ignore"):
            return stack**power, lambda s: s ** (1.0 / power)
    if method == "logit":
        _require(stack, (stack >= 0) & (stack <= 1), "logit averaging needs probabilities in [0, 1]", name)
        clipped = np.clip(stack, _LOGIT_EPS, 1 - _LOGIT_EPS)
        return np.log(clipped) - np.log1p(-clipped), expit
    if method == "rank":
        n = stack.shape[1]
        ranks = rankdata(stack, axis=1)  # ties share their average rank
        return ((ranks - 1.0) / (n - 1) if n > 1 else np.full_like(stack, 0.5)), _identity
    raise FusionrecError(f"method={method!r} is not an averaging method; use one of {list(METHODS)}")


def _identity(values):
    return values


def _reciprocal(values):
    with np.errstate(divide="ignore", over="ignore"):
        return 1.0 / values


def weighted_median(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-element weighted median over axis 0; with equal weights it equals ``np.median``."""
    order = np.argsort(stack, axis=0, kind="stable")
    values = np.take_along_axis(stack, order, axis=0)
    cumulative = np.cumsum(weights[order.reshape(len(weights), -1)].reshape(order.shape), axis=0)
    half = cumulative[-1] / 2.0
    tol = 1e-12 * cumulative[-1]
    first = np.argmax(cumulative >= half - tol, axis=0)
    lower = np.take_along_axis(values, first[None], axis=0)[0]
    on_boundary = np.abs(np.take_along_axis(cumulative, first[None], axis=0)[0] - half) <= tol
    # exactly half the weight at or below `lower`: the median is the midpoint with the next value
    upper = np.take_along_axis(values, np.minimum(first + 1, len(weights) - 1)[None], axis=0)[0]
    return np.where(on_boundary, (lower + upper) / 2.0, lower)


def average(predictions, method: str = "mean", weights=None, *, power: float = 2.0) -> np.ndarray:
    """Fuse m predictions of shape (n,) or (n, k) into one of the same shape.

    ``method`` is one of ``mean``, ``weighted`` (a mean that requires ``weights``),
    ``median``, ``geometric``, ``harmonic``, ``rank``, ``logit`` or ``power`` (with ``power``).
    ``weights`` (one non-negative number per prediction, not all zero) apply to every method.
    """
    if method not in METHODS:
        raise FusionrecError(f"method={method!r} is not an averaging method; use one of {list(METHODS)}")
    stack = as_prediction_stack(predictions)
    if method == "weighted" and weights is None:
        raise FusionrecError("method='weighted' needs weights (one per prediction)")
    w = np.ones(len(stack)) if weights is None else check_weights(weights, len(stack))
    keep = w > 0
    stack, w = stack[keep], w[keep]
    return combine(stack, method, w, power=power)


def combine(stack: np.ndarray, method: str, weights: np.ndarray, *, power: float = 2.0, name: str = "predictions"):
    """:func:`average` on a checked stack and checked weights."""
    if method == "median":
        return weighted_median(stack, weights)
    transformed, inverse = prepare(stack, method, power=power, name=name)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inverse(np.tensordot(weights / weights.sum(), transformed, axes=1))


def vote(labels, weights=None) -> np.ndarray:
    """Hard voting: per row, the label with the greatest total weight.

    A tie goes to the smallest label in sorted order, as in scikit-learn's hard voting.
    """
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        labels = list(labels)
    if not isinstance(labels, Sequence) or isinstance(labels, str) or len(labels) == 0:
        raise FusionrecError("labels: expected a non-empty list of label arrays")
    arrays = [np.asarray(lab) for lab in labels]
    for i, array in enumerate(arrays):
        if array.ndim != 1 or len(array) != len(arrays[0]):
            raise FusionrecError(f"labels[{i}]: shape {array.shape}; every model needs shape ({len(arrays[0])},)")
    w = np.ones(len(arrays)) if weights is None else check_weights(weights, len(arrays))
    try:
        classes, codes = np.unique(np.concatenate(arrays), return_inverse=True)
    except TypeError as exc:
        raise FusionrecError(f"labels: the models' labels cannot be compared ({exc})") from None
    codes = codes.reshape(len(arrays), -1)
    n_rows = codes.shape[1]
    tally = np.zeros((n_rows, len(classes)))
    for model_codes, weight in zip(codes, w):
        tally[np.arange(n_rows), model_codes] += weight
    return classes[np.argmax(tally, axis=1)]


def stack(train_predictions, y, test_predictions, final_estimator=None, *, sample_weight=None) -> np.ndarray:
    """Fit ``final_estimator`` on the models' training-set predictions and apply it to their test predictions.

    This is the two-level stacking of Datawhale's model-fusion notes on prediction arrays. The training-set
    predictions should be out of fold (see :class:`fusionrec.fusion.StackingRegressor`),
    or the meta-model learns how much each model overfits. A classifier meta-model
    returns probabilities (the positive class's for a binary task).
    """
    train = as_prediction_stack(train_predictions, name="train_predictions")
    test = as_prediction_stack(test_predictions, name="test_predictions")
    if train.shape[0] != test.shape[0] or train.shape[2:] != test.shape[2:]:
        raise FusionrecError(
            f"train_predictions has {train.shape[0]} models of shape {train.shape[1:]}, test_predictions "
            f"{test.shape[0]} of shape {test.shape[1:]}: they need the same models in the same order"
        )
    y = np.asarray(y)
    if len(y) != train.shape[1]:
        raise FusionrecError(f"y has {len(y)} rows, train_predictions {train.shape[1]}")
    model = clone(final_estimator if final_estimator is not None else LinearRegression())
    to_features: Callable = lambda s: np.moveaxis(s, 0, 1).reshape(s.shape[1], -1)  # noqa: E731
    kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
    model.fit(to_features(train), y, **kwargs)
    if is_classifier(model) and hasattr(model, "predict_proba"):
        proba = model.predict_proba(to_features(test))
        return proba[:, 1] if proba.shape[1] == 2 else proba
    return model.predict(to_features(test))
