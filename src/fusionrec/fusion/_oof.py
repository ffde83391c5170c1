"""Out-of-fold predictions: the meta-features of stacking and the data weights are fitted on.

Every fold model predicts only the rows of its own test fold, so a row's out-of-fold value
never comes from a model that was trained on it. Splitters that are not partitions work:
with a repeated splitter a row's value is the mean over the repeats; rows that fall in no
test fold (the first block of ``TimeSeriesSplit``, the training part of a holdout split) get
NaN and are counted, and the next stage is fitted on the covered rows only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.model_selection import check_cv
from sklearn.utils.validation import _num_samples

from fusionrec.errors import FusionrecError
from fusionrec.fusion._base import align_columns, fit_and_predict, label_positions, meta_features


@dataclass
class OutOfFold:
    """Meta-features per estimator: ``features[j]`` is (n_rows, d_j), NaN where uncovered."""

    features: list[np.ndarray]
    fold_models: list[list]
    covered: np.ndarray

    def on_covered_rows(self, y, classes, sample_weight):
        """``(predictions, target, sample_weight)`` over the covered rows, for weight fitting and selection.

        ``predictions`` is (m, n) for regression, (m, n, k) class probabilities for a
        classifier (a binary task's single meta-feature column expanded back to both classes);
        ``target`` is the class index for a classifier.
        """
        rows = np.flatnonzero(self.covered)
        if classes is None:
            predictions = np.stack([f[rows, 0] if f.shape[1] == 1 else f[rows] for f in self.features])
            target = y[rows]
        else:
            binary = len(classes) == 2
            predictions = np.stack([np.hstack([1.0 - f[rows], f[rows]]) if binary else f[rows] for f in self.features])
            target = np.searchsorted(classes, y[rows])
        return predictions, target, None if sample_weight is None else sample_weight[rows]

    def test_time_models(self, fusion, test_features: str, names, estimators, X, y, classes, sample_weight) -> list:
        """The models that make test-time predictions: fold averages, or refits on all rows."""
        if test_features == "fold_mean":
            return [FoldAveragedModel(fold_models, classes) for fold_models in self.fold_models]
        return fusion._fit_all_rows(names, estimators, X, y, sample_weight)


def resolve_splits(owner: str, cv, X, y, groups, classifier: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) index pairs of ``cv`` (an int, a splitter, or an iterable of pairs)."""
    try:
        splitter = check_cv(cv, y, classifier=classifier)
        splits = list(splitter.split(X, y, groups))
    except ValueError as exc:
        raise FusionrecError(f"{owner}: cv={cv!r} cannot split these {_num_samples(X)} rows: {exc}") from exc
    n_rows = _num_samples(X)
    if not splits:
        raise FusionrecError(f"{owner}: cv={cv!r} produced no splits")
    for i, (train, test) in enumerate(splits):
        if len(train) == 0 or len(test) == 0:
            raise FusionrecError(f"{owner}: cv fold {i} has {len(train)} training and {len(test)} test rows; "
                                 "both must be non-empty")  # fmt: skip
        if np.intersect1d(train, test).size:
            raise FusionrecError(f"{owner}: cv fold {i} puts rows in both its training and its test part")
        if np.max(train, initial=-1) >= n_rows or np.max(test, initial=-1) >= n_rows:
            raise FusionrecError(f"{owner}: cv fold {i} has indices beyond the {n_rows} rows")
    return [(np.asarray(train), np.asarray(test)) for train, test in splits]


def out_of_fold(fusion, names, estimators, methods, X, y, classes, splits, sample_weight, *,
                keep_models: bool = True) -> OutOfFold:  # fmt: skip
    """Fit every estimator on every fold's training rows and predict its test rows (in parallel).

    Without ``keep_models`` each fold model is dropped as soon as it has predicted, so that
    memory holds one fold model per worker rather than all of them.
    """
    owner = type(fusion).__name__
    n_rows = _num_samples(X)
    n_splits = len(splits)
    tasks = [
        (name, f"fold {f + 1} of {n_splits}", est, X, y, sample_weight, train, method, test, classes, keep_models)
        for name, est, method in zip(names, estimators, methods)
        for f, (train, test) in enumerate(splits)
    ]  # fmt: skip
    results = fusion._run_parallel(fit_and_predict, tasks)
    counts = np.zeros(n_rows)
    for _, test in splits:
        counts[test] += 1
    features, fold_models = [], []
    for j in range(len(names)):
        chunk = results[j * n_splits : (j + 1) * n_splits]
        width = chunk[0].features.shape[1]
        total = np.zeros((n_rows, width))
        for fold, (_, test) in zip(chunk, splits):
            values = fold.features
            if values.shape[1] != width:
                raise FusionrecError(f"{owner}: estimator {names[j]!r} gave {values.shape[1]} columns in one fold "
                                     f"and {width} in another")  # fmt: skip
            np.add.at(total, test, values)
        with np.errstate(invalid="ignore"):
            features.append(np.where(counts[:, None] > 0, total / counts[:, None], np.nan))
        fold_models.append([fold.model for fold in chunk])
    return OutOfFold(features, fold_models, counts > 0)


class FoldAveragedModel(BaseEstimator):
    """The fold models of one base estimator, predicting together by averaging.

    This is how Datawhale's model-fusion notes (Task 5) make test-time meta-features: each
    fold model predicts the test set and the predictions are averaged. Probabilities and decision values are aligned
    by class label first, so a fold that missed a class still averages correctly.
    """

    def __init__(self, fold_models, classes=None):
        self.fold_models = fold_models
        self.classes = classes

    @property
    def estimators_(self) -> list:
        return list(self.fold_models)

    @property
    def classes_(self):
        if self.classes is None:
            raise AttributeError("a regression FoldAveragedModel has no classes_")
        return self.classes

    def meta_features(self, method: str, X, classes, name: str) -> np.ndarray:
        return np.mean([meta_features(m, method, X, classes, name) for m in self.fold_models], axis=0)

    def predict_proba(self, X) -> np.ndarray:
        return np.mean([align_columns(m.predict_proba(X), m.classes_, self.classes, type(m).__name__)
                        for m in self.fold_models], axis=0)  # fmt: skip

    def decision_function(self, X) -> np.ndarray:
        values = self.meta_features("decision_function", X, self.classes, type(self.fold_models[0]).__name__)
        return values.ravel() if values.shape[1] == 1 else values

    def predict(self, X) -> np.ndarray:
        if self.classes is None:
            return np.mean([m.predict(X) for m in self.fold_models], axis=0)
        if all(hasattr(m, "predict_proba") for m in self.fold_models):
            return self.classes[np.argmax(self.predict_proba(X), axis=1)]
        votes = np.zeros((_num_samples(X), len(self.classes)))
        for m in self.fold_models:
            votes[np.arange(len(votes)), label_positions(np.asarray(m.predict(X)), self.classes, "fold model")] += 1
        return self.classes[np.argmax(votes, axis=1)]


def model_features(model, method: str, X, classes, name: str) -> np.ndarray:
    """Meta-features of a fitted base model, or the fold average of a :class:`FoldAveragedModel`."""
    if isinstance(model, FoldAveragedModel):
        return model.meta_features(method, X, classes, name)
    return meta_features(model, method, X, classes, name)


def meta_feature_names(names, features, methods, classes) -> list[str]:
    """One name per meta-feature column: the estimator's, with the class label (or index) when it has several."""
    out = []
    for name, values, method in zip(names, features, methods):
        width = values.shape[1]
        if width == 1:
            out.append(name)
        elif classes is not None and method != "predict" and width == len(classes):
            out.extend(f"{name}:{label}" for label in classes)
        else:
            out.extend(f"{name}:{i}" for i in range(width))
    return out
