"""Ensemble selection (Caruana, Niculescu-Mizil, Crew and Ksikes, ICML 2004).

From a library of models, greedy forward selection *with replacement* builds an ensemble
whose prediction is the plain mean of the selected models (a model picked twice counts
twice). Each step adds the model that most improves ``metric`` on the out-of-fold
predictions; the ensemble kept is the best one seen over all steps (section 2.3's
"hillclimb set" is here the out-of-fold rows). Two of the paper's refinements are options:
sorted initialization (``n_init``: start from the n best single models, section 2.1) and
bagged selection (``n_bags`` runs, each over a random ``bag_fraction`` of the library,
weights averaged, section 2.3), which guards against overfitting the selection.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from fusionrec.fusion._base import BaseFusion, align_columns
from fusionrec.fusion._oof import meta_feature_names, out_of_fold, resolve_splits
from fusionrec.fusion.metrics import Metric, get_metric
from fusionrec.fusion.stacking import TEST_FEATURES


def greedy_selection(predictions: np.ndarray, y, scorer: Metric, *, n_iterations: int, n_init: int = 0,
                     sample_weight=None, candidates=None):  # fmt: skip
    """Counts per model of the best ensemble found, and the score after each step.

    ``predictions`` is (m, n) or (m, n, k); ``candidates`` restricts the library (a bag).
    Ties go to the model listed first.
    """
    candidates = np.arange(len(predictions)) if candidates is None else np.asarray(candidates)
    counts = np.zeros(len(predictions), dtype=np.int64)
    total = np.zeros(predictions.shape[1:])
    if n_init:
        single = [scorer.score(y, predictions[j], sample_weight) for j in candidates]
        for j in candidates[np.argsort(single, kind="stable")[::-1][:n_init]]:
            counts[j] += 1
            total += predictions[j]
    best_counts, best_score, trajectory = counts.copy(), -np.inf, []
    if counts.sum():
        best_score = scorer.score(y, total / counts.sum(), sample_weight)
    for _ in range(n_iterations):
        size = counts.sum() + 1
        trial_scores = [scorer.score(y, (total + predictions[j]) / size, sample_weight) for j in candidates]
        pick = candidates[int(np.argmax(trial_scores))]
        counts[pick] += 1
        total += predictions[pick]
        step_score = float(np.max(trial_scores))
        trajectory.append(step_score)
        if step_score > best_score:
            best_score, best_counts = step_score, counts.copy()
    return best_counts, best_score, trajectory


class _BaseEnsembleSelection(BaseFusion):
    _parameter_constraints: dict = {
        **BaseFusion._parameter_constraints,
        "metric": [None, str, callable],
        "n_iterations": [Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 0, None, closed="left")],
        "n_bags": [Interval(Integral, 1, None, closed="left")],
        "bag_fraction": [Interval(Real, 0, 1, closed="right")],
        "cv": ["cv_object"],
        "test_features": [StrOptions(set(TEST_FEATURES))],
        "random_state": ["random_state"],
    }

    def __init__(self, estimators, *, metric=None, n_iterations=50, n_init=0, n_bags=1, bag_fraction=0.5, cv=5,
                 test_features="fold_mean", random_state=None, n_jobs=None, verbose=0):  # fmt: skip
        self.estimators = estimators
        self.metric = metric
        self.n_iterations = n_iterations
        self.n_init = n_init
        self.n_bags = n_bags
        self.bag_fraction = bag_fraction
        self.cv = cv
        self.test_features = test_features
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    def fit(self, X, y, sample_weight=None, groups=None):
        """Compute out-of-fold predictions of the library and select the ensemble on them."""
        return self._guarded_fit(X, y, sample_weight, groups)

    def _check_params(self, n_models: int) -> None:
        if self.n_init > n_models:
            raise self._error(f"n_init={self.n_init} is more than the {n_models} models in the library")

    def _fit(self, X, y, sample_weight, groups) -> None:
        names, estimators = self._validate_estimators()
        self._check_params(len(names))
        classification = self._estimator_kind == "classifier"
        scorer = self._checked(lambda: get_metric(self.metric, classification=classification))
        X, y, classes = self._check_Xy(X, y)
        method = "predict_proba" if classification else "predict"
        if classification:
            self._check_methods(names, estimators, method)
        sample_weight = self._check_sample_weight(names, estimators, sample_weight, len(y))
        splits = resolve_splits(type(self).__name__, self.cv, X, y, groups, classifier=classification)
        oof = out_of_fold(self, names, estimators, [method] * len(names), X, y, classes, splits, sample_weight,
                          keep_models=self.test_features == "fold_mean")
        library, target, sw = oof.on_covered_rows(y, classes, sample_weight)

        rng = check_random_state(self.random_state)
        n_models = len(names)
        bag_size = max(1, int(round(self.bag_fraction * n_models))) if self.n_bags > 1 else n_models
        weights = np.zeros(n_models)
        trajectories = []
        for _ in range(self.n_bags):
            bag = np.sort(rng.choice(n_models, bag_size, replace=False)) if bag_size < n_models else None
            n_init = min(self.n_init, bag_size)
            counts, _, trajectory = greedy_selection(library, target, scorer, n_iterations=self.n_iterations,
                                                     n_init=n_init, sample_weight=sw, candidates=bag)  # fmt: skip
            weights += counts / counts.sum()
            trajectories.append(trajectory)
        weights /= self.n_bags

        models = oof.test_time_models(self, self.test_features, names, estimators, X, y, classes, sample_weight)
        self._set_fitted_estimators(names, models)
        self.weights_ = weights
        self.metric_ = scorer.name
        self.oof_predictions_ = np.hstack(oof.features)
        self.oof_feature_names_ = meta_feature_names(names, oof.features, [method] * len(names), classes)
        self.oof_scores_ = {name: scorer(target, p, sw) for name, p in zip(names, library)}
        self.oof_score_ = scorer(target, np.tensordot(weights, library, axes=1), sw)
        sign = 1.0 if scorer.greater_is_better else -1.0  # the trajectory holds oriented scores
        self.trajectory_ = [[sign * s for s in t] for t in trajectories]
        if classes is not None:
            self.classes_ = classes

    def _weighted(self, outputs) -> np.ndarray:
        return sum(w * out for w, out in zip(self.weights_, outputs) if w > 0)


class EnsembleSelectionClassifier(ClassifierMixin, _BaseEnsembleSelection):
    """Caruana's ensemble selection over classifiers (predict_proba averaged with selected weights).

    Parameters
    ----------
    estimators : list of (name, classifier or 'drop'), the model library.
    metric : what selection maximizes: "log_loss" (default), "roc_auc", "accuracy" or a
        :class:`fusionrec.fusion.Metric`.
    n_iterations : selection steps (with replacement); the best ensemble over all steps is kept.
    n_init : start from the n_init best single models (sorted initialization).
    n_bags, bag_fraction : bagged selection over random subsets of the library.
    cv : splitter for the out-of-fold predictions (default 5 folds, stratified).
    test_features : "fold_mean" (average the fold models) or "refit" (refit on all rows).

    Attributes
    ----------
    weights_ (per estimator not dropped, summing to 1), estimators_, named_estimators_,
    classes_, oof_predictions_ (named by oof_feature_names_), oof_scores_ (each model),
    oof_score_ (the ensemble),
    trajectory_ (score after each step, per bag).
    """

    _estimator_kind = "classifier"

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        X = self._check_X_predict(X)
        return self._weighted(
            align_columns(m.predict_proba(X), m.classes_, self.classes_, name) if w > 0 else None
            for m, name, w in zip(self.estimators_, self._names, self.weights_)
        )

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class EnsembleSelectionRegressor(RegressorMixin, _BaseEnsembleSelection):
    """Caruana's ensemble selection over regressors; metric "mse" by default. See the classifier."""

    _estimator_kind = "regressor"

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        X = self._check_X_predict(X)
        return self._weighted(np.asarray(m.predict(X), dtype=np.float64) if w > 0 else None
                              for m, w in zip(self.estimators_, self.weights_))  # fmt: skip
