"""tree_method='exact' (Chen & Guestrin 2016, Algorithm 1 on the column block of section 4.1)."""

import numpy as np
import pytest
import scipy.sparse as sp

import fusionrec.gbdt.finders.exact as exact_finder
from fusionrec.gbdt import Dataset, train
from fusionrec.gbdt.column_block import ColumnBlock

PARAMS = {"objective": "binary:logistic", "max_depth": 4, "tree_method": "exact", "base_score": 0.5}


def naive_best_split(X, g, h, lam, mcw):
    """Every distinct value of every feature, missing sent left and right: eq. (7) without 1/2."""
    G, H = g.sum(), h.sum()
    best = (-np.inf, None, None)
    for f in range(X.shape[1]):
        x = X[:, f]
        present = ~np.isnan(x)
        mg, mh = g[~present].sum(), h[~present].sum()
        values = np.unique(x[present])
        for a, b in zip(values[:-1], values[1:]):
            left = present & (x <= a)
            for extra_g, extra_h in ((0.0, 0.0), (mg, mh)) if mh > 0 else ((0.0, 0.0),):
                lg, lh = g[left].sum() + extra_g, h[left].sum() + extra_h
                rg, rh = G - lg, H - lh
                if lh < mcw or rh < mcw:
                    continue
                gain = lg**2 / (lh + lam) + rg**2 / (rh + lam) - G**2 / (H + lam)
                if gain > best[0] + 1e-9:
                    best = (gain, f, (a + b) / 2.0)
    return best


def noisy_data(rng, n=3000, n_features=5, missing=0.1):
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    X[:, 1] = np.round(X[:, 1] * 3)  # ties: equal values must not be split apart
    X[rng.random(X.shape) < missing] = np.nan
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) ** 2 / 4 + rng.normal(size=n)) > 1).astype(float)
    return X, y


def test_root_split_is_the_best_over_every_distinct_value(rng):
    X, y = noisy_data(rng)
    booster = train({**PARAMS, "max_depth": 1, "learning_rate": 1.0}, Dataset(X, y), 1)
    tree = booster.trees[0]
    g, h = 0.5 - y, np.full(len(y), 0.25)  # logistic gradients at base_score 0.5
    gain, feature, threshold = naive_best_split(X.astype(np.float64), g, h, 1.0, 1.0)
    assert tree.feature[0] == feature
    assert tree.threshold[0] == pytest.approx(threshold)
    assert tree.gain[0] == pytest.approx(gain, rel=1e-5)


def test_equals_hist_when_every_value_has_its_own_bin(rng):
    # hist cuts lie midway between neighbouring distinct values when there are fewer than
    # max_bin of them, exactly where the exact finder puts its thresholds
    X = rng.integers(0, 40, size=(5000, 6)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * 0.5 + rng.normal(size=5000) * 10) > 30).astype(float)
    data = Dataset(X, y)
    hist = train({**PARAMS, "tree_method": "hist"}, data, 5)
    exact = train(PARAMS, data, 5)
    np.testing.assert_allclose(exact.predict(X), hist.predict(X), rtol=0, atol=1e-6)
    for a, b in zip(exact.trees, hist.trees):
        np.testing.assert_array_equal(a.feature, b.feature)
        np.testing.assert_array_equal(a.default_left, b.default_left)


def test_matches_xgboost_exact(rng):
    xgb = pytest.importorskip("xgboost")
    X, y = noisy_data(rng, n=4000)
    ours = train(PARAMS, Dataset(X, y), 10).predict(X)
    theirs = xgb.train({**PARAMS, "nthread": 2}, xgb.DMatrix(X, y), 10).predict(xgb.DMatrix(X))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_sparse_input_equals_dense_with_nan(rng):
    dense = rng.normal(size=(2000, 30)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.8] = 0.0
    y = (dense[:, 0] + dense[:, 1] - dense[:, 2] + rng.normal(size=2000) * 0.3 > 0).astype(float)
    csr = sp.csr_matrix(dense)  # absent entries are missing values, as in XGBoost
    with_nan = np.where(dense == 0.0, np.nan, dense).astype(np.float32)
    a = train(PARAMS, Dataset(csr, y), 5)
    b = train(PARAMS, Dataset(with_nan, y), 5)
    np.testing.assert_allclose(a.predict(csr), b.predict(with_nan), atol=1e-7)


def test_column_block_holds_present_entries_sorted(rng):
    X, _ = noisy_data(rng, n=500)
    block = ColumnBlock.from_values(X)
    assert block.n_present == int(np.count_nonzero(~np.isnan(X)))
    for f in range(X.shape[1]):
        values = block.values[block.indptr[f] : block.indptr[f + 1]]
        rows = block.rows[block.indptr[f] : block.indptr[f + 1]]
        assert np.all(np.diff(values) >= 0)
        np.testing.assert_array_equal(X[rows, f], values)
        assert sorted(rows) == list(np.flatnonzero(~np.isnan(X[:, f])))


@pytest.mark.parametrize("extra", [{}, {"reg_alpha": 0.5, "max_delta_step": 0.3}, {"grow_policy": "lossguide", "max_leaves": 12, "max_depth": 0}])
def test_cache_aware_batches_and_thread_count_change_nothing(rng, extra, monkeypatch):
    X, y = noisy_data(rng)
    params = {**PARAMS, **extra, "subsample": 0.8, "colsample_bynode": 0.8}
    reference = train({**params, "n_jobs": 1}, Dataset(X, y), 4).save_raw()
    assert train({**params, "n_jobs": 2}, Dataset(X, y), 4).save_raw() == reference
    monkeypatch.setattr(exact_finder, "CACHE_AWARE_BATCH", 0)
    assert train({**params, "n_jobs": 2}, Dataset(X, y), 4).save_raw() == reference


def test_levels_wider_than_one_scan(rng, monkeypatch):
    X, y = noisy_data(rng, n=4000)
    reference = train({**PARAMS, "max_depth": 6}, Dataset(X, y), 2).save_raw()
    monkeypatch.setattr(exact_finder, "MAX_NODES_PER_SCAN", 3)  # a level's nodes in several scans
    assert train({**PARAMS, "max_depth": 6}, Dataset(X, y), 2).save_raw() == reference


def test_model_file_round_trip(rng, tmp_path):
    X, y = noisy_data(rng)
    booster = train(PARAMS, Dataset(X, y), 3)
    booster.save_model(str(tmp_path / "exact.json"))
    from fusionrec.gbdt import Booster

    loaded = Booster.load_model(str(tmp_path / "exact.json"))
    np.testing.assert_array_equal(loaded.predict(X), booster.predict(X))
    assert loaded.save_raw() == booster.save_raw()
