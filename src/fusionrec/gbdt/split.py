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

import numpy as np
from numba import njit, prange

GAIN_EPS = 1e-6  # XGBoost's kRtEps: a split must beat this to count as an improvement


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


@njit(parallel=True, cache=True, nogil=True)
def find_best_split(
    hist,
    hist_features,
    candidate_mask,
    n_bins,
    sum_g,
    sum_h,
    reg_lambda,
    reg_alpha,
    max_delta_step,
    min_child_weight,
    out_gain,
    out_bin,
    out_default_left,
    out_left_g,
    out_left_h,
):
    """Score every candidate split; one result per histogram row ``k``.

    hist[k] belongs to feature ``hist_features[k]``; rows with ``candidate_mask[k] == 0``
    (column sampling) are skipped. ``out_gain[k]`` is -inf when feature k has no valid split.
    Split at bin b sends codes <= b left; b = n_bins-1 (all values left) is valid only
    when the missing values go right.
    """
    parent = leaf_score(sum_g, sum_h, reg_lambda, reg_alpha, max_delta_step)
    n_feat = hist.shape[0]
    for k in prange(n_feat):
        out_gain[k] = -np.inf
        out_bin[k] = -1
        out_default_left[k] = False
        out_left_g[k] = 0.0
        out_left_h[k] = 0.0
        if candidate_mask[k] == 0:
            continue
        nb = n_bins[hist_features[k]]
        miss_g = hist[k, 255, 0]
        miss_h = hist[k, 255, 1]
        has_missing = miss_h > 0.0
        cum_g = 0.0
        cum_h = 0.0
        for b in range(nb):
            cum_g += hist[k, b, 0]
            cum_h += hist[k, b, 1]
            # missing values go right
            if b < nb - 1 or has_missing:
                lg = cum_g
                lh = cum_h
                rg = sum_g - lg
                rh = sum_h - lh
                if lh >= min_child_weight and rh >= min_child_weight and lh > 0.0 and rh > 0.0:
                    gain = (
                        leaf_score(lg, lh, reg_lambda, reg_alpha, max_delta_step)
                        + leaf_score(rg, rh, reg_lambda, reg_alpha, max_delta_step)
                        - parent
                    )
                    if gain > out_gain[k]:
                        out_gain[k] = gain
                        out_bin[k] = b
                        # with no missing values here, send future ones to the heavier side
                        out_default_left[k] = (not has_missing) and lh >= rh
                        out_left_g[k] = lg
                        out_left_h[k] = lh
            # missing values go left
            if has_missing and b < nb - 1:
                lg = cum_g + miss_g
                lh = cum_h + miss_h
                rg = sum_g - lg
                rh = sum_h - lh
                if lh >= min_child_weight and rh >= min_child_weight and lh > 0.0 and rh > 0.0:
                    gain = (
                        leaf_score(lg, lh, reg_lambda, reg_alpha, max_delta_step)
                        + leaf_score(rg, rh, reg_lambda, reg_alpha, max_delta_step)
                        - parent
                    )
                    if gain > out_gain[k]:
                        out_gain[k] = gain
                        out_bin[k] = b
                        out_default_left[k] = True
                        out_left_g[k] = lg
                        out_left_h[k] = lh
