"""Small base models for the fusion tests."""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted


class RowMemorizer(ClassifierMixin, BaseEstimator):
    """Column 0 of X is a row id; predicts class 1 with probability 1 for rows it was trained on."""

    def fit(self, X, y, sample_weight=None):
        self.seen_ = set(np.asarray(X)[:, 0].astype(int))
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        check_is_fitted(self)
        seen = np.array([int(i) in self.seen_ for i in np.asarray(X)[:, 0]], dtype=float)
        proba = np.zeros((len(seen), len(self.classes_)))
        proba[:, -1] = seen
        proba[:, 0] += 1 - seen
        return proba

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class RowMemorizerRegressor(RegressorMixin, BaseEstimator):
    def fit(self, X, y):
        self.seen_ = set(np.asarray(X)[:, 0].astype(int))
        return self

    def predict(self, X):
        return np.array([float(int(i) in self.seen_) for i in np.asarray(X)[:, 0]])


class _Uniform(ClassifierMixin, BaseEstimator):
    """Predicts equal probabilities for every class."""

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


class FailsOnFold(_Uniform):
    """Raises when its training rows include row id ``bad_row`` (column 0)."""

    def __init__(self, bad_row=0):
        self.bad_row = bad_row

    def fit(self, X, y):
        if self.bad_row in set(np.asarray(X)[:, 0].astype(int)):
            raise RuntimeError("cannot fit on this fold")
        self.classes_ = np.unique(y)
        return self


class NoProba(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


class ReversedClasses(ClassifierMixin, BaseEstimator):
    """Wraps a classifier but lists classes_ (and probability columns) in reverse order."""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        self.estimator_ = self.estimator.fit(X, y)
        self.classes_ = self.estimator_.classes_[::-1]
        return self

    def predict_proba(self, X):
        return self.estimator_.predict_proba(X)[:, ::-1]

    def predict(self, X):
        return self.estimator_.predict(X)


class RecordsWeights(_Uniform):
    def fit(self, X, y, sample_weight=None):
        self.got_weight_ = sample_weight is not None
        self.classes_ = np.unique(y)
        return self
