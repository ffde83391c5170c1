"""Every bad input of the reliability checklist (../shared/reliability_checklist.md): a FusionrecError naming it."""

import numpy as np
import pytest
import scipy.sparse as sp

from fusionrec.errors import FusionrecError
from fusionrec.gbdt import Dataset, GBDTClassifier, GBDTRegressor, train

X = np.arange(40, dtype=np.float32).reshape(10, 4)


def fit(params=None, x=X, y=None, w=None, rounds=1):
    return train(params or {}, Dataset(x, np.arange(10.0) if y is None else y, w), rounds)


@pytest.mark.parametrize(
    "y,message",
    [
        (np.r_[np.nan, np.arange(9.0)], r"label\[0\] = nan: labels must be finite"),
        (np.r_[np.arange(9.0), np.inf], r"label\[9\] = inf"),
        (np.arange(9.0), "label: has 9 values but the data has 10 rows"),
    ],
)
def test_bad_labels(y, message):
    with pytest.raises(FusionrecError, match=message):
        fit(y=y)


@pytest.mark.parametrize(
    "w,message",
    [
        (np.r_[np.nan, np.ones(9)], r"weight\[0\] = nan"),
        (np.r_[np.ones(5), -1.0, np.ones(4)], r"weight\[5\] = -1.0: weights must be finite and >= 0"),
        (np.zeros(10), "all 10 weights are zero"),
        (np.ones(11), "weight: has 11 values but the data has 10 rows"),
    ],
)
def test_bad_weights(w, message):
    with pytest.raises(FusionrecError, match=message):
        fit(w=w)


def test_binary_labels_outside_zero_one():
    with pytest.raises(FusionrecError, match=r"label\[2\] = 2.0: binary:logistic needs labels in \{0, 1\} \(1 such value"):
        fit({"objective": "binary:logistic"}, y=np.r_[0.0, 1.0, 2.0, np.zeros(7)])


@pytest.mark.parametrize("bad", [1.5, 3.0, -1.0])
def test_multiclass_labels_must_be_integers_below_num_class(bad):
    y = np.r_[bad, np.zeros(5), np.ones(4)]
    with pytest.raises(FusionrecError, match=r"label\[0\].*integer labels 0..2 \(num_class=3\)"):
        fit({"objective": "multi:softprob", "num_class": 3}, y=y)


def test_zero_rows_and_zero_features():
    with pytest.raises(FusionrecError, match=r"0 sample\(s\)"):
        Dataset(np.empty((0, 3), np.float32), [])
    with pytest.raises(FusionrecError, match=r"0 feature\(s\) \(shape=\(5, 0\)\)"):
        Dataset(np.empty((5, 0), np.float32), np.zeros(5))


def test_infinite_and_overflowing_features_name_column_and_row():
    x = X.copy()
    x[3, 2] = np.inf
    with pytest.raises(FusionrecError, match=r"column 2 row 3: value inf infinite values are not allowed"):
        fit(x=x)
    big = X.astype(np.float64)
    big[7, 1] = 1e300
    with pytest.raises(FusionrecError, match=r"column 1 row 7: value 1e\+300 overflows float32"):
        fit(x=big)
    csr = sp.csr_matrix(np.eye(4) * np.array([1, 1, np.inf, 1]))
    with pytest.raises(FusionrecError, match="column 2 row 2"):
        Dataset(csr, np.zeros(4))


def test_string_columns_are_listed():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1.0, 2.0], "city": ["x", "y"], "b": [1, 2], "kind": pd.Categorical(["u", "v"])})
    with pytest.raises(FusionrecError, match=r"non-numeric column\(s\) 'city' \(object|str.*'kind' \(category\)"):
        Dataset(frame, [0.0, 1.0])
    with pytest.raises(FusionrecError, match="not numeric|non-numeric"):
        Dataset(np.array([["a", "b"], ["c", "d"]]), [0.0, 1.0])


def test_predict_with_other_number_of_features():
    b = fit()
    with pytest.raises(FusionrecError, match="expected 4 features, got 3"):
        b.predict(X[:, :3])
    with pytest.raises(FusionrecError, match="expected 4 features, got 5"):
        b.predict(np.hstack([X, X[:, :1]]))
    with pytest.raises(FusionrecError, match="expected 4 features, got 3"):
        b.predict(X[:, :3], pred_contribs=True)
    with pytest.raises(FusionrecError, match="expected 4 features, got 3"):
        b.predict(sp.csr_matrix(X[:, :3]), pred_leaf=True)


def test_predict_with_renamed_reordered_or_missing_dataframe_columns():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=list("abcd"))
    b = train({}, Dataset(frame, np.arange(10.0)), 1)
    with pytest.raises(FusionrecError, match=r"unseen \['z'\], missing \['d'\]"):
        b.predict(frame.rename(columns={"d": "z"}))
    with pytest.raises(FusionrecError, match="different order"):
        b.predict(frame[list("dcba")])
    with pytest.raises(FusionrecError, match="expected 4 features, got 3"):
        b.predict(frame[list("abc")])
    reg = GBDTRegressor(n_estimators=2).fit(frame, np.arange(10.0))
    with pytest.raises(FusionrecError, match="(?s)unseen at fit time:.*- z.*yet now missing:.*- d"):
        reg.predict(frame.rename(columns={"d": "z"}))
    with pytest.raises(FusionrecError, match="same order"):
        reg.predict(frame[list("dcba")])
    with pytest.raises(FusionrecError, match="expected 4 features, got 3"):
        reg.predict(X[:, :3])


@pytest.mark.parametrize(
    "params,message",
    [
        ({"max_depth": -1}, r"parameter max_depth=-1: must be an integer >= 0"),
        ({"learning_rate": 0}, r"learning_rate=0: must be a number in \(0, 1\]"),
        ({"subsample": 1.5}, "subsample=1.5"),
        ({"max_bin": 300}, r"max_bin=300: must be an integer in \[2, 256\]"),
        ({"objective": "reg:nonsense"}, "objective='reg:nonsense'"),
        ({"grow_policy": "best"}, "grow_policy='best'"),
        ({"max_dept": 3}, "unknown parameter 'max_dept'; did you mean 'max_depth'"),
        ({"eta": 0.1, "learning_rate": 0.2}, "given twice"),
        ({"objective": "multi:softprob"}, "num_class: required"),
        ({"tree_method": "gpu_hist"}, "tree_method=.gpu_hist.: must be one of"),
        ({"reg_lambda": -1.0}, "reg_lambda=-1.0"),
        ({"eval_metric": "accuracy"}, "eval_metric='accuracy'"),
        ({"n_jobs": 0}, "n_jobs=0"),
    ],
)
def test_invalid_parameters(params, message):
    with pytest.raises(FusionrecError, match=message):
        fit(params)


def test_estimator_parameters_are_validated_at_fit():
    with pytest.raises(FusionrecError, match="n_estimators=0"):
        GBDTRegressor(n_estimators=0).fit(X, np.arange(10.0))
    with pytest.raises(FusionrecError, match="only one class"):
        GBDTClassifier().fit(X, np.zeros(10))
    with pytest.raises(FusionrecError, match="needs a regression objective"):
        GBDTRegressor(objective="binary:logistic").fit(X, np.arange(10.0))
