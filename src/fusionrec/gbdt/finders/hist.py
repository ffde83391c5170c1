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

from fusionrec.gbdt.binning import SparseCodes
from fusionrec.gbdt._jit import parallel_and_serial
from fusionrec.gbdt.grower import (
    Node,
    SplitFinder,
    decide_by_codes,
    decide_by_codes_serial,
    kernel_for,
    n_partition_blocks,
)
from fusionrec.gbdt.histogram import (
    MAX_BLOCKS,
    NOT_IN_TREE,
    build_histogram,
    build_histogram_all_rows,
    build_histogram_all_rows_serial,
    build_histogram_serial,
    build_histogram_sparse,
    build_histogram_sparse_serial,
    entry_slots,
    histogram_layout,
    use_compact_layout,
    n_blocks_for,
    new_histogram,
    subtract_histogram,
)
from fusionrec.gbdt.split import CANDIDATE_DTYPE, SCORE_CHUNKS, Regularization, Split, best_candidate, find_best_split, find_best_split_serial
from fusionrec.gbdt.tree import THRESHOLD_ALL


@njit(cache=True, inline="always")
def _gallop(col_rows, j, stop, r):
    """First position >= j in col_rows[:stop] (ascending) whose row is >= r: doubling steps,
    then bisection, so a far jump costs log(distance) and a near one a step or two."""
    if j >= stop or col_rows[j] >= r:
        return j
    step = 1
    while j + step < stop and col_rows[j + step] < r:
        step <<= 1
    lo = j + (step >> 1) + 1
    hi = min(j + step, stop)
    while lo < hi:
        mid = (lo + hi) >> 1
        if col_rows[mid] < r:
            lo = mid + 1
        else:
            hi = mid
    return lo


def decide_by_column(rows, start, stop, col_rows, col_codes, col_start, col_stop, split_bin, default_left, go_left, n_blocks):
    """go_left for a bin split of a sparse feature: the node's rows against the feature's
    present entries, both ascending by row id (the grower's partitions are stable), in one
    merge walk: O(node rows + the entries passed), absent rows to the default side."""
    n = stop - start
    block = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        s = start + b * block
        e = min(stop, s + block)
        if s >= e:
            continue
        j = _gallop(col_rows, col_start, col_stop, rows[s])
        for i in range(s, e):
            r = rows[i]
            j = _gallop(col_rows, j, col_stop, r)
            if j < col_stop and col_rows[j] == r:
                go_left[i - start] = col_codes[j] <= split_bin
            else:
                go_left[i - start] = default_left


decide_by_column, decide_by_column_serial = parallel_and_serial(decide_by_column)
SLOTS_PER_THREAD = 4096  # histogram slots below which one thread scores a node's splits


class HistogramSplitFinder(SplitFinder):
    """Splits at bin boundaries of ``codes``: (n_rows, n_features) uint8, or SparseCodes.

    ``codes_by_feature`` is the column-major copy used to route rows: an (n_features,
    n_rows) array for dense codes, a column-major SparseCodes (indptr by feature, row ids
    in ``indices``) for sparse ones; ``n_bins`` the value bins per feature; ``cuts[f][b]``
    the threshold of a split at bin b.
    """

    tree_bins = True

    def __init__(self, codes: np.ndarray | SparseCodes | None, codes_by_feature: np.ndarray | None, n_bins: np.ndarray,
                 cuts: list[np.ndarray], reg: Regularization, *, sparse: bool | None = None):  # fmt: skip
        # codes None: they are elsewhere (pages on disk, rows on workers) and ``sparse`` says their kind
        self.codes = codes
        self.sparse = isinstance(codes, SparseCodes) if sparse is None else sparse
        self.codes_by_feature = codes_by_feature
        self.n_bins = n_bins
        self.cuts = cuts
        self.reg = reg
        self.n_features = codes.shape[1] if codes is not None else len(cuts)
        self._free: list[np.ndarray] = []
        self._block_hists = np.empty((0, 0, 2))
        self._slots = self._slot_buffer = self._slot_layout = None
        self._no_slots = np.empty(0, np.uint16)
        self.codes_changed = False  # approx re-bins the codes for every tree
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
            slots = self._slots if self._slots is not None else self._no_slots
            (build_histogram_sparse_serial if serial else build_histogram_sparse)(
                c.indptr, c.indices, c.codes, slots, rows[node.start : node.stop], gh[node.start : node.stop],
                self._position, self.offsets, self.bins, node.sum_g, node.sum_h, blocks, hist,
            )  # fmt: skip
        elif whole:
            (build_histogram_all_rows_serial if serial else build_histogram_all_rows)(
                self.codes, grower.gh, features, self._dense_offsets, self.bins, blocks, hist
            )
        else:
            (build_histogram_serial if serial else build_histogram)(
                self.codes, rows[node.start : node.stop], gh[node.start : node.stop], features, self._dense_offsets, self.bins,
                blocks, hist,
            )
        return hist

    def _cut_of(self, feature: int, split_bin: int) -> float:
        cut = self.cuts[feature]
        return float(cut[split_bin]) if split_bin < cut.shape[0] else THRESHOLD_ALL

    # -- SplitFinder ----------------------------------------------------------------------------
    def begin_tree(self, grower) -> None:
        super().begin_tree(grower)
        features = grower.features
        n_present = self.codes.codes.shape[0] if self.sparse else self.codes.shape[0] * features.shape[0]
        self._begin_layout(features, max(1, n_present // max(1, self.codes.shape[0])))
        if self.sparse:
            if features.shape[0] == self.n_features:  # every feature: each entry's slot, once per layout
                if self._slot_layout is None or not np.array_equal(self._slot_layout, self.offsets) or self.codes_changed:
                    dtype = np.uint16 if self.n_slots <= np.iinfo(np.uint16).max + 1 else np.uint32
                    if self._slot_buffer is None or self._slot_buffer.dtype != dtype:
                        self._slot_buffer = np.empty(self.codes.codes.shape[0], dtype)
                    entry_slots(self.codes.indices, self.codes.codes, self.offsets, self._slot_buffer)
                    self._slot_layout = self.offsets.copy()
                self._slots = self._slot_buffer

    def _begin_layout(self, features: np.ndarray, entries_per_row: int) -> None:
        """The tree's histogram layout over its ``features``, and the scratch it needs."""
        self._candidates = np.empty(min(SCORE_CHUNKS, features.shape[0]), CANDIDATE_DTYPE)
        compact = use_compact_layout(self.n_bins[features], self.sparse)
        self.layout = histogram_layout(features, self.n_bins, compact=compact)
        self.offsets, self.bins, self.missing = self.layout
        # dense kernels take the offsets for the compact layout, none for the fixed stride
        self._dense_offsets = self.offsets if compact else self.offsets[:0]
        self.n_slots = int(self.offsets[-1])
        if self._block_hists.shape[1] != self.n_slots:
            self._block_hists = np.empty((MAX_BLOCKS, self.n_slots, 2))
            self._free = []
        self.entries_per_row = entries_per_row
        if self.sparse:
            self._position = np.full(self.n_features, NOT_IN_TREE, np.int32)
            self._position[features] = np.arange(features.shape[0], dtype=np.int32)
            self._slots = None

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
        self._score(nodes, masks)

    def _score(self, nodes: list[Node], masks: list[np.ndarray]) -> None:
        score = find_best_split if self.n_slots >= SLOTS_PER_THREAD else find_best_split_serial
        for node, mask in zip(nodes, masks):
            score(self.hists[node.id], self.layout, mask, node.sum_g, node.sum_h, self.reg, self._candidates)
            node.split = best_candidate(self._candidates, self.grower.features, self._cut_of)

    @staticmethod
    def _smaller_child(parent: Node) -> Node:
        return parent.left if parent.left.n_rows <= parent.right.n_rows else parent.right

    def _children_histograms(self, parent: Node, wanted: set[int], built: tuple[Node, np.ndarray] | None = None) -> None:
        """The histograms of ``parent``'s children that are ``wanted``: one child's built (the
        smaller, or ``built``: a child and its histogram, made already), the other's the
        parent's minus it."""
        small, small_hist = built if built is not None else (self._smaller_child(parent), None)
        large = parent.right if small is parent.left else parent.left
        parent_hist = self.hists.pop(parent.id)
        if small_hist is None:
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
            c = self.codes_by_feature
            f = split.feature
            kernel_for(node.n_rows, decide_by_column, decide_by_column_serial)(
                rows, node.start, node.stop, c.indices, c.codes, c.indptr[f], c.indptr[f + 1], split.split_bin,
                split.default_left, go_left, blocks,
            )  # fmt: skip
            return
        kernel_for(node.n_rows, decide_by_codes, decide_by_codes_serial)(
            rows, node.start, node.stop, self.codes_by_feature[split.feature], split.split_bin, split.default_left, go_left, blocks
        )

    def forget(self, node: Node) -> None:
        self._give_back(self.hists.pop(node.id, None))
