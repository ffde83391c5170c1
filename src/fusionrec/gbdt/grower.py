"""Stage 4: grow one tree from gradient statistics over binned data.

The grower keeps each node's rows as a contiguous segment of one ``rows`` array, split in
place and stably when the node splits. Histograms flow one way: the root's is built, then
for every split the smaller child's is built and the larger child's is the parent's minus
it. Children that cannot split further (depth limit, too little hessian) get no histogram.

``grow_policy='depthwise'`` expands level by level (``max_depth``); ``'lossguide'``
always expands the leaf with the largest gain (``max_leaves``), as LightGBM does. After
growing, splits whose gain is below ``gamma`` are pruned bottom-up, as XGBoost's pruner does.
"""

from __future__ import annotations

import heapq

import numpy as np
from numba import njit, prange

from fusionrec.gbdt.histogram import (
    build_histogram,
    MAX_BLOCKS,
    build_histogram_all_rows,
    n_blocks_for,
    new_histogram,
    subtract_histogram,
)
from fusionrec.gbdt.split import GAIN_EPS, find_best_split, leaf_weight
from fusionrec.gbdt.tree import THRESHOLD_ALL, Tree

PARTITION_BLOCK = 16384


@njit(parallel=True, cache=True, nogil=True)
def partition_rows(rows, gh, out_rows, out_gh, start, stop, column, split_bin, default_left, go_left, n_blocks):
    """Stable partition of rows[start:stop] into out_rows[start:stop], left rows first.

    Returns the left count. ``gh`` holds the rows' gradient pairs in the same order as
    ``rows`` and moves with them into ``out_gh``, so histogram passes read gradients
    sequentially. Writing to the other buffer of a pair (instead of in place) saves a
    copy-back; node segments are disjoint, so the buffers' other segments are untouched.

    ``column`` is the split feature's codes, contiguous (a row of the column-major codes):
    a node's rows are ascending, so reading it walks memory forward.

    Two passes over fixed-size blocks (count, then scatter at prefix offsets) so the
    result does not depend on the number of threads.
    """
    n = stop - start
    block = (n + n_blocks - 1) // n_blocks
    left_counts = np.zeros(n_blocks + 1, dtype=np.int64)
    for b in prange(n_blocks):
        s = start + b * block
        e = min(stop, s + block)
        count = 0
        for i in range(s, e):
            c = column[rows[i]]
            left = default_left if c == 255 else c <= split_bin
            go_left[i - start] = left
            count += left
        left_counts[b + 1] = count
    for b in range(n_blocks):
        left_counts[b + 1] += left_counts[b]
    n_left = left_counts[n_blocks]
    for b in prange(n_blocks):
        s = start + b * block
        e = min(stop, s + block)
        li = start + left_counts[b]
        ri = start + n_left + (b * block - left_counts[b])
        for i in range(s, e):
            if go_left[i - start]:
                j = li
                li += 1
            else:
                j = ri
                ri += 1
            out_rows[j] = rows[i]
            out_gh[j, 0] = gh[i, 0]
            out_gh[j, 1] = gh[i, 1]
    return n_left


@njit(parallel=True, cache=True, nogil=True)
def add_leaf_values(rows, starts, stops, values, margin):
    """margin[r] += value of the leaf whose segment holds row r (leaves own disjoint rows)."""
    for leaf in prange(starts.shape[0]):
        v = values[leaf]
        for i in range(starts[leaf], stops[leaf]):
            margin[rows[i]] += v


class FeatureSampler:
    """Column subsampling by tree, by level and by node (colsample_*), from one RNG."""

    def __init__(self, rng: np.random.Generator, n_features: int, bytree: float, bylevel: float, bynode: float):
        self.rng = rng
        self.n_features = n_features
        self.bytree, self.bylevel, self.bynode = bytree, bylevel, bynode
        self.tree_features = np.arange(n_features, dtype=np.int32)
        self._level_masks: dict[int, np.ndarray] = {}

    @staticmethod
    def _n_of(fraction: float, n: int) -> int:
        return max(1, int(fraction * n + 0.5))

    def new_tree(self) -> np.ndarray:
        """Features of the next tree (sorted); the histograms cover exactly these."""
        if self.bytree < 1.0:
            chosen = self.rng.choice(self.n_features, self._n_of(self.bytree, self.n_features), replace=False)
            self.tree_features = np.sort(chosen).astype(np.int32)
        else:
            self.tree_features = np.arange(self.n_features, dtype=np.int32)
        self._level_masks = {}
        return self.tree_features

    def node_mask(self, depth: int) -> np.ndarray:
        """uint8 mask over ``tree_features``: the features a node at ``depth`` may split on."""
        n = self.tree_features.shape[0]
        level = self._level_masks.get(depth)
        if level is None:
            level = np.ones(n, dtype=np.uint8)
            if self.bylevel < 1.0:
                level[:] = 0
                level[self.rng.choice(n, self._n_of(self.bylevel, n), replace=False)] = 1
            self._level_masks[depth] = level
        if self.bynode >= 1.0:
            return level
        allowed = np.flatnonzero(level)
        mask = np.zeros(n, dtype=np.uint8)
        mask[allowed[self.rng.choice(allowed.shape[0], self._n_of(self.bynode, allowed.shape[0]), replace=False)]] = 1
        return mask


class Workspace:
    """Buffers reused across nodes and trees: fresh large arrays would page-fault on every use."""

    def __init__(self, n_rows: int, n_features: int):
        self.n_rows, self.n_features = n_rows, n_features
        self.block_hists = np.empty((MAX_BLOCKS, n_features, 256, 2))
        self.go_left = np.empty(n_rows, np.bool_)
        # two (row ids, gradient pairs in node order) buffers; a split moves a node's segment
        # from one to the other
        self.rows_pair = (np.empty(n_rows, np.int32), np.empty(n_rows, np.int32))
        self.gh_pair = (np.empty((n_rows, 2), np.float32), np.empty((n_rows, 2), np.float32))
        self._free: list[np.ndarray] = []

    def fits(self, n_rows: int, n_features: int) -> bool:
        return self.n_rows >= n_rows and self.n_features >= n_features

    def take_histogram(self, n_feat: int) -> np.ndarray:
        while self._free:
            hist = self._free.pop()
            if hist.shape[0] == n_feat:
                return hist
        return new_histogram(n_feat)

    def give_back(self, hist: np.ndarray) -> None:
        self._free.append(hist)


class _Node:
    __slots__ = ("id", "start", "stop", "buffer", "sum_g", "sum_h", "depth", "hist", "split", "left", "right")

    def __init__(self, node_id, start, stop, buffer, sum_g, sum_h, depth):
        self.id = node_id
        self.start, self.stop = start, stop
        self.buffer = buffer  # which of the workspace's buffer pair holds the node's rows
        self.sum_g, self.sum_h = sum_g, sum_h
        self.depth = depth
        self.hist = None
        self.split = None  # (gain, feature, bin, default_left, left_g, left_h)
        self.left = self.right = None


class TreeGrower:
    """Grows one tree. ``rows`` are the (sub)sampled row ids; ``all_rows`` says rows == arange(n)."""

    def __init__(self, codes, codes_by_feature, n_bins, cuts, gh, rows, all_rows, sampler: FeatureSampler, params, workspace: "Workspace"):
        self.codes = codes
        self.codes_by_feature = codes_by_feature
        self.n_bins = n_bins
        self.cuts = cuts
        self.gh = gh
        self.workspace = workspace
        n = rows.shape[0]
        self.rows_pair = tuple(buffer[:n] for buffer in workspace.rows_pair)
        self.gh_pair = tuple(buffer[:n] for buffer in workspace.gh_pair)
        self.rows = self.rows_pair[0]  # after grow(): every leaf's rows, as segments
        self.rows[:] = rows
        # gh_pair[0][i] is row rows[i]'s pair; partitions move both together
        if all_rows:
            self.gh_pair[0][:] = gh
        else:
            np.take(gh, rows, axis=0, out=self.gh_pair[0])
        self.all_rows = all_rows
        self.sampler = sampler
        self.features = sampler.tree_features
        p = params
        self.reg_lambda = float(p["reg_lambda"])
        self.reg_alpha = float(p["reg_alpha"])
        self.max_delta_step = float(p["max_delta_step"])
        self.min_child_weight = float(p["min_child_weight"])
        self.gamma = float(p["gamma"])
        self.max_depth = int(p["max_depth"])
        self.max_leaves = int(p["max_leaves"])
        self.lossguide = p["grow_policy"] == "lossguide"
        self.learning_rate = float(p["learning_rate"])
        n_feat = self.features.shape[0]
        self._gain = np.empty(n_feat)
        self._bin = np.empty(n_feat, np.int32)
        self._default_left = np.empty(n_feat, np.bool_)
        self._left_g = np.empty(n_feat)
        self._left_h = np.empty(n_feat)
        self._go_left = workspace.go_left
        self.nodes: list[_Node] = []

    # -- histogram helpers -------------------------------------------------------------
    def _build(self, node: _Node, whole: bool) -> np.ndarray:
        n_feat = self.features.shape[0]
        n_rows = node.stop - node.start
        blocks = self.workspace.block_hists[: n_blocks_for(n_rows), :n_feat]
        hist = self.workspace.take_histogram(n_feat)
        if whole:
            build_histogram_all_rows(self.codes, self.gh, self.features, blocks, hist)
        else:
            rows, gh = self.rows_pair[node.buffer], self.gh_pair[node.buffer]
            build_histogram(self.codes, rows[node.start : node.stop], gh[node.start : node.stop], self.features, blocks, hist)
        return hist

    def _can_split(self, node: _Node) -> bool:
        if self.max_depth > 0 and node.depth >= self.max_depth:
            return False
        # hessian, not row count, decides: a weight-2 row must act like two rows
        if node.stop - node.start < 1 or node.sum_h <= 0.0 or node.sum_h < 2.0 * self.min_child_weight:
            return False
        return True

    def _evaluate(self, node: _Node) -> None:
        mask = self.sampler.node_mask(node.depth)
        find_best_split(
            node.hist, self.features, mask, self.n_bins, node.sum_g, node.sum_h,
            self.reg_lambda, self.reg_alpha, self.max_delta_step, self.min_child_weight,
            self._gain, self._bin, self._default_left, self._left_g, self._left_h,
        )  # fmt: skip
        k = int(np.argmax(self._gain))  # first maximum: ties go to the lowest feature id
        if self._gain[k] > GAIN_EPS:
            node.split = (
                float(self._gain[k]), int(self.features[k]), int(self._bin[k]),
                bool(self._default_left[k]), float(self._left_g[k]), float(self._left_h[k]),
            )  # fmt: skip

    def _new_node(self, start, stop, buffer, sum_g, sum_h, depth) -> _Node:
        node = _Node(len(self.nodes), start, stop, buffer, sum_g, sum_h, depth)
        self.nodes.append(node)
        return node

    # -- growth ---------------------------------------------------------------------------
    def grow(self) -> tuple[Tree, list[tuple[int, int, int]]]:
        """The tree (leaf values scaled by the learning rate) and (leaf node, start, stop) segments."""
        n = self.rows.shape[0]
        root = self._new_node(0, n, 0, 0.0, 0.0, 0)
        root.hist = self._build(root, self.all_rows)
        first = root.hist[0]
        root.sum_g = float(first[:, 0].sum())
        root.sum_h = float(first[:, 1].sum())
        if self._can_split(root):
            self._evaluate(root)
        n_leaves = 1
        frontier: list = []
        counter = 0

        def push(node):
            nonlocal counter
            if node.split is not None:
                key = (-node.split[0], node.id) if self.lossguide else (node.depth, node.id)
                heapq.heappush(frontier, (key, counter, node))
                counter += 1

        push(root)
        while frontier and (self.max_leaves == 0 or n_leaves < self.max_leaves):
            _, _, node = heapq.heappop(frontier)
            n_leaves += 1
            # the split that reaches max_leaves makes leaves that will never split: no histograms
            self._split(node, expand=self.max_leaves == 0 or n_leaves < self.max_leaves)
            push(node.left)
            push(node.right)
        for node in self.nodes:
            if node.hist is not None:
                self.workspace.give_back(node.hist)
                node.hist = None
            if node.left is None and node.buffer == 1:
                # every leaf's rows into self.rows; leaves tile [0, n), so after pruning a
                # collapsed node's segment there holds exactly its rows too
                self.rows[node.start : node.stop] = self.rows_pair[1][node.start : node.stop]
        self._prune()
        return self._flatten()

    def _split(self, node: _Node, expand: bool) -> None:
        gain, feature, split_bin, default_left, left_g, left_h = node.split
        n = node.stop - node.start
        source, target = node.buffer, 1 - node.buffer
        n_left = int(
            partition_rows(
                self.rows_pair[source], self.gh_pair[source], self.rows_pair[target], self.gh_pair[target],
                node.start, node.stop, self.codes_by_feature[feature], split_bin, default_left, self._go_left,
                max(1, min(32, -(-n // PARTITION_BLOCK))),
            )
        )  # fmt: skip
        mid = node.start + n_left
        left = self._new_node(node.start, mid, target, left_g, left_h, node.depth + 1)
        right = self._new_node(mid, node.stop, target, node.sum_g - left_g, node.sum_h - left_h, node.depth + 1)
        node.left, node.right = left, right
        left_ok, right_ok = expand and self._can_split(left), expand and self._can_split(right)
        parent_hist, node.hist = node.hist, None
        if left_ok or right_ok:
            small, large = (left, right) if n_left <= n - n_left else (right, left)
            small.hist = self._build(small, False)
            if right_ok if large is right else left_ok:
                subtract_histogram(parent_hist, small.hist, parent_hist)  # parent's buffer becomes the sibling's
                large.hist, parent_hist = parent_hist, None
        if parent_hist is not None:
            self.workspace.give_back(parent_hist)
        if left_ok:
            self._evaluate(left)
        if right_ok:
            self._evaluate(right)
        for child in (left, right):
            if child.split is None and child.hist is not None:
                self.workspace.give_back(child.hist)
                child.hist = None

    def _prune(self) -> None:
        """Collapse splits with gain < gamma whose children are both leaves, bottom-up."""
        if self.gamma <= 0.0:
            return
        changed = True
        while changed:
            changed = False
            for node in self.nodes:
                if node.left is not None and node.left.left is None and node.right.left is None:
                    if node.split[0] < self.gamma:
                        node.left = node.right = None
                        changed = True

    def _flatten(self) -> tuple[Tree, list[tuple[int, int, int]]]:
        order: list[_Node] = []
        queue = [self.nodes[0]]
        while queue:  # breadth-first numbering
            node = queue.pop(0)
            order.append(node)
            if node.left is not None:
                queue.extend((node.left, node.right))
        index = {node.id: i for i, node in enumerate(order)}
        m = len(order)
        tree = Tree(
            feature=np.full(m, -1, np.int32),
            threshold=np.zeros(m),
            split_bin=np.full(m, -1, np.int32),
            left=np.full(m, -1, np.int32),
            right=np.full(m, -1, np.int32),
            default_left=np.zeros(m, np.uint8),
            value=np.zeros(m),
            cover=np.zeros(m),
            gain=np.zeros(m),
        )
        segments = []
        for i, node in enumerate(order):
            tree.cover[i] = node.sum_h
            weight = leaf_weight(node.sum_g, node.sum_h, self.reg_lambda, self.reg_alpha, self.max_delta_step)
            tree.value[i] = self.learning_rate * weight
            if node.left is None:
                segments.append((i, node.start, node.stop))
                continue
            gain, feature, split_bin, default_left, _, _ = node.split
            cut = self.cuts[feature]
            tree.feature[i] = feature
            tree.split_bin[i] = split_bin
            tree.threshold[i] = cut[split_bin] if split_bin < cut.shape[0] else THRESHOLD_ALL
            tree.default_left[i] = default_left
            tree.gain[i] = gain
            tree.left[i] = index[node.left.id]
            tree.right[i] = index[node.right.id]
        return tree, segments
