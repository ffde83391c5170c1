import numba
import numpy as np
import pytest
import scipy.sparse as sp

from fusionrec.gbdt.binning import MISSING_CODE, SparseCodes
from fusionrec.gbdt.histogram import (
    NOT_IN_TREE,
    build_histogram,
    build_histogram_all_rows,
    build_histogram_sparse,
    entry_slots,
    histogram_layout,
    n_blocks_for,
    new_histogram,
    subtract_histogram,
)
from fusionrec.gbdt.split import CANDIDATE_DTYPE, Regularization, find_best_split, leaf_score, leaf_weight

N_BINS = np.array([255, 7, 1, 40, 255, 255, 255, 3, 255], dtype=np.int32)  # value bins per feature


def numpy_histogram(codes, rows, gh, features):
    """Dense layout: per tree feature 256 slots indexed by the code (255: missing)."""
    parts = []
    for f in features:
        part = np.zeros((256, 2))
        np.add.at(part[:, 0], codes[rows, f], gh[rows, 0].astype(np.float64))
        np.add.at(part[:, 1], codes[rows, f], gh[rows, 1].astype(np.float64))
        parts.append(part)
    return np.concatenate(parts)


def compact(hist, features):
    """The dense layout's histogram in the compact layout: each feature's bins, then missing."""
    return np.concatenate([np.vstack([hist[k * 256 : k * 256 + N_BINS[f]], hist[k * 256 + 255]]) for k, f in enumerate(features)])


def build(codes, rows, gh, features, compact_layout=False):
    offsets, bins, _ = histogram_layout(features, N_BINS, compact=compact_layout)
    blocks = np.empty((n_blocks_for(len(rows)), offsets[-1], 2))
    hist = new_histogram(offsets[-1])
    build_histogram(codes, rows, np.ascontiguousarray(gh[rows]), features, offsets if compact_layout else offsets[:0], bins, blocks, hist)
    return hist


@pytest.fixture
def data(rng):
    n = 70_000  # more than one block of rows
    codes = np.column_stack([rng.integers(0, nb, size=n) for nb in N_BINS]).astype(np.uint8)
    codes[rng.random(codes.shape) < 0.1] = MISSING_CODE
    gh = np.ascontiguousarray(np.column_stack([rng.normal(size=n), rng.random(size=n)]).astype(np.float32))
    return codes, gh


def test_histogram_kernel_matches_numpy(data, rng):
    codes, gh = data
    rows = np.sort(rng.choice(len(codes), 30_000, replace=False)).astype(np.int32)
    features = np.array([0, 2, 3, 8], dtype=np.int32)
    np.testing.assert_allclose(build(codes, rows, gh, features), numpy_histogram(codes, rows, gh, features), rtol=1e-12, atol=1e-9)
    # the compact layout of dense codes holds the same sums
    np.testing.assert_allclose(build(codes, rows, gh, features, compact_layout=True), compact(numpy_histogram(codes, rows, gh, features), features), rtol=1e-12, atol=1e-9)


def test_layouts_give_each_feature_its_bins_and_one_missing_slot():
    features = np.array([1, 2, 7], dtype=np.int32)
    offsets, bins, missing = histogram_layout(features, N_BINS, compact=True)
    np.testing.assert_array_equal(bins, [7, 1, 3])
    np.testing.assert_array_equal(offsets, [0, 8, 10, 14])  # a one-hot column costs 2 slots, not 256
    np.testing.assert_array_equal(missing, [7, 9, 13])
    offsets, bins, missing = histogram_layout(features, N_BINS, compact=False)
    np.testing.assert_array_equal(offsets, [0, 256, 512, 768])  # the code is the slot
    np.testing.assert_array_equal(missing, [255, 511, 767])


def test_all_rows_kernel_matches_row_list_kernel(data):
    codes, gh = data
    features = np.arange(codes.shape[1], dtype=np.int32)
    rows = np.arange(len(codes), dtype=np.int32)
    offsets, _, _ = histogram_layout(features, N_BINS, compact=False)
    blocks = np.empty((n_blocks_for(len(rows)), offsets[-1], 2))
    whole = new_histogram(offsets[-1])
    build_histogram_all_rows(codes, gh, features, offsets[:0], N_BINS[features], blocks, whole)
    np.testing.assert_array_equal(whole, build(codes, rows, gh, features))


def test_sparse_kernel_equals_dense_with_missing_codes(data, rng):
    codes, gh = data
    dense = codes.copy()
    present = dense != MISSING_CODE
    csr = sp.csr_matrix((dense[present].astype(np.float32) + 1.0, np.nonzero(present)[1], np.r_[0, np.cumsum(present.sum(1))]), shape=dense.shape)
    sparse = SparseCodes(csr.indptr, csr.indices.astype(np.int32), dense[present], dense.shape)
    rows = np.sort(rng.choice(len(codes), 20_000, replace=False)).astype(np.int32)
    features = np.array([0, 3, 7], dtype=np.int32)
    offsets, bins, _ = histogram_layout(features, N_BINS, compact=True)
    position = np.full(codes.shape[1], NOT_IN_TREE, np.int32)
    position[features] = np.arange(3)
    node_gh = np.ascontiguousarray(gh[rows])
    totals = node_gh.astype(np.float64).sum(axis=0)
    hist = new_histogram(offsets[-1])
    blocks = np.empty((n_blocks_for(len(rows)), offsets[-1], 2))
    expected = compact(build(codes, rows, gh, features), features)
    build_histogram_sparse(sparse.indptr, sparse.indices, sparse.codes, np.empty(0, np.uint16), rows, node_gh, position, offsets, bins, totals[0], totals[1], blocks, hist)
    np.testing.assert_allclose(hist, expected, rtol=1e-9, atol=1e-6)
    # every feature in the tree: each entry's slot precomputed once, the same sums
    every = np.arange(codes.shape[1], dtype=np.int32)
    offsets, bins, _ = histogram_layout(every, N_BINS, compact=True)
    slots = np.empty(sparse.codes.shape[0], np.uint32)
    entry_slots(sparse.indices, sparse.codes, offsets, slots)
    hist = new_histogram(offsets[-1])
    blocks = np.empty((n_blocks_for(len(rows)), offsets[-1], 2))
    build_histogram_sparse(sparse.indptr, sparse.indices, sparse.codes, slots, rows, node_gh, every, offsets, bins, totals[0], totals[1], blocks, hist)
    np.testing.assert_allclose(hist, compact(build(codes, rows, gh, every), every), rtol=1e-9, atol=1e-6)


def test_subtraction_equals_building_the_sibling(data, rng):
    codes, gh = data
    features = np.arange(codes.shape[1], dtype=np.int32)
    parent = np.arange(len(codes), dtype=np.int32)
    mask = rng.random(len(codes)) < 0.3
    left, right = parent[mask], parent[~mask]
    whole = build(codes, parent, gh, features)
    sibling = new_histogram(whole.shape[0])
    subtract_histogram(whole, build(codes, left, gh, features), sibling)
    np.testing.assert_allclose(sibling, build(codes, right, gh, features), rtol=1e-9, atol=1e-7)


def test_histogram_is_bit_identical_for_any_thread_count(data):
    codes, gh = data
    features = np.arange(codes.shape[1], dtype=np.int32)
    rows = np.arange(0, len(codes), 2, dtype=np.int32)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = build(codes, rows, gh, features)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = build(codes, rows, gh, features)
    finally:
        numba.set_num_threads(previous)
    assert one.tobytes() == many.tobytes()


def naive_best_split(parts, lam, alpha, mds, mcw):
    """Brute force over every bin and both missing directions (Algorithm 3); parts[k] is
    feature k's (value bins + missing slot, 2) histogram."""
    total_g, total_h = parts[0].sum(axis=0)
    parent = leaf_score(total_g, total_h, lam, alpha, mds)
    best = (-np.inf, None)
    for k, part in enumerate(parts):
        n_bins = part.shape[0] - 1
        miss = part[n_bins]
        for b in range(n_bins):
            below = part[: b + 1].sum(axis=0)
            for miss_left in (False, True):
                if miss_left and (miss[1] <= 0 or b == n_bins - 1):
                    continue
                if not miss_left and b == n_bins - 1 and miss[1] <= 0:
                    continue
                lg, lh = below + (miss if miss_left else 0)
                rg, rh = total_g - lg, total_h - lh
                if min(lh, rh) < mcw or lh <= 0 or rh <= 0:
                    continue
                gain = leaf_score(lg, lh, lam, alpha, mds) + leaf_score(rg, rh, lam, alpha, mds) - parent
                if gain > best[0] + 1e-12:
                    best = (gain, (k, b))
    return best


@pytest.mark.parametrize("lam,alpha,mds,mcw", [(1.0, 0.0, 0.0, 1.0), (0.0, 0.5, 0.0, 0.0), (2.0, 0.1, 0.3, 5.0)])
def test_best_split_matches_brute_force(rng, lam, alpha, mds, mcw):
    n_rows = 3000
    features = np.array([1, 2, 3, 7], dtype=np.int32)
    codes = np.column_stack([rng.integers(0, nb, n_rows) for nb in N_BINS]).astype(np.uint8)
    codes[rng.random(codes.shape) < 0.15] = MISSING_CODE
    gh = np.column_stack([rng.normal(size=n_rows) + codes[:, 1] * 0.05, rng.random(n_rows)]).astype(np.float32)
    hist = compact(build(codes, np.arange(n_rows, dtype=np.int32), np.ascontiguousarray(gh), features), features)
    layout = histogram_layout(features, N_BINS, compact=True)
    offsets = layout.offsets
    parts = [hist[offsets[k] : offsets[k + 1]] for k in range(len(features))]
    sum_g, sum_h = parts[0].sum(axis=0)
    for n_chunks in (1, 3, 64):  # the chunking of features never changes the answer
        out = np.empty(n_chunks, CANDIDATE_DTYPE)
        find_best_split(hist, layout, np.ones(len(features), np.uint8), sum_g, sum_h, Regularization(lam, alpha, mds, mcw), out)
        best = out[int(np.argmax(out["gain"]))]
        gain, where = naive_best_split(parts, lam, alpha, mds, mcw)
        assert best["gain"] == pytest.approx(gain, rel=1e-9)
        assert (best["feature"], best["bin"]) == where


def test_leaf_weight_is_the_papers_closed_form():
    assert leaf_weight(4.0, 3.0, 1.0, 0.0, 0.0) == pytest.approx(-4.0 / 4.0)  # eq. (5)
    assert leaf_weight(4.0, 3.0, 1.0, 1.0, 0.0) == pytest.approx(-3.0 / 4.0)  # L1 soft threshold
    assert leaf_weight(4.0, 3.0, 1.0, 0.0, 0.5) == pytest.approx(-0.5)  # max_delta_step clip
    assert leaf_score(4.0, 3.0, 1.0, 0.0, 0.0) == pytest.approx(16.0 / 4.0)  # eq. (6) without 1/2
