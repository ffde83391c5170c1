"""The grower's leaf segments against a plain-Python walk of the tree it returns."""

import numpy as np
import pytest

from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.boosting import make_split_finder
from fusionrec.gbdt.grower import FeatureSampler, TreeGrower, Workspace
from fusionrec.gbdt.params import resolve_params


def leaf_of(tree, code_row):
    node = 0
    while tree.left[node] >= 0:
        code = code_row[tree.feature[node]]
        go_left = tree.default_left[node] if code == 255 else code <= tree.split_bin[node]
        node = tree.left[node] if go_left else tree.right[node]
    return node


@pytest.mark.parametrize(
    "extra",
    [
        {"max_depth": 5},
        {"grow_policy": "lossguide", "max_leaves": 31, "max_depth": 0},
        {"grow_policy": "lossguide", "max_leaves": 31, "max_depth": 0, "gamma": 2.0},  # pruning collapses nodes
        {"max_depth": 6, "gamma": 5.0},
    ],
)
@pytest.mark.parametrize("subsample", [1.0, 0.6])
def test_leaf_segments_hold_exactly_the_rows_routed_to_each_leaf(rng, extra, subsample):
    n = 5000
    X = rng.normal(size=(n, 6)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) ** 2 + rng.normal(size=n) > 1).astype(float)
    data = Dataset(X, y)
    params = resolve_params({"objective": "binary:logistic", **extra})
    gh = np.column_stack([rng.normal(size=n), rng.random(n) + 0.1]).astype(np.float32)
    rows = np.flatnonzero(rng.random(n) < subsample).astype(np.int32)
    sampler = FeatureSampler(rng, data.n_features, 1.0, 1.0, 1.0)
    sampler.new_tree()
    workspace = Workspace(n)
    finder = make_split_finder(params, data)
    for _ in range(2):  # a reused workspace and finder must not leak the previous tree's rows
        grower = TreeGrower(finder, gh, rows, rows.shape[0] == n, sampler, params, workspace)
        tree, segments = grower.grow()
        assert len(segments) > 4
        expected = {}
        for r in rows:
            expected.setdefault(leaf_of(tree, data.codes[r]), []).append(r)
        for leaf, start, stop in segments:
            assert sorted(grower.rows[start:stop].tolist()) == sorted(expected.pop(leaf, []))
        assert not expected
        # the leaf values are the regularized weights (eq. 5) of the rows in the segment
        for leaf, start, stop in segments:
            members = grower.rows[start:stop]
            g, h = gh[members, 0].astype(np.float64).sum(), gh[members, 1].astype(np.float64).sum()
            np.testing.assert_allclose(tree.value[leaf], -0.3 * g / (h + 1.0), rtol=1e-6, atol=1e-9)
        gh = gh[::-1].copy()


@pytest.mark.parametrize(
    "extra",
    [
        {"max_depth": 4},
        {"max_depth": 5, "gamma": 4.0},  # pruning collapses splits into the depth limit and above it
        {"max_depth": 3, "max_leaves": 5},
        {"grow_policy": "lossguide", "max_leaves": 9, "max_depth": 3},
        {"grow_policy": "lossguide", "max_leaves": 9, "max_depth": 3, "gamma": 3.0},
    ],
)
def test_reached_nodes_without_routing_the_depth_limit_are_on_each_rows_path(rng, extra):
    """TreeGrower.reached_nodes with route_leaves False: every row's node lies on its path
    through the tree, and is its leaf or one split above it (the split into the depth limit)."""
    n = 4000
    X = rng.normal(size=(n, 5)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) * np.nan_to_num(X[:, 2]) + rng.normal(size=n) > 0).astype(float)
    data = Dataset(X, y)
    params = resolve_params({"objective": "binary:logistic", **extra})
    gh = np.column_stack([rng.normal(size=n), rng.random(n) + 0.1]).astype(np.float32)
    sampler = FeatureSampler(rng, data.n_features, 1.0, 1.0, 1.0)
    sampler.new_tree()
    grower = TreeGrower(make_split_finder(params, data), gh, np.arange(n, dtype=np.int32), True, sampler, params, Workspace(n))
    grower.route_leaves = False
    tree, _ = grower.grow()
    reached = np.full(n, -1, np.int32)
    grower.reached_nodes(reached)
    n_one_step = 0
    for r in range(n):
        path, node = [0], 0
        while tree.left[node] >= 0:
            code = data.codes[r, tree.feature[node]]
            go_left = tree.default_left[node] if code == 255 else code <= tree.split_bin[node]
            node = tree.left[node] if go_left else tree.right[node]
            path.append(node)
        assert reached[r] in path[-2:], (r, reached[r], path)
        n_one_step += reached[r] != path[-1]
    assert n_one_step > 0  # some rows were left at a split, so the walk's step is exercised
