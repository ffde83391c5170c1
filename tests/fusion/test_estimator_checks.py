"""scikit-learn's estimator checks on every fusion estimator, with simple base models."""

import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency, parametrize_with_checks

from fusionrec.fusion import (
    AveragingClassifier, AveragingRegressor, BlendingClassifier, BlendingRegressor, EnsembleSelectionClassifier,
    EnsembleSelectionRegressor, StackingClassifier, StackingRegressor, VotingClassifier,
)  # fmt: skip


def _classifiers():
    return [("lr", LogisticRegression()), ("tree", DecisionTreeClassifier(max_depth=3, random_state=0))]


def _regressors():
    return [("ridge", Ridge()), ("tree", DecisionTreeRegressor(max_depth=3, random_state=0))]


ESTIMATORS = [
    VotingClassifier(_classifiers(), voting="soft"),
    VotingClassifier(_classifiers(), voting="hard", weights=[2, 1]),
    AveragingClassifier(_classifiers(), method="logit"),
    AveragingClassifier(_classifiers(), weights="optimize", cv=3),
    AveragingRegressor(_regressors(), method="median"),
    AveragingRegressor(_regressors(), weights="optimize", cv=3),
    StackingClassifier(_classifiers(), cv=3),
    StackingClassifier(_classifiers(), cv=3, test_features="refit", passthrough=True),
    StackingRegressor(_regressors(), LinearRegression(), cv=3),
    StackingRegressor(_regressors(), cv=3, test_features="refit", passthrough=True),
    BlendingClassifier(_classifiers(), random_state=0),
    BlendingRegressor(_regressors(), random_state=0),
    EnsembleSelectionClassifier(_classifiers(), n_iterations=5, cv=3),
    EnsembleSelectionRegressor(_regressors(), n_iterations=5, cv=3),
]


def _expected_failures(estimator):
    if isinstance(estimator, BlendingClassifier | BlendingRegressor):
        # A row of weight 2 sits wholly in one part of the holdout split; its two copies can land
        # in different parts, so the fits differ. This is what blending is, not a bug.
        reason = "a duplicated row can fall on both sides of the holdout split; a weight of 2 cannot"
        return {"check_sample_weight_equivalence_on_dense_data": reason,
                "check_sample_weight_equivalence_on_sparse_data": reason}  # fmt: skip
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_dataframe_column_names_consistency(estimator):
    pytest.importorskip("pandas")
    check_dataframe_column_names_consistency(type(estimator).__name__, estimator)
