"""``tree_method="hist"`` on out-of-core pages (``external.ExternalDataset``).

The same histograms, subtraction trick and split scoring as ``finders.hist`` (this finder is a
``HistogramSplitFinder``), with the codes read from the pages instead of memory. The grower
keeps every node's row ids and gradient pairs in memory; the codes are streamed, one pass
over the pages per step that needs them:

- the root's histogram: one pass; for each page, a node's rows in the page (a slice of its
  ascending row ids) are added with the in-memory kernels;
- then, once the splits of a level are chosen, one pass decides left / right for every row
  of every split node and, from the same page, adds the rows of each node's lighter child (by
  hessian, known from the split) to its histogram; the other child's is the parent's minus it.

So a depthwise tree of depth d reads the pages d + 1 times (the last level only decides;
lossguide: once per split), or d times when the grower does not route the depth limit's
leaves (``route_leaves``) and ``root_pass`` adds the tree with the next tree's root histogram.
Sums run page by page, so they may differ from the in-memory ones in the last bits.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from fusionrec.gbdt.binning import MISSING_CODE, SparseCodes
from fusionrec.gbdt.outofcore.external import ExternalDataset
from fusionrec.gbdt.grower import Node, SplitFinder
from fusionrec.gbdt.finders.hist import HistogramSplitFinder
from fusionrec.gbdt._jit import parallel_and_serial
from fusionrec.gbdt._prefetch import prefetch
from fusionrec.gbdt.histogram import (
    PREFETCH_DISTANCE,
    _add_row,
    build_histogram,
    build_histogram_serial,
    build_histogram_sparse,
    build_histogram_sparse_serial,
    fill_missing_slots,
    n_blocks_for,
)
from fusionrec.gbdt.split import Regularization, Split
from fusionrec.gbdt.tree import Tree, add_leaf_values_by_codes_dense, add_leaf_values_by_codes_dense_from


TASK_ROWS = 32768  # a node's rows in a page are split into tasks of about this many rows ...
PAGE_TASKS = 4  # ... at most this many (shallow levels: few nodes, many rows each)


class PagedHistogramSplitFinder(HistogramSplitFinder):
    """Histogram split finding over an ExternalDataset's pages."""

    tree_bins = True

    def __init__(self, data: ExternalDataset, reg: Regularization):
        super().__init__(None, None, data.n_bins_per_feature, data.cuts, reg, sparse=data.is_sparse)  # codes on disk
        self.data = data
        self._decisions: dict[int, tuple[Split, np.ndarray]] = {}
        # by parent id: (its lighter child is the left one, that child's histogram), built while deciding
        self._child_hists: dict[int, tuple[bool, np.ndarray]] = {}
        self._root_hist: np.ndarray | None = None  # the next root's, from root_pass

    def begin_tree(self, grower) -> None:
        SplitFinder.begin_tree(self, grower)
        n_entries = sum(page.n_entries for page in self.data.pages.pages)
        per_row = n_entries // max(1, self.data.n_rows) if self.sparse else grower.features.shape[0]
        self._begin_layout(grower.features, max(1, per_row))
        self._decisions = {}
        self._child_hists = {}

    def root_sums(self, root: Node) -> tuple[float, float]:
        sums = SplitFinder.root_sums(self, root)
        root.sum_g, root.sum_h = sums
        if self._root_hist is not None:  # made by root_pass
            self.hists[root.id], self._root_hist = self._root_hist, None
        else:
            self.hists[root.id] = self._build_many([root])[root.id]
        return sums

    def root_pass(self, features: np.ndarray, trees: list[tuple[Tree, np.ndarray | None]], margin: np.ndarray,
                  label: np.ndarray, weight: np.ndarray | None, objective, gh: np.ndarray) -> None:  # fmt: skip
        """One pass over the pages for the next tree's start: each page's rows get ``trees``'
        leaf values (trees whose leaves' rows were never routed; each with the nodes its rows
        are known to reach, ``TreeGrower.reached_nodes``, or None: a walk from the root), then
        their gradient pairs (``objective.fill_pairs``, row by row), then join the root's
        histogram over ``features``. It replaces the last level's routing pass of the previous
        tree and the root pass of this one: a pass less per tree. Dense pages, all rows, one
        output group."""
        self._begin_layout(features, features.shape[0])
        hist = self._take()
        hist[:] = 0.0
        page_hist = self._take()
        for start, codes in self.data.iter_codes():
            stop = start + codes.shape[0]
            out = margin[start:stop, 0]
            for tree, reached in trees:
                arrays = (tree.code_nodes, tree.value, out)
                if reached is None:
                    add_leaf_values_by_codes_dense(codes, *arrays)
                else:
                    add_leaf_values_by_codes_dense_from(codes, reached[start:stop], *arrays)
            objective.fill_pairs(margin[start:stop], label[start:stop], None if weight is None else weight[start:stop],
                                 gh[start:stop])  # fmt: skip
            self._add_page_rows(codes, np.arange(stop - start, dtype=np.int32), gh[start:stop], page_hist, features)
            hist += page_hist
        self._give_back(page_hist)
        self._root_hist = hist

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
        max_depth = self.grower.max_depth
        self._decide_many([node for node in nodes if node.split is not None
                           and (self.grower.route_leaves or not 0 < max_depth <= node.depth + 1)])  # fmt: skip

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
        if not self.sparse:  # a level's nodes (or two siblings) share one row buffer
            for buffer in (0, 1):
                same_buffer = [node for node in nodes if node.buffer == buffer]
                if same_buffer:
                    self._decide_level_dense(same_buffer, split, flags, child_hists)
            self._keep_decisions(nodes, split, flags, child_hists)
            return
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
                column = _column_codes(codes, chosen.feature, local)
                go_left[:] = np.where(column == MISSING_CODE, bool(chosen.default_left), column <= chosen.split_bin)
                if node.id in child_hists:
                    is_left, hist = child_hists[node.id]
                    chosen_rows = go_left if is_left else ~go_left
                    if chosen_rows.any():
                        self._add_page_rows(codes, local[chosen_rows], gh[lo:hi][chosen_rows], page_hist)
                        hist += page_hist
        self._give_back(page_hist)
        self._keep_decisions(nodes, split, flags, child_hists)

    def _keep_decisions(self, nodes, split, flags, child_hists) -> None:
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

    def _decide_level_dense(self, nodes: list[Node], split: Split | None, flags: dict, child_hists: dict) -> None:
        """``_decide_many`` for dense pages and nodes in one row buffer (a level, or two
        siblings): one kernel call per page for every node. A node's rows in a page are one
        task, or up to PAGE_TASKS tasks of TASK_ROWS rows when there are many (shallow levels);
        a single-task node adds straight into its child's histogram, kept over the pass; a
        split node's tasks add into scratch histograms summed into it in task order. Tasks
        depend on the rows only, never on the threads, so the sums are thread-count independent."""
        grower = self.grower
        buffer = nodes[0].buffer
        rows_buf, gh_buf = grower.rows_pair[buffer], grower.gh_pair[buffer]
        flat_flags = np.empty(rows_buf.shape[0], np.bool_)
        for node in nodes:
            flags[node.id] = flat_flags[node.start : node.stop]
        chosen = [split or node.split for node in nodes]
        feature = np.array([c.feature for c in chosen], np.int64)
        split_bin = np.array([c.split_bin for c in chosen], np.int64)
        default_left = np.array([bool(c.default_left) for c in chosen], np.bool_)
        take_left = np.array([child_hists.get(node.id, (True, None))[0] for node in nodes], np.bool_)
        adding = [node for node in nodes if node.id in child_hists]
        slot_of = {node.id: k for k, node in enumerate(adding)}
        acc = np.zeros((len(adding) + PAGE_TASKS, self.n_slots, 2))  # the adding nodes', then scratch
        page_starts = np.array([page.row_start for page in self.data.pages.pages] + [self.data.n_rows], np.int32)
        # each node's slice of every page, from one search per node
        bounds = [node.start + np.searchsorted(rows_buf[node.start : node.stop], page_starts) for node in nodes]
        for number, (start, codes) in enumerate(self.data.iter_codes()):
            t_start, t_stop, t_node, t_target, scratch = [], [], [], [], []
            for k, node in enumerate(nodes):
                lo, hi = int(bounds[k][number]), int(bounds[k][number + 1])
                if lo == hi:
                    continue
                n_tasks = min(PAGE_TASKS, max(1, (hi - lo) // TASK_ROWS))
                size = -(-(hi - lo) // n_tasks)
                for t in range(n_tasks):
                    t_start.append(lo + t * size)
                    t_stop.append(min(hi, lo + (t + 1) * size))
                    t_node.append(k)
                    if node.id not in slot_of:
                        t_target.append(-1)
                    elif n_tasks == 1:
                        t_target.append(slot_of[node.id])
                    else:
                        t_target.append(len(adding) + t)
                        scratch.append((t, slot_of[node.id]))
            if not t_start:
                continue
            for t, _ in scratch:
                acc[len(adding) + t] = 0.0
            (_decide_and_add_tasks if len(t_start) > 1 else _decide_and_add_tasks_serial)(
                codes, np.int32(start), rows_buf, gh_buf, flat_flags, np.array(t_start, np.int64), np.array(t_stop, np.int64),
                np.array(t_node, np.int64), np.array(t_target, np.int64), feature, split_bin, default_left, take_left,
                grower.features, self._dense_offsets, self.bins, acc,
            )  # fmt: skip
            for t, k in scratch:  # in task order
                acc[k] += acc[len(adding) + t]
        for node in adding:
            is_left, hist = child_hists[node.id]
            hist[:] = acc[slot_of[node.id]]

    def _add_page_rows(self, codes, local: np.ndarray, gh: np.ndarray, page_hist: np.ndarray, features=None) -> None:
        """page_hist = the histogram of a page's rows ``local`` over ``features`` (default: the
        tree's; missing slots of sparse codes left for fill_missing_slots)."""
        features = self.grower.features if features is None else features
        blocks = self._block_hists[: n_blocks_for(local.shape[0], self.entries_per_row)]
        serial = blocks.shape[0] == 1
        if self.sparse:
            (build_histogram_sparse_serial if serial else build_histogram_sparse)(
                codes.indptr, codes.indices, codes.codes, self._no_slots, local, gh, self._position, self.offsets, self.bins,
                0.0, 0.0, blocks, page_hist,
            )  # fmt: skip
        else:
            (build_histogram_serial if serial else build_histogram)(
                codes, local, gh, features, self._dense_offsets, self.bins, blocks, page_hist
            )


def _page_slice(rows: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """[lo, hi) of a node's ascending row ids (the grower's partitions are stable) in a page."""
    bounds = np.searchsorted(rows, np.array((start, stop), dtype=rows.dtype))
    return int(bounds[0]), int(bounds[1])


def _decide_and_add_tasks(codes, page_start, rows, gh, go_left, t_start, t_stop, t_node, t_target, feature, split_bin,
                          default_left, take_left, features, offsets, bins, acc):  # fmt: skip
    """For each task (rows[t_start:t_stop] of one node, all in this page): go_left of its
    rows by its node's split; with t_target >= 0, its rows going to the node's ``take_left``
    side added to acc[t_target] (one task per target at a time: no two threads share one)."""
    all_features = features.shape[0] == codes.shape[1]
    for t in prange(t_start.shape[0]):
        k = t_node[t]
        f, b, d, take, target = feature[k], split_bin[k], default_left[k], take_left[k], t_target[t]
        ahead = t_stop[t] - PREFETCH_DISTANCE
        for i in range(t_start[t], t_stop[t]):
            if i < ahead:  # a deep node's rows are scattered over the page: hide the wait, as build_histogram does
                prefetch(codes, rows[i + PREFETCH_DISTANCE] - page_start)
            r = rows[i] - page_start
            code = codes[r, f]
            left = d if code == MISSING_CODE else code <= b
            go_left[i] = left
            if target >= 0 and left == take:
                _add_row(codes, r, np.float64(gh[i, 0]), np.float64(gh[i, 1]), features, all_features, offsets, bins, acc[target])


_decide_and_add_tasks, _decide_and_add_tasks_serial = parallel_and_serial(_decide_and_add_tasks)


def _column_codes(codes: np.ndarray | SparseCodes, feature: int, local_rows: np.ndarray) -> np.ndarray:
    """The codes of ``feature`` at ``local_rows`` of a page (MISSING_CODE where absent)."""
    if not isinstance(codes, SparseCodes):
        return codes[local_rows, feature]
    column = np.full(codes.shape[0], MISSING_CODE, np.uint8)
    present = np.flatnonzero(codes.indices == feature)
    row_of_entry = np.searchsorted(codes.indptr, present, side="right") - 1
    column[row_of_entry] = codes.codes[present]
    return column[local_rows]
