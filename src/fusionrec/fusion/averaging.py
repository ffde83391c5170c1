"""Averaging ensembles: every base estimator fitted on all rows, predictions averaged.

Weights are fixed (``weights=[...]``), equal (``None``) or fitted (``"optimize"``): then each
estimator's out-of-fold predictions are computed with ``cv`` and :func:`optimize_weights`
finds the non-negative weights, summing to 1, that maximize ``metric`` for the chosen
``method``. A classifier averages class probabilities aligned by label; methods other than
the plain mean renormalize each row to sum to 1 (for ``rank`` the result is a ranking score,
not a calibrated probability).
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from fusionrec.fusion._base import BaseFusion, align_columns
from fusionrec.fusion._oof import meta_feature_names, out_of_fold, resolve_splits
from fusionrec.fusion.combine import METHODS, combine
from fusionrec.fusion.metrics import get_metric
from fusionrec.fusion.weights import optimize_weights


class _BaseAveraging(BaseFusion):
    _parameter_constraints: dict = {
        **BaseFusion._parameter_constraints,
        "method": [StrOptions(set(METHODS))],
        "weights": ["array-like", None, StrOptions({"optimize"})],
        "metric": [None, str, callable],
        "cv": ["cv_object"],
        "power": [Real],
    }

    def __init__(self, estimators, *, method="mean", weights=None, metric=None, cv=5, power=2.0, n_jobs=None,
                 verbose=0):  # fmt: skip
        self.estimators = estimators
        self.method = method
        self.weights = weights
        self.metric = metric
        self.cv = cv
        self.power = power
        self.n_jobs = n_jobs
        self.verbose = verbose

    def fit(self, X, y, sample_weight=None, groups=None):
        """Fit every estimator on all rows; with ``weights="optimize"`` first fit the weights out of fold."""
        return self._guarded_fit(X, y, sample_weight, groups)

    def _fit(self, X, y, sample_weight, groups) -> None:
        names, estimators = self._validate_estimators()
        classification = self._estimator_kind == "classifier"
        optimize = isinstance(self.weights, str)
        if self.weights is None and self.method == "weighted":
            raise self._error("method='weighted' needs weights: a list of numbers or 'optimize'")
        weights = np.full(len(names), 1.0 / len(names)) if optimize else self._fixed_weights()
        scorer = self._checked(lambda: get_metric(self.metric, classification=classification, owner="metric"))
        X, y, classes = self._check_Xy(X, y)
        if classification:
            self._check_methods(names, estimators, "predict_proba")
        method = "predict_proba" if classification else "predict"
        sample_weight = self._check_sample_weight(names, estimators, sample_weight, len(y))

        if optimize:
            splits = resolve_splits(type(self).__name__, self.cv, X, y, groups, classifier=classification)
            oof = out_of_fold(self, names, estimators, [method] * len(names), X, y, classes, splits, sample_weight,
                              keep_models=False)
            predictions, target, covered_weight = oof.on_covered_rows(y, classes, sample_weight)
            fit = optimize_weights(
                predictions, target, metric=scorer, method=self.method, power=self.power,
                sample_weight=covered_weight, classification=classification, normalize_rows=classification,
            )  # fmt: skip
            weights = fit.weights
            self.oof_predictions_ = np.hstack(oof.features)
            self.oof_feature_names_ = meta_feature_names(names, oof.features, [method] * len(names), classes)
            self.oof_score_ = fit.score
            self.oof_scores_ = dict(zip(names, fit.model_scores))
        models = self._fit_all_rows(names, estimators, X, y, sample_weight)
        self._set_fitted_estimators(names, models)
        self.weights_ = weights
        self.metric_ = scorer.name
        if classes is not None:
            self.classes_ = classes

    def _fused(self, predictions: list[np.ndarray]) -> np.ndarray:
        keep = self.weights_ > 0
        stack = np.stack([p for p, k in zip(predictions, keep) if k])
        return combine(stack, self.method, self.weights_[keep], power=self.power)


class AveragingClassifier(ClassifierMixin, _BaseAveraging):
    """Average the class probabilities of several classifiers.

    Parameters
    ----------
    estimators : list of (name, classifier or 'drop'); each needs predict_proba.
    method : "mean", "weighted", "median", "geometric", "harmonic", "rank", "logit" or "power".
    weights : None (equal), one number per estimator ('drop' included), or "optimize".
    metric : what "optimize" maximizes: "log_loss" (default), "roc_auc", "accuracy", or a
        :class:`fusionrec.fusion.Metric`.
    cv : splitter for the out-of-fold predictions "optimize" fits on (default 5 folds).
    power : the exponent of method="power".

    Attributes
    ----------
    estimators_, named_estimators_, classes_, weights_ (over the estimators not dropped);
    with "optimize" also oof_predictions_ (named by oof_feature_names_), oof_score_ and
    oof_scores_ (each model's own).
    """

    _estimator_kind = "classifier"

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        X = self._check_X_predict(X)
        probas = [align_columns(m.predict_proba(X), m.classes_, self.classes_, name)
                  for m, name in zip(self.estimators_, self._names)]  # fmt: skip
        fused = self._fused(probas)
        if self.method == "mean" or self.method == "weighted":
            return fused
        total = fused.sum(axis=1, keepdims=True)
        return fused / np.where(total > 0, total, 1.0)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class AveragingRegressor(RegressorMixin, _BaseAveraging):
    """Average the predictions of several regressors; parameters as :class:`AveragingClassifier`
    (``metric`` defaults to "mse")."""

    _estimator_kind = "regressor"

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        X = self._check_X_predict(X)
        return self._fused([np.asarray(m.predict(X), dtype=np.float64) for m in self.estimators_])
