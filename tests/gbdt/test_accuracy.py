"""Accuracy against xgboost (tree_method='hist') on real data, with matched parameters.

Tolerances are tight enough to catch a real bug (a wrong gain, a lost default direction,
an off-by-one bin) while allowing the small differences of two independent binnings.
"""

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

from fusionrec.gbdt import Dataset, GBDTClassifier, train
from tests.conftest import load_lightgbm, shared_file

xgb = pytest.importorskip("xgboost")
pytestmark = pytest.mark.slow

PARAMS = {"learning_rate": 0.1, "max_depth": 6, "max_bin": 256, "reg_lambda": 1.0, "min_child_weight": 1.0}


def both(params, X, y, Xt, rounds):
    ours = train(params, Dataset(X, y, max_bin=params["max_bin"]), rounds).predict(Xt)
    xgb_params = {**params, "tree_method": "hist", "nthread": 2}
    theirs = xgb.train(xgb_params, xgb.DMatrix(X, y), rounds).predict(xgb.DMatrix(Xt))
    return ours, theirs


def test_lightgbm_binary_auc():
    X, y, Xt, yt = load_lightgbm("binary")
    ours, theirs = both({**PARAMS, "objective": "binary:logistic"}, X, y, Xt, 100)
    assert roc_auc_score(yt, ours) >= roc_auc_score(yt, theirs) - 0.01


def test_lightgbm_regression_rmse():
    X, y, Xt, yt = load_lightgbm("regression")
    ours, theirs = both({**PARAMS, "objective": "reg:squarederror"}, X, y, Xt, 100)
    ours_rmse, theirs_rmse = (np.sqrt(mean_squared_error(yt, p)) for p in (ours, theirs))
    assert ours_rmse <= theirs_rmse * 1.02


def test_lightgbm_multiclass_mlogloss():
    X, y, Xt, yt = load_lightgbm("multiclass")
    ours, theirs = both({**PARAMS, "objective": "multi:softprob", "num_class": 5}, X, y, Xt, 60)
    assert log_loss(yt, ours) <= log_loss(yt, theirs) * 1.03


def test_agaricus_sparse_error_rate():
    X, y = load_svmlight_file(str(shared_file("xgboost", "agaricus.txt.train")), n_features=127)
    Xt, yt = load_svmlight_file(str(shared_file("xgboost", "agaricus.txt.test")), n_features=127)
    params = {**PARAMS, "objective": "binary:logistic", "learning_rate": 1.0, "max_depth": 2}
    ours = train(params, Dataset(X.tocsr(), y), 2).predict(Xt.tocsr())
    theirs = xgb.train({**params, "tree_method": "hist"}, xgb.DMatrix(X, y), 2).predict(xgb.DMatrix(Xt))
    ours_err, theirs_err = (np.mean((p > 0.5) != yt) for p in (ours, theirs))
    assert ours_err <= theirs_err + 0.002
    assert ours_err < 0.03  # the classic demo: 2 stumps of depth 2 reach ~2 % error


def test_adult_auc():
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(shared_file("adult.parquet"))
    label_column = "income" if "income" in frame else frame.columns[-1]
    y = frame[label_column].astype(str).str.contains(">50K").astype(int).to_numpy()
    features = frame.drop(columns=[label_column])
    for column in features.columns:  # ordinal codes for categorical columns
        if not pd.api.types.is_numeric_dtype(features[column]):
            features[column] = features[column].astype("category").cat.codes.astype(float)
    X = features.to_numpy(dtype=np.float32)
    rng = np.random.default_rng(0)
    test = rng.random(len(y)) < 0.2
    clf = GBDTClassifier(n_estimators=200, learning_rate=0.1, max_depth=6).fit(X[~test], y[~test])
    ours = clf.predict_proba(X[test])[:, 1]
    theirs = xgb.XGBClassifier(n_estimators=200, learning_rate=0.1, max_depth=6, tree_method="hist", n_jobs=2)
    theirs = theirs.fit(X[~test], y[~test]).predict_proba(X[test])[:, 1]
    assert roc_auc_score(y[test], ours) >= roc_auc_score(y[test], theirs) - 0.003
    assert roc_auc_score(y[test], ours) > 0.92
