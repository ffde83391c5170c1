"""``tree_method="hist"`` on out-of-core pages (``external.ExternalDataset``).

The same histograms, subtraction trick and split scoring as ``hist_finder`` (this finder is a
``HistogramSplitFinder``), with the codes read from the pages instead of memory. The grower
keeps every node's row ids and gradient pairs in memory; the codes are streamed, one pass
over the pages per step that needs them:

- the root's histogram: one pass; for each page, a node's rows in the page (a slice of its
  ascending row ids) are added with the in-memory kernels;
- then, once the splits of a level are chosen, one pass decides left / right for every row
  of every split node and, from the same page, adds the rows of each node's lighter child (by
  hessian, known from the split) to its histogram; the other child's is the parent's minus it.

So a depthwise tree of depth d reads the pages d + 1 times (the last level only decides;
lossguide: once per split). Sums run page by page, so they may differ from the in-memory ones
in the last bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fusionrec.gbdt.binning import MISSING_CODE, SparseCodes
from fusionrec.gbdt.external import ExternalDataset
from fusionrec.gbdt.grower import Node, SplitFinder
from fusionrec.gbdt.hist_finder import HistogramSplitFinder
from fusionrec.gbdt._jit import parallel_and_serial
from fusionrec.gbdt.histogram import (
    _add_row,
    build_histogram,
    build_histogram_serial,
    build_histogram_sparse,
    build_histogram_sparse_serial,
    fill_missing_slots,
    n_blocks_for,
)
from fusionrec.gbdt.split import Regularization, Split


class PagedHistogramSplitFinder(HistogramSplitFinder):
    """Histogram split finding over an ExternalDataset's pages."""

    tree_bins = True

    def __init__(self, data: ExternalDataset, reg: Regularization):
        # the codes are on disk: the in-memory matrices stay unset
        self.data = data
        self.codes = None
        self.codes_by_feature = None
        self.sparse = data.is_sparse
        self.n_bins = data.n_bins_per_feature
        self.cuts = data.cuts
        self.reg = reg
        self.n_features = data.n_features
        self._free: list[np.ndarray] = []
        self._block_hists = np.empty((0, 0, 2))
        self._slots = None
        self._no_slots = np.empty(0, np.uint16)
        self.codes_changed = False
        self.hists: dict[int, np.ndarray] = {}
        self._decisions: dict[int, tuple[Split, np.ndarray]] = {}
        # by parent id: (its lighter child is the left one, that child's histogram), built while deciding
        self._child_hists: dict[int, tuple[bool, np.ndarray]] = {}

    def begin_tree(self, grower) -> None:
        SplitFinder.begin_tree(self, grower)
        n_entries = sum(page.n_entries for page in self.data.pages.pages)
        per_row = n_entries // max(1, self.data.n_rows) if self.sparse else grower.features.shape[0]
        self._begin_layout(grower.features, max(1, per_row))
        self._decisions = {}
        self._child_hists = {}
        self._no_hist = np.zeros((1, 2))  # the hist argument of a kernel call that adds nothing

    def root_sums(self, root: Node) -> tuple[float, float]:
        sums = SplitFinder.root_sums(self, root)
        root.sum_g, root.sum_h = sums
        self.hists[root.id] = self._build_many([root])[root.id]
        return sums

    def find_splits(self, nodes: list[Node], masks: list[np.ndarray]) -> None:
        wanted = {node.id for node in nodes}
        parents = list({node.parent.id: node.parent for node in nodes if node.id not in self.hists}.values())
        missing = [p for p in parents if p.id not in self._child_hists]  # not built while deciding
        built = self._build_many([self._smaller_child(parent) for parent in missing])
        for parent in parents:
            if parent.id in self._child_hists:
                is_left, hist = self._child_hists.pop(parent.id)
                self._children_histograms(parent, wanted, (parent.left if is_left else parent.right, hist))
            else:
                self._children_histograms(parent, wanted, (self._smaller_child(parent), built[self._smaller_child(parent).id]))
        self._score(nodes, masks)
        self._decide_many([node for node in nodes if node.split is not None])

    def decide(self, node: Node, split: Split, go_left: np.ndarray) -> None:
        decided = self._decisions.pop(node.id, None)
        if decided is None or decided[0] is not split:
            self._decide_many([node], split)
            decided = self._decisions.pop(node.id)
        go_left[: node.n_rows] = decided[1]

    def forget(self, node: Node) -> None:
        super().forget(node)
        self._decisions.pop(node.id, None)
        self._give_back(self._child_hists.pop(node.id, (None, None))[1])

    # -- page passes ----------------------------------------------------------------------------
    def _segments(self, nodes: list[Node]) -> list[tuple[Node, np.ndarray, np.ndarray]]:
        grower = self.grower
        return [(node, grower.rows_pair[node.buffer][node.start : node.stop], grower.gh_pair[node.buffer][node.start : node.stop])
                for node in nodes]  # fmt: skip

    def _build_many(self, nodes: list[Node]) -> dict[int, np.ndarray]:
        """Every node's histogram, in one pass over the pages."""
        hists = {}
        for node in nodes:
            hist = self._take()
            hist[:] = 0.0
            hists[node.id] = hist
        if not nodes:
            return hists
        segments = self._segments(nodes)
        page_hist = self._take()
        for start, codes in self.data.iter_codes():
            stop = start + codes.shape[0]
            for node, rows, gh in segments:
                lo, hi = _page_slice(rows, start, stop)
                if lo == hi:
                    continue
                # the missing slots of sparse codes are filled once, from the node's totals, below
                self._add_page_rows(codes, rows[lo:hi] - np.int32(start), gh[lo:hi], page_hist)
                hists[node.id] += page_hist
        self._give_back(page_hist)
        if self.sparse:
            for node in nodes:
                fill_missing_slots(hists[node.id], self.offsets, self.bins, node.sum_g, node.sum_h)
        return hists

    def _decide_many(self, nodes: list[Node], split: Split | None = None) -> None:
        """Each node's go-left flags for its split (or ``split``), in one pass over the pages,
        and from the same pages the lighter child's histogram of each node whose children may
        be split in turn (not at max_depth - 1)."""
        if not nodes:
            return
        segments = self._segments(nodes)
        flags = {node.id: np.empty(node.n_rows, np.bool_) for node in nodes}
        max_depth = self.grower.max_depth
        child_hists: dict[int, tuple[bool, np.ndarray]] = {}
        if split is None:
            for node in nodes:
                if max_depth <= 0 or node.depth + 1 < max_depth:
                    hist = self._take()
                    hist[:] = 0.0
                    child_hists[node.id] = (node.split.left_h <= node.sum_h - node.split.left_h, hist)
        page_hist = self._take() if child_hists else None
        for start, codes in self.data.iter_codes():
            stop = start + codes.shape[0]
            for node, rows, gh in segments:
                chosen = split or node.split
                lo, hi = _page_slice(rows, start, stop)
                if lo == hi:
                    continue
                local = rows[lo:hi] - np.int32(start)
                go_left = flags[node.id][lo:hi]
                if not isinstance(codes, SparseCodes):  # one kernel decides and adds the lighter child's rows
                    is_left, hist = child_hists.get(node.id, (True, self._no_hist))
                    blocks = self._block_hists[: n_blocks_for(hi - lo, self.entries_per_row)]
                    (_decide_and_add_serial if blocks.shape[0] == 1 else _decide_and_add)(
                        codes, local, gh[lo:hi], chosen.feature, chosen.split_bin, bool(chosen.default_left), is_left,
                        node.id in child_hists, self.grower.features, self._dense_offsets, self.bins, blocks, go_left, hist,
                    )  # fmt: skip
                    continue
                column = _column_codes(codes, chosen.feature, local)
                go_left[:] = np.where(column == MISSING_CODE, bool(chosen.default_left), column <= chosen.split_bin)
                if node.id in child_hists:
                    is_left, hist = child_hists[node.id]
                    chosen_rows = go_left if is_left else ~go_left
                    if chosen_rows.any():
                        self._add_page_rows(codes, local[chosen_rows], gh[lo:hi][chosen_rows], page_hist)
                        hist += page_hist
        self._give_back(page_hist)
        for node in nodes:
            self._decisions[node.id] = (split or node.split, flags[node.id])
        for node in nodes:
            if node.id not in child_hists:
                continue
            is_left, hist = child_hists[node.id]
            if self.sparse:
                g, h = (node.split.left_g, node.split.left_h) if is_left else (node.sum_g - node.split.left_g, node.sum_h - node.split.left_h)
                fill_missing_slots(hist, self.offsets, self.bins, g, h)
            self._child_hists[node.id] = (is_left, hist)

    def _add_page_rows(self, codes, local: np.ndarray, gh: np.ndarray, page_hist: np.ndarray) -> None:
        """page_hist = the histogram of a page's rows ``local`` (missing slots of sparse codes
        left for fill_missing_slots)."""
        blocks = self._block_hists[: n_blocks_for(local.shape[0], self.entries_per_row)]
        serial = blocks.shape[0] == 1
        if self.sparse:
            (build_histogram_sparse_serial if serial else build_histogram_sparse)(
                codes.indptr, codes.indices, codes.codes, self._no_slots, local, gh, self._position, self.offsets, self.bins,
                0.0, 0.0, blocks, page_hist,
            )  # fmt: skip
        else:
            (build_histogram_serial if serial else build_histogram)(
                codes, local, gh, self.grower.features, self._dense_offsets, self.bins, blocks, page_hist
            )


def _page_slice(rows: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """[lo, hi) of a node's ascending row ids (the grower's partitions are stable) in a page."""
    bounds = np.searchsorted(rows, np.array((start, stop), dtype=rows.dtype))
    return int(bounds[0]), int(bounds[1])


def _decide_and_add(codes, local, gh, feature, split_bin, default_left, take_left, add, features, offsets, bins,
                    block_hists, go_left, hist):  # fmt: skip
    """go_left of a page's rows ``local`` of one node; with ``add``, the rows going to the
    ``take_left`` side added to ``hist`` (summed in row blocks, as build_histogram)."""
    n = local.shape[0]
    n_blocks = block_hists.shape[0]
    block_size = (n + n_blocks - 1) // n_blocks
    all_features = features.shape[0] == codes.shape[1]
    for b in prange(n_blocks):
        part = block_hists[b]
        if add:
            part[:] = 0.0
        for i in range(b * block_size, min(n, (b + 1) * block_size)):
            code = codes[local[i], feature]
            left = default_left if code == MISSING_CODE else code <= split_bin
            go_left[i] = left
            if add and left == take_left:
                _add_row(codes, local[i], np.float64(gh[i, 0]), np.float64(gh[i, 1]), features, all_features, offsets, bins, part)
    if add:
        for b in range(n_blocks):
            hist += block_hists[b]


_decide_and_add, _decide_and_add_serial = parallel_and_serial(_decide_and_add)


def _column_codes(codes: np.ndarray | SparseCodes, feature: int, local_rows: np.ndarray) -> np.ndarray:
    """The codes of ``feature`` at ``local_rows`` of a page (MISSING_CODE where absent)."""
    if not isinstance(codes, SparseCodes):
        return codes[local_rows, feature]
    column = np.full(codes.shape[0], MISSING_CODE, np.uint8)
    present = np.flatnonzero(codes.indices == feature)
    row_of_entry = np.searchsorted(codes.indptr, present, side="right") - 1
    column[row_of_entry] = codes.codes[present]
    return column[local_rows]
