"""Stage 5: the flat node arrays that predict and get saved.

The grower's node objects are turned into one ``Tree`` of parallel arrays; a ``Forest``
concatenates every tree's arrays so one numba kernel predicts all trees. Node ``i`` is a
leaf when ``feature[i] == -1``. An internal node sends ``x <= threshold`` left, NaN (and
absent sparse entries) to the ``default_left`` side, everything else right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from fusionrec.gbdt.binning import MISSING_CODE

THRESHOLD_ALL = float(np.finfo(np.float64).max)  # split that sends every present value left
ROWS_PER_PREDICT_BLOCK = 64  # rows walked together through one tree, to keep its nodes in cache

class ValueNodes(NamedTuple):
    """A tree's (or forest's) splits on raw values, as prediction kernels walk them: node ``i``
    sends ``x <= threshold[i]`` to ``left[i]``, NaN the ``default_left[i]`` way; ``feature[i] < 0``
    marks a leaf."""

    feature: np.ndarray  # int32
    threshold: np.ndarray  # float64
    left: np.ndarray
    right: np.ndarray
    default_left: np.ndarray  # uint8


class CodeNodes(NamedTuple):
    """A tree's splits on bin codes, as the training data's margin updates walk them: code
    ``<= split_bin[i]`` goes left, ``MISSING_CODE`` the ``default_left[i]`` way."""

    feature: np.ndarray  # int32
    split_bin: np.ndarray  # int32
    left: np.ndarray
    right: np.ndarray
    default_left: np.ndarray  # uint8


_ARRAY_FIELDS = {
    "feature": np.int32,
    "threshold": np.float64,
    "split_bin": np.int32,
    "left": np.int32,
    "right": np.int32,
    "default_left": np.uint8,
    "value": np.float64,
    "cover": np.float64,
    "gain": np.float64,
}


@dataclass
class Tree:
    feature: np.ndarray
    threshold: np.ndarray
    split_bin: np.ndarray
    left: np.ndarray
    right: np.ndarray
    default_left: np.ndarray
    value: np.ndarray
    cover: np.ndarray
    gain: np.ndarray

    @property
    def n_nodes(self) -> int:
        return int(self.feature.shape[0])

    @property
    def value_nodes(self) -> ValueNodes:
        return ValueNodes(self.feature, self.threshold, self.left, self.right, self.default_left)

    @property
    def code_nodes(self) -> CodeNodes:
        return CodeNodes(self.feature, self.split_bin, self.left, self.right, self.default_left)

    @property
    def n_leaves(self) -> int:
        return int(np.count_nonzero(self.feature < 0))

    def depth(self) -> int:
        depths = np.zeros(self.n_nodes, dtype=np.int64)
        for i in range(self.n_nodes):
            if self.feature[i] >= 0:
                depths[self.left[i]] = depths[i] + 1
                depths[self.right[i]] = depths[i] + 1
        return int(depths.max(initial=0))

    def to_dict(self) -> dict:
        return {name: getattr(self, name).tolist() for name in _ARRAY_FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> "Tree":
        arrays = {name: np.asarray(data[name], dtype=dtype) for name, dtype in _ARRAY_FIELDS.items()}
        return cls(**arrays)

    @classmethod
    def single_leaf(cls, value: float, cover: float) -> "Tree":
        return cls(
            feature=np.array([-1], np.int32),
            threshold=np.zeros(1),
            split_bin=np.full(1, -1, np.int32),
            left=np.full(1, -1, np.int32),
            right=np.full(1, -1, np.int32),
            default_left=np.zeros(1, np.uint8),
            value=np.array([value], np.float64),
            cover=np.array([cover], np.float64),
            gain=np.zeros(1),
        )


def add_forest_margin(values, forest: "Forest", out: np.ndarray) -> None:
    """out[i, group] += the forest's leaf values for row i (dense float32 or CSR values)."""
    if forest.tree_start.shape[0] == 0:
        return
    f = forest
    if sp.issparse(values):
        predict_csr(
            values.indptr, values.indices, values.data, values.shape[1],
            f.nodes, f.value, f.tree_start, f.tree_group, out,
        )  # fmt: skip
    else:
        predict_dense(values, f.packed_int, f.packed_float, f.value, f.tree_start, f.tree_group, f.tree_depth, out)


@dataclass
class Forest:
    """All trees' nodes in one set of arrays; child ids are absolute."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    default_left: np.ndarray
    value: np.ndarray
    cover: np.ndarray
    tree_start: np.ndarray
    tree_group: np.ndarray
    n_groups: int
    trees: list = field(default_factory=list)
    packed: np.ndarray | None = None  # (n_nodes, 4) int32: feature, threshold bits, left, default_left
    tree_depth: np.ndarray | None = None

    @property
    def nodes(self) -> ValueNodes:
        """Every tree's nodes, child ids absolute."""
        return ValueNodes(self.feature, self.threshold, self.left, self.right, self.default_left)

    @property
    def packed_int(self) -> np.ndarray:
        return self.packed

    @property
    def packed_float(self) -> np.ndarray:
        return self.packed.view(np.float32)

    @classmethod
    def of(cls, trees: list[Tree], groups: list[int], n_groups: int) -> "Forest":
        starts = np.zeros(len(trees), dtype=np.int64)
        offset = 0
        for i, tree in enumerate(trees):
            starts[i] = offset
            offset += tree.n_nodes

        def cat(name, dtype):
            if not trees:
                return np.zeros(0, dtype)
            return np.concatenate([getattr(t, name) for t in trees]).astype(dtype, copy=False)

        left = cat("left", np.int64)
        right = cat("right", np.int64)
        for i, tree in enumerate(trees):
            s, e = starts[i], starts[i] + tree.n_nodes
            internal = tree.feature >= 0
            left[s:e][internal] += s
            right[s:e][internal] += s
        feature = cat("feature", np.int32)
        threshold = cat("threshold", np.float64)
        default_left = cat("default_left", np.uint8)
        # Leaves are fixed points of the branch-free step (feature 0, threshold +inf, left =
        # itself, default left), so every row can take exactly depth(tree) steps.
        leaf = feature < 0
        packed = np.zeros((feature.shape[0], 4), dtype=np.int32)
        packed[:, 0] = np.where(leaf, 0, feature)
        packed.view(np.float32)[:, 1] = np.where(leaf, np.float32(np.inf), float32_at_most(threshold))
        packed[:, 2] = np.where(leaf, np.arange(feature.shape[0]), left)
        packed[:, 3] = np.where(leaf, 1, default_left)
        depths = np.array([tree.depth() for tree in trees], dtype=np.int32)
        return cls(
            feature=cat("feature", np.int32),
            threshold=cat("threshold", np.float64),
            left=left,
            right=right,
            default_left=cat("default_left", np.uint8),
            value=cat("value", np.float64),
            cover=cat("cover", np.float64),
            tree_start=starts,
            tree_group=np.asarray(groups, dtype=np.int32),
            n_groups=n_groups,
            trees=trees,
            packed=packed,
            tree_depth=depths,
        )


def float32_at_most(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 <= each threshold.

    For a float32 input x, ``x <= t`` holds exactly when ``x <= float32_at_most(t)``, so
    prediction can compare in float32 with 16-byte nodes and still match training.
    """
    with np.errstate(over="ignore"):  # THRESHOLD_ALL becomes inf, then the largest float32
        as_f32 = threshold.astype(np.float32)
    too_big = as_f32.astype(np.float64) > threshold
    as_f32[too_big] = np.nextafter(as_f32[too_big], np.float32(-np.inf))
    return as_f32


@njit(cache=True, inline="always")
def _leaf_of(x_row, node, nodes):
    """The leaf ``x_row`` reaches from ``node`` through ``nodes`` (a ValueNodes)."""
    while nodes.feature[node] >= 0:
        x = x_row[nodes.feature[node]]
        if np.isnan(x):
            node = nodes.left[node] if nodes.default_left[node] else nodes.right[node]
        elif np.float64(x) <= nodes.threshold[node]:
            node = nodes.left[node]
        else:
            node = nodes.right[node]
    return node


@njit(parallel=True, cache=True, nogil=True)
def predict_dense(X, nodes_int, nodes_float, value, tree_start, tree_group, tree_depth, out):
    """out[i, group] += leaf value of every tree, trees added in order (deterministic).

    A block of rows walks each tree level by level. The step is branch-free (the child
    taken is data-dependent, so a branch would mispredict half the time) and children are
    adjacent (right = left + 1); NaN compares false and so goes right unless default_left.
    Thresholds are float32 rounded down (``float32_at_most``), exact for float32 X.
    """
    n = X.shape[0]
    n_trees = tree_start.shape[0]
    n_blocks = (n + ROWS_PER_PREDICT_BLOCK - 1) // ROWS_PER_PREDICT_BLOCK
    for blk in prange(n_blocks):
        start = blk * ROWS_PER_PREDICT_BLOCK
        m = min(n, start + ROWS_PER_PREDICT_BLOCK) - start
        nodes = np.empty(ROWS_PER_PREDICT_BLOCK, dtype=np.int32)
        for t in range(n_trees):
            root = tree_start[t]
            g = tree_group[t]
            for j in range(m):
                nodes[j] = root
            for _ in range(tree_depth[t]):
                for j in range(m):
                    node = nodes[j]
                    x = X[start + j, nodes_int[node, 0]]
                    nodes[j] = nodes_int[node, 2] + np.int32(x > nodes_float[node, 1]) + np.int32(x != x) * (1 - nodes_int[node, 3])
            for j in range(m):
                out[start + j, g] += value[nodes[j]]


@njit(parallel=True, cache=True, nogil=True)
def predict_csr(indptr, indices, data, n_features, nodes, value, tree_start, tree_group, out):
    """predict_dense for CSR rows: each block of rows is densified into a small NaN buffer."""
    n = indptr.shape[0] - 1
    n_trees = tree_start.shape[0]
    n_blocks = (n + 63) // 64
    for blk in prange(n_blocks):
        start = blk * 64
        stop = min(n, start + 64)
        buffer = np.full((stop - start, n_features), np.nan, dtype=np.float32)
        for i in range(start, stop):
            for k in range(indptr[i], indptr[i + 1]):
                buffer[i - start, indices[k]] = data[k]
        for t in range(n_trees):
            root = tree_start[t]
            g = tree_group[t]
            for i in range(start, stop):
                leaf = _leaf_of(buffer[i - start], root, nodes)
                out[i, g] += value[leaf]


@njit(parallel=True, cache=True, nogil=True)
def predict_leaf_dense(X, nodes, tree_start, out):
    """out[i, t] = index of the leaf row i reaches in tree t (relative to the tree)."""
    n = X.shape[0]
    n_trees = tree_start.shape[0]
    for i in prange(n):
        for t in range(n_trees):
            root = tree_start[t]
            out[i, t] = _leaf_of(X[i], root, nodes) - root


@njit(cache=True, inline="always")
def _leaf_by_codes_dense(codes, r, node, nodes):
    """The leaf row r of bin ``codes`` reaches from ``node`` through ``nodes`` (a CodeNodes)."""
    while nodes.feature[node] >= 0:
        code = codes[r, nodes.feature[node]]
        go_left = nodes.default_left[node] != 0 if code == MISSING_CODE else code <= nodes.split_bin[node]
        node = nodes.left[node] if go_left else nodes.right[node]
    return node


@njit(parallel=True, cache=True)
def add_leaf_values_by_codes_dense(codes, nodes, value, out):
    """out[r] += the leaf value of row r of bin ``codes``, walking a tree grown on those bins."""
    for r in prange(codes.shape[0]):
        out[r] += value[_leaf_by_codes_dense(codes, r, 0, nodes)]


@njit(parallel=True, cache=True)
def add_leaf_values_by_codes_dense_from(codes, start_nodes, nodes, value, out):
    """add_leaf_values_by_codes_dense, row r's walk starting at ``start_nodes[r]`` (a node
    row r is known to reach: its leaf, or a split whose rows were never moved; see
    ``TreeGrower.reached_nodes``): a step or none instead of the whole depth."""
    for r in prange(codes.shape[0]):
        out[r] += value[_leaf_by_codes_dense(codes, r, start_nodes[r], nodes)]


@njit(parallel=True, cache=True)
def add_leaf_values_by_codes_sparse(indptr, indices, codes, nodes, value, out):
    """add_leaf_values_by_codes_dense for the codes of a sparse page's present entries."""
    for r in prange(indptr.shape[0] - 1):
        node = 0
        while nodes.feature[node] >= 0:
            code = MISSING_CODE
            for e in range(indptr[r], indptr[r + 1]):
                if indices[e] == nodes.feature[node]:
                    code = codes[e]
                    break
            go_left = nodes.default_left[node] != 0 if code == MISSING_CODE else code <= nodes.split_bin[node]
            node = nodes.left[node] if go_left else nodes.right[node]
        out[r] += value[node]


@njit(parallel=True, cache=True)
def add_leaf_values_from_nodes(rows, starts, stops, start_nodes, codes_by_feature, nodes, value, out):
    """out[r] += the leaf value of each row ``r`` in ``rows[starts[s]:stops[s]]``, walking the
    tree from node ``start_nodes[s]`` (a node the segment's rows all reach) on the column-major
    bin codes (n_features, n_rows): a segment's ascending rows read one column forward."""
    for s in prange(starts.shape[0]):
        for i in range(starts[s], stops[s]):
            r = rows[i]
            node = start_nodes[s]
            while nodes.feature[node] >= 0:
                code = codes_by_feature[nodes.feature[node], r]
                go_left = nodes.default_left[node] != 0 if code == MISSING_CODE else code <= nodes.split_bin[node]
                node = nodes.left[node] if go_left else nodes.right[node]
            out[r] += value[node]
