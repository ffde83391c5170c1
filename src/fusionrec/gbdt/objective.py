"""Learning objectives: label rules, starting score, first and second derivatives.

Each objective gives, for the current margins, the gradient g and hessian h of the loss
per row (the g_i, h_i of eq. 3 in Chen & Guestrin), times the sample weight. Gradients
are float32 arrays of shape (n_groups, n_rows): one contiguous vector per tree grown in
the round.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.special import expit, softmax

from numba import njit, prange

from fusionrec.errors import FusionrecError

HESS_EPS = 1e-16


def weighted_quantile(values: np.ndarray, weight: np.ndarray | None, alpha: float) -> float:
    """Smallest value whose cumulative weight reaches ``alpha`` of the total."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    w = np.ones_like(v) if weight is None else weight[order]
    cumulative = np.cumsum(w)
    position = int(np.searchsorted(cumulative, alpha * cumulative[-1], side="left"))
    return float(v[min(position, v.shape[0] - 1)])


@njit(parallel=True, cache=True, nogil=True)
def _logistic_into(margin, y, w, scale_pos_weight, gh):
    # g = p - y, h = p (1 - p), times the row weight (and scale_pos_weight on positives)
    for i in prange(margin.shape[0]):
        p = 1.0 / (1.0 + np.exp(-margin[i, 0]))
        weight = w[i] if w.shape[0] > 0 else 1.0
        if y[i] == 1.0:
            weight *= scale_pos_weight
        gh[i, 0] = np.float32((p - y[i]) * weight)
        gh[i, 1] = np.float32(max(p * (1.0 - p), HESS_EPS) * weight)


@njit(parallel=True, cache=True, nogil=True)
def _squared_into(margin, y, w, gh):
    for i in prange(margin.shape[0]):
        weight = w[i] if w.shape[0] > 0 else 1.0
        gh[i, 0] = np.float32((margin[i, 0] - y[i]) * weight)
        gh[i, 1] = np.float32(weight)


_NO_WEIGHT = np.zeros(0)


class Objective:
    name = ""
    is_classification = False
    #: quantile that leaf values are refreshed to (reg:absoluteerror, reg:quantileerror)
    leaf_quantile: float | None = None
    #: base_score_from(y, w) is a function of the weighted label mean (distributed training
    #: computes only that); False for objectives starting from a quantile
    base_score_from_mean = True

    def __init__(self, params: dict):
        self.params = params
        self.n_groups = 1

    def prepare(self, dataset) -> None:
        """Called before each round's gradients with the training Dataset (groups, custom objectives)."""

    def check_label(self, y: np.ndarray) -> None:
        pass

    def base_score_from(self, y: np.ndarray, w: np.ndarray | None) -> float:
        return float(np.average(y, weights=w))

    def base_margin(self, base_score: float) -> np.ndarray:
        return np.full(self.n_groups, base_score, dtype=np.float64)

    def gradients(self, margin: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def transform(self, margin: np.ndarray) -> np.ndarray:
        """Prediction from margins (n, n_groups): the inverse link."""
        return margin[:, 0]

    def fill_pairs(self, margin, y, w, gh) -> bool:
        """Write (gradient, hessian) pairs of a one-tree-per-round objective straight into
        ``gh`` (n, 2) float32 in one fused pass; False when this objective has no such path."""
        return False

    def metric_input(self, margin: np.ndarray) -> np.ndarray:
        """What metrics are computed on: probabilities for classifiers, predictions otherwise."""
        return self.transform(margin)

    def class_probabilities(self, margin: np.ndarray) -> np.ndarray:
        """(n, n_classes) class probabilities from margins (n, n_groups): a classification
        objective's own (two columns for a binary one); any other (a custom objective) is read
        through XGBoost's classifier links, the logistic for one output and softmax for several."""
        if self.is_classification:
            proba = self.metric_input(margin)
        else:
            proba = expit(margin[:, 0]) if margin.shape[1] == 1 else softmax(margin, axis=1)
        return np.column_stack([1.0 - proba, proba]) if proba.ndim == 1 else proba

    @staticmethod
    def _pack(g: np.ndarray, h: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if w is not None:
            g = g * w
            h = h * w
        return np.ascontiguousarray(g, dtype=np.float32)[None, :], np.ascontiguousarray(h, dtype=np.float32)[None, :]

    def _label_error(self, y, bad, rule):
        i = int(bad[0])
        raise FusionrecError(f"label[{i}] = {float(y[i])!r}: {self.name} needs {rule} ({bad.size} such value(s))")


class SquaredError(Objective):
    name = "reg:squarederror"

    def gradients(self, margin, y, w):
        return self._pack(margin[:, 0] - y, np.ones_like(y), w)

    def fill_pairs(self, margin, y, w, gh):
        _squared_into(margin, y, _NO_WEIGHT if w is None else w, gh)
        return True


class AbsoluteError(Objective):
    """L1 loss: sign gradients grow the tree, then each leaf becomes the residuals' weighted median."""

    name = "reg:absoluteerror"
    base_score_from_mean = False
    leaf_quantile = 0.5

    def base_score_from(self, y, w):
        return weighted_quantile(y, w, 0.5)

    def gradients(self, margin, y, w):
        return self._pack(np.sign(margin[:, 0] - y), np.ones_like(y), w)


class QuantileError(Objective):
    name = "reg:quantileerror"
    base_score_from_mean = False

    def __init__(self, params):
        super().__init__(params)
        self.alpha = float(params["quantile_alpha"])
        self.leaf_quantile = self.alpha

    def base_score_from(self, y, w):
        return weighted_quantile(y, w, self.alpha)

    def gradients(self, margin, y, w):
        diff = margin[:, 0] - y
        return self._pack(np.where(diff >= 0, 1.0 - self.alpha, -self.alpha), np.ones_like(y), w)


class PseudoHuberError(Objective):
    name = "reg:pseudohubererror"
    base_score_from_mean = False

    def base_score_from(self, y, w):
        return weighted_quantile(y, w, 0.5)

    def gradients(self, margin, y, w):
        slope = float(self.params["huber_slope"])
        z = margin[:, 0] - y
        scale = 1.0 + (z / slope) ** 2
        root = np.sqrt(scale)
        return self._pack(z / root, 1.0 / (scale * root), w)


class Logistic(Objective):
    name = "binary:logistic"
    is_classification = True

    def check_label(self, y):
        bad = np.flatnonzero((y != 0) & (y != 1))
        if bad.size:
            self._label_error(y, bad, "labels in {0, 1}")

    def base_score_from(self, y, w):
        return float(np.clip(np.average(y, weights=w), 1e-6, 1 - 1e-6))

    def base_margin(self, base_score):
        if not 0.0 < base_score < 1.0:
            raise FusionrecError(f"parameter base_score={base_score!r}: {self.name} needs a probability in (0, 1)")
        return np.full(1, np.log(base_score / (1.0 - base_score)))

    def gradients(self, margin, y, w):
        p = expit(margin[:, 0])
        scale = float(self.params["scale_pos_weight"])
        if scale != 1.0:
            w = np.where(y == 1, scale, 1.0) * (1.0 if w is None else w)
        return self._pack(p - y, np.maximum(p * (1.0 - p), HESS_EPS), w)

    def transform(self, margin):
        return expit(margin[:, 0])

    def fill_pairs(self, margin, y, w, gh):
        _logistic_into(margin, y, _NO_WEIGHT if w is None else w, float(self.params["scale_pos_weight"]), gh)
        return True


class LogitRaw(Logistic):
    name = "binary:logitraw"

    def transform(self, margin):
        return margin[:, 0].copy()

    def metric_input(self, margin):
        return expit(margin[:, 0])


class SoftProb(Objective):
    name = "multi:softprob"
    is_classification = True

    def __init__(self, params):
        super().__init__(params)
        self.n_groups = int(params["num_class"])

    def check_label(self, y):
        k = self.n_groups
        bad = np.flatnonzero((y != np.floor(y)) | (y < 0) | (y >= k))
        if bad.size:
            self._label_error(y, bad, f"integer labels 0..{k - 1} (num_class={k})")

    def base_score_from(self, y, w):
        return 0.0

    def base_margin(self, base_score):
        return np.full(self.n_groups, base_score, dtype=np.float64)

    def gradients(self, margin, y, w):
        p = softmax(margin, axis=1)
        onehot = np.zeros_like(p)
        onehot[np.arange(y.shape[0]), y.astype(np.int64)] = 1.0
        g = (p - onehot).T
        h = np.maximum(2.0 * p * (1.0 - p), HESS_EPS).T  # XGBoost's softmax hessian bound
        if w is not None:
            g = g * w
            h = h * w
        return np.ascontiguousarray(g, dtype=np.float32), np.ascontiguousarray(h, dtype=np.float32)

    def transform(self, margin):
        return softmax(margin, axis=1)

    def metric_input(self, margin):
        return softmax(margin, axis=1)


class SoftMax(SoftProb):
    name = "multi:softmax"

    def transform(self, margin):
        return np.argmax(margin, axis=1).astype(np.float64)


class _LogLink(Objective):
    positive_label = False  # gamma needs y > 0; poisson and tweedie y >= 0

    def check_label(self, y):
        bad = np.flatnonzero(y <= 0) if self.positive_label else np.flatnonzero(y < 0)
        if bad.size:
            self._label_error(y, bad, "labels > 0" if self.positive_label else "labels >= 0")

    def base_score_from(self, y, w):
        return float(max(np.average(y, weights=w), 1e-6))

    def base_margin(self, base_score):
        if base_score <= 0:
            raise FusionrecError(f"parameter base_score={base_score!r}: {self.name} needs a value > 0")
        return np.full(1, np.log(base_score))

    def transform(self, margin):
        return np.exp(margin[:, 0])


class Poisson(_LogLink):
    name = "count:poisson"

    def gradients(self, margin, y, w):
        p = np.exp(margin[:, 0])
        # XGBoost scales the hessian by exp(max_delta_step) to keep Newton steps stable
        return self._pack(p - y, p * np.exp(float(self.params["max_delta_step"])), w)


class Gamma(_LogLink):
    name = "reg:gamma"
    positive_label = True

    def gradients(self, margin, y, w):
        ratio = y * np.exp(-margin[:, 0])
        return self._pack(1.0 - ratio, np.maximum(ratio, HESS_EPS), w)


class Tweedie(_LogLink):
    name = "reg:tweedie"

    def gradients(self, margin, y, w):
        rho = float(self.params["tweedie_variance_power"])
        m = margin[:, 0]
        a = np.exp((1.0 - rho) * m)
        b = np.exp((2.0 - rho) * m)
        return self._pack(-y * a + b, np.maximum(-(1.0 - rho) * y * a + (2.0 - rho) * b, HESS_EPS), w)


class CustomObjective(Objective):
    """A user function ``obj(margin, dataset) -> (grad, hess)``, shapes (n,) or (n, n_groups)."""

    name = "custom"

    def __init__(self, params, function: Callable, n_groups: int):
        super().__init__(params)
        self.function = function
        self.n_groups = n_groups
        self.dataset = None

    def prepare(self, dataset) -> None:
        self.dataset = dataset

    def base_score_from(self, y, w):
        return 0.0

    def gradients(self, margin, y, w):
        out = self.function(margin[:, 0].copy() if self.n_groups == 1 else margin.copy(), self.dataset)
        if not isinstance(out, tuple) or len(out) != 2:
            raise FusionrecError("custom objective: must return a tuple (grad, hess)")
        grads = []
        for what, values in zip(("grad", "hess"), out):
            arr = np.asarray(values, dtype=np.float64)
            expected = (margin.shape[0],) if self.n_groups == 1 else margin.shape
            if arr.shape != expected and arr.size == margin.size:
                arr = arr.reshape(expected)
            if arr.shape != expected:
                raise FusionrecError(f"custom objective: {what} has shape {arr.shape}, expected {expected}")
            bad = np.flatnonzero(~np.isfinite(arr.ravel()))
            if bad.size:
                raise FusionrecError(f"custom objective: {what}[{bad[0]}] is {arr.ravel()[bad[0]]!r}, must be finite")
            grads.append(arr.reshape(margin.shape[0], -1).T)
        return np.ascontiguousarray(grads[0], np.float32), np.ascontiguousarray(grads[1], np.float32)

    def transform(self, margin):
        return margin[:, 0].copy() if self.n_groups == 1 else margin.copy()


class LambdaRank(Objective):
    """rank:pairwise / rank:ndcg / rank:map over the query groups of the training Dataset
    (see :mod:`fusionrec.gbdt.ranking`)."""

    def __init__(self, params):
        from fusionrec.gbdt.ranking import RANK_OBJECTIVES, num_pairs

        super().__init__(params)
        self.name = params["objective"]
        self.kind = RANK_OBJECTIVES[self.name]
        self.topk = params["lambdarank_pair_method"] == "topk"
        self.n_pairs = num_pairs(params)
        self.exp_gain = bool(params["ndcg_exp_gain"])
        self.normalize = bool(params["lambdarank_normalization"])
        self.score_normalize = bool(params["lambdarank_score_normalization"])
        self.rng = np.random.default_rng(int(params["random_state"]))
        self.group_ptr = None
        self.group_weight = None
        self._inv_idcgs = None
        self._inv_idcgs_of = None  # the (labels, group_ptr) arrays _inv_idcgs was computed from

    def prepare(self, dataset) -> None:
        self.group_ptr = dataset.group_ptr
        self.group_weight = dataset.group_weight

    def check_label(self, y):
        from fusionrec.gbdt.ranking import MAP, MAX_EXP_GAIN_LABEL, NDCG

        bad = np.flatnonzero(~(y >= 0) | (y != np.floor(y)))
        if bad.size:
            self._label_error(y, bad, "relevance labels that are integers >= 0")
        if self.kind == NDCG and self.exp_gain:
            bad = np.flatnonzero(y > MAX_EXP_GAIN_LABEL)
            if bad.size:
                self._label_error(y, bad, "labels <= 31 with ndcg_exp_gain (2^label - 1 gains); set ndcg_exp_gain=False")
        if self.kind == MAP:
            bad = np.flatnonzero(y > 1)
            if bad.size:
                self._label_error(y, bad, "binary relevance labels (0 or 1)")

    def base_score_from(self, y, w):
        return 0.0  # only the order of scores within a query matters

    def gradients(self, margin, y, w):
        from fusionrec.gbdt.ranking import NDCG, ideal_dcg_inverses, lambda_gradients

        n = margin.shape[0]
        group_ptr = self.group_ptr if self.group_ptr is not None else np.array([0, n], np.int64)
        if self.group_weight is None:
            group_weight = np.ones(group_ptr.shape[0] - 1)
        else:  # XGBoost's normalization: the per-document mean weight is 1
            group_weight = self.group_weight * (n / float(np.dot(self.group_weight, np.diff(group_ptr))))
        row_weight = None  # one query without groups: weights are per row, normalized the same way
        if self.group_ptr is None and w is not None:
            row_weight = w * (n / float(np.sum(w)))
        uniform = np.zeros((n, 0)) if self.topk else self.rng.random((n, self.n_pairs))
        labels = y.astype(np.float64)
        if self._inv_idcgs_of is None or self._inv_idcgs_of[0] is not y or self._inv_idcgs_of[1] is not group_ptr:
            # the training set's labels and queries are the same objects every round: once per fit
            # (rank:ndcg only reads them)
            self._inv_idcgs = (ideal_dcg_inverses(labels, group_ptr, self.n_pairs, self.topk, self.exp_gain) if self.kind == NDCG
                               else np.zeros(group_ptr.shape[0] - 1))  # fmt: skip
            self._inv_idcgs_of = (y, group_ptr)
        g = np.empty(n)
        h = np.empty(n)
        lambda_gradients(
            np.ascontiguousarray(margin[:, 0]), labels, group_ptr, group_weight, self._inv_idcgs, self.kind, self.topk,
            self.n_pairs, self.exp_gain, self.normalize, self.score_normalize, uniform, g, h,
        )  # fmt: skip
        return self._pack(g, h, row_weight)


_OBJECTIVES = {
    cls.name: cls
    for cls in (SquaredError, AbsoluteError, QuantileError, PseudoHuberError, Logistic, LogitRaw, SoftProb, SoftMax, Poisson, Gamma, Tweedie)
}
for _name in ("rank:pairwise", "rank:ndcg", "rank:map"):
    _OBJECTIVES[_name] = LambdaRank


def make_objective(params: dict, custom: Callable | None = None) -> Objective:
    if custom is not None or callable(params["objective"]):
        function = custom if custom is not None else params["objective"]
        n_groups = int(params["num_class"]) if params["num_class"] else 1
        return CustomObjective(params, function, n_groups)
    return _OBJECTIVES[params["objective"]](params)
