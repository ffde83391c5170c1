import numpy as np
import pytest
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency, parametrize_with_checks

from fusionrec.gbdt import GBDTClassifier, GBDTRanker, GBDTRegressor

RANKER_WEIGHTS = (
    "LambdaMART's pairs are not additive in rows: a repeated document changes the ranking "
    "positions (|ΔNDCG|) and the query's normalization, so weight 2 is not the row twice"
)


def _expected_failures(estimator):
    if isinstance(estimator, GBDTRanker):
        return {
            "check_sample_weight_equivalence_on_dense_data": RANKER_WEIGHTS,
            "check_sample_weight_equivalence_on_sparse_data": RANKER_WEIGHTS,
        }
    return {}


@parametrize_with_checks(
    [GBDTRegressor(n_estimators=10), GBDTClassifier(n_estimators=10), GBDTRanker(n_estimators=10)],
    expected_failed_checks=_expected_failures,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("cls", [GBDTRegressor, GBDTClassifier, GBDTRanker])
def test_dataframe_column_names_consistency(cls):
    pytest.importorskip("pandas")
    check_dataframe_column_names_consistency(cls.__name__, cls(n_estimators=3))


def _frame_data(rng):
    X = rng.normal(size=(300, 3))
    return X, (X[:, 0] > 0).astype(int)


@pytest.mark.parametrize("library", ["pandas", "polars", "pyarrow"])
def test_dataframes_of_every_kind_give_the_same_model(rng, library):
    X, y = _frame_data(rng)
    names = ["a", "b", "c"]
    if library == "pandas":
        pd = pytest.importorskip("pandas")
        frame = pd.DataFrame(X, columns=names)
    elif library == "polars":
        pl = pytest.importorskip("polars")
        frame = pl.DataFrame({n: X[:, i] for i, n in enumerate(names)})
    else:
        pa = pytest.importorskip("pyarrow")
        frame = pa.table({n: X[:, i] for i, n in enumerate(names)})
    from_frame = GBDTClassifier(n_estimators=5).fit(frame, y)
    from_array = GBDTClassifier(n_estimators=5).fit(X, y)
    np.testing.assert_allclose(from_frame.predict_proba(frame), from_array.predict_proba(X))
    assert list(from_frame.get_booster().feature_names) == names


def test_sparse_input_matches_dense_with_nan(rng):
    import scipy.sparse as sp

    dense = np.where(rng.random((400, 5)) < 0.5, 0.0, rng.normal(size=(400, 5)))
    y = (dense[:, 0] + dense[:, 1] > 0).astype(int)
    as_nan = np.where(dense == 0.0, np.nan, dense)
    sparse_model = GBDTClassifier(n_estimators=5).fit(sp.csr_matrix(dense), y)
    nan_model = GBDTClassifier(n_estimators=5).fit(as_nan, y)
    np.testing.assert_allclose(sparse_model.predict_proba(sp.csc_matrix(dense)), nan_model.predict_proba(as_nan))


def test_early_stopping_predicts_with_the_best_iteration(rng, tmp_path):
    X = rng.normal(size=(1200, 5))
    y = (X[:, 0] + rng.normal(scale=1.5, size=1200) > 0).astype(int)
    clf = GBDTClassifier(n_estimators=300, learning_rate=0.5, early_stopping_rounds=5, eval_metric="logloss")
    clf.fit(X[:800], y[:800], eval_set=[(X[800:], y[800:])])
    booster = clf.get_booster()
    assert clf.best_iteration < booster.num_boosted_rounds() - 1
    assert len(clf.evals_result_["validation_0"]["logloss"]) == booster.num_boosted_rounds()
    margin = booster.predict(X[800:], output_margin=True, iteration_range=(0, clf.best_iteration + 1))
    np.testing.assert_allclose(clf.decision_function(X[800:]), margin)
    path = tmp_path / "early.json"
    clf.save_model(path)
    np.testing.assert_allclose(GBDTClassifier().load_model(path).decision_function(X[800:]), margin)


def test_string_labels_save_load_and_feature_importances(rng, tmp_path):
    X = rng.normal(size=(300, 4))
    y = np.where(X[:, 1] > 0.3, "high", np.where(X[:, 1] < -0.3, "low", "mid"))
    clf = GBDTClassifier(n_estimators=10).fit(X, y)
    assert set(clf.predict(X)) <= {"high", "low", "mid"} and (clf.predict(X) == y).mean() > 0.9
    imp = clf.feature_importances_
    assert imp.shape == (4,) and imp.sum() == pytest.approx(1.0) and np.argmax(imp) == 1
    clf.save_model(tmp_path / "clf.json")
    loaded = GBDTClassifier().load_model(tmp_path / "clf.json")
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    with pytest.raises(ValueError, match="holds a GBDTClassifier"):
        GBDTRegressor().load_model(tmp_path / "clf.json")


def test_works_inside_scikit_learn_tools(rng):
    X = rng.normal(size=(300, 4))
    y = X[:, 0] * 2 + rng.normal(size=300)
    scores = cross_val_score(GBDTRegressor(n_estimators=20, max_depth=3), X, y, cv=3)
    assert scores.mean() > 0.5


def test_training_continuation_through_the_estimator(rng):
    X = rng.normal(size=(400, 3))
    y = X[:, 0] + rng.normal(scale=0.3, size=400)
    full = GBDTRegressor(n_estimators=8, random_state=1).fit(X, y)
    first = GBDTRegressor(n_estimators=3, random_state=1).fit(X, y)
    more = GBDTRegressor(n_estimators=5, random_state=1).fit(X, y, xgb_model=first)
    np.testing.assert_allclose(more.predict(X), full.predict(X), atol=1e-12)
