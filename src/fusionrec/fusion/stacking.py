"""Stacking and blending: a final estimator fitted on the base models' out-of-fold predictions.

Stacking (Wolpert 1992; the "5-Fold Stacking" of Datawhale's model-fusion notes, Task 5):
every base estimator is fitted on k-1 folds and predicts the k-th, which gives each training
row a meta-feature from a model that never saw it. The final estimator learns on those. At
test time the meta-features come from the average of the k fold models
(``test_features="fold_mean"``, as those notes do) or from each base estimator refitted on
all rows (``"refit"``, scikit-learn's way).

Blending (the notes' holdout variant) is the same with one split: base models learn on one
part, the final estimator on their predictions for the held-out part.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import ClassifierMixin, RegressorMixin, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import train_test_split
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _num_samples, check_array, check_is_fitted

from fusionrec.fusion._base import BaseFusion, _accepts_sample_weight, align_columns
from fusionrec.fusion._oof import meta_feature_names, model_features, out_of_fold, resolve_splits

STACK_METHODS = ("auto", "predict_proba", "decision_function", "predict")
TEST_FEATURES = ("fold_mean", "refit")


def _final_has(method: str):
    def check(self) -> bool:
        final = getattr(self, "final_estimator_", None) or self._final_estimator_template()
        return hasattr(final, method)

    return check


_REGRESSION_STACK_METHODS = [StrOptions({"auto", "predict"})]


class _BaseStacking(TransformerMixin, BaseFusion):
    _parameter_constraints: dict = {
        **BaseFusion._parameter_constraints,
        "final_estimator": [None, HasMethods("fit")],
        "cv": ["cv_object", StrOptions({"prefit"})],
        "stack_method": [StrOptions(set(STACK_METHODS))],
        "passthrough": ["boolean"],
        "test_features": [StrOptions(set(TEST_FEATURES))],
    }

    def __init__(self, estimators, final_estimator=None, *, cv=None, stack_method="auto", passthrough=False,
                 test_features="fold_mean", n_jobs=None, verbose=0):  # fmt: skip
        self.estimators = estimators
        self.final_estimator = final_estimator
        self.cv = cv
        self.stack_method = stack_method
        self.passthrough = passthrough
        self.test_features = test_features
        self.n_jobs = n_jobs
        self.verbose = verbose

    # -- hooks for blending --------------------------------------------------------------------

    def _prefit(self) -> bool:
        return isinstance(self.cv, str) and self.cv == "prefit"

    def _splits(self, X, y, groups):
        return resolve_splits(type(self).__name__, 5 if self.cv is None else self.cv, X, y, groups,
                              classifier=self._estimator_kind == "classifier")  # fmt: skip

    def _test_features(self) -> str:
        return self.test_features

    def _warn_uncovered(self, n_uncovered: int, n_rows: int) -> None:
        warnings.warn(f"{type(self).__name__}: {n_uncovered} of {n_rows} rows fall in no test fold of "
                      f"cv={self.cv!r}; the final estimator is fitted on the other {n_rows - n_uncovered}",
                      UserWarning, stacklevel=4)  # fmt: skip

    # -- fitting -------------------------------------------------------------------------------

    def _final_estimator_template(self):
        return self.final_estimator if self.final_estimator is not None else self._default_final_estimator()

    def fit(self, X, y, sample_weight=None, groups=None):
        """Fit the base estimators out of fold and the final estimator on their predictions.

        ``groups`` goes to the splitter (``GroupKFold`` and the like).
        """
        return self._guarded_fit(X, y, sample_weight, groups)

    def _resolve_method(self, name, estimator) -> str:
        if self._estimator_kind == "regressor":
            return "predict"
        if self.stack_method == "auto":
            for method in ("predict_proba", "decision_function", "predict"):
                if hasattr(estimator, method):
                    return method
        self._check_methods([name], [estimator], self.stack_method)
        return self.stack_method

    def _fit(self, X, y, sample_weight, groups) -> None:
        names, estimators = self._validate_estimators()
        X, y, classes = self._check_Xy(X, y)
        n_rows = len(y)
        methods = [self._resolve_method(name, est) for name, est in zip(names, estimators)]
        sample_weight = self._check_sample_weight(names, estimators, sample_weight, n_rows)
        final = clone(self._final_estimator_template())
        if sample_weight is not None and not _accepts_sample_weight(final):
            raise self._error(f"final_estimator ({type(final).__name__}) does not accept sample_weight")

        if self._prefit():
            for name, est in zip(names, estimators):
                try:
                    check_is_fitted(est)
                except Exception as exc:
                    raise self._error(f"cv='prefit' but estimator {name!r} is not fitted ({exc})") from None
            models = list(estimators)
            features = [model_features(m, meth, X, classes, name) for m, meth, name in zip(models, methods, names)]
            covered = np.ones(n_rows, dtype=bool)
        else:
            splits = self._splits(X, y, groups)
            oof = out_of_fold(self, names, estimators, methods, X, y, classes, splits, sample_weight,
                              keep_models=self._test_features() == "fold_mean")
            features, covered = oof.features, oof.covered
            models = oof.test_time_models(self, self._test_features(), names, estimators, X, y, classes, sample_weight)
            if not covered.all():
                self._warn_uncovered(int((~covered).sum()), n_rows)

        meta = np.hstack(features)
        rows = np.flatnonzero(covered)
        meta_X = self._with_passthrough(meta[rows], _safe_indexing(X, rows) if len(rows) < n_rows else X)
        fit_kwargs = {} if sample_weight is None else {"sample_weight": sample_weight[rows]}
        try:
            final.fit(meta_X, y[rows], **fit_kwargs)
        except Exception as exc:
            raise self._error(f"final_estimator ({type(final).__name__}) failed to fit on the out-of-fold "
                              f"predictions: {type(exc).__name__}: {exc}") from exc  # fmt: skip

        self._set_fitted_estimators(names, models)
        self.stack_method_ = methods
        self.final_estimator_ = final
        self.oof_predictions_ = meta
        self.oof_feature_names_ = meta_feature_names(names, features, methods, classes)
        if classes is not None:
            self.classes_ = classes

    def _with_passthrough(self, meta, X):
        if not self.passthrough:
            return meta
        if sp.issparse(X):
            return sp.hstack([sp.csr_matrix(meta), X], format="csr")
        try:
            original = check_array(X, dtype=np.float64, ensure_all_finite=False)
        except (TypeError, ValueError) as exc:
            raise self._error(f"passthrough=True needs numeric features: {exc}") from None
        return np.hstack([meta, original])

    # -- prediction ----------------------------------------------------------------------------

    def transform(self, X):
        """The meta-features the final estimator sees: base predictions (and X with passthrough)."""
        check_is_fitted(self, "final_estimator_")
        X = self._check_X_predict(X)
        classes = getattr(self, "classes_", None)
        meta = np.hstack([model_features(model, method, X, classes, name)
                          for model, method, name in zip(self.estimators_, self.stack_method_, self._names)])  # fmt: skip
        return self._with_passthrough(meta, X)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "final_estimator_")
        names = list(self.oof_feature_names_)
        if self.passthrough:
            names += [str(n) for n in getattr(self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)])]
        return np.asarray(names, dtype=object)

    def predict(self, X):
        meta = self.transform(X)
        return self.final_estimator_.predict(meta)


class _ClassifierOutputs:
    """predict_proba / decision_function of a stacked classifier, aligned to ``classes_``."""

    @available_if(_final_has("predict_proba"))
    def predict_proba(self, X):
        meta = self.transform(X)
        proba = self.final_estimator_.predict_proba(meta)
        return align_columns(proba, self.final_estimator_.classes_, self.classes_, "final_estimator")

    @available_if(_final_has("decision_function"))
    def decision_function(self, X):
        meta = self.transform(X)
        return self.final_estimator_.decision_function(meta)


class StackingClassifier(_ClassifierOutputs, ClassifierMixin, _BaseStacking):
    """Stacked generalization for classification.

    Parameters
    ----------
    estimators : list of (name, estimator or 'drop')
    final_estimator : classifier, default LogisticRegression()
    cv : int, splitter, iterable of (train, test), or "prefit"; default 5 (StratifiedKFold).
        With "prefit" the given fitted models are used as they are and ``fit`` must get rows
        they did not see.
    stack_method : "auto", "predict_proba", "decision_function" or "predict"
        "auto" takes the first of those three that each estimator has. Binary tasks keep one
        column per estimator (the positive class's).
    passthrough : bool, also give the final estimator the original features.
    test_features : "fold_mean" (average the fold models) or "refit" (refit on all rows).
    n_jobs : fits folds and estimators in parallel (joblib).

    Attributes
    ----------
    estimators_, named_estimators_, final_estimator_, stack_method_, classes_,
    oof_predictions_ (n_rows, n_meta_features) with NaN for rows in no test fold,
    oof_feature_names_.
    """

    _estimator_kind = "classifier"

    def _default_final_estimator(self):
        return LogisticRegression()


class StackingRegressor(RegressorMixin, _BaseStacking):
    """Stacked generalization for regression; final estimator RidgeCV() by default.

    Parameters and attributes as :class:`StackingClassifier` (``stack_method`` is always
    ``predict``).
    """

    _estimator_kind = "regressor"
    _parameter_constraints: dict = {**_BaseStacking._parameter_constraints, "stack_method": _REGRESSION_STACK_METHODS}

    def _default_final_estimator(self):
        return RidgeCV()


class _BaseBlending(_BaseStacking):
    _parameter_constraints: dict = {
        **{name: rule for name, rule in _BaseStacking._parameter_constraints.items() if name not in ("cv", "test_features")},
        "holdout_size": [Interval(numbers.Real, 0, 1, closed="neither"), Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "splitter": [None, HasMethods("split")],
        "random_state": ["random_state"],
    }

    def __init__(self, estimators, final_estimator=None, *, holdout_size=0.2, shuffle=True, splitter=None,
                 stack_method="auto", passthrough=False, random_state=None, n_jobs=None, verbose=0):  # fmt: skip
        self.estimators = estimators
        self.final_estimator = final_estimator
        self.holdout_size = holdout_size
        self.shuffle = shuffle
        self.splitter = splitter
        self.stack_method = stack_method
        self.passthrough = passthrough
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    test_features = "fold_mean"

    def _prefit(self) -> bool:
        return False

    def _test_features(self) -> str:
        return "fold_mean"  # the base models trained on the first part predict the test set

    def _warn_uncovered(self, n_uncovered: int, n_rows: int) -> None:
        pass  # by design: the final estimator learns on the holdout only

    def _splits(self, X, y, groups):
        owner = type(self).__name__
        n_rows = _num_samples(X)
        if self.splitter is not None:
            return resolve_splits(owner, _FirstSplit(self.splitter), X, y, groups,
                                  classifier=self._estimator_kind == "classifier")  # fmt: skip
        size = self.holdout_size
        if isinstance(size, numbers.Integral) and not isinstance(size, bool):
            n_holdout = int(size)
        elif isinstance(size, numbers.Real) and 0 < size < 1:
            n_holdout = int(np.ceil(size * n_rows))
        else:
            raise self._error(f"holdout_size={size!r}; use a fraction in (0, 1) or a number of rows")
        if not 1 <= n_holdout < n_rows:
            raise self._error(f"holdout_size={size!r} gives {n_holdout} holdout rows of n_samples={n_rows}; "
                              "both parts need at least one row")  # fmt: skip
        indices = np.arange(n_rows)
        if not self.shuffle:  # time-ordered data: the last rows are held out
            return [(indices[: n_rows - n_holdout], indices[n_rows - n_holdout :])]
        stratify = y if self._estimator_kind == "classifier" else None
        try:
            train, holdout = train_test_split(indices, test_size=n_holdout, random_state=self.random_state,
                                              stratify=stratify)  # fmt: skip
        except ValueError as exc:
            raise self._error(f"holdout split of {n_rows} rows failed: {exc}") from None
        return [(np.sort(train), np.sort(holdout))]


class _FirstSplit:
    """The first (train, holdout) pair of a splitter."""

    def __init__(self, splitter):
        self.splitter = splitter

    def split(self, X, y=None, groups=None):
        yield next(iter(self.splitter.split(X, y, groups)))

    def get_n_splits(self, X=None, y=None, groups=None):
        return 1

    def __repr__(self) -> str:
        return repr(self.splitter)


class BlendingClassifier(_ClassifierOutputs, ClassifierMixin, _BaseBlending):
    """Holdout blending for classification (the Blending of Datawhale's model-fusion notes).

    Base estimators are fitted on the training part; the final estimator (LogisticRegression
    by default) on their predictions for the holdout part, which is ``holdout_size`` of the
    rows (stratified, shuffled with ``random_state``), the last rows with ``shuffle=False``
    (time order), or the first split of ``splitter`` (e.g. ``GroupShuffleSplit``).
    """

    _estimator_kind = "classifier"

    def _default_final_estimator(self):
        return LogisticRegression()


class BlendingRegressor(RegressorMixin, _BaseBlending):
    """Holdout blending for regression; see :class:`BlendingClassifier`. Final estimator RidgeCV()."""

    _estimator_kind = "regressor"
    _parameter_constraints: dict = {**_BaseBlending._parameter_constraints, "stack_method": _REGRESSION_STACK_METHODS}

    def _default_final_estimator(self):
        return RidgeCV()
