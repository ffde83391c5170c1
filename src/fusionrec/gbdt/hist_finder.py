"""``tree_method="hist"``: split finding on gradient histograms of pre-binned codes.

Histograms flow one way: the root's is built, then for every split the smaller child's is
built and the larger child's is the parent's minus it (the subtraction trick). A child
that will not be split gets no histogram unless its sibling needs it for the subtraction.
Dense data reads the (n_rows, n_features) code matrix; sparse data reads the codes of its
present entries only (``binning.SparseCodes``), so its cost follows the present entries.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fusionrec.gbdt.binning import MISSING_CODE, SparseCodes
from fusionrec.gbdt._jit import parallel_and_serial
from fusionrec.gbdt.grower import Node, SplitFinder, decide_by_codes, decide_by_codes_serial, kernel_for, n_partition_blocks
from fusionrec.gbdt.histogram import (
    MAX_BLOCKS,
    NOT_IN_TREE,
    build_histogram,
    build_histogram_all_rows,
    build_histogram_all_rows_serial,
    build_histogram_serial,
    build_histogram_sparse,
    build_histogram_sparse_serial,
    histogram_layout,
    n_blocks_for,
    new_histogram,
    subtract_histogram,
)
from fusionrec.gbdt.split import CANDIDATE_DTYPE, Regularization, Split, best_candidate, find_best_split, find_best_split_serial
from fusionrec.gbdt.tree import THRESHOLD_ALL


@njit(cache=True, inline="always")
def _sparse_code(indptr, indices, codes, r, f):
    # a row's entries are sorted by column: binary search for feature f
    lo = indptr[r]
    hi = indptr[r + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < f:
            lo = mid + 1
        else:
            hi = mid
    if lo < indptr[r + 1] and indices[lo] == f:
        return codes[lo]
    return MISSING_CODE


def decide_by_sparse_codes(rows, start, stop, indptr, indices, codes, f, split_bin, default_left, go_left, n_blocks):
    """go_left for a bin split of feature f on CSR codes: absent -> the default side."""
    n = stop - start
    block = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        for i in range(start + b * block, min(stop, start + (b + 1) * block)):
            c = _sparse_code(indptr, indices, codes, rows[i], f)
            go_left[i - start] = default_left if c == MISSING_CODE else c <= split_bin


decide_by_sparse_codes, decide_by_sparse_codes_serial = parallel_and_serial(decide_by_sparse_codes)
SLOTS_PER_THREAD = 4096  # histogram slots below which one thread scores a node's splits


class HistogramSplitFinder(SplitFinder):
    """Splits at bin boundaries of ``codes``: (n_rows, n_features) uint8, or SparseCodes.

    ``codes_by_feature`` is the column-major copy used to route rows of dense codes (None
    for sparse); ``n_bins`` the value bins per feature; ``cuts[f][b]`` the threshold of a
    split at bin b.
    """

    tree_bins = True

    def __init__(self, codes: np.ndarray | SparseCodes, codes_by_feature: np.ndarray | None, n_bins: np.ndarray, cuts: list[np.ndarray], reg: Regularization):
        self.codes = codes
        self.sparse = isinstance(codes, SparseCodes)
        self.codes_by_feature = codes_by_feature
        self.n_bins = n_bins
        self.cuts = cuts
        self.reg = reg
        self.n_features = codes.shape[1]
        self._free: list[np.ndarray] = []
        self._block_hists = np.empty((0, 0, 2))
        self.hists: dict[int, np.ndarray] = {}

    # -- histogram pool ---------------------------------------------------------------------
    def _take(self) -> np.ndarray:
        while self._free:
            hist = self._free.pop()
            if hist.shape[0] == self.n_slots:
                return hist
        return new_histogram(self.n_slots)

    def _give_back(self, hist: np.ndarray | None) -> None:
        if hist is not None:
            self._free.append(hist)

    def _build(self, node: Node, whole: bool) -> np.ndarray:
        grower = self.grower
        features = grower.features
        blocks = self._block_hists[: n_blocks_for(node.n_rows, self.entries_per_row)]
        hist = self._take()
        rows, gh = grower.rows_pair[node.buffer], grower.gh_pair[node.buffer]
        serial = blocks.shape[0] == 1  # one block of rows: no thread pool to wake
        if self.sparse:
            c = self.codes
            (build_histogram_sparse_serial if serial else build_histogram_sparse)(
                c.indptr, c.indices, c.codes, rows[node.start : node.stop], gh[node.start : node.stop],
                self._position, self.offsets, self.bins, node.sum_g, node.sum_h, blocks, hist,
            )  # fmt: skip
        elif whole:
            (build_histogram_all_rows_serial if serial else build_histogram_all_rows)(self.codes, grower.gh, features, self.offsets, self.bins, blocks, hist)
        else:
            (build_histogram_serial if serial else build_histogram)(
                self.codes, rows[node.start : node.stop], gh[node.start : node.stop], features, self.offsets, self.bins, blocks, hist
            )
        return hist

    def _cut_of(self, feature: int, split_bin: int) -> float:
        cut = self.cuts[feature]
        return float(cut[split_bin]) if split_bin < cut.shape[0] else THRESHOLD_ALL

    # -- SplitFinder ----------------------------------------------------------------------------
    def begin_tree(self, grower) -> None:
        super().begin_tree(grower)
        features = grower.features
        self._candidates = np.empty(features.shape[0], CANDIDATE_DTYPE)
        self.offsets, self.bins = histogram_layout(features, self.n_bins)
        self.n_slots = int(self.offsets[-1])
        if self._block_hists.shape[1] != self.n_slots:
            self._block_hists = np.empty((MAX_BLOCKS, self.n_slots, 2))
            self._free = []
        n_present = self.codes.codes.shape[0] if self.sparse else self.codes.shape[0] * features.shape[0]
        self.entries_per_row = max(1, n_present // max(1, self.codes.shape[0]))
        if self.sparse:
            self._position = np.full(self.n_features, NOT_IN_TREE, np.int32)
            self._position[features] = np.arange(features.shape[0], dtype=np.int32)

    def root_sums(self, root: Node) -> tuple[float, float]:
        if self.sparse:  # the missing slots need the totals first
            sums = super().root_sums(root)
            root.sum_g, root.sum_h = sums
            self.hists[root.id] = self._build(root, self.grower.all_rows)
            return sums
        hist = self._build(root, self.grower.all_rows)
        self.hists[root.id] = hist
        first = hist[: self.offsets[1]]  # every row lands in one slot of the first feature
        return float(first[:, 0].sum()), float(first[:, 1].sum())

    def find_splits(self, nodes: list[Node], masks: list[np.ndarray]) -> None:
        wanted = {node.id for node in nodes}
        for node in nodes:
            if node.id not in self.hists:
                self._children_histograms(node.parent, wanted)
        score = find_best_split if self.n_slots >= SLOTS_PER_THREAD else find_best_split_serial
        for node, mask in zip(nodes, masks):
            score(self.hists[node.id], self.offsets, self.bins, mask, node.sum_g, node.sum_h, self.reg, self._candidates)
            node.split = best_candidate(self._candidates, self.grower.features, self._cut_of)

    def _children_histograms(self, parent: Node, wanted: set[int]) -> None:
        left, right = parent.left, parent.right
        small, large = (left, right) if left.n_rows <= right.n_rows else (right, left)
        parent_hist = self.hists.pop(parent.id)
        small_hist = self._build(small, False)
        if large.id in wanted:
            subtract_histogram(parent_hist, small_hist, parent_hist)  # the parent's buffer becomes the sibling's
            self.hists[large.id] = parent_hist
        else:
            self._give_back(parent_hist)
        if small.id in wanted:
            self.hists[small.id] = small_hist
        else:
            self._give_back(small_hist)

    def decide(self, node: Node, split: Split, go_left: np.ndarray) -> None:
        rows = self.grower.rows_pair[node.buffer]
        blocks = n_partition_blocks(node.n_rows)
        if self.sparse:
            c = self.codes
            kernel_for(node.n_rows, decide_by_sparse_codes, decide_by_sparse_codes_serial)(
                rows, node.start, node.stop, c.indptr, c.indices, c.codes, split.feature, split.split_bin,
                split.default_left, go_left, blocks,
            )  # fmt: skip
            return
        kernel_for(node.n_rows, decide_by_codes, decide_by_codes_serial)(
            rows, node.start, node.stop, self.codes_by_feature[split.feature], split.split_bin, split.default_left, go_left, blocks
        )

    def forget(self, node: Node) -> None:
        self._give_back(self.hists.pop(node.id, None))
