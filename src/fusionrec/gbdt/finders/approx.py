"""``tree_method="approx"``: split candidates from the weighted quantile sketch (Algorithm 2).

Candidates are weighted quantiles of each feature with the rows' hessians as weights
(section 3.3: the hessian is the weight of a row in the second-order objective, eq. 3).
Both proposals of the paper's Figure 3:

* ``approx_proposal="global"`` (XGBoost's ``approx``): once per tree, from the tree's rows.
  Every row is then binned by the tree's candidates and the histogram finder runs on
  those bins, the subtraction trick included.
* ``approx_proposal="local"`` (XGBoost's former ``grow_local_histmaker``): re-proposed
  for every node from that node's rows after each split, so deep nodes keep fine
  candidates where their rows are. One pass over each column per level gathers every
  node's present entries in value order, sketches them and scores the candidates.

Both read the sorted column block, so a summary is one linear pass (the block's point in
section 4.1: "the quantile finding step becomes a linear scan over the sorted columns").
The number of candidates is ``max_bin``, or about ``1 / sketch_eps`` when that is given.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from fusionrec.gbdt.binning import MAX_VALUE_BINS, MISSING_CODE, SparseCodes, bin_csr_entries
from fusionrec.gbdt.column_block import ColumnBlock
from fusionrec.gbdt.finders.exact import NOT_IN_LEVEL, ExactSplitFinder, _consider, decide_from_block
from fusionrec.gbdt.finders.hist import HistogramSplitFinder
from fusionrec.gbdt.sketch import prune_summary, summary_from_sorted
from fusionrec.gbdt.split import Regularization, clear_candidate, parent_score
from fusionrec.gbdt.tree import THRESHOLD_ALL


def n_candidate_bins(params: dict) -> int:
    """Value bins per feature: ceil(1 / sketch_eps) when given (the paper's "roughly 1/eps
    candidate points"), else max_bin; at most 255 either way."""
    eps = params.get("sketch_eps")
    n = int(math.ceil(1.0 / eps)) if eps is not None else int(params["max_bin"])
    return max(2, min(n, MAX_VALUE_BINS))


@njit(cache=True, nogil=True)
def _pruned_cuts(values, weights, n_bins, out):
    """Write at most n_bins - 1 candidate values of a sorted, weighted column into out; return the count."""
    v, rmin, rmax, w = summary_from_sorted(values, weights)
    if v.shape[0] < 2:
        return 0
    v, rmin, rmax, w = prune_summary(v, rmin, rmax, w, n_bins + 1)
    n = min(v.shape[0] - 1, n_bins - 1)  # the largest entry would send every value left
    for j in range(n):
        out[j] = v[j]
    return n


@njit(parallel=True, cache=True, nogil=True)
def propose_cuts(indptr, values, rows, row_weight, features, n_bins, cut_table, n_cuts):
    """Global proposal: per feature, hessian-weighted candidates over the tree's rows."""
    for k in prange(features.shape[0]):
        f = features[k]
        start, stop = indptr[f], indptr[f + 1]
        weights = np.empty(stop - start)
        for e in range(start, stop):
            weights[e - start] = row_weight[rows[e]]
        n_cuts[f] = _pruned_cuts(values[start:stop], weights, n_bins, cut_table[f])


@njit(parallel=True, cache=True, nogil=True)
def bin_sorted_columns(indptr, values, rows, features, cut_table, n_cuts, codes_by_feature):
    """Every present entry's code by a walk up its sorted column; absent rows keep MISSING_CODE."""
    for k in prange(features.shape[0]):
        f = features[k]
        n = n_cuts[f]
        code = 0
        column = codes_by_feature[f]
        for e in range(indptr[f], indptr[f + 1]):
            x = values[e]
            while code < n and x > cut_table[f, code]:
                code += 1
            column[rows[e]] = code


@njit(parallel=True, cache=True, nogil=True)
def local_level_scan(indptr, values, rows, features, slot, gh, node_g, node_h, masks, reg, n_bins, out):
    """Local proposal: for each node of the level, candidates from the node's own rows.

    Per column: the level's present entries are gathered by node (a stable counting sort,
    so each node's entries stay in value order), each node's hessian-weighted summary is
    pruned to its candidates, and the candidates are scored with both default directions.
    """
    n_nodes = node_g.shape[0]
    scores = np.empty(n_nodes)
    for s in range(n_nodes):
        scores[s] = parent_score(node_g[s], node_h[s], reg)
    for k in prange(features.shape[0]):
        f = features[k]
        out_k = out[k]
        for s in range(n_nodes):
            clear_candidate(out_k[s], k)
        start, stop = indptr[f], indptr[f + 1]
        offsets = np.zeros(n_nodes + 1, np.int64)
        for e in range(start, stop):
            s = slot[rows[e]]
            if s != NOT_IN_LEVEL:
                offsets[s + 1] += 1
        for s in range(n_nodes):
            offsets[s + 1] += offsets[s]
        n_present = offsets[n_nodes]
        v_buf = np.empty(n_present, np.float32)
        g_buf = np.empty(n_present)
        h_buf = np.empty(n_present)
        fill = offsets[:-1].copy()
        for e in range(start, stop):
            r = rows[e]
            s = slot[r]
            if s != NOT_IN_LEVEL:
                i = fill[s]
                v_buf[i] = values[e]
                g_buf[i] = gh[r, 0]
                h_buf[i] = gh[r, 1]
                fill[s] = i + 1
        cuts = np.empty(n_bins)
        for s in range(n_nodes):
            if masks[s, k] == 0 or offsets[s + 1] == offsets[s]:
                continue
            a, b = offsets[s], offsets[s + 1]
            present_g = 0.0
            present_h = 0.0
            for i in range(a, b):
                present_g += g_buf[i]
                present_h += h_buf[i]
            miss_g = node_g[s] - present_g
            miss_h = node_h[s] - present_h
            has_missing = miss_h > 0.0
            n = _pruned_cuts(v_buf[a:b], h_buf[a:b], n_bins, cuts)
            cum_g = 0.0
            cum_h = 0.0
            j = 0
            best = out_k[s]
            for i in range(a, b + 1):
                x = v_buf[i] if i < b else np.inf
                while j < n and x > cuts[j]:  # candidate j closes: "x <= cuts[j]" goes left
                    _consider(best, cum_g, cum_h, node_g[s], node_h[s], scores[s], reg, cuts[j],
                              (not has_missing) and cum_h >= node_h[s] - cum_h)  # fmt: skip
                    if has_missing:
                        _consider(best, cum_g + miss_g, cum_h + miss_h, node_g[s], node_h[s], scores[s], reg, cuts[j], True)
                    j += 1
                if i < b:
                    cum_g += g_buf[i]
                    cum_h += h_buf[i]
            if has_missing:  # every present value left, missing right
                _consider(best, cum_g, cum_h, node_g[s], node_h[s], scores[s], reg, THRESHOLD_ALL, False)


class GlobalApproxSplitFinder(HistogramSplitFinder):
    """Histogram split finding on bins re-proposed for every tree from hessian-weighted quantiles.

    Dense data is re-binned by walking the sorted column block; sparse data (``csr``) by
    binning its present entries in place of the previous tree's codes.
    """

    tree_bins = False  # the bins are this tree's own: trees store thresholds only

    def __init__(self, block: ColumnBlock, csr, reg: Regularization, n_bins: int):
        n_rows, n_features = block.n_rows, block.n_features
        self.block = block
        self.csr = csr
        self.candidate_bins = n_bins
        self._cut_table = np.full((n_features, MAX_VALUE_BINS - 1), np.inf)
        self._n_cuts = np.zeros(n_features, np.int32)
        self._flags = None if csr is None else np.zeros(n_rows, np.uint8)
        if csr is not None:
            codes = SparseCodes(csr.indptr, csr.indices, np.empty(csr.nnz, np.uint8), (n_rows, n_features))
            codes_by_feature = None
        else:
            codes_by_feature = np.empty((n_features, n_rows), np.uint8)
            codes = np.empty((n_rows, n_features), np.uint8)
        HistogramSplitFinder.__init__(self, codes, codes_by_feature, np.ones(n_features, np.int32), [], reg)

    def begin_tree(self, grower) -> None:
        weight = grower.gh[:, 1]
        if not grower.all_rows:  # rows left out of this tree carry no weight in its sketch
            weight = np.zeros(weight.shape[0], np.float32)
            rows = grower.rows_pair[0]
            weight[rows] = grower.gh[rows, 1]
        b = self.block
        features = grower.features
        propose_cuts(b.indptr, b.values, b.rows, weight, features, self.candidate_bins, self._cut_table, self._n_cuts)
        if self.csr is not None:
            csr = self.csr
            bin_csr_entries(csr.indptr, csr.indices, csr.data, self._cut_table, self._n_cuts, self.codes.codes)
            self.codes_changed = True
        else:
            self.codes_by_feature.fill(MISSING_CODE)
            bin_sorted_columns(b.indptr, b.values, b.rows, features, self._cut_table, self._n_cuts, self.codes_by_feature)
            np.copyto(self.codes, self.codes_by_feature.T)
        self.n_bins = (self._n_cuts + 1).astype(np.int32)
        self.cuts = [self._cut_table[f, : self._n_cuts[f]] for f in range(b.n_features)]
        super().begin_tree(grower)  # the histogram layout follows this tree's bins

    def decide(self, node, split, go_left) -> None:
        if self.csr is None:
            return super().decide(node, split, go_left)
        # sparse: this tree's codes have no column-major copy; route by threshold from the block
        decide_from_block(self.block, self._flags, self.grower.rows_pair[node.buffer], node, split, go_left)


class LocalApproxSplitFinder(ExactSplitFinder):
    """Candidates re-proposed from each node's rows; rows are routed by raw thresholds."""

    def __init__(self, block: ColumnBlock, values_by_feature: np.ndarray | None, reg: Regularization, n_bins: int):
        super().__init__(block, values_by_feature, reg)
        self.candidate_bins = n_bins

    def _scan(self, features, node_g, node_h, masks, out) -> None:
        b = self.block
        local_level_scan(
            b.indptr, b.values, b.rows, features, self.slot, self.grower.gh, node_g, node_h, masks, self.reg,
            self.candidate_bins, out,
        )  # fmt: skip


def make_approx_finder(dtrain, reg: Regularization, params: dict):
    n_bins = n_candidate_bins(params)
    if params["approx_proposal"] == "local":
        return LocalApproxSplitFinder(dtrain.column_block, dtrain.values_by_feature, reg, n_bins)
    return GlobalApproxSplitFinder(dtrain.column_block, dtrain.raw.values if dtrain.raw.is_sparse else None, reg, n_bins)
