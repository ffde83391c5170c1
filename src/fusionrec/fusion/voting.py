"""Voting: every classifier fitted on all rows; the majority label (hard) or the weighted mean
of class probabilities (soft) decides.

Probabilities are aligned by class label, so models whose ``classes_`` differ in order or
that never saw a class still add up correctly.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _num_samples, check_is_fitted

from fusionrec.fusion._base import BaseFusion, align_columns, label_positions


class VotingClassifier(ClassifierMixin, BaseFusion):
    """Hard or soft voting over classifiers.

    Parameters
    ----------
    estimators : list of (name, classifier or 'drop')
    voting : "hard" (each model's label counts with its weight; a tie goes to the smallest
        label) or "soft" (argmax of the weighted mean probability; every model needs
        predict_proba, which is checked at fit).
    weights : one non-negative number per estimator ('drop' included), or None for equal.
    n_jobs : fit the estimators in parallel.

    Attributes
    ----------
    estimators_, named_estimators_, classes_, weights_ (over the estimators not dropped).
    """

    _estimator_kind = "classifier"
    _parameter_constraints: dict = {
        **BaseFusion._parameter_constraints,
        "voting": [StrOptions({"hard", "soft"})],
        "weights": ["array-like", None],
    }

    def __init__(self, estimators, *, voting="hard", weights=None, n_jobs=None, verbose=0):
        self.estimators = estimators
        self.voting = voting
        self.weights = weights
        self.n_jobs = n_jobs
        self.verbose = verbose

    def fit(self, X, y, sample_weight=None):
        return self._guarded_fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight) -> None:
        names, estimators = self._validate_estimators()
        weights = self._fixed_weights()
        if self.voting == "soft":
            self._check_methods(names, estimators, "predict_proba")
        X, y, classes = self._check_Xy(X, y)
        sample_weight = self._check_sample_weight(names, estimators, sample_weight, len(y))
        models = self._fit_all_rows(names, estimators, X, y, sample_weight)
        self._set_fitted_estimators(names, models)
        self.weights_ = weights
        self.classes_ = classes

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        X = self._check_X_predict(X)
        if self.voting == "soft":
            return self.classes_[np.argmax(self._proba(X), axis=1)]
        tally = np.zeros((_num_samples(X), len(self.classes_)))
        for model, weight, name in zip(self.estimators_, self.weights_, self._names):
            positions = label_positions(np.asarray(model.predict(X)).ravel(), self.classes_, name)
            tally[np.arange(len(tally)), positions] += weight
        return self.classes_[np.argmax(tally, axis=1)]

    def _soft(self) -> bool:
        return self.voting == "soft"

    @available_if(_soft)
    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        X = self._check_X_predict(X)
        return self._proba(X)

    def _proba(self, X) -> np.ndarray:
        total = np.zeros((_num_samples(X), len(self.classes_)))
        for model, weight, name in zip(self.estimators_, self.weights_, self._names):
            total += weight * align_columns(model.predict_proba(X), model.classes_, self.classes_, name)
        return total / self.weights_.sum()
