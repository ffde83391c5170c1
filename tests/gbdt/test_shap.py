import itertools
import math

import numpy as np
import scipy.sparse as sp

from fusionrec.gbdt import Dataset, train


def conditional_expectation(tree, x, known):
    """E[f(x) | features in ``known`` fixed], unknown features following cover (TreeSHAP's definition)."""

    def walk(node):
        if tree.feature[node] < 0:
            return tree.value[node]
        f = tree.feature[node]
        if f in known:
            v = x[f]
            left = tree.default_left[node] if np.isnan(v) else v <= tree.threshold[node]
            return walk(tree.left[node] if left else tree.right[node])
        l, r = tree.left[node], tree.right[node]
        return (tree.cover[l] * walk(l) + tree.cover[r] * walk(r)) / tree.cover[node]

    return walk(0)


def brute_force_shap(booster, x):
    n = booster.n_features
    phi = np.zeros(n + 1)
    for tree in booster.trees:
        for i in range(n):
            others = [j for j in range(n) if j != i]
            for size in range(n):
                for subset in itertools.combinations(others, size):
                    weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                    with_i = conditional_expectation(tree, x, set(subset) | {i})
                    without = conditional_expectation(tree, x, set(subset))
                    phi[i] += weight * (with_i - without)
        phi[n] += conditional_expectation(tree, x, set())
    phi[n] += booster.base_margin()[0]
    return phi


def test_tree_shap_equals_brute_force_shapley_values(rng):
    X = rng.normal(size=(400, 4)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = np.nan_to_num(X[:, 0] * X[:, 1]) + np.nan_to_num(X[:, 2]) + rng.normal(scale=0.1, size=400)
    b = train({"max_depth": 4}, Dataset(X, y), 3)
    contribs = b.predict(X[:8], pred_contribs=True)
    for row in range(8):
        np.testing.assert_allclose(contribs[row], brute_force_shap(b, X[row]), rtol=1e-9, atol=1e-9)


def test_contributions_sum_to_margin_dense_sparse_and_multiclass(rng):
    X = rng.normal(size=(600, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(float)
    b = train({"objective": "binary:logistic", "max_depth": 5}, Dataset(X, y), 10)
    np.testing.assert_allclose(b.predict(X, pred_contribs=True).sum(1), b.predict(X, output_margin=True), atol=1e-9)
    dense = np.where(rng.random((300, 5)) < 0.5, 0.0, rng.normal(size=(300, 5)))
    csr = sp.csr_matrix(dense)
    bs = train({"max_depth": 4}, Dataset(csr, dense[:, 0]), 5)
    np.testing.assert_allclose(bs.predict(csr, pred_contribs=True).sum(1), bs.predict(csr, output_margin=True), atol=1e-9)
    yk = np.digitize(X[:, 0], [-0.5, 0.5]).astype(float)
    bk = train({"objective": "multi:softprob", "num_class": 3}, Dataset(X, yk), 4)
    ck = bk.predict(X[:50], pred_contribs=True)
    assert ck.shape == (50, 3, 6)
    np.testing.assert_allclose(ck.sum(2), bk.predict(X[:50], output_margin=True), atol=1e-9)
