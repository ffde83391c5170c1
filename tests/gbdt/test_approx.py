"""tree_method='approx' (Chen & Guestrin 2016, Algorithm 2): global and local proposals."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from fusionrec.errors import FusionrecError
from fusionrec.gbdt import Dataset, train
from fusionrec.gbdt.finders.approx import n_candidate_bins

PARAMS = {"objective": "binary:logistic", "max_depth": 5, "tree_method": "approx", "base_score": 0.5}


def few_values(rng, n=4000):
    X = rng.integers(0, 30, size=(n, 5)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * 0.5 + rng.normal(size=n) * 8) > 25).astype(float)
    return X, y


def continuous(rng, n):
    X = rng.normal(size=(n, 8)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) ** 2 + rng.normal(size=n)) > 1).astype(float)
    return X, y


@pytest.mark.parametrize("proposal", ["global", "local"])
def test_candidates_covering_every_value_route_rows_as_exact_does(rng, proposal):
    # fewer distinct values than candidates: nothing is pruned, every split of exact is a candidate
    X, y = few_values(rng)
    data = Dataset(X, y)
    approx = train({**PARAMS, "approx_proposal": proposal}, data, 5)
    exact = train({**PARAMS, "tree_method": "exact"}, data, 5)
    np.testing.assert_allclose(approx.predict(X), exact.predict(X), atol=1e-6)
    for a, b in zip(approx.trees, exact.trees):
        np.testing.assert_array_equal(a.feature, b.feature)
        np.testing.assert_allclose(a.gain, b.gain, rtol=1e-6)


def test_local_proposals_beat_global_at_a_coarse_eps(rng):
    # the paper's Figure 3: global eps=0.3 lags; local eps=0.3 is close to exact
    X, y = continuous(rng, 30_000)
    Xt, yt = continuous(np.random.default_rng(7), 10_000)
    data = Dataset(X, y)

    def auc(extra):
        return roc_auc_score(yt, train({**PARAMS, "learning_rate": 0.3, **extra}, data, 20).predict(Xt))

    exact = auc({"tree_method": "exact"})
    global_coarse = auc({"sketch_eps": 0.3})
    local_coarse = auc({"sketch_eps": 0.3, "approx_proposal": "local"})
    global_fine = auc({"sketch_eps": 0.05})
    assert local_coarse > global_coarse + 0.02
    assert global_fine > global_coarse
    assert abs(local_coarse - exact) < 0.01
    assert abs(global_fine - exact) < 0.015


def test_matches_xgboost_approx_accuracy(rng):
    xgb = pytest.importorskip("xgboost")
    X, y = continuous(rng, 20_000)
    Xt, yt = continuous(np.random.default_rng(3), 10_000)
    params = {**PARAMS, "learning_rate": 0.3, "max_bin": 64}
    ours = roc_auc_score(yt, train(params, Dataset(X, y), 20).predict(Xt))
    theirs = roc_auc_score(yt, xgb.train({**params, "nthread": 2}, xgb.DMatrix(X, y), 20).predict(xgb.DMatrix(Xt)))
    assert abs(ours - theirs) < 0.005


@pytest.mark.parametrize("proposal", ["global", "local"])
def test_sparse_input_equals_dense_with_nan(rng, proposal):
    dense = rng.normal(size=(2000, 30)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.8] = 0.0
    y = (dense[:, 0] + dense[:, 1] - dense[:, 2] + rng.normal(size=2000) * 0.3 > 0).astype(float)
    csr = sp.csr_matrix(dense)
    with_nan = np.where(dense == 0.0, np.nan, dense).astype(np.float32)
    params = {**PARAMS, "approx_proposal": proposal, "max_bin": 16}
    a = train(params, Dataset(csr, y), 5)
    b = train(params, Dataset(with_nan, y), 5)
    np.testing.assert_allclose(a.predict(csr), b.predict(with_nan), atol=1e-7)


@pytest.mark.parametrize("proposal", ["global", "local"])
def test_threads_and_sampling_are_deterministic(rng, proposal):
    X, y = continuous(rng, 5000)
    params = {**PARAMS, "approx_proposal": proposal, "subsample": 0.7, "colsample_bytree": 0.8, "max_bin": 32}
    one = train({**params, "n_jobs": 1}, Dataset(X, y), 4)
    two = train({**params, "n_jobs": 2}, Dataset(X, y), 4)
    assert one.save_raw() == two.save_raw()
    assert all((t.split_bin == -1).all() for t in one.trees)  # thresholds only: bins are per tree


def test_candidate_count_and_parameter_rules():
    assert n_candidate_bins({"sketch_eps": 0.3, "max_bin": 256}) == 4
    assert n_candidate_bins({"sketch_eps": None, "max_bin": 64}) == 64
    assert n_candidate_bins({"sketch_eps": 0.001, "max_bin": 256}) == 255
    with pytest.raises(FusionrecError, match=r"sketch_eps=0.1: only used by tree_method='approx', not 'hist'"):
        train({"sketch_eps": 0.1}, Dataset(np.ones((4, 1)), np.arange(4.0)), 1)
    with pytest.raises(FusionrecError, match=r"approx_proposal='nodes': must be 'global'"):
        train({"tree_method": "approx", "approx_proposal": "nodes"}, Dataset(np.ones((4, 1)), np.arange(4.0)), 1)
    with pytest.raises(FusionrecError, match=r"sketch_eps=1.5: must be None or a number in \(0, 1\)"):
        train({"tree_method": "approx", "sketch_eps": 1.5}, Dataset(np.ones((4, 1)), np.arange(4.0)), 1)
