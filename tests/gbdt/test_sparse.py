"""Sparse input (CSR) trains on its present entries only, for every tree method."""

import numpy as np
import pytest
import scipy.sparse as sp

from fusionrec.gbdt import Dataset, train
from fusionrec.gbdt.binning import SparseCodes


def one_hot_heavy(rng, n=4000, n_fields=8, per_field=300):
    """One-hot fields with skewed (Zipf) category frequencies, plus one numeric column with gaps."""
    cols = np.column_stack([f * per_field + np.minimum(rng.zipf(1.3, n) - 1, per_field - 1) for f in range(n_fields)])
    data = np.ones(cols.size, np.float32)
    numeric = rng.normal(size=n).astype(np.float32)
    has_numeric = rng.random(n) < 0.7
    rows = np.repeat(np.arange(n), n_fields)
    all_rows = np.r_[rows, np.flatnonzero(has_numeric)]
    all_cols = np.r_[cols.ravel(), np.full(has_numeric.sum(), n_fields * per_field)]
    all_data = np.r_[data, numeric[has_numeric]]
    X = sp.csr_matrix((all_data, (all_rows, all_cols)), shape=(n, n_fields * per_field + 1), dtype=np.float32)
    weights = rng.normal(size=X.shape[1])
    y = (X @ weights + rng.normal(size=n) > 0).astype(float)
    return X, y


@pytest.mark.parametrize("params", [
    {"tree_method": "hist"},
    {"tree_method": "hist", "colsample_bytree": 0.5, "subsample": 0.8},  # the per-entry feature lookup path
    {"tree_method": "hist", "grow_policy": "lossguide", "max_leaves": 20, "max_depth": 0},
    {"tree_method": "exact"},
    {"tree_method": "approx"},
    {"tree_method": "approx", "approx_proposal": "local"},
])  # fmt: skip
def test_csr_trains_the_same_trees_as_dense_with_nan(rng, params):
    X, y = one_hot_heavy(rng)
    dense = X.toarray()
    dense[dense == 0] = np.nan  # absent entries are missing values, as in XGBoost
    p = {"objective": "binary:logistic", "max_depth": 5, **params}
    sparse_model = train(p, Dataset(X, y), 6)
    dense_model = train(p, Dataset(dense, y), 6)
    for a, b in zip(sparse_model.trees, dense_model.trees):
        np.testing.assert_array_equal(a.feature, b.feature)
        np.testing.assert_array_equal(a.default_left, b.default_left)
    np.testing.assert_allclose(sparse_model.predict(X), dense_model.predict(dense), rtol=1e-6, atol=1e-7)


def test_sparse_codes_cost_the_present_entries(rng):
    X, y = one_hot_heavy(rng)
    data = Dataset(X, y)
    assert isinstance(data.codes, SparseCodes)
    assert data.codes.codes.nbytes == X.nnz  # one byte per present entry, not n_rows x n_features
    np.testing.assert_array_equal(data.codes_by_feature.toarray(), data.codes.toarray().T)
