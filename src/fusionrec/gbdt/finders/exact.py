"""``tree_method="exact"``: the exact greedy algorithm (Algorithm 1) on the column block.

Every distinct value of every feature is a split candidate. Following section 4.1, the
split finder visits each column of the block once per tree level and finds the best split
of *every* node of that level in that one pass: a row's node is looked up in ``slot``,
and each node keeps its own running gradient sums while the column streams by in value
order. Absent entries are never visited (Algorithm 3): the statistics of a node's missing
values are its totals minus its present entries', and both default directions are scored.
Columns are split across threads.

Section 4.2's cache-aware access: reading a row's gradient pair is a random access, so
the scan first gathers the pairs of a mini-batch of entries into a small per-thread
buffer (independent loads the CPU can overlap) and then accumulates from the buffer.
``CACHE_AWARE_BATCH = 0`` turns that off (the benchmark measures both).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fusionrec.gbdt.column_block import ColumnBlock
from fusionrec.gbdt.grower import (
    ABSENT,
    GOES_LEFT,
    GOES_RIGHT,
    Node,
    SplitFinder,
    decide_by_flags,
    decide_by_flags_serial,
    decide_by_values,
    decide_by_values_serial,
    kernel_for,
    n_partition_blocks,
)
from fusionrec.gbdt.split import CANDIDATE_DTYPE, Regularization, Split, best_candidate, clear_candidate, parent_score, split_gain
from fusionrec.gbdt.tree import THRESHOLD_ALL

CACHE_AWARE_BATCH = 64  # entries whose gradient pairs are gathered before accumulating (0: off)
# A row's node within the level being scanned, one byte per row: the slot array stays in
# the core's L2 cache, and only rows in a level node fetch their gradient pair (measured:
# a 16-byte (slot, g, h) record per row made the scan 2.8x slower at 1M rows).
NOT_IN_LEVEL = 255
MAX_NODES_PER_SCAN = 255


@njit(cache=True, inline="always")
def _consider(best, lg, lh, node_g, node_h, score, reg, threshold, default_left):
    gain = split_gain(lg, lh, node_g - lg, node_h - lh, score, reg)
    if gain > best.gain:
        best.gain = gain
        best.threshold = threshold
        best.default_left = default_left
        best.left_g = lg
        best.left_h = lh


@njit(cache=True, inline="always")
def _visit(s, v, g, h, out_k, cum_g, cum_h, last, seen, miss_g, miss_h, node_g, node_h, scores, allowed, reg, plain):
    # A new value of node s closes the candidate "x <= midpoint(previous, v)".
    if seen[s] and v != last[s] and allowed[s]:
        lg = cum_g[s]
        lh = cum_h[s]
        total_h = node_h[s]
        rh = total_h - lh
        has_missing = miss_h[s] > 0.0
        if plain and not has_missing:
            # eq. (7) with alpha = 0 and no max_delta_step, the common case, without branches
            if lh >= reg.min_child_weight and rh >= reg.min_child_weight and lh > 0.0 and rh > 0.0:
                rg = node_g[s] - lg
                gain = lg * lg / (lh + reg.reg_lambda) + rg * rg / (rh + reg.reg_lambda) - scores[s]
                best = out_k[s]
                if gain > best.gain:
                    best.gain = gain
                    best.threshold = (np.float64(last[s]) + np.float64(v)) * 0.5
                    best.default_left = lh >= rh  # no missing values here: future ones go to the heavier side
                    best.left_g = lg
                    best.left_h = lh
        else:
            threshold = (np.float64(last[s]) + np.float64(v)) * 0.5
            # missing values go right (with none here, future ones go to the heavier side)
            _consider(out_k[s], lg, lh, node_g[s], total_h, scores[s], reg, threshold, (not has_missing) and lh >= rh)
            if has_missing:  # missing values go left
                _consider(out_k[s], lg + miss_g[s], lh + miss_h[s], node_g[s], total_h, scores[s], reg, threshold, True)
    cum_g[s] += g
    cum_h[s] += h
    last[s] = v
    seen[s] = True


@njit(parallel=True, cache=True, nogil=True)
def exact_level_scan(indptr, values, rows, has_missing, features, slot, gh, node_g, node_h, masks, reg, batch, out):
    """Best split per (feature k, node s) of one level in one pass over each column.

    slot[r]: the node (0..n_nodes-1) of row r in this level, or NOT_IN_LEVEL; gh[r]: row r's
    gradient pair; node_g/node_h: each node's totals; masks[s, k] == 0 skips feature k for
    node s (column sampling); out (n_features, n_nodes) CANDIDATE_DTYPE.
    """
    n_nodes = node_g.shape[0]
    scores = np.empty(n_nodes)
    for s in range(n_nodes):
        scores[s] = parent_score(node_g[s], node_h[s], reg)
    plain = reg.reg_alpha == 0.0 and reg.max_delta_step == 0.0
    for k in prange(features.shape[0]):
        f = features[k]
        out_k = out[k]
        allowed = masks[:, k] != 0
        for s in range(n_nodes):
            clear_candidate(out_k[s], k)
        if not allowed.any():
            continue
        start, stop = indptr[f], indptr[f + 1]
        miss_g = np.zeros(n_nodes)
        miss_h = np.zeros(n_nodes)
        if has_missing[f]:  # a first pass for the present totals; missing = node totals - present
            for e in range(start, stop):
                r = rows[e]
                s = slot[r]
                if s != NOT_IN_LEVEL:
                    miss_g[s] -= gh[r, 0]
                    miss_h[s] -= gh[r, 1]
            for s in range(n_nodes):
                miss_g[s] += node_g[s]
                miss_h[s] += node_h[s]
        cum_g = np.zeros(n_nodes)
        cum_h = np.zeros(n_nodes)
        last = np.zeros(n_nodes, np.float32)
        seen = np.zeros(n_nodes, np.bool_)
        if batch > 0:
            buffer_s = np.empty(batch, np.uint8)
            buffer_gh = np.empty((batch, 2), np.float32)
            for b0 in range(start, stop, batch):
                b1 = min(stop, b0 + batch)
                for e in range(b0, b1):  # gather: independent loads the CPU overlaps
                    r = rows[e]
                    s = slot[r]
                    buffer_s[e - b0] = s
                    if s != NOT_IN_LEVEL:
                        buffer_gh[e - b0, 0] = gh[r, 0]
                        buffer_gh[e - b0, 1] = gh[r, 1]
                for e in range(b0, b1):  # accumulate from the buffer
                    s = buffer_s[e - b0]
                    if s != NOT_IN_LEVEL:
                        _visit(s, values[e], buffer_gh[e - b0, 0], buffer_gh[e - b0, 1], out_k, cum_g, cum_h, last, seen,
                               miss_g, miss_h, node_g, node_h, scores, allowed, reg, plain)  # fmt: skip
        else:
            for e in range(start, stop):
                r = rows[e]
                s = slot[r]
                if s != NOT_IN_LEVEL:
                    _visit(s, values[e], gh[r, 0], gh[r, 1], out_k, cum_g, cum_h, last, seen,
                           miss_g, miss_h, node_g, node_h, scores, allowed, reg, plain)  # fmt: skip
        for s in range(n_nodes):  # every present value left, missing right
            if seen[s] and allowed[s] and miss_h[s] > 0.0:
                _consider(out_k[s], cum_g[s], cum_h[s], node_g[s], node_h[s], scores[s], reg, THRESHOLD_ALL, False)


@njit(cache=True, nogil=True)
def assign_slots(slot, rows, start, stop, s):
    for i in range(start, stop):
        slot[rows[i]] = s


@njit(cache=True, nogil=True)
def mark_column(indptr, values, rows, f, threshold, flags, value):
    """flags[r] = GOES_LEFT / GOES_RIGHT (x <= threshold or not) for the present entries of
    feature f (value=True), or back to ABSENT."""
    for e in range(indptr[f], indptr[f + 1]):
        flags[rows[e]] = (GOES_RIGHT if values[e] > threshold else GOES_LEFT) if value else ABSENT


def decide_from_block(block: ColumnBlock, flags: np.ndarray, rows: np.ndarray, node: Node, split: Split, go_left: np.ndarray) -> None:
    """go_left for a threshold split of sparse data: the split feature's present entries are
    marked in ``flags`` from the sorted block, the node's rows decided, the marks cleared."""
    mark_column(block.indptr, block.values, block.rows, split.feature, split.threshold, flags, True)
    kernel_for(node.n_rows, decide_by_flags, decide_by_flags_serial)(
        rows, node.start, node.stop, flags, split.default_left, go_left, n_partition_blocks(node.n_rows)
    )
    mark_column(block.indptr, block.values, block.rows, split.feature, split.threshold, flags, False)


class ExactSplitFinder(SplitFinder):
    """Splits at midpoints between consecutive distinct values of the column block.

    ``values_by_feature`` (n_features, n_rows) float32 routes rows of dense data; for sparse
    data (None) a split's column is marked into a per-row flag array instead.
    """

    def __init__(self, block: ColumnBlock, values_by_feature: np.ndarray | None, reg: Regularization):
        self.block = block
        self.values_by_feature = values_by_feature
        self.reg = reg
        self.has_missing = block.has_missing
        self.slot = np.full(block.n_rows, NOT_IN_LEVEL, np.uint8)
        self.flags = None if values_by_feature is not None else np.zeros(block.n_rows, np.uint8)
        self.batch = CACHE_AWARE_BATCH

    def find_splits(self, nodes: list[Node], masks: list[np.ndarray]) -> None:
        for first in range(0, len(nodes), MAX_NODES_PER_SCAN):  # a slot is one byte
            self._find_some(nodes[first : first + MAX_NODES_PER_SCAN], masks[first : first + MAX_NODES_PER_SCAN])

    def _find_some(self, nodes: list[Node], masks: list[np.ndarray]) -> None:
        grower = self.grower
        features = grower.features
        slot = self.slot
        slot.fill(NOT_IN_LEVEL)
        for s, node in enumerate(nodes):
            assign_slots(slot, grower.rows_pair[node.buffer], node.start, node.stop, s)
        out = np.empty((features.shape[0], len(nodes)), CANDIDATE_DTYPE)
        node_g = np.array([n.sum_g for n in nodes])
        node_h = np.array([n.sum_h for n in nodes])
        self._scan(features, node_g, node_h, np.ascontiguousarray(np.stack(masks)), out)
        for s, node in enumerate(nodes):
            node.split = best_candidate(np.ascontiguousarray(out[:, s]), features)

    def _scan(self, features, node_g, node_h, masks, out) -> None:
        b = self.block
        exact_level_scan(
            b.indptr, b.values, b.rows, self.has_missing, features, self.slot, self.grower.gh,
            node_g, node_h, masks, self.reg, self.batch, out,
        )  # fmt: skip

    def decide(self, node: Node, split: Split, go_left: np.ndarray) -> None:
        rows = self.grower.rows_pair[node.buffer]
        if self.values_by_feature is None:
            decide_from_block(self.block, self.flags, rows, node, split, go_left)
            return
        kernel_for(node.n_rows, decide_by_values, decide_by_values_serial)(
            rows, node.start, node.stop, self.values_by_feature[split.feature], split.threshold, split.default_left,
            go_left, n_partition_blocks(node.n_rows),
        )  # fmt: skip
