import numba
import numpy as np
import pytest

from fusionrec.gbdt.histogram import (
    build_histogram,
    build_histogram_all_rows,
    n_blocks_for,
    new_histogram,
    subtract_histogram,
)
from fusionrec.gbdt.split import CANDIDATE_DTYPE, Regularization, find_best_split, leaf_score, leaf_weight


def numpy_histogram(codes, rows, gh, features):
    hist = np.zeros((len(features), 256, 2))
    for k, f in enumerate(features):
        np.add.at(hist[k, :, 0], codes[rows, f], gh[rows, 0].astype(np.float64))
        np.add.at(hist[k, :, 1], codes[rows, f], gh[rows, 1].astype(np.float64))
    return hist


def build(codes, rows, gh, features):
    blocks = np.empty((n_blocks_for(len(rows)), len(features), 256, 2))
    hist = new_histogram(len(features))
    build_histogram(codes, rows, np.ascontiguousarray(gh[rows]), features, blocks, hist)
    return hist


@pytest.fixture
def data(rng):
    n, f = 70_000, 9  # more than one block of rows
    codes = rng.integers(0, 256, size=(n, f), dtype=np.uint8)
    gh = np.ascontiguousarray(np.column_stack([rng.normal(size=n), rng.random(size=n)]).astype(np.float32))
    return codes, gh


def test_histogram_kernel_matches_numpy(data, rng):
    codes, gh = data
    rows = np.sort(rng.choice(len(codes), 30_000, replace=False)).astype(np.int32)
    features = np.array([0, 3, 8], dtype=np.int32)
    np.testing.assert_allclose(build(codes, rows, gh, features), numpy_histogram(codes, rows, gh, features), rtol=1e-12, atol=1e-9)


def test_all_rows_kernel_matches_row_list_kernel(data):
    codes, gh = data
    features = np.arange(codes.shape[1], dtype=np.int32)
    rows = np.arange(len(codes), dtype=np.int32)
    blocks = np.empty((n_blocks_for(len(rows)), len(features), 256, 2))
    whole = new_histogram(len(features))
    build_histogram_all_rows(codes, gh, features, blocks, whole)
    np.testing.assert_array_equal(whole, build(codes, rows, gh, features))


def test_subtraction_equals_building_the_sibling(data, rng):
    codes, gh = data
    features = np.arange(codes.shape[1], dtype=np.int32)
    parent = np.arange(len(codes), dtype=np.int32)
    mask = rng.random(len(codes)) < 0.3
    left, right = parent[mask], parent[~mask]
    sibling = new_histogram(len(features))
    subtract_histogram(build(codes, parent, gh, features), build(codes, left, gh, features), sibling)
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


def naive_best_split(hist, n_bins, lam, alpha, mds, mcw):
    """Brute force over every bin and both missing directions (Algorithm 3)."""
    total_g, total_h = hist[:, :, 0].sum(axis=1)[0], hist[:, :, 1].sum(axis=1)[0]
    parent = leaf_score(total_g, total_h, lam, alpha, mds)
    best = (-np.inf, None)
    for k in range(hist.shape[0]):
        miss = hist[k, 255]
        for b in range(n_bins[k]):
            below = hist[k, : b + 1].sum(axis=0)
            for miss_left in (False, True):
                if miss_left and (miss[1] <= 0 or b == n_bins[k] - 1):
                    continue
                if not miss_left and b == n_bins[k] - 1 and miss[1] <= 0:
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
    n_feat, n_rows = 4, 3000
    n_bins = np.array([5, 17, 1, 40], dtype=np.int32)
    codes = np.column_stack([rng.integers(0, nb, n_rows) for nb in n_bins]).astype(np.uint8)
    codes[rng.random(codes.shape) < 0.15] = 255
    gh = np.column_stack([rng.normal(size=n_rows) + codes[:, 1] * 0.05, rng.random(n_rows)]).astype(np.float32)
    features = np.arange(n_feat, dtype=np.int32)
    hist = build(codes, np.arange(n_rows, dtype=np.int32), np.ascontiguousarray(gh), features)
    sum_g, sum_h = hist[0, :, 0].sum(), hist[0, :, 1].sum()
    out = np.empty(n_feat, CANDIDATE_DTYPE)
    find_best_split(hist, features, np.ones(n_feat, np.uint8), n_bins, sum_g, sum_h, Regularization(lam, alpha, mds, mcw), out)
    k = int(np.argmax(out["gain"]))
    gain, where = naive_best_split(hist, n_bins, lam, alpha, mds, mcw)
    assert out["gain"][k] == pytest.approx(gain, rel=1e-9)
    assert (k, out["bin"][k]) == where


def test_leaf_weight_is_the_papers_closed_form():
    assert leaf_weight(4.0, 3.0, 1.0, 0.0, 0.0) == pytest.approx(-4.0 / 4.0)  # eq. (5)
    assert leaf_weight(4.0, 3.0, 1.0, 1.0, 0.0) == pytest.approx(-3.0 / 4.0)  # L1 soft threshold
    assert leaf_weight(4.0, 3.0, 1.0, 0.0, 0.5) == pytest.approx(-0.5)  # max_delta_step clip
    assert leaf_score(4.0, 3.0, 1.0, 0.0, 0.0) == pytest.approx(16.0 / 4.0)  # eq. (6) without 1/2
