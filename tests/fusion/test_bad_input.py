"""Every bad input is an error at fit that names the ensemble, the estimator and the rule."""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from fusionrec import FusionrecError
from fusionrec.fusion import (
    AveragingClassifier, AveragingRegressor, BlendingClassifier, BlendingRegressor, EnsembleSelectionClassifier,
    EnsembleSelectionRegressor, StackingClassifier, StackingRegressor, VotingClassifier,
)  # fmt: skip
from tests.fusion.helpers import FailsOnFold, NoProba, RecordsWeights

ENSEMBLES = [VotingClassifier, AveragingClassifier, StackingClassifier, BlendingClassifier, EnsembleSelectionClassifier]


@pytest.fixture
def data():
    X, y = make_classification(100, 4, random_state=0)
    return np.column_stack([np.arange(100), X]), y


@pytest.mark.parametrize("cls", ENSEMBLES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "estimators, message",
    [
        ([], "give a non-empty list of \\(name, estimator\\) pairs"),
        ([("a", "drop"), ("b", "drop")], "all 2 estimators are 'drop'"),
        ([("a", LogisticRegression()), ("a", DecisionTreeClassifier())], r"names must be unique; \['a'\]"),
        ([("a__b", LogisticRegression())], "contains '__'"),
        ([("lr", LinearRegression())], "estimator 'lr' \\(LinearRegression\\) is not a classifier"),
        ([LogisticRegression()], "must be a \\(name, estimator\\) pair"),
    ],
    ids=["empty", "all-dropped", "duplicate-names", "double-underscore", "not-a-classifier", "not-a-pair"],
)
def test_estimator_list_errors_name_the_ensemble(data, cls, estimators, message):
    with pytest.raises(FusionrecError, match=f"^{cls.__name__}: .*{message}"):
        cls(estimators).fit(*data)


@pytest.mark.parametrize("cls", [VotingClassifier, AveragingClassifier], ids=lambda c: c.__name__)
def test_weights_of_the_wrong_length(data, cls):
    with pytest.raises(FusionrecError, match=f"^{cls.__name__}: weights: 3 values given for 2 models"):
        cls([("a", LogisticRegression()), ("b", DecisionTreeClassifier())], weights=[1, 2, 3]).fit(*data)
    with pytest.raises(FusionrecError, match="not 'drop' has weight 0"):
        cls([("a", LogisticRegression()), ("b", "drop")], weights=[0, 1]).fit(*data)


@pytest.mark.parametrize(
    "ensemble",
    [VotingClassifier([("lr", LogisticRegression()), ("svc", SVC())], voting="soft"),
     StackingClassifier([("lr", LogisticRegression()), ("svc", SVC())], stack_method="predict_proba"),
     AveragingClassifier([("lr", LogisticRegression()), ("svc", SVC())]),
     EnsembleSelectionClassifier([("lr", LogisticRegression()), ("svc", SVC())])],
    ids=lambda e: type(e).__name__,
)  # fmt: skip
def test_a_model_without_predict_proba_is_refused_at_fit(data, ensemble):
    with pytest.raises(FusionrecError, match="estimator 'svc' \\(SVC\\) has no predict_proba.*CalibratedClassifierCV"):
        ensemble.fit(*data)
    assert not hasattr(ensemble, "estimators_")


def test_stack_method_predict_works_without_proba(data):
    stack = StackingClassifier([("lr", LogisticRegression()), ("np", NoProba())], stack_method="auto").fit(*data)
    assert stack.stack_method_ == ["predict_proba", "predict"]


@pytest.mark.parametrize(
    "ensemble, where",
    [(StackingClassifier([("lr", LogisticRegression()), ("bad", FailsOnFold(bad_row=3))], cv=5), "fold 2 of 5"),
     (EnsembleSelectionClassifier([("lr", LogisticRegression()), ("bad", FailsOnFold(bad_row=3))], cv=5),
      "fold 2 of 5"),
     (VotingClassifier([("lr", LogisticRegression()), ("bad", FailsOnFold(bad_row=3))]), "the fit on all rows")],
    ids=lambda e: type(e).__name__ if not isinstance(e, str) else e,
)  # fmt: skip
def test_a_base_model_failing_in_a_fold_is_named_and_nothing_is_kept(data, ensemble, where):
    from sklearn.model_selection import KFold

    if hasattr(ensemble, "cv"):
        ensemble.set_params(cv=KFold(5))  # row 3 is in fold 1's test part: folds 2..5 train on it
    with pytest.raises(FusionrecError, match=f"estimator 'bad' \\(FailsOnFold\\) failed in {where} \\(fit\\): "
                                             "RuntimeError: cannot fit on this fold"):  # fmt: skip
        ensemble.fit(*data)
    assert not [a for a in vars(ensemble) if a.endswith("_") and not a.startswith("_")]


def test_a_failed_refit_removes_the_previous_fit(data):
    stack = StackingClassifier([("lr", LogisticRegression())], cv=3).fit(*data)
    assert hasattr(stack, "final_estimator_")
    stack.set_params(estimators=[("lr", LogisticRegression()), ("bad", FailsOnFold(bad_row=3))])
    with pytest.raises(FusionrecError):
        stack.fit(*data)
    assert not hasattr(stack, "final_estimator_") and not hasattr(stack, "oof_predictions_")


def test_sample_weight_for_a_model_that_cannot_take_it(data):
    X, y = data
    for cls in ENSEMBLES:
        with pytest.raises(FusionrecError, match=f"^{cls.__name__}: estimator 'knn' \\(KNeighborsClassifier\\) "
                                                 "does not accept sample_weight"):  # fmt: skip
            cls([("lr", LogisticRegression()), ("knn", KNeighborsClassifier())]).fit(X, y, sample_weight=np.ones(100))
    with pytest.raises(FusionrecError, match="sample_weight row 4: -1.0"):
        VotingClassifier([("lr", LogisticRegression())]).fit(X, y, sample_weight=np.where(np.arange(100) == 4, -1, 1))


def test_sample_weight_reaches_every_base_model_and_the_final_estimator(data):
    X, y = data
    stack = StackingClassifier([("rec", RecordsWeights())], RecordsWeights(), cv=3).fit(X, y, sample_weight=np.ones(100))
    assert all(m.got_weight_ for m in stack.named_estimators_["rec"].estimators_)
    assert stack.final_estimator_.got_weight_
    with pytest.raises(FusionrecError, match="final_estimator \\(KNeighborsClassifier\\) does not accept"):
        StackingClassifier([("rec", RecordsWeights())], KNeighborsClassifier()).fit(X, y, sample_weight=np.ones(100))


@pytest.mark.parametrize(
    "ensemble, message",
    [(StackingClassifier([("lr", LogisticRegression())], stack_method="proba"), "stack_method='proba'"),
     (StackingClassifier([("lr", LogisticRegression())], test_features="mean"), "test_features='mean'"),
     (StackingClassifier([("lr", LogisticRegression())], cv="prefit"), "cv='prefit' but estimator 'lr' is not fitted"),
     (AveragingClassifier([("lr", LogisticRegression())], method="avg"), "method='avg'"),
     (AveragingClassifier([("lr", LogisticRegression())], weights="best"), "weights='best'"),
     (AveragingClassifier([("lr", LogisticRegression())], weights="optimize", metric="auk"), "metric='auk' is not"),
     (VotingClassifier([("lr", LogisticRegression())], voting="average"), "voting='average'"),
     (BlendingClassifier([("lr", LogisticRegression())], holdout_size=1.5), "holdout_size=1.5"),
     (EnsembleSelectionClassifier([("lr", LogisticRegression())], n_iterations=0), "n_iterations=0"),
     (EnsembleSelectionClassifier([("lr", LogisticRegression())], n_init=3), "n_init=3 is more than the 1")],
    ids=lambda e: type(e).__name__ if not isinstance(e, str) else e,
)  # fmt: skip
def test_bad_parameters(data, ensemble, message):
    with pytest.raises(FusionrecError, match=f"^{type(ensemble).__name__}: .*{message}"):
        ensemble.fit(*data)


def test_a_single_class_is_refused(data):
    X, _ = data
    with pytest.raises(FusionrecError, match="only one class"):
        StackingClassifier([("lr", LogisticRegression())]).fit(X, np.zeros(100))


@pytest.mark.parametrize("cls", ENSEMBLES + [StackingRegressor, BlendingRegressor, AveragingRegressor, EnsembleSelectionRegressor],
                         ids=lambda c: c.__name__)  # fmt: skip
def test_every_parameter_has_declared_constraints(cls):
    # scikit-learn's _parameter_constraints: one entry per constructor parameter, none forgotten
    assert set(cls._parameter_constraints) == set(cls._get_param_names())


@pytest.mark.parametrize(
    "ensemble, message",
    [(VotingClassifier([("lr", LogisticRegression())], n_jobs="all"), "n_jobs='all'; must be None or an instance of 'int'"),
     (StackingRegressor([("lr", LinearRegression())], stack_method="predict_proba"), "stack_method='predict_proba'; must be a str among"),
     (BlendingClassifier([("lr", LogisticRegression())], shuffle="yes"), "shuffle='yes'; must be an instance of 'bool'"),
     (EnsembleSelectionClassifier([("lr", LogisticRegression())], bag_fraction=0.0), r"bag_fraction=0.0; must be a float in the range \(0.0, 1.0\]")],
    ids=["n_jobs", "regressor-stack-method", "shuffle", "bag-fraction"],
)  # fmt: skip
def test_constraint_violations_name_the_parameter_value_and_rule(data, ensemble, message):
    X, y = data
    with pytest.raises(FusionrecError, match=f"^{type(ensemble).__name__}: {message}"):
        ensemble.fit(X, y.astype(float) if type(ensemble).__name__.endswith("Regressor") else y)
