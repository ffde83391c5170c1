"""What every fusion estimator shares: the ``estimators`` list, its checks, and guarded fitting.

Errors name the ensemble and the base estimator. A fit that fails leaves the ensemble
unfitted: fitted state is removed first, so nothing from a previous or partial fit stays.
"""

from __future__ import annotations

from collections import Counter
from numbers import Integral
from typing import NamedTuple

import numpy as np
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.utils import Bunch, _safe_indexing, get_tags
from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints
from sklearn.utils.metaestimators import _BaseComposition
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import (
    check_array, check_consistent_length, column_or_1d, has_fit_parameter, indexable, validate_data,
)

from fusionrec.errors import DataTypeError, FusionrecError
from fusionrec.fusion.combine import check_weights


class BaseFusion(_BaseComposition):
    """Base of the fusion estimators: ``estimators`` is a list of ``(name, estimator | 'drop')``."""

    _estimator_kind = "estimator"  # "classifier" or "regressor", set by the mixin subclasses
    # scikit-learn's declared parameter constraints, checked when fit starts (``_validate_params``);
    # ``estimators`` has its own checks with their own messages (``_validate_estimators``)
    _parameter_constraints: dict = {
        "estimators": "no_validation",
        "n_jobs": [None, Integral],
        "verbose": ["verbose"],
    }

    @property
    def named_estimators(self) -> Bunch:
        return Bunch(**dict(self.estimators))

    def get_params(self, deep=True):
        return self._get_params("estimators", deep=deep)

    def set_params(self, **params):
        self._set_params("estimators", **params)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            active = [est for _, est in self.estimators if not _is_drop(est)]
            tags.input_tags.allow_nan = bool(active) and all(get_tags(est).input_tags.allow_nan for est in active)
            tags.input_tags.sparse = bool(active) and all(get_tags(est).input_tags.sparse for est in active)
        except Exception:  # malformed `estimators`: fit reports it properly
            pass
        return tags

    # -- checks --------------------------------------------------------------------------------

    def _error(self, message: str) -> FusionrecError:
        return FusionrecError(f"{type(self).__name__}: {message}")

    def _validate_params(self) -> None:
        """Every parameter against ``_parameter_constraints`` (scikit-learn's rules); a
        violation is a FusionrecError naming the ensemble, the parameter, its value and the rule."""
        params = self.get_params(deep=False)
        for name, constraints in self._parameter_constraints.items():
            try:
                validate_parameter_constraints({name: constraints}, {name: params[name]}, caller_name=type(self).__name__)
            except InvalidParameterError as exc:
                rule = str(exc).partition(" must be ")[2].rpartition(". Got ")[0] or str(exc)
                raise self._error(f"{name}={params[name]!r}; must be {rule}") from None

    def _validate_estimators(self) -> tuple[list[str], list]:
        """The names and estimators that are not ``'drop'``, after checking the whole list."""
        estimators = self.estimators
        if estimators is None or isinstance(estimators, (str, dict)) or len(estimators) == 0:
            raise self._error(
                f"estimators={estimators!r}: give a non-empty list of (name, estimator) pairs")
        for i, item in enumerate(estimators):
            if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
                raise self._error(f"estimators[{i}] = {item!r}: each entry must be a (name, estimator) pair")
        names = [name for name, _ in estimators]
        duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
        if duplicated:
            raise self._error(f"estimator names must be unique; {duplicated} appear more than once")
        for name in names:
            if "__" in name:
                raise self._error(f"estimator name {name!r} contains '__', which get_params uses as a separator")
            if name in self.get_params(deep=False):
                raise self._error(f"estimator name {name!r} clashes with the constructor parameter of that name")
        active = [(name, est) for name, est in estimators if not _is_drop(est)]
        if not active:
            raise self._error(f"all {len(names)} estimators are 'drop'; at least one must be an estimator")
        for name, est in active:
            if not hasattr(est, "fit"):
                raise self._error(f"estimator {name!r} is {est!r}, which has no fit method (use 'drop' to leave it out)")
            if self._estimator_kind == "classifier" and not is_classifier(est):
                raise self._error(f"estimator {name!r} ({type(est).__name__}) is not a classifier")
            if self._estimator_kind == "regressor" and not is_regressor(est):
                raise self._error(f"estimator {name!r} ({type(est).__name__}) is not a regressor")
        return [name for name, _ in active], [est for _, est in active]

    def _check_methods(self, names, estimators, method: str) -> None:
        for name, est in zip(names, estimators):
            if not hasattr(est, method):
                raise self._error(f"estimator {name!r} ({type(est).__name__}) has no {method}, which this "
                                  f"ensemble needs{_proba_hint(est, method)}")  # fmt: skip

    def _check_sample_weight(self, names, estimators, sample_weight, n_rows):
        if sample_weight is None:
            return None
        for name, est in zip(names, estimators):
            if not _accepts_sample_weight(est):
                raise self._error(f"estimator {name!r} ({type(est).__name__}) does not accept sample_weight; "
                                  "drop it or fit without sample_weight")  # fmt: skip
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.ndim != 1 or len(sample_weight) != n_rows:
            raise self._error(f"sample_weight has shape {sample_weight.shape}; expected ({n_rows},)")
        if not np.all(np.isfinite(sample_weight)) or np.any(sample_weight < 0):
            row = int(np.flatnonzero(~np.isfinite(sample_weight) | (sample_weight < 0))[0])
            raise self._error(f"sample_weight row {row}: {sample_weight[row]} is not a finite non-negative number")
        return sample_weight

    def _check_Xy(self, X, y):
        """(X, y, classes) after the checks every ensemble makes before fitting anything.

        Data frames (pandas, polars, pyarrow) pass through unchanged, so that base models can
        select columns by name; anything else is checked as a 2-D array or sparse matrix.
        n_features_in_ / feature_names_in_ are recorded here; values are the base models' to check.
        """
        if y is None:
            raise self._error("this estimator requires y to be passed, but the target y is None")
        X = _as_2d(X)
        validate_data(self, X, reset=True, skip_check_array=True)
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        X, y = indexable(X, y)
        if self._estimator_kind == "classifier":
            check_classification_targets(y)
            classes = np.unique(y)
            if len(classes) < 2:
                raise self._error(f"y has only one class ({classes[0]!r}); a classifier needs at least 2 classes")
            return X, y, classes
        return X, y, None

    def _check_X_predict(self, X):
        X = _as_2d(X)
        validate_data(self, X, reset=False, skip_check_array=True)
        return X

    def _fixed_weights(self) -> np.ndarray:
        """``weights`` (one per entry of ``estimators``, 'drop' included, as in scikit-learn)
        restricted to the estimators not dropped; equal weights when None."""
        active = [i for i, (_, est) in enumerate(self.estimators) if not _is_drop(est)]
        if self.weights is None:
            return np.ones(len(active))
        weights = self._checked(lambda: check_weights(self.weights, len(self.estimators)))[active]
        if not weights.any():
            raise self._error("weights: every estimator that is not 'drop' has weight 0")
        return weights

    def _fit_all_rows(self, names, estimators, X, y, sample_weight) -> list:
        """Each estimator fitted (a clone) on all rows."""
        return self._run_parallel(fit_clone, [(name, "the fit on all rows", est, X, y, sample_weight, None)
                                              for name, est in zip(names, estimators)])  # fmt: skip

    def _set_fitted_estimators(self, names, models) -> None:
        self.estimators_ = list(models)
        self.named_estimators_ = Bunch(**{name: "drop" for name, _ in self.estimators})
        self.named_estimators_.update(zip(names, models))
        self._names = list(names)

    def _checked(self, make):
        """``make()``, with a ValueError from a shared helper re-raised under this ensemble's name."""
        try:
            return make()
        except ValueError as exc:
            raise self._error(str(exc)) from None

    # -- guarded fitting ------------------------------------------------------------------------

    def _guarded_fit(self, *args):
        """Run ``self._fit(*args)``; on any failure leave the ensemble unfitted (nothing half-fitted)."""
        self._reset_fitted_state()
        self._validate_params()
        try:
            self._fit(*args)
        except BaseException:
            self._reset_fitted_state()
            raise
        return self

    def _reset_fitted_state(self) -> None:
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)

    def _run_parallel(self, function, tasks) -> list:
        """``function(owner, *task)`` for each task, in parallel with n_jobs.

        With ``verbose`` a sequential run shows a rich progress bar; a parallel one, joblib's log.
        """
        owner = type(self).__name__
        verbose = getattr(self, "verbose", 0)
        if verbose and self.n_jobs in (None, 1):
            from rich.progress import track

            return [function(owner, *task) for task in track(tasks, description=f"{owner}: fitting")]
        return Parallel(n_jobs=self.n_jobs, verbose=verbose)(delayed(function)(owner, *task) for task in tasks)


class FoldPrediction(NamedTuple):
    """A model fitted on a fold's training rows (None when not kept) and its meta-features on the fold's test rows."""

    model: object
    features: np.ndarray


def _failure(owner: str, name: str, estimator, where: str, stage: str, exc: Exception) -> Exception:
    """A base estimator's failure as an error naming the ensemble, the estimator, ``where`` and
    the stage; a TypeError stays a TypeError (DataTypeError is both), as scikit-learn's checks expect."""
    error_type = DataTypeError if isinstance(exc, TypeError) else FusionrecError
    return error_type(f"{owner}: estimator {name!r} ({type(estimator).__name__}) failed in {where} ({stage}): "
                      f"{type(exc).__name__}: {exc}")  # fmt: skip


def _fit_rows(estimator, X, y, sample_weight, train_rows):
    """A clone of ``estimator`` fitted on ``train_rows`` (all rows when None)."""
    model = clone(estimator)
    X_fit, y_fit, sw = X, y, sample_weight
    if train_rows is not None:
        X_fit, y_fit = _safe_indexing(X, train_rows), y[train_rows]
        sw = None if sample_weight is None else sample_weight[train_rows]
    if sw is None:
        model.fit(X_fit, y_fit)
    else:
        model.fit(X_fit, y_fit, sample_weight=sw)
    return model


def fit_clone(owner, name, where, estimator, X, y, sample_weight, train_rows):
    """A clone of ``estimator`` fitted on ``train_rows`` (all rows when None); a failure is a
    FusionrecError naming the ensemble, the estimator and ``where``."""
    try:
        return _fit_rows(estimator, X, y, sample_weight, train_rows)
    except Exception as exc:
        raise _failure(owner, name, estimator, where, "fit", exc) from exc


def fit_and_predict(owner, name, where, estimator, X, y, sample_weight, train_rows, method, test_rows, classes,
                    keep_model) -> FoldPrediction:  # fmt: skip
    """A clone fitted on ``train_rows`` and its ``method`` meta-features on ``test_rows``
    (the model is dropped unless ``keep_model``); failures named as in :func:`fit_clone`."""
    stage = "fit"
    try:
        model = _fit_rows(estimator, X, y, sample_weight, train_rows)
        stage = method
        features = meta_features(model, method, _safe_indexing(X, test_rows), classes, name)
    except Exception as exc:
        raise _failure(owner, name, estimator, where, stage, exc) from exc
    return FoldPrediction(model if keep_model else None, features)


def meta_features(model, method: str, X, classes, name: str) -> np.ndarray:
    """One model's predictions as meta-feature columns (n, d), class columns aligned to ``classes``.

    For a binary task the probability and decision columns shrink to the positive class's,
    because the other column is redundant.
    """
    output = np.asarray(getattr(model, method)(X))
    if classes is None:  # regression
        return output.reshape(len(output), -1).astype(np.float64)
    if method == "predict_proba":
        proba = align_columns(output, model.classes_, classes, name)
        return proba[:, 1:] if len(classes) == 2 else proba
    if method == "decision_function":
        model_classes = np.asarray(model.classes_)
        if len(classes) == 2:
            if len(model_classes) != 2:
                raise FusionrecError(f"estimator {name!r} saw only classes {list(model_classes)}; its "
                                     "decision_function cannot be aligned (use a stratified splitter)")  # fmt: skip
            sign = 1.0 if model_classes[1] == classes[1] else -1.0
            return sign * output.reshape(-1, 1).astype(np.float64)
        if output.ndim == 1 or len(model_classes) != len(classes):
            raise FusionrecError(f"estimator {name!r} saw classes {list(model_classes)} of {list(classes)}; "
                                 "its decision_function cannot be aligned (use predict_proba or a stratified "
                                 "splitter)")  # fmt: skip
        return align_columns(output, model_classes, classes, name, fill=0.0)
    labels = output.ravel()  # "predict": the label's index among the classes, as one numeric column
    return label_positions(labels, classes, name).astype(np.float64).reshape(-1, 1)


def label_positions(labels, classes, name: str) -> np.ndarray:
    positions = np.searchsorted(classes, labels)
    positions = np.clip(positions, 0, len(classes) - 1)
    unknown = classes[positions] != labels
    if np.any(unknown):
        raise FusionrecError(f"estimator {name!r} predicts label {labels[np.argmax(unknown)]!r}, which is not "
                             f"among the training labels {list(classes)}")  # fmt: skip
    return positions


def align_columns(values, model_classes, classes, name: str, *, fill: float = 0.0) -> np.ndarray:
    """Columns of ``values`` (ordered by ``model_classes``) placed at their labels' positions in ``classes``.

    A class the model never saw (missing from its training fold) gets ``fill``, which for
    probabilities is 0: the model gives it no mass.
    """
    model_classes = np.asarray(model_classes)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(model_classes):
        raise FusionrecError(f"estimator {name!r} returned shape {values.shape} for {len(model_classes)} classes")
    if len(model_classes) == len(classes) and np.array_equal(model_classes, classes):
        return values
    positions = label_positions(model_classes, classes, name)
    out = np.full((len(values), len(classes)), fill)
    out[:, positions] = values
    return out


def _is_frame(X) -> bool:
    return hasattr(X, "columns") or type(X).__module__.startswith("pyarrow")


def _as_2d(X):
    if _is_frame(X):
        return X
    return check_array(X, accept_sparse=("csr", "csc"), dtype=None, ensure_all_finite=False)


def _is_drop(estimator) -> bool:
    return isinstance(estimator, str) and estimator == "drop"


def _accepts_sample_weight(estimator) -> bool:
    # A pipeline's fit takes **params and would pass sample_weight on to the wrong step: not accepted.
    return has_fit_parameter(estimator, "sample_weight")


def _proba_hint(estimator, method: str) -> str:
    if method == "predict_proba":
        return f" (wrap it as sklearn.calibration.CalibratedClassifierCV({type(estimator).__name__}(...)))"
    return ""
