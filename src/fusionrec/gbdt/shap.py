"""Exact TreeSHAP feature contributions (Lundberg, Erion & Lee 2018, Algorithm 2).

For every row and tree, the recursion walks all paths, keeping for each feature on the
current path the fraction of "zero" (feature unknown: follow both children weighted by
cover) and "one" (feature known: follow the row's branch) paths, and the permutation
weights of the Shapley formula. Contributions of a row sum, with the bias column, to the
row's margin.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from fusionrec.gbdt.data import dense_with_nan as _dense_with_nan


@njit(cache=True, inline="always")
def _extend(feat, zero, one, pweight, offset, depth, zero_fraction, one_fraction, feature):
    feat[offset + depth] = feature
    zero[offset + depth] = zero_fraction
    one[offset + depth] = one_fraction
    pweight[offset + depth] = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        pweight[offset + i + 1] += one_fraction * pweight[offset + i] * (i + 1) / (depth + 1)
        pweight[offset + i] = zero_fraction * pweight[offset + i] * (depth - i) / (depth + 1)


@njit(cache=True, inline="always")
def _unwind(feat, zero, one, pweight, offset, depth, path_index):
    one_fraction = one[offset + path_index]
    zero_fraction = zero[offset + path_index]
    next_one_portion = pweight[offset + depth]
    for i in range(depth - 1, -1, -1):
        if one_fraction != 0.0:
            tmp = pweight[offset + i]
            pweight[offset + i] = next_one_portion * (depth + 1) / ((i + 1) * one_fraction)
            next_one_portion = tmp - pweight[offset + i] * zero_fraction * (depth - i) / (depth + 1)
        else:
            pweight[offset + i] = pweight[offset + i] * (depth + 1) / (zero_fraction * (depth - i))
    for i in range(path_index, depth):
        feat[offset + i] = feat[offset + i + 1]
        zero[offset + i] = zero[offset + i + 1]
        one[offset + i] = one[offset + i + 1]


@njit(cache=True, inline="always")
def _unwound_sum(zero, one, pweight, offset, depth, path_index):
    one_fraction = one[offset + path_index]
    zero_fraction = zero[offset + path_index]
    next_one_portion = pweight[offset + depth]
    total = 0.0
    for i in range(depth - 1, -1, -1):
        if one_fraction != 0.0:
            tmp = next_one_portion * (depth + 1) / ((i + 1) * one_fraction)
            total += tmp
            next_one_portion = pweight[offset + i] - tmp * zero_fraction * ((depth - i) / (depth + 1))
        elif zero_fraction != 0.0:
            total += (pweight[offset + i] / zero_fraction) / ((depth - i) / (depth + 1))
    return total


# No cache=True here or in the caller: numba's on-disk cache of a self-recursive function
# loads a broken entry point (a segfault on the second process), so these compile per process.
@njit
def _recurse(x, node, nodes, value, cover, phi, feat, zero, one, pweight, parent_offset, depth, parent_zero, parent_one,
             parent_feature):  # fmt: skip
    # copy the parent's path into this level's slot, then extend it by the incoming edge
    offset = parent_offset + depth
    if depth > 0:
        for i in range(depth):
            feat[offset + i] = feat[parent_offset + i]
            zero[offset + i] = zero[parent_offset + i]
            one[offset + i] = one[parent_offset + i]
            pweight[offset + i] = pweight[parent_offset + i]
    _extend(feat, zero, one, pweight, offset, depth, parent_zero, parent_one, parent_feature)
    f = nodes.feature[node]
    if f < 0:
        for i in range(1, depth + 1):
            w = _unwound_sum(zero, one, pweight, offset, depth, i)
            phi[feat[offset + i]] += w * (one[offset + i] - zero[offset + i]) * value[node]
        return
    v = x[f]
    if np.isnan(v):
        goes_left = nodes.default_left[node] != 0
    else:
        goes_left = np.float64(v) <= nodes.threshold[node]
    hot = nodes.left[node] if goes_left else nodes.right[node]
    cold = nodes.right[node] if goes_left else nodes.left[node]
    w = cover[node]
    hot_zero = cover[hot] / w if w > 0 else 0.5
    cold_zero = cover[cold] / w if w > 0 else 0.5
    incoming_zero = 1.0
    incoming_one = 1.0
    path_index = -1
    for k in range(depth + 1):
        if feat[offset + k] == f:
            path_index = k
            break
    if path_index >= 0:
        incoming_zero = zero[offset + path_index]
        incoming_one = one[offset + path_index]
        _unwind(feat, zero, one, pweight, offset, depth, path_index)
        depth -= 1
    _recurse(x, hot, nodes, value, cover, phi, feat, zero, one, pweight, offset, depth + 1, hot_zero * incoming_zero,
             incoming_one, f)  # fmt: skip
    _recurse(x, cold, nodes, value, cover, phi, feat, zero, one, pweight, offset, depth + 1, cold_zero * incoming_zero,
             0.0, f)  # fmt: skip


@njit(cache=True)
def _expected_value(root, feature, left, right, value, cover):
    """Cover-weighted mean leaf value of one tree: its contribution to the bias."""
    total = 0.0
    stack = [root]
    while len(stack) > 0:
        node = stack.pop()
        if feature[node] < 0:
            total += value[node] * cover[node]
        else:
            stack.append(left[node])
            stack.append(right[node])
    return total / cover[root] if cover[root] > 0 else 0.0


@njit(parallel=True)
def _shap_dense(X, nodes, value, cover, tree_start, tree_group, max_depth, out):
    n, n_features = X.shape
    n_trees = tree_start.shape[0]
    path_size = (max_depth + 2) * (max_depth + 3) // 2
    bias = np.zeros((out.shape[1],))
    for t in range(n_trees):
        bias[tree_group[t]] += _expected_value(tree_start[t], nodes.feature, nodes.left, nodes.right, value, cover)
    for i in prange(n):
        feat = np.empty(path_size, np.int64)
        zero = np.empty(path_size)
        one = np.empty(path_size)
        pweight = np.empty(path_size)
        phi = np.zeros(n_features + 1)
        x = X[i]
        for g in range(out.shape[1]):
            phi[:] = 0.0
            for t in range(n_trees):
                if tree_group[t] != g:
                    continue
                _recurse(x, tree_start[t], nodes, value, cover, phi, feat, zero, one, pweight, 0, 0, 1.0, 1.0, -1)
            for j in range(n_features):
                out[i, g, j] = phi[j]
            out[i, g, n_features] += bias[g]


def tree_shap(matrix, forest, n_features: int, base_margin: np.ndarray) -> np.ndarray:
    """Contributions (n_rows, n_groups, n_features + 1); the last column is the bias."""
    values = matrix.values
    k = forest.n_groups
    out = np.zeros((matrix.n_rows, k, n_features + 1))
    out[:, :, n_features] = base_margin[None, :]
    if forest.tree_start.shape[0] == 0:
        return out
    max_depth = max(tree.depth() for tree in forest.trees)
    chunk = 65536  # sparse input is densified a chunk at a time, never whole
    for start in range(0, matrix.n_rows, chunk):
        part = values[start : start + chunk]
        dense = _dense_with_nan(part) if sp.issparse(part) else part
        _shap_dense(
            np.ascontiguousarray(dense, dtype=np.float32), forest.nodes, forest.value, forest.cover, forest.tree_start,
            forest.tree_group, max_depth, out[start : start + chunk],
        )  # fmt: skip
    return out
