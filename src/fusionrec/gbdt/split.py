"""Stage 3: the best split of a node from its histogram.

Implements the regularized objective of Chen & Guestrin (2016):

* leaf weight, eq. (5): ``w* = -G / (H + lambda)``, with L1 ``alpha`` applied to G as
  soft thresholding and ``max_delta_step`` clipping |w|, as XGBoost does;
* structure score of a leaf, eq. (6): ``G^2 / (H + lambda)`` (generalised to
  ``-(2 G w + (H + lambda) w^2 + 2 alpha |w|)`` when w is clipped);
* split gain, eq. (7): ``score(L) + score(R) - score(parent)``. Like XGBoost's code we
  drop the paper's factor 1/2, so ``gamma`` is compared with this gain when pruning.

Missing values follow the sparsity-aware split finding of Algorithm 3: each candidate is
scored with the missing bin's statistics sent left and sent right, and the better
direction becomes the split's default.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from fusionrec.gbdt._jit import parallel_and_serial


GAIN_EPS = 1e-6  # XGBoost's kRtEps: a split must beat this to count as an improvement
NO_SPLIT_BIN = -1  # split_bin of a split that is a threshold only (exact and approx trees)

# The best split a split finder found among some features of a node; ``feature`` is the
# position in the tree's feature list.
CANDIDATE_DTYPE = np.dtype(
    [("gain", np.float64), ("threshold", np.float64), ("left_g", np.float64), ("left_h", np.float64),
     ("bin", np.int32), ("feature", np.int32), ("default_left", np.bool_)]
)  # fmt: skip
# Features are scored in this many fixed chunks, one best per chunk, so the result (first
# maximum in feature order) never depends on the thread count.
SCORE_CHUNKS = 64


class Regularization(NamedTuple):
    """The constants of eq. (5)-(7), bound once per tree and passed to every kernel as one tuple."""

    reg_lambda: float
    reg_alpha: float
    max_delta_step: float
    min_child_weight: float

    @classmethod
    def of(cls, params: dict) -> "Regularization":
        return cls(
            float(params["reg_lambda"]), float(params["reg_alpha"]),
            float(params["max_delta_step"]), float(params["min_child_weight"]),
        )  # fmt: skip


class Split(NamedTuple):
    """A node's chosen split: x <= threshold goes left, missing goes to the default side."""

    gain: float
    feature: int
    threshold: float
    split_bin: int  # the Dataset bin the threshold closes, or NO_SPLIT_BIN
    default_left: bool
    left_g: float
    left_h: float


@njit(cache=True, inline="always")
def threshold_l1(g, alpha):
    if g > alpha:
        return g - alpha
    if g < -alpha:
        return g + alpha
    return 0.0


@njit(cache=True, inline="always")
def leaf_weight(g, h, reg_lambda, reg_alpha, max_delta_step):
    """Optimal leaf weight w* (eq. 5) with L1 soft thresholding and max_delta_step."""
    if h <= 0.0:
        return 0.0
    w = -threshold_l1(g, reg_alpha) / (h + reg_lambda)
    if max_delta_step > 0.0:
        if w > max_delta_step:
            w = max_delta_step
        elif w < -max_delta_step:
            w = -max_delta_step
    return w


@njit(cache=True, inline="always")
def leaf_score(g, h, reg_lambda, reg_alpha, max_delta_step):
    """Loss reduction of a leaf at its optimal weight (eq. 6, without the 1/2)."""
    if h <= 0.0:
        return 0.0
    if max_delta_step == 0.0:
        t = threshold_l1(g, reg_alpha)
        return t * t / (h + reg_lambda)
    w = leaf_weight(g, h, reg_lambda, reg_alpha, max_delta_step)
    return -(2.0 * g * w + (h + reg_lambda) * w * w + 2.0 * reg_alpha * abs(w))


@njit(cache=True, inline="always")
def split_gain(lg, lh, rg, rh, parent_score, reg):
    """Eq. (7) without 1/2, or -inf when a child breaks min_child_weight or is empty."""
    if lh < reg.min_child_weight or rh < reg.min_child_weight or lh <= 0.0 or rh <= 0.0:
        return -np.inf
    lam, alpha, mds = reg.reg_lambda, reg.reg_alpha, reg.max_delta_step
    if alpha == 0.0 and mds == 0.0:  # the common case, without leaf_score's branches
        return lg * lg / (lh + lam) + rg * rg / (rh + lam) - parent_score
    return leaf_score(lg, lh, lam, alpha, mds) + leaf_score(rg, rh, lam, alpha, mds) - parent_score


@njit(cache=True, inline="always")
def parent_score(sum_g, sum_h, reg):
    return leaf_score(sum_g, sum_h, reg.reg_lambda, reg.reg_alpha, reg.max_delta_step)


@njit(cache=True, inline="always")
def clear_candidate(out, k):
    out.feature = k
    out.gain = -np.inf
    out.threshold = 0.0
    out.bin = NO_SPLIT_BIN
    out.default_left = False
    out.left_g = 0.0
    out.left_h = 0.0


def find_best_split(hist, layout, candidate_mask, sum_g, sum_h, reg, out):
    """The best split of one node from its histogram: ``out[c]`` (CANDIDATE_DTYPE) is the best
    of feature chunk c (SCORE_CHUNKS of them, fixed), -inf gain when it has none.

    Feature k's value bins are hist[offsets[k] : offsets[k] + bins[k]], its missing values'
    sums hist[missing[k]] (``layout``, a ``histogram.HistogramLayout``). Features with
    ``candidate_mask[k] == 0`` (column sampling) are skipped. Split at bin b sends codes
    <= b left; b = bins[k]-1 (all values left) is valid only when the missing values go
    right. Both default directions are scored (Algorithm 3): the missing slot joins the left
    side or the right side. Ties keep the first (lowest bin, then lowest feature).
    """
    offsets, bins, missing = layout.offsets, layout.bins, layout.missing
    score = parent_score(sum_g, sum_h, reg)
    n_features = bins.shape[0]
    n_chunks = out.shape[0]
    per_chunk = (n_features + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        # the chunk's best so far in locals (registers), written to out[c] once
        best_gain = -np.inf
        best_bin = NO_SPLIT_BIN
        best_feature = -1
        best_default_left = False
        best_g = 0.0
        best_h = 0.0
        for k in range(c * per_chunk, min(n_features, (c + 1) * per_chunk)):
            if candidate_mask[k] == 0:
                continue
            first = offsets[k]
            nb = bins[k]
            miss_g = hist[missing[k], 0]
            miss_h = hist[missing[k], 1]
            has_missing = miss_h > 0.0
            cum_g = 0.0
            cum_h = 0.0
            for b in range(nb):
                cum_g += hist[first + b, 0]
                cum_h += hist[first + b, 1]
                if b < nb - 1 or has_missing:  # missing values go right
                    gain = split_gain(cum_g, cum_h, sum_g - cum_g, sum_h - cum_h, score, reg)
                    if gain > best_gain:
                        best_gain = gain
                        best_bin = b
                        best_feature = k
                        # with no missing values here, send future ones to the heavier side
                        best_default_left = (not has_missing) and cum_h >= sum_h - cum_h
                        best_g = cum_g
                        best_h = cum_h
                if has_missing and b < nb - 1:  # missing values go left
                    lg = cum_g + miss_g
                    lh = cum_h + miss_h
                    gain = split_gain(lg, lh, sum_g - lg, sum_h - lh, score, reg)
                    if gain > best_gain:
                        best_gain = gain
                        best_bin = b
                        best_feature = k
                        best_default_left = True
                        best_g = lg
                        best_h = lh
        best = out[c]
        best.gain = best_gain
        best.threshold = 0.0
        best.bin = best_bin
        best.feature = best_feature
        best.default_left = best_default_left
        best.left_g = best_g
        best.left_h = best_h


find_best_split, find_best_split_serial = parallel_and_serial(find_best_split)


def best_candidate(candidates: np.ndarray, features: np.ndarray, cut_of=None) -> Split | None:
    """The best of one node's candidates, in feature order (first maximum: ties go to the
    lowest feature id), or None when no split beats GAIN_EPS. ``cut_of(feature, bin)`` gives
    the threshold of a bin split; without it the candidate's own threshold is used."""
    k = int(np.argmax(candidates["gain"]))
    best = candidates[k]
    if not best["gain"] > GAIN_EPS:
        return None
    feature = int(features[best["feature"]])
    split_bin = int(best["bin"])
    threshold = float(best["threshold"]) if cut_of is None else cut_of(feature, split_bin)
    return Split(
        float(best["gain"]), feature, threshold, split_bin if cut_of is not None else NO_SPLIT_BIN,
        bool(best["default_left"]), float(best["left_g"]), float(best["left_h"]),
    )  # fmt: skip
