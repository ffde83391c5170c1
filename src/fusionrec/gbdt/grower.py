"""Stage 4: grow one tree from gradient statistics, asking a split finder for the splits.

The grower keeps each node's rows as a contiguous segment of one ``rows`` array, split
stably into the other buffer of a pair when the node splits. Which split a node takes is
the split finder's business (``finders.hist``, ``finders.exact``, ``finders.approx``): the
grower only asks for the best splits of a set of nodes and for which rows go left.
Children that cannot split further (depth limit, too little hessian) are never asked about.

``grow_policy='depthwise'`` expands level by level (``max_depth``); ``'lossguide'``
always expands the leaf with the largest gain (``max_leaves``), as LightGBM does. After
growing, splits whose gain is below ``gamma`` are pruned bottom-up, as XGBoost's pruner does.
"""

from __future__ import annotations

import heapq

import numpy as np
from numba import njit, prange

from fusionrec.gbdt._jit import parallel_and_serial
from fusionrec.gbdt.binning import MISSING_CODE
from fusionrec.gbdt.split import NO_SPLIT_BIN, Regularization, Split, leaf_weight
from fusionrec.gbdt.tree import Tree

PARTITION_BLOCK = 16384


def n_partition_blocks(n_rows: int) -> int:
    return max(1, min(32, -(-n_rows // PARTITION_BLOCK)))


def decide_by_codes(rows, start, stop, column, split_bin, default_left, go_left, n_blocks):
    """go_left[i - start] for rows[start:stop] of a split at a Dataset bin (hist, approx global).

    ``column`` is the split feature's codes, contiguous (a row of the column-major codes):
    a node's rows are ascending, so reading it walks memory forward.
    """
    n = stop - start
    block = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        for i in range(start + b * block, min(stop, start + (b + 1) * block)):
            c = column[rows[i]]
            go_left[i - start] = default_left if c == MISSING_CODE else c <= split_bin


def decide_by_values(rows, start, stop, column, threshold, default_left, go_left, n_blocks):
    """go_left for a split at a raw threshold (exact, approx local): x <= threshold; NaN -> default."""
    n = stop - start
    block = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        for i in range(start + b * block, min(stop, start + (b + 1) * block)):
            x = column[rows[i]]
            go_left[i - start] = default_left if np.isnan(x) else x <= threshold


def partition_rows(rows, gh, out_rows, out_gh, start, stop, go_left, n_blocks):
    """Stable partition of rows[start:stop] into out_rows[start:stop] by ``go_left``, left first.

    Returns the left count. ``gh`` holds the rows' gradient pairs in the same order as
    ``rows`` and moves with them into ``out_gh``, so histogram passes read gradients
    sequentially. Writing to the other buffer of a pair (instead of in place) saves a
    copy-back; node segments are disjoint, so the buffers' other segments are untouched.
    Two passes over fixed-size blocks (count, then scatter at prefix offsets) so the
    result does not depend on the number of threads.
    """
    n = stop - start
    block = (n + n_blocks - 1) // n_blocks
    left_counts = np.zeros(n_blocks + 1, dtype=np.int64)
    for b in prange(n_blocks):
        count = 0
        for i in range(b * block, min(n, (b + 1) * block)):
            count += go_left[i]
        left_counts[b + 1] = count
    for b in range(n_blocks):
        left_counts[b + 1] += left_counts[b]
    n_left = left_counts[n_blocks]
    for b in prange(n_blocks):
        s = b * block
        e = min(n, s + block)
        li = start + left_counts[b]
        ri = start + n_left + (s - left_counts[b])
        for i in range(s, e):
            if go_left[i]:
                j = li
                li += 1
            else:
                j = ri
                ri += 1
            out_rows[j] = rows[start + i]
            out_gh[j, 0] = gh[start + i, 0]
            out_gh[j, 1] = gh[start + i, 1]
    return n_left


@njit(parallel=True, cache=True, nogil=True)
def mark_segments(rows, starts, stops, values, out):
    """out[rows[i]] = values[s] for i in each segment [starts[s], stops[s])."""
    for s in prange(starts.shape[0]):
        for i in range(starts[s], stops[s]):
            out[rows[i]] = values[s]


# Row flags of a sparse split feature: set for its present entries, ABSENT (the default
# direction) for everyone else; the column is marked before deciding and cleared after.
ABSENT, GOES_LEFT, GOES_RIGHT = 0, 1, 2


def decide_by_flags(rows, start, stop, flags, default_left, go_left, n_blocks):
    """go_left from per-row flags (sparse split features: only present entries are marked)."""
    n = stop - start
    block = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        for i in range(start + b * block, min(stop, start + (b + 1) * block)):
            flag = flags[rows[i]]
            go_left[i - start] = default_left if flag == ABSENT else flag == GOES_LEFT


decide_by_flags, decide_by_flags_serial = parallel_and_serial(decide_by_flags)
decide_by_codes, decide_by_codes_serial = parallel_and_serial(decide_by_codes)
decide_by_values, decide_by_values_serial = parallel_and_serial(decide_by_values)
partition_rows, partition_rows_serial = parallel_and_serial(partition_rows)


def kernel_for(n_rows: int, threaded, serial):
    """The threaded kernel for nodes big enough to share, else its serial twin."""
    return threaded if n_rows >= PARTITION_BLOCK else serial


@njit(cache=True, nogil=True)
def segment_sums(gh, start, stop):
    """(sum of gradients, sum of hessians) of gh[start:stop] in float64, in row order."""
    g = 0.0
    h = 0.0
    for i in range(start, stop):
        g += gh[i, 0]
        h += gh[i, 1]
    return g, h


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
    """Row buffers reused across trees: fresh large arrays would page-fault on every use."""

    def __init__(self, n_rows: int):
        self.n_rows = n_rows
        self.go_left = np.empty(n_rows, np.bool_)
        # two (row ids, gradient pairs in node order) buffers; a split moves a node's segment
        # from one to the other
        self.rows_pair = (np.empty(n_rows, np.int32), np.empty(n_rows, np.int32))
        self.gh_pair = (np.empty((n_rows, 2), np.float32), np.empty((n_rows, 2), np.float32))

    def fits(self, n_rows: int) -> bool:
        return self.n_rows >= n_rows


class Node:
    """A node while the tree grows: its rows are ``rows_pair[buffer][start:stop]``."""

    __slots__ = ("id", "start", "stop", "buffer", "sum_g", "sum_h", "depth", "split", "left", "right", "parent")

    def __init__(self, node_id, start, stop, buffer, sum_g, sum_h, depth, parent=None):
        self.id = node_id
        self.start, self.stop = start, stop
        self.buffer = buffer  # which of the workspace's buffer pair holds the node's rows
        self.sum_g, self.sum_h = sum_g, sum_h
        self.depth = depth
        self.split: Split | None = None
        self.left = self.right = None
        self.parent = parent

    @property
    def n_rows(self) -> int:
        return self.stop - self.start


class SplitFinder:
    """What the grower asks of a split finder (histogram, exact or approximate).

    The grower owns the rows: each node's rows, with their gradient pairs in the same
    order, are a segment of ``grower.rows_pair[node.buffer]`` / ``grower.gh_pair[...]``;
    ``grower.gh`` holds the gradient pairs by row id. A finder binds its data and constants
    when it is made, and per tree in ``begin_tree``; the grower never knows which one it is.
    """

    tree_bins = False  # True when Split.split_bin is a bin of the training Dataset's cuts

    def begin_tree(self, grower: "TreeGrower") -> None:
        self.grower = grower

    def root_sums(self, root: Node) -> tuple[float, float]:
        """Total gradient and hessian of the root's rows."""
        rows_gh = self.grower.gh_pair[root.buffer]
        return segment_sums(rows_gh, root.start, root.stop)

    def find_splits(self, nodes: list[Node], masks: list[np.ndarray]) -> None:
        """Set ``node.split`` (or leave None) for each node; masks[i] over the tree's features."""
        raise NotImplementedError

    def decide(self, node: Node, split: Split, go_left: np.ndarray) -> None:
        """go_left[i] for the node's i-th row."""
        raise NotImplementedError

    def forget(self, node: Node) -> None:
        """The node will never be split or serve as a parent again: free what it holds."""

    def end_tree(self) -> None:
        self.grower = None


class TreeGrower:
    """Grows one tree with a split finder. ``rows`` are the (sub)sampled row ids;
    ``all_rows`` says rows == arange(n).

    Depthwise growth asks the finder for the splits of a whole level at once (the exact
    finder scans each column once per level for all of its nodes); lossguide asks for the
    two children of the split it just made.
    """

    def __init__(self, finder: SplitFinder, gh, rows, all_rows, sampler: FeatureSampler, params, workspace: Workspace):
        self.finder = finder
        self.gh = gh
        self.workspace = workspace
        n = rows.shape[0]
        self.n_rows = n
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
        self._go_left = workspace.go_left
        self._bind(sampler, params)

    def _bind(self, sampler: FeatureSampler, params) -> None:
        """The tree's constants: its features and the growth parameters."""
        self.sampler = sampler
        self.features = sampler.tree_features
        p = params
        self.reg = Regularization.of(p)
        self.gamma = float(p["gamma"])
        self.max_depth = int(p["max_depth"])
        self.max_leaves = int(p["max_leaves"])
        self.lossguide = p["grow_policy"] == "lossguide"
        self.learning_rate = float(p["learning_rate"])
        self.nodes: list[Node] = []
        # False: the splits into the depth limit's leaves do not move rows, so the leaves'
        # segments are not their rows (the caller adds the tree's values by walking it instead)
        self.route_leaves = True
        self._unrouted: set[int] = set()  # ids of the nodes split without moving their rows

    def _can_split(self, node: Node) -> bool:
        if self.max_depth > 0 and node.depth >= self.max_depth:
            return False
        # hessian, not row count, decides: a weight-2 row must act like two rows
        if node.n_rows < 1 or node.sum_h <= 0.0 or node.sum_h < 2.0 * self.reg.min_child_weight:
            return False
        return True

    def _find(self, nodes: list[Node]) -> None:
        if nodes:
            self.finder.find_splits(nodes, [self.sampler.node_mask(node.depth) for node in nodes])
        for node in nodes:
            if node.split is None:
                self.finder.forget(node)

    def _new_node(self, start, stop, buffer, sum_g, sum_h, depth, parent=None) -> Node:
        node = Node(len(self.nodes), start, stop, buffer, sum_g, sum_h, depth, parent)
        self.nodes.append(node)
        return node

    # -- growth ---------------------------------------------------------------------------
    def grow(self) -> tuple[Tree, list[tuple[int, int, int]]]:
        """The tree (leaf values scaled by the learning rate) and (leaf node, start, stop) segments."""
        self.finder.begin_tree(self)
        root = self._new_node(0, self.n_rows, 0, 0.0, 0.0, 0)
        root.sum_g, root.sum_h = self.finder.root_sums(root)
        self._find([root] if self._can_split(root) else [])
        if self.lossguide:
            self._grow_lossguide(root)
        else:
            self._grow_depthwise(root)
        for node in self.nodes:
            self.finder.forget(node)
        self._gather_leaf_rows()
        self.finder.end_tree()
        self._prune()
        return self._flatten()

    def _grow_depthwise(self, root: Node) -> None:
        level = [root]
        n_leaves = 1
        while level:
            children = []
            for node in level:
                if node.split is None:
                    continue
                if self.max_leaves and n_leaves >= self.max_leaves:
                    node.split = None
                    continue
                n_leaves += 1
                # the split that reaches max_leaves makes leaves that will never split
                expand = self.max_leaves == 0 or n_leaves < self.max_leaves
                children.extend(self._split_and_expand(node, expand))
            self._find(children)
            level = children

    def _grow_lossguide(self, root: Node) -> None:
        frontier: list = []
        if root.split is not None:
            heapq.heappush(frontier, ((-root.split.gain, root.id), root))
        n_leaves = 1
        while frontier and (self.max_leaves == 0 or n_leaves < self.max_leaves):
            _, node = heapq.heappop(frontier)
            n_leaves += 1
            expand = self.max_leaves == 0 or n_leaves < self.max_leaves
            children = self._split_and_expand(node, expand)
            self._find(children)
            for child in children:
                if child.split is not None:
                    heapq.heappush(frontier, ((-child.split.gain, child.id), child))

    def _split_and_expand(self, node: Node, expand: bool) -> list[Node]:
        """Split ``node``; its children that may split in turn."""
        children = [child for child in self._split(node) if expand and self._can_split(child)]
        if not children:
            self.finder.forget(node)
        return children

    def _gather_leaf_rows(self) -> None:
        """Every leaf's rows into ``self.rows``; leaves tile [0, n), so after pruning a
        collapsed node's segment there holds exactly its rows too."""
        for node in self.nodes:
            if node.left is None and node.buffer == 1 and (node.parent is None or node.parent.id not in self._unrouted):
                # (a leaf of an unrouted split holds no rows: copying its segment would overwrite its parent's)
                self.rows[node.start : node.stop] = self.rows_pair[1][node.start : node.stop]

    def reached_nodes(self, out: np.ndarray) -> None:
        """After ``grow``: out[r] = the node of the grown tree (its flat index, after pruning)
        that row r is known to reach: its leaf, or the node whose split into the depth limit
        moved no rows (``route_leaves`` False), from which one step on the codes finds the
        leaf. Rows not grown on keep their ``out`` value."""
        has_children = {node.parent.id for node in self.nodes if node.parent is not None}
        segments: tuple[list, list] = ([], [])  # per buffer: (start, stop, flat node)
        for node in self.nodes:
            if node.parent is not None and node.parent.id in self._unrouted:
                continue  # never given rows
            if node.id in has_children and node.id not in self._unrouted:
                continue  # its rows moved on to its children
            at = node
            while at.id not in self.tree_index:  # pruned away: the ancestor it collapsed into is the leaf
                at = at.parent
            segments[node.buffer].append((node.start, node.stop, self.tree_index[at.id]))
        for buffer, found in enumerate(segments):
            if found:
                starts, stops, values = (np.array(column, np.int64) for column in zip(*found))
                mark_segments(self.rows_pair[buffer], starts, stops, values, out)

    def _partition(self, node: Node) -> int:
        """Move the node's rows, left ones first, into the other buffer; the number gone left."""
        source, target = node.buffer, 1 - node.buffer
        go_left = self._go_left[: node.n_rows]
        self.finder.decide(node, node.split, go_left)
        return int(
            kernel_for(node.n_rows, partition_rows, partition_rows_serial)(
                self.rows_pair[source], self.gh_pair[source], self.rows_pair[target], self.gh_pair[target],
                node.start, node.stop, go_left, n_partition_blocks(node.n_rows),
            )
        )  # fmt: skip

    def _split(self, node: Node) -> tuple[Node, Node]:
        split = node.split
        target = 1 - node.buffer
        if not self.route_leaves and 0 < self.max_depth <= node.depth + 1:
            mid = node.start  # children at the depth limit: their rows are not moved (see route_leaves)
            self._unrouted.add(node.id)
        else:
            mid = node.start + self._partition(node)
        left = self._new_node(node.start, mid, target, split.left_g, split.left_h, node.depth + 1, node)
        right = self._new_node(mid, node.stop, target, node.sum_g - split.left_g, node.sum_h - split.left_h, node.depth + 1, node)
        node.left, node.right = left, right
        return left, right

    def _prune(self) -> None:
        """Collapse splits with gain < gamma whose children are both leaves, bottom-up."""
        if self.gamma <= 0.0:
            return
        changed = True
        while changed:
            changed = False
            for node in self.nodes:
                if node.left is not None and node.left.left is None and node.right.left is None:
                    if node.split.gain < self.gamma:
                        node.left = node.right = None
                        changed = True

    def _flatten(self) -> tuple[Tree, list[tuple[int, int, int]]]:
        order: list[Node] = []
        queue = [self.nodes[0]]
        while queue:  # breadth-first numbering
            node = queue.pop(0)
            order.append(node)
            if node.left is not None:
                queue.extend((node.left, node.right))
        index = {node.id: i for i, node in enumerate(order)}
        self.tree_index = index  # grower node id -> the flat tree's node (pruned-away nodes absent)
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
        reg = self.reg
        for i, node in enumerate(order):
            tree.cover[i] = node.sum_h
            weight = leaf_weight(node.sum_g, node.sum_h, reg.reg_lambda, reg.reg_alpha, reg.max_delta_step)
            tree.value[i] = self.learning_rate * weight
            if node.left is None:
                segments.append((i, node.start, node.stop))
                continue
            split = node.split
            tree.feature[i] = split.feature
            tree.split_bin[i] = split.split_bin if self.finder.tree_bins else NO_SPLIT_BIN
            tree.threshold[i] = split.threshold
            tree.default_left[i] = split.default_left
            tree.gain[i] = split.gain
            tree.left[i] = index[node.left.id]
            tree.right[i] = index[node.right.id]
        return tree, segments
