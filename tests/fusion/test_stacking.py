"""Stacking and blending: strictly out-of-fold meta-features, splitters, class alignment, options."""

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.ensemble import ExtraTreesClassifier, GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import (
    GroupKFold, GroupShuffleSplit, KFold, RepeatedStratifiedKFold, StratifiedKFold, TimeSeriesSplit,
    cross_val_score, train_test_split,
)  # fmt: skip
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from fusionrec.fusion import BlendingClassifier, BlendingRegressor, StackingClassifier, StackingRegressor
from fusionrec.fusion._oof import FoldAveragedModel
from tests.fusion.helpers import RowMemorizer, RowMemorizerRegressor


def _with_row_ids(X):
    return np.column_stack([np.arange(len(X)), X])


@pytest.mark.parametrize(
    "cv",
    [KFold(5, shuffle=True, random_state=0), StratifiedKFold(4), GroupKFold(3),
     RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=0), TimeSeriesSplit(4)],
    ids=lambda cv: type(cv).__name__,
)  # fmt: skip
def test_meta_features_are_strictly_out_of_fold(cv):
    X, y = make_classification(120, 4, random_state=0)
    X = _with_row_ids(X)
    groups = np.arange(120) % 7
    stack = StackingClassifier([("memo", RowMemorizer()), ("lr", LogisticRegression())], cv=cv)
    with pytest.warns(UserWarning, match="fall in no test fold") if isinstance(cv, TimeSeriesSplit) else _nothing():
        stack.fit(X, y, groups=groups if isinstance(cv, GroupKFold) else None)
    memo = stack.oof_predictions_[:, 0]
    covered = ~np.isnan(memo)
    # the memorizer says 1 exactly for rows it was trained on: no meta-feature may come from one
    assert covered.sum() > 0 and np.all(memo[covered] == 0.0)
    if isinstance(cv, TimeSeriesSplit):
        assert (~covered).sum() == 120 - 4 * (120 // 5)
    else:
        assert covered.all()


def test_regression_meta_features_are_out_of_fold():
    X, y = make_regression(90, 3, random_state=0)
    stack = StackingRegressor([("memo", RowMemorizerRegressor()), ("ridge", Ridge())], cv=KFold(3))
    stack.fit(_with_row_ids(X), y)
    assert np.all(stack.oof_predictions_[:, 0] == 0.0)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fixed_seed_gives_identical_output_and_n_jobs_does_not_change_it():
    X, y = make_classification(300, 6, random_state=1)
    base = [("lr", LogisticRegression()), ("rf", RandomForestClassifier(20, random_state=0))]
    cv = StratifiedKFold(5, shuffle=True, random_state=3)
    first = StackingClassifier(base, cv=cv).fit(X, y)
    second = StackingClassifier(base, cv=cv).fit(X, y)
    parallel = StackingClassifier(base, cv=cv, n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(first.oof_predictions_, second.oof_predictions_)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    np.testing.assert_allclose(first.oof_predictions_, parallel.oof_predictions_)
    np.testing.assert_allclose(first.predict_proba(X), parallel.predict_proba(X))


def test_fold_mean_averages_the_fold_models_and_refit_refits():
    X, y = make_classification(200, 5, random_state=0)
    fold_mean = StackingClassifier([("lr", LogisticRegression())], cv=4).fit(X, y)
    model = fold_mean.named_estimators_["lr"]
    assert isinstance(model, FoldAveragedModel) and len(model.estimators_) == 4
    expected = np.mean([m.predict_proba(X)[:, 1] for m in model.estimators_], axis=0)
    np.testing.assert_allclose(fold_mean.transform(X)[:, 0], expected)
    refit = StackingClassifier([("lr", LogisticRegression())], cv=4, test_features="refit").fit(X, y)
    full = LogisticRegression().fit(X, y)
    np.testing.assert_allclose(refit.transform(X)[:, 0], full.predict_proba(X)[:, 1])
    # out-of-fold meta-features are the same either way; only the test-time ones differ
    np.testing.assert_allclose(fold_mean.oof_predictions_, refit.oof_predictions_)


def test_stack_methods_passthrough_and_feature_names():
    X, y = load_iris(return_X_y=True)
    stack = StackingClassifier([("lr", LogisticRegression(max_iter=500)), ("svc", SVC()), ("tree", "drop")],
                               passthrough=True).fit(X, y)  # fmt: skip
    assert stack.stack_method_ == ["predict_proba", "decision_function"]
    assert stack.transform(X).shape == (150, 3 + 3 + 4)
    assert list(stack.get_feature_names_out())[:4] == ["lr:0", "lr:1", "lr:2", "svc:0"]
    assert stack.named_estimators_["tree"] == "drop"
    labels = StackingClassifier([("tree", DecisionTreeClassifier(random_state=0))], stack_method="predict").fit(X, y)
    assert set(np.unique(labels.oof_predictions_)) <= {0.0, 1.0, 2.0}


def test_a_class_missing_from_a_training_fold_is_aligned_by_label():
    X, y = make_classification(90, 4, n_classes=3, n_informative=3, n_redundant=0, random_state=0)
    y = np.array(["ant", "bee", "cat"])[y]
    order = np.argsort(y == "cat", kind="stable")  # every 'cat' row at the end
    X, y = X[order], y[order]
    cat = np.flatnonzero(y == "cat")
    rest = np.flatnonzero(y != "cat")
    # fold 1 trains without any 'cat'
    cv = [(rest[: len(rest) // 2], np.concatenate([rest[len(rest) // 2 :], cat])),
          (np.concatenate([rest[len(rest) // 2 :], cat]), rest[: len(rest) // 2])]  # fmt: skip
    stack = StackingClassifier([("lr", LogisticRegression()), ("nb", GaussianNB())], cv=cv).fit(X, y)
    fold_model = stack.named_estimators_["lr"].estimators_[0]
    assert list(fold_model.classes_) == ["ant", "bee"]
    lr_cols = stack.oof_predictions_[:, :3]
    np.testing.assert_allclose(lr_cols.sum(axis=1), 1.0)
    # rows predicted by the fold that never saw 'cat' give it probability 0
    assert np.all(lr_cols[cat, 2] == 0.0)
    proba = stack.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(stack.classes_) == ["ant", "bee", "cat"]


def test_nested_stacking_and_prefit():
    X, y = make_classification(400, 6, random_state=2)
    X_a, X_b, y_a, y_b = train_test_split(X, y, test_size=0.5, random_state=0)
    inner = StackingClassifier([("lr", LogisticRegression()), ("nb", GaussianNB())], cv=3)
    outer = StackingClassifier([("inner", inner), ("tree", DecisionTreeClassifier(max_depth=3))], cv=3)
    outer.fit(X_a, y_a)
    assert outer.predict_proba(X_b).shape == (200, 2)
    assert roc_auc_score(y_b, outer.predict_proba(X_b)[:, 1]) > 0.8
    fitted = [("lr", LogisticRegression().fit(X_a, y_a)), ("nb", GaussianNB().fit(X_a, y_a))]
    prefit = StackingClassifier(fitted, cv="prefit").fit(X_b, y_b)
    assert prefit.estimators_[0] is fitted[0][1]
    np.testing.assert_allclose(prefit.oof_predictions_[:, 0], fitted[0][1].predict_proba(X_b)[:, 1])


def test_blending_uses_the_holdout_only():
    X, y = make_classification(200, 5, random_state=0)
    blend = BlendingClassifier([("memo", RowMemorizer()), ("lr", LogisticRegression())], holdout_size=0.25,
                               random_state=0).fit(_with_row_ids(X), y)  # fmt: skip
    holdout = ~np.isnan(blend.oof_predictions_[:, 0])
    assert holdout.sum() == 50 and np.all(blend.oof_predictions_[holdout, 0] == 0.0)
    assert abs(y[holdout].mean() - y.mean()) < 0.05  # stratified
    ordered = BlendingRegressor([("memo", RowMemorizerRegressor())], LinearRegression(), holdout_size=30,
                                shuffle=False).fit(_with_row_ids(X), y.astype(float))  # fmt: skip
    np.testing.assert_array_equal(np.flatnonzero(~np.isnan(ordered.oof_predictions_[:, 0])), np.arange(170, 200))
    groups = np.arange(200) // 10
    grouped = BlendingClassifier([("lr", LogisticRegression())], splitter=GroupShuffleSplit(1, test_size=0.3,
                                 random_state=0)).fit(X, y, groups=groups)  # fmt: skip
    held = np.unique(groups[~np.isnan(grouped.oof_predictions_[:, 0])])
    trained = np.unique(groups[np.isnan(grouped.oof_predictions_[:, 0])])
    assert len(np.intersect1d(held, trained)) == 0


def test_datawhale_fusion_notes_iris_examples_run():
    iris = load_iris()
    X, y = iris.data[:100], iris.target[:100]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=2020)
    clfs = [("lr", LogisticRegression(solver="lbfgs")), ("rf", RandomForestClassifier(5, random_state=0)),
            ("et_gini", ExtraTreesClassifier(5, criterion="gini", random_state=0)),
            ("et_entropy", ExtraTreesClassifier(5, criterion="entropy", random_state=0)),
            ("gb", GradientBoostingClassifier(learning_rate=0.05, subsample=0.5, max_depth=6, n_estimators=5,
                                              random_state=0))]  # fmt: skip
    stack = StackingClassifier(clfs, LogisticRegression(solver="lbfgs"), cv=StratifiedKFold(5)).fit(X_train, y_train)
    assert roc_auc_score(y_test, stack.predict_proba(X_test)[:, 1]) == pytest.approx(1.0)
    blend = BlendingClassifier(clfs, GradientBoostingClassifier(learning_rate=0.02, subsample=0.5, max_depth=6,
                               n_estimators=30, random_state=0), holdout_size=0.5, random_state=2020)  # fmt: skip
    blend.fit(X_train, y_train)
    assert roc_auc_score(y_test, blend.predict_proba(X_test)[:, 1]) == pytest.approx(1.0)
    # the mlxtend example: KNN, random forest and naive Bayes stacked under logistic regression
    X2, y2 = iris.data[:, 1:3], iris.target
    base = [("knn", KNeighborsClassifier(n_neighbors=1)), ("rf", RandomForestClassifier(random_state=1)),
            ("nb", GaussianNB())]  # fmt: skip
    scores = {name: cross_val_score(model, X2, y2, cv=3).mean() for name, model in base}
    stacked = cross_val_score(StackingClassifier(base, LogisticRegression()), X2, y2, cv=3).mean()
    assert stacked >= 0.9 and stacked >= min(scores.values())


def test_verbose_shows_progress_and_changes_nothing():
    X, y = make_classification(100, 4, random_state=0)
    quiet = StackingClassifier([("lr", LogisticRegression())], cv=3).fit(X, y)
    loud = StackingClassifier([("lr", LogisticRegression())], cv=3, verbose=1).fit(X, y)
    np.testing.assert_array_equal(quiet.oof_predictions_, loud.oof_predictions_)
