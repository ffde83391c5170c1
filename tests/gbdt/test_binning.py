import numpy as np
import scipy.sparse as sp

from fusionrec.gbdt.binning import MISSING_CODE, apply_cuts, compute_cuts, pack_cuts


def naive_codes(values, cuts):
    out = np.empty(values.shape, dtype=np.uint8)
    for j, c in enumerate(cuts):
        col = values[:, j].astype(np.float64)
        codes = np.searchsorted(c, col, side="left")
        codes[np.isnan(col)] = MISSING_CODE
        out[:, j] = codes
    return out


def test_few_distinct_values_get_a_cut_between_each_pair(rng):
    x = rng.choice([1.0, 2.0, 5.0], size=(100, 1)).astype(np.float32)
    cuts = compute_cuts(x, None, 256, 10_000, 0)
    np.testing.assert_array_equal(cuts[0], [1.5, 3.5])


def test_bins_hold_about_equal_weight_and_never_exceed_max_bin(rng):
    x = rng.normal(size=(20_000, 1)).astype(np.float32)
    cuts = compute_cuts(x, None, 16, 100_000, 0)
    assert len(cuts[0]) <= 15
    table, n_cuts = pack_cuts(cuts)
    counts = np.bincount(apply_cuts(x, table, n_cuts)[:, 0], minlength=16)
    assert counts.max() < 2 * counts.min()


def test_weighted_quantiles_follow_the_weights(rng):
    x = np.arange(1000, dtype=np.float32)[:, None]
    w = np.where(x[:, 0] < 500, 9.0, 1.0)  # 90 % of the weight below 500
    cuts = compute_cuts(x, w, 10, 100_000, 0)[0]
    assert np.sum(cuts < 500) >= 8


def test_zero_weight_rows_take_no_part(rng):
    x = rng.normal(size=(300, 2)).astype(np.float32)
    w = np.ones(300)
    w[:100] = 0.0
    with_zero = compute_cuts(x, w, 32, 10_000, 0)
    removed = compute_cuts(x[100:], None, 32, 10_000, 0)
    for a, b in zip(with_zero, removed):
        np.testing.assert_array_equal(a, b)


def test_binning_kernel_matches_naive_searchsorted(rng):
    x = rng.normal(size=(5000, 7)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    cuts = compute_cuts(x, None, 64, 100_000, 0)
    table, n_cuts = pack_cuts(cuts)
    np.testing.assert_array_equal(apply_cuts(x, table, n_cuts), naive_codes(x, cuts))


def test_sparse_binning_treats_absent_entries_as_missing(rng):
    dense = rng.normal(size=(400, 6)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.6] = 0.0
    csr = sp.csr_matrix(dense)
    as_nan = np.where(dense == 0.0, np.nan, dense).astype(np.float32)
    cuts_sparse = compute_cuts(csr, None, 32, 10_000, 0)
    cuts_dense = compute_cuts(as_nan, None, 32, 10_000, 0)
    for a, b in zip(cuts_sparse, cuts_dense):
        np.testing.assert_array_equal(a, b)
    table, n_cuts = pack_cuts(cuts_sparse)
    sparse_codes = apply_cuts(csr, table, n_cuts)
    assert sparse_codes.codes.shape == (csr.nnz,)  # one byte per present entry, never n_rows x n_features
    np.testing.assert_array_equal(sparse_codes.toarray(), apply_cuts(as_nan, table, n_cuts))


def test_all_missing_and_constant_columns(rng):
    x = np.column_stack([np.full(50, np.nan), np.full(50, 3.0)]).astype(np.float32)
    cuts = compute_cuts(x, None, 256, 1000, 0)
    assert cuts[0].size == 0 and cuts[1].size == 0
    table, n_cuts = pack_cuts(cuts)
    codes = apply_cuts(x, table, n_cuts)
    assert (codes[:, 0] == MISSING_CODE).all() and (codes[:, 1] == 0).all()
