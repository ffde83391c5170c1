"""Learning to rank: LambdaMART objectives and ranking metrics over query groups.

Objectives (XGBoost's names and parameters):

* ``rank:pairwise``: RankNet's pairwise logistic loss (Burges 2010, eq. 1-3);
* ``rank:ndcg``: LambdaMART, each pair's RankNet gradient scaled by |ΔNDCG| of swapping
  the two documents in the current ranking (Burges 2010, section 5);
* ``rank:map``: the same with |ΔMAP| (binary relevance).

Pairs are built per query from the model's current ranking:
``lambdarank_pair_method="topk"`` pairs each of the top ``lambdarank_num_pair_per_sample``
documents (default 32) with every document ranked below it; ``"mean"`` pairs each
document with ``lambdarank_num_pair_per_sample`` documents (default 1) of a different
label drawn at random. Pairs of equal labels carry no gradient. With
``lambdarank_normalization`` (default on) a query's gradients are scaled, under ``topk``, by
log2(1 + Σλ) / Σλ, as LightGBM and XGBoost do, so that long lists with many pairs do not
dominate, and under ``mean`` by 1 / ``lambdarank_num_pair_per_sample`` (XGBoost 3). With
``lambdarank_score_normalization`` (default on, XGBoost 3's name for LightGBM's
``lambdarank_norm``) each pair's |Δmetric| is divided by |s_hi - s_lo| + 0.01 once the query's
scores differ. Each pair's hessian is RankNet's p(1 - p) |Δmetric| (LightGBM's; XGBoost
doubles it). ``ndcg_exp_gain`` (default on) uses the gain 2^rel - 1, otherwise rel.

Per-query weights (one per group, as in XGBoost) scale every gradient of their query and
weight the metrics' average over queries; as in XGBoost they are normalized so that their mean
over documents is 1 (scaling every weight by one factor changes nothing).
"""

from __future__ import annotations

import re

import numpy as np
from numba import njit, prange

from fusionrec.errors import FusionrecError

PAIRWISE, NDCG, MAP = 0, 1, 2
RANK_OBJECTIVES = {"rank:pairwise": PAIRWISE, "rank:ndcg": NDCG, "rank:map": MAP}
DEFAULT_TOPK = 32
DEFAULT_MEAN_PAIRS = 1
SCORE_GAP_OFFSET = 0.01  # lambdarank_score_normalization's |Δmetric| / (|s_hi - s_lo| + 0.01)
MAX_EXP_GAIN_LABEL = 31  # 2^rel - 1 must stay exact in float64 (XGBoost's limit too)
RANK_METRIC = re.compile(r"^(ndcg|map|pre)(@(\d+))?(-)?$")


def num_pairs(params: dict) -> int:
    n = params.get("lambdarank_num_pair_per_sample")
    if n is not None:
        return int(n)
    return DEFAULT_TOPK if params["lambdarank_pair_method"] == "topk" else DEFAULT_MEAN_PAIRS


@njit(cache=True, inline="always")
def _gain(label, exp_gain):
    return (2.0**label - 1.0) if exp_gain else label


@njit(cache=True, inline="always")
def _discount(position):  # 0-based position in the ranking
    return 1.0 / np.log2(position + 2.0)


@njit(cache=True)
def _ideal_dcg(labels, k, exp_gain):
    ordered = np.sort(labels)[::-1]
    dcg = 0.0
    for i in range(min(k, ordered.shape[0])):
        dcg += _gain(ordered[i], exp_gain) * _discount(i)
    return dcg


@njit(cache=True, inline="always")
def _pair_delta(kind, hi_pos, lo_pos, gain_hi, gain_lo, inv_idcg, discounts, rel_by_pos, hits, ap_terms, n_relevant):
    """|Δmetric| of swapping the documents at ranking positions hi_pos and lo_pos.
    discounts[p] is _discount(p), tabulated once per call (a pair would take two log2)."""
    if kind == PAIRWISE:
        return 1.0
    if kind == NDCG:
        return abs((gain_hi - gain_lo) * (discounts[hi_pos] - discounts[lo_pos])) * inv_idcg
    # MAP: move the relevant document between positions p1 < p2 (1-based below)
    if n_relevant == 0:
        return 0.0
    p1 = min(hi_pos, lo_pos)
    p2 = max(hi_pos, lo_pos)
    between = ap_terms[p2 - 1] - ap_terms[p1]  # sum of rel_r / r over positions strictly between
    if rel_by_pos[p1] > 0:  # the relevant one moves down
        delta = hits[p2] / (p2 + 1.0) - hits[p1] / (p1 + 1.0) - between
    else:  # the relevant one moves up
        delta = (hits[p1] + 1.0) / (p1 + 1.0) - hits[p2] / (p2 + 1.0) + between
    return abs(delta) / n_relevant


INSERTION_SORT_MAX = 64  # queries up to this long are ranked by insertion sort: numba's mergesort costs more there


@njit(cache=True, inline="always")
def _ranking_order(s):
    """Positions by descending score, ties in input order (a stable sort of -s)."""
    n = s.shape[0]
    if n > INSERTION_SORT_MAX:
        return np.argsort(-s, kind="mergesort")
    order = np.empty(n, np.int64)
    for i in range(n):
        j = i
        while j > 0 and s[order[j - 1]] < s[i]:
            order[j] = order[j - 1]
            j -= 1
        order[j] = i
    return order


@njit(parallel=True, cache=True)
def ideal_dcg_inverses(labels, group_ptr, n_pairs, topk, exp_gain):
    """1 / ideal DCG of every query, truncated where its pairs are (the top ``n_pairs`` under
    ``topk``, else the whole list); 0 for a query with no relevant document. Labels do not
    change between rounds, so this is computed once per training set, not once per round."""
    n_queries = group_ptr.shape[0] - 1
    out = np.zeros(n_queries)
    for q in prange(n_queries):
        n = group_ptr[q + 1] - group_ptr[q]
        idcg = _ideal_dcg(labels[group_ptr[q]:group_ptr[q + 1]], min(n_pairs, n) if topk else n, exp_gain)
        out[q] = 1.0 / idcg if idcg > 0.0 else 0.0
    return out


@njit(parallel=True, cache=True)
def lambda_gradients(scores, labels, group_ptr, group_weight, inv_idcgs, kind, topk, n_pairs, exp_gain, normalize, score_normalize,
                     uniform, out_g, out_h):  # fmt: skip
    """LambdaMART gradients and hessians of every document (out_g, out_h), query by query.

    inv_idcgs: each query's 1 / ideal DCG (``ideal_dcg_inverses``; read for rank:ndcg only).
    uniform: (n_rows, n_pairs) numbers in [0, 1) drawing the partners of ``mean`` pairs.
    """
    max_size = 0
    for q in range(group_ptr.shape[0] - 1):
        max_size = max(max_size, group_ptr[q + 1] - group_ptr[q])
    discounts = np.empty(max_size)
    for p in range(max_size):
        discounts[p] = _discount(p)
    for q in prange(group_ptr.shape[0] - 1):
        a, b = group_ptr[q], group_ptr[q + 1]
        n = b - a
        for i in range(a, b):
            out_g[i] = 0.0
            out_h[i] = 0.0
        if n < 2:
            continue
        s = scores[a:b]
        lab = labels[a:b]
        order = _ranking_order(s)
        position = np.empty(n, np.int64)
        for p in range(n):
            position[order[p]] = p
        k = min(n_pairs, n) if topk else n
        inv_idcg = inv_idcgs[q]
        gains = np.empty(n)  # each document's gain once, not once per pair
        top_score = s[order[0]]
        # lambdarank_score_normalization: each pair's |Δmetric| over (|s_hi - s_lo| + 0.01), once
        # the query's scores are not all equal (LightGBM's lambdarank_norm, XGBoost 3's default)
        by_score_gap = score_normalize and top_score != s[order[n - 1]]
        shifted_exp = np.empty(n)  # exp(s - max s) once per document, not exp once per pair
        for i in range(n):
            gains[i] = _gain(lab[i], exp_gain)
            shifted_exp[i] = np.exp(s[i] - top_score)
        n_map = n if kind == MAP else 0  # MAP's running sums, unused by the others
        rel_by_pos = np.zeros(n_map)
        hits = np.zeros(n_map)  # relevant documents at positions 0..p (inclusive)
        ap_terms = np.zeros(n_map)  # sum over positions 0..p of rel / (position + 1)
        n_relevant = 0.0
        if kind == MAP:
            count = 0.0
            acc = 0.0
            for p in range(n):
                rel = 1.0 if lab[order[p]] > 0 else 0.0
                rel_by_pos[p] = rel
                count += rel
                acc += rel / (p + 1.0)
                hits[p] = count
                ap_terms[p] = acc
            n_relevant = count
        g = np.zeros(n)
        h = np.zeros(n)
        sum_lambda = 0.0
        if topk:
            for p in range(k):
                i = order[p]
                for p2 in range(p + 1, n):
                    j = order[p2]
                    if lab[i] == lab[j]:
                        continue
                    hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
                    sum_lambda += _add_pair(kind, hi, lo, s, shifted_exp, gains, position, inv_idcg, discounts, rel_by_pos, hits, ap_terms,
                                            n_relevant, by_score_gap, g, h)  # fmt: skip
        else:
            label_order = np.argsort(lab, kind="mergesort")
            sorted_labels = lab[label_order]
            run_start = 0
            for r in range(n):
                if r > 0 and sorted_labels[r] != sorted_labels[r - 1]:
                    run_start = r
                run_stop = r
                while run_stop < n and sorted_labels[run_stop] == sorted_labels[r]:
                    run_stop += 1
                n_other = n - (run_stop - run_start)
                if n_other == 0:
                    continue
                i = label_order[r]
                for t in range(n_pairs):
                    pick = int(uniform[a + i, t] * n_other)
                    if pick >= run_start:
                        pick += run_stop - run_start
                    j = label_order[pick]
                    hi, lo = (i, j) if lab[i] > lab[j] else (j, i)
                    sum_lambda += _add_pair(kind, hi, lo, s, shifted_exp, gains, position, inv_idcg, discounts, rel_by_pos, hits, ap_terms,
                                            n_relevant, by_score_gap, g, h)  # fmt: skip
        scale = group_weight[q]
        if normalize and not topk:  # each document's n_pairs sampled pairs averaged (XGBoost 3)
            scale /= n_pairs
        elif normalize and sum_lambda > 0.0:
            scale *= np.log2(1.0 + sum_lambda) / sum_lambda
        for i in range(n):
            out_g[a + i] = g[i] * scale
            out_h[a + i] = h[i] * scale


@njit(cache=True, inline="always")
def _add_pair(kind, hi, lo, s, shifted_exp, gains, position, inv_idcg, discounts, rel_by_pos, hits, ap_terms, n_relevant,
              by_score_gap, g, h):  # fmt: skip
    delta = _pair_delta(kind, position[hi], position[lo], gains[hi], gains[lo], inv_idcg, discounts, rel_by_pos, hits,
                        ap_terms, n_relevant)  # fmt: skip
    if delta == 0.0:
        return 0.0
    if by_score_gap:
        delta /= abs(s[hi] - s[lo]) + SCORE_GAP_OFFSET
    # RankNet: P(hi ranked above lo) = sigmoid(s_hi - s_lo) = e^s_hi / (e^s_hi + e^s_lo); loss -log P,
    # scaled by delta. Both exponentials shifted by the query's top score cannot overflow; if both
    # underflow (scores > 700 below the top), the sigmoid itself.
    both = shifted_exp[hi] + shifted_exp[lo]
    p = shifted_exp[hi] / both if both > 1e-300 else 1.0 / (1.0 + np.exp(-(s[hi] - s[lo])))
    lam = (1.0 - p) * delta
    hess = max(p * (1.0 - p), 1e-16) * delta
    g[hi] -= lam
    g[lo] += lam
    h[hi] += hess
    h[lo] += hess
    return 2.0 * lam


# -- metrics ---------------------------------------------------------------------------------


def parse_rank_metric(name: str) -> tuple[str, int | None, bool] | None:
    """('ndcg' | 'map' | 'pre', k or None, minus) for XGBoost's ``ndcg@10``, ``map-`` etc."""
    match = RANK_METRIC.match(name)
    if match is None:
        return None
    k = None if match.group(3) is None else int(match.group(3))
    return match.group(1), k, match.group(4) is not None


def rank_metric(name: str, y: np.ndarray, scores: np.ndarray, group_ptr: np.ndarray, group_weight: np.ndarray | None, exp_gain: bool = True) -> float:
    """Mean over queries (weighted by the per-query weights) of ndcg@k, map@k or pre@k."""
    return float(np.average(rank_metric_per_query(name, y, scores, group_ptr, exp_gain), weights=group_weight))


def rank_metric_per_query(name: str, y: np.ndarray, scores: np.ndarray, group_ptr: np.ndarray, exp_gain: bool = True) -> np.ndarray:
    """ndcg@k, map@k or pre@k of every query (paired comparisons of two models need them per query).

    A query with no relevant document scores 1 for ndcg and map (0 with XGBoost's ``-``
    suffix, as in ``ndcg-``); pre@k counts the relevant documents among the top k, over k.
    """
    parsed = parse_rank_metric(name)
    if parsed is None:
        raise FusionrecError(f"unknown ranking metric {name!r}")
    kind, k, minus = parsed
    n_queries = group_ptr.shape[0] - 1
    values = np.empty(n_queries)
    for q in range(n_queries):
        a, b = group_ptr[q], group_ptr[q + 1]
        labels = y[a:b]
        order = np.argsort(-scores[a:b], kind="mergesort")
        top = order if k is None else order[:k]
        if kind == "ndcg":
            gains = (2.0 ** labels - 1.0) if exp_gain else labels.astype(np.float64)
            discounts = 1.0 / np.log2(np.arange(top.shape[0]) + 2.0)
            dcg = float(np.sum(gains[top] * discounts))
            ideal = np.sort(gains)[::-1][: top.shape[0]]
            idcg = float(np.sum(ideal * discounts[: ideal.shape[0]]))
            values[q] = dcg / idcg if idcg > 0 else (0.0 if minus else 1.0)
        elif kind == "map":
            relevant = (labels[order] > 0).astype(np.float64)
            if k is not None:
                relevant_top = relevant[:k]
            else:
                relevant_top = relevant
            n_relevant = relevant.sum()
            if n_relevant == 0:
                values[q] = 0.0 if minus else 1.0
                continue
            hits = np.cumsum(relevant_top)
            precision = hits / np.arange(1, relevant_top.shape[0] + 1)
            denominator = n_relevant if k is None else min(n_relevant, k)
            values[q] = float(np.sum(precision * relevant_top) / denominator)
        else:  # pre@k
            depth = k if k is not None else b - a
            values[q] = float(np.sum(labels[top] > 0)) / depth
    return values
