"""The weighted quantile sketch of Chen & Guestrin (2016), section 3.3 and appendix A.

A summary of a weighted multiset is a sorted list of distinct values ``x_i`` with

* ``rmin[i]``: a lower bound on the weight of the values strictly below ``x_i`` (r-),
* ``rmax[i]``: an upper bound on the weight of the values at most ``x_i`` (r+),
* ``wmin[i]``: a lower bound on the weight of ``x_i`` itself.

A summary made from sorted data is exact (ε = 0). **Merge** combines the summaries of two
disjoint multisets into a summary of their union whose error is the larger of the two
(Theorem A.1 of the appendix); **prune** keeps ``b + 1`` entries and adds at most ``1/b``
to the error (Theorem A.2). The summary arrays are plain float64 vectors, so summaries of
row pages or Dask partitions merge wherever they were made.

``WeightedQuantileSketch`` streams batches: each batch becomes an exact summary, pruned,
and summaries merge up a binary tree of levels (one merge + prune per level, as XGBoost's
``WQuantileSketch`` does), so the error after ``n`` rows is at most ``eps``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.binning import MAX_VALUE_BINS, _cuts_of_column


@njit(cache=True, nogil=True)
def summary_from_sorted(values, weights):
    """Exact summary of ``values`` (ascending) with ``weights``; zero-weight values are dropped."""
    n = values.shape[0]
    out_v = np.empty(n)
    out_rmin = np.empty(n)
    out_rmax = np.empty(n)
    out_w = np.empty(n)
    size = 0
    total = 0.0
    i = 0
    while i < n:
        v = values[i]
        w = 0.0
        while i < n and values[i] == v:
            w += weights[i]
            i += 1
        if w > 0.0:
            out_v[size] = v
            out_rmin[size] = total
            out_w[size] = w
            total += w
            out_rmax[size] = total
            size += 1
    return out_v[:size], out_rmin[:size], out_rmax[:size], out_w[:size]


@njit(cache=True, nogil=True)
def merge_summaries(av, armin, armax, aw, bv, brmin, brmax, bw):
    """Summary of the union of two disjoint multisets (XGBoost's SetCombine)."""
    na, nb = av.shape[0], bv.shape[0]
    n = na + nb
    v = np.empty(n)
    rmin = np.empty(n)
    rmax = np.empty(n)
    w = np.empty(n)
    i = j = size = 0
    a_prev_rmin = 0.0  # weight known to lie below the current a entry
    b_prev_rmin = 0.0
    while i < na and j < nb:
        if av[i] == bv[j]:
            v[size] = av[i]
            rmin[size] = armin[i] + brmin[j]
            rmax[size] = armax[i] + brmax[j]
            w[size] = aw[i] + bw[j]
            a_prev_rmin = armin[i] + aw[i]
            b_prev_rmin = brmin[j] + bw[j]
            i += 1
            j += 1
        elif av[i] < bv[j]:
            v[size] = av[i]
            rmin[size] = armin[i] + b_prev_rmin
            rmax[size] = armax[i] + brmax[j] - bw[j]  # b's weight before its current entry, at most
            w[size] = aw[i]
            a_prev_rmin = armin[i] + aw[i]
            i += 1
        else:
            v[size] = bv[j]
            rmin[size] = brmin[j] + a_prev_rmin
            rmax[size] = brmax[j] + armax[i] - aw[i]
            w[size] = bw[j]
            b_prev_rmin = brmin[j] + bw[j]
            j += 1
        size += 1
    b_total = brmax[nb - 1] if nb > 0 else 0.0
    a_total = armax[na - 1] if na > 0 else 0.0
    while i < na:
        v[size] = av[i]
        rmin[size] = armin[i] + b_prev_rmin
        rmax[size] = armax[i] + b_total
        w[size] = aw[i]
        i += 1
        size += 1
    while j < nb:
        v[size] = bv[j]
        rmin[size] = brmin[j] + a_prev_rmin
        rmax[size] = brmax[j] + a_total
        w[size] = bw[j]
        j += 1
        size += 1
    return v[:size], rmin[:size], rmax[:size], w[:size]


@njit(cache=True, nogil=True)
def prune_summary(v, rmin, rmax, w, max_size):
    """Keep at most ``max_size`` entries (first and last always), each chosen nearest the
    ranks k * W / (max_size - 1): adds at most W / (max_size - 1) to the error (XGBoost's SetPrune)."""
    n = v.shape[0]
    if n <= max_size:
        return v, rmin, rmax, w
    keep = np.empty(max_size, np.int64)
    size = 1
    keep[0] = 0
    begin = rmax[0]
    span = rmin[n - 1] - rmax[0]
    m = max_size - 1
    i = 1
    last = 0
    for k in range(1, m):
        dx2 = 2.0 * (k * span / m + begin)
        while i < n - 1 and dx2 >= rmax[i + 1] + rmin[i + 1]:
            i += 1
        if i == n - 1:
            break
        if dx2 < (rmin[i] + w[i]) + (rmax[i + 1] - w[i + 1]):
            if i != last:
                keep[size] = i
                size += 1
                last = i
        else:
            if i + 1 != last:
                keep[size] = i + 1
                size += 1
                last = i + 1
    if last != n - 1:
        keep[size] = n - 1
        size += 1
    keep = keep[:size]
    return v[keep], rmin[keep], rmax[keep], w[keep]


@njit(cache=True, nogil=True)
def summary_error(rmin, rmax, w, total):
    """The summary's ε: the most weight that may lie strictly between two neighbouring
    entries (or beyond the ends), over W: appendix A's condition on neighbours, with each
    entry's own weight left out (no summary can split one value's weight)."""
    n = rmin.shape[0]
    if n == 0 or total <= 0.0:
        return 0.0
    worst = max(rmax[0] - w[0], total - rmin[n - 1] - w[n - 1], 0.0)
    for i in range(n - 1):
        gap = (rmax[i + 1] - w[i + 1]) - (rmin[i] + w[i])
        if gap > worst:
            worst = gap
    return worst / total


def cuts_from_summary(values: np.ndarray, n_bins: int) -> np.ndarray:
    """At most ``n_bins - 1`` split values from a summary pruned to ``n_bins + 1`` entries: its
    interior entries. Not the smallest (a split there would isolate the minimum, wasting a bin;
    XGBoost's cut points also start at the second entry) nor the largest (a split there sends
    every present value left)."""
    return np.ascontiguousarray(values[1:-1][: max(n_bins - 1, 0)], dtype=np.float64)


class WeightedQuantileSketch:
    """Streaming ε-approximate weighted quantiles of one feature (values with weights).

    ``push(values, weights)`` any number of times (NaN values are skipped), then
    ``summary()`` or ``cuts(n_bins)``. ``eps`` bounds the rank error of every entry by
    ``eps * total weight``, for up to ``max_rows`` rows (beyond it the bound grows by
    ``eps / levels`` for each doubling).
    """

    def __init__(self, eps: float = 0.01, max_rows: int = 1 << 30):
        if not (isinstance(eps, (int, float)) and 0.0 < eps < 1.0):
            raise FusionrecError(f"sketch eps={eps!r}: must be a number in (0, 1)")
        self.eps = float(eps)
        # levels of the binary merge tree; each prune adds eps / levels to the error
        self.levels = max(1, math.ceil(math.log2(max(2, max_rows))) - 10)
        self.limit = int(math.ceil(self.levels / self.eps)) + 1
        self._level_summaries: list[tuple | None] = []

    def push(self, values, weights=None) -> None:
        values = np.asarray(values)
        if values.dtype not in (np.float32, np.float64):
            values = values.astype(np.float64)
        values = values.ravel()
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64).ravel()
            if weights.shape != values.shape:
                raise FusionrecError(f"sketch push: {values.shape[0]} values but {weights.shape[0]} weights")
        keep = ~np.isnan(values)
        if not keep.all():
            values = values[keep]
            weights = None if weights is None else weights[keep]
        if weights is not None and (np.any(weights < 0) or not np.all(np.isfinite(weights))):
            raise FusionrecError("sketch push: weights must be finite and >= 0")
        if values.size == 0:
            return
        # sorted in the input's precision (float32 sorts in a third of float64's time); unit
        # weights need no permutation, so a plain sort instead of an argsort
        if weights is None:
            self.push_summary(summary_from_sorted(np.sort(values).astype(np.float64), np.ones(values.shape[0])))
            return
        values = values.astype(np.float64)
        order = np.argsort(values, kind="mergesort")
        self.push_summary(summary_from_sorted(values[order], weights[order]))

    def push_summary(self, summary: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Merge in the summary of a disjoint part of the data (another page's, partition's or
        worker's ``summary()``), as one more batch."""
        if summary[0].shape[0] == 0:
            return
        summary = prune_summary(*summary, self.limit)
        level = 0
        while True:  # carry up the binary counter of levels
            if level == len(self._level_summaries):
                self._level_summaries.append(summary)
                return
            other = self._level_summaries[level]
            if other is None:
                self._level_summaries[level] = summary
                return
            self._level_summaries[level] = None
            summary = prune_summary(*merge_summaries(*other, *summary), self.limit)
            level += 1

    def summary(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        out = None
        for summary in self._level_summaries:
            if summary is None:
                continue
            out = summary if out is None else merge_summaries(*out, *summary)
        if out is None:
            empty = np.empty(0)
            return empty, empty, empty, empty
        return prune_summary(*out, self.limit)

    def cuts(self, n_bins: int) -> np.ndarray:
        values, rmin, rmax, w = self.summary()
        return cuts_from_summary(prune_summary(values, rmin, rmax, w, n_bins + 1)[0], n_bins)


def query_summary(values, rmin, rmax, w, rank: float) -> float:
    """The value whose rank is nearest ``rank`` by the summary's bounds (appendix A's query):
    on an ε-approximate summary its true rank interval lies within ε·W of ``rank``."""
    n = values.shape[0]
    if n == 0:
        raise FusionrecError("sketch query: the summary is empty")
    mids = (rmin + rmax) * 0.5
    if rank < mids[0]:
        return float(values[0])
    if rank >= mids[-1]:
        return float(values[-1])
    i = int(np.searchsorted(mids, rank, side="right")) - 1
    if 2.0 * rank < (rmin[i] + w[i]) + (rmax[i + 1] - w[i + 1]):
        return float(values[i])
    return float(values[i + 1])


def sketch_cuts(sketches: list[WeightedQuantileSketch], max_bin: int) -> list[np.ndarray]:
    """Each feature's cuts from its merged sketch: between every pair of neighbouring values
    when it has few distinct ones (the in-memory rule, exactly), else the sketch's quantiles."""
    max_value_bins = min(max_bin, MAX_VALUE_BINS)
    out = []
    for sketch in sketches:
        values, rmin, rmax, weights = sketch.summary()
        if values.shape[0] <= max_value_bins and _all_distinct_exact(sketch, values):
            table = np.empty(max(max_value_bins - 1, 1))
            n = _cuts_of_column(values, weights, max_value_bins, table)
            out.append(table[:n].copy())
        else:
            out.append(cuts_from_summary(prune_summary(values, rmin, rmax, weights, max_value_bins + 1)[0], max_value_bins))
    return out


def _all_distinct_exact(sketch: WeightedQuantileSketch, values: np.ndarray) -> bool:
    """Whether the summary still holds every distinct value: it was never pruned below them."""
    return values.shape[0] < sketch.limit
