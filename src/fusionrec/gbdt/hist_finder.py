"""``tree_method="hist"``: split finding on gradient histograms of pre-binned codes.

Histograms flow one way: the root's is built, then for every split the smaller child's is
built and the larger child's is the parent's minus it (the subtraction trick). A child
that will not be split gets no histogram unless its sibling needs it for the subtraction.
"""

from __future__ import annotations

import numpy as np

from fusionrec.gbdt.grower import Node, SplitFinder, decide_by_codes, n_partition_blocks
from fusionrec.gbdt.histogram import (
    MAX_BLOCKS,
    build_histogram,
    build_histogram_all_rows,
    n_blocks_for,
    new_histogram,
    subtract_histogram,
)
from fusionrec.gbdt.split import CANDIDATE_DTYPE, Regularization, Split, best_candidate, find_best_split
from fusionrec.gbdt.tree import THRESHOLD_ALL


class HistogramSplitFinder(SplitFinder):
    """Splits at bin boundaries of ``codes`` (n_rows, n_features) uint8.

    ``codes_by_feature`` is the column-major copy used to route rows; ``n_bins`` the value
    bins per feature; ``cuts[f][b]`` the threshold of a split at bin b.
    """

    tree_bins = True

    def __init__(self, codes: np.ndarray, codes_by_feature: np.ndarray, n_bins: np.ndarray, cuts: list[np.ndarray], reg: Regularization):
        self.codes = codes
        self.codes_by_feature = codes_by_feature
        self.n_bins = n_bins
        self.cuts = cuts
        self.reg = reg
        self._free: list[np.ndarray] = []
        self._block_hists = np.empty((MAX_BLOCKS, codes.shape[1], 256, 2))
        self.hists: dict[int, np.ndarray] = {}

    # -- histogram pool ---------------------------------------------------------------------
    def _take(self, n_feat: int) -> np.ndarray:
        while self._free:
            hist = self._free.pop()
            if hist.shape[0] == n_feat:
                return hist
        return new_histogram(n_feat)

    def _give_back(self, hist: np.ndarray | None) -> None:
        if hist is not None:
            self._free.append(hist)

    def _build(self, node: Node, whole: bool) -> np.ndarray:
        grower = self.grower
        features = grower.features
        blocks = self._block_hists[: n_blocks_for(node.n_rows), : features.shape[0]]
        hist = self._take(features.shape[0])
        if whole:
            build_histogram_all_rows(self.codes, grower.gh, features, blocks, hist)
        else:
            rows, gh = grower.rows_pair[node.buffer], grower.gh_pair[node.buffer]
            build_histogram(self.codes, rows[node.start : node.stop], gh[node.start : node.stop], features, blocks, hist)
        return hist

    def _cut_of(self, feature: int, split_bin: int) -> float:
        cut = self.cuts[feature]
        return float(cut[split_bin]) if split_bin < cut.shape[0] else THRESHOLD_ALL

    # -- SplitFinder ----------------------------------------------------------------------------
    def begin_tree(self, grower) -> None:
        super().begin_tree(grower)
        self._candidates = np.empty(grower.features.shape[0], CANDIDATE_DTYPE)

    def root_sums(self, root: Node) -> tuple[float, float]:
        hist = self._build(root, self.grower.all_rows)
        self.hists[root.id] = hist
        return float(hist[0, :, 0].sum()), float(hist[0, :, 1].sum())

    def find_splits(self, nodes: list[Node], masks: list[np.ndarray]) -> None:
        wanted = {node.id for node in nodes}
        for node in nodes:
            if node.id not in self.hists:
                self._children_histograms(node.parent, wanted)
        for node, mask in zip(nodes, masks):
            find_best_split(
                self.hists[node.id], self.grower.features, mask, self.n_bins, node.sum_g, node.sum_h, self.reg, self._candidates
            )
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
        decide_by_codes(
            rows, node.start, node.stop, self.codes_by_feature[split.feature], split.split_bin, split.default_left,
            go_left, n_partition_blocks(node.n_rows),
        )  # fmt: skip

    def forget(self, node: Node) -> None:
        self._give_back(self.hists.pop(node.id, None))
