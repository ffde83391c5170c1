"""Hypothesis over parameters and data sets, weighted and tiny ones included."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionrec.gbdt import Dataset, train


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_rows=st.integers(1, 60),
    n_features=st.integers(1, 4),
    weighted=st.booleans(),
    missing=st.floats(0.0, 0.5),
    max_depth=st.integers(1, 5),
    reg_lambda=st.floats(0.0, 5.0),
    min_child_weight=st.floats(0.0, 3.0),
    max_bin=st.integers(2, 256),
    seed=st.integers(0, 1000),
)
def test_training_rmse_never_increases(n_rows, n_features, weighted, missing, max_depth, reg_lambda, min_child_weight, max_bin, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    X[rng.random(X.shape) < missing] = np.nan
    y = rng.normal(size=n_rows)
    w = rng.integers(0, 3, n_rows).astype(float) if weighted else None
    if w is not None and not w.any():
        w[0] = 1.0
    d = Dataset(X, y, w, max_bin=max_bin)
    log = {}
    params = {"max_depth": max_depth, "reg_lambda": reg_lambda, "min_child_weight": min_child_weight, "max_bin": max_bin}
    booster = train(params, d, 6, evals=[(d, "train")], evals_result=log)
    losses = np.array(log["train"]["rmse"])
    assert np.all(np.isfinite(losses))
    assert np.all(np.diff(losses) <= 1e-9 * (1 + losses[:-1]))
    assert np.all(np.isfinite(booster.predict(X)))
