"""scikit-learn estimators over the booster, with XGBoost's scikit-learn parameter names.

``GBDTRegressor``, ``GBDTClassifier`` and ``GBDTRanker`` are thin: they validate, pick the objective, call
:func:`fusionrec.gbdt.train` and keep the booster in ``booster_``. Feature-name
bookkeeping is scikit-learn's (``n_features_in_``, ``feature_names_in_``); conversion
and value checks are the engine's.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.booster import Booster
from fusionrec.gbdt.data import to_feature_matrix
from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.training import train

_BOOSTER_PARAMS = (
    "learning_rate", "max_depth", "max_leaves", "grow_policy", "reg_lambda", "reg_alpha", "gamma",
    "min_child_weight", "max_delta_step", "subsample", "colsample_bytree", "colsample_bylevel",
    "colsample_bynode", "max_bin", "tree_method", "n_jobs", "base_score", "eval_metric",
)  # fmt: skip


class _GBDTBase(BaseEstimator):
    def __init__(
        self,
        *,
        n_estimators: int = 100,
        learning_rate: float = 0.3,
        max_depth: int = 6,
        max_leaves: int = 0,
        grow_policy: str = "depthwise",
        reg_lambda: float = 1.0,
        reg_alpha: float = 0.0,
        gamma: float = 0.0,
        min_child_weight: float = 1.0,
        max_delta_step: float | None = None,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        colsample_bylevel: float = 1.0,
        colsample_bynode: float = 1.0,
        max_bin: int = 256,
        tree_method: str = "hist",
        objective: Any = None,
        n_jobs: int | None = None,
        random_state: Any = None,
        early_stopping_rounds: int | None = None,
        eval_metric: Any = None,
        base_score: float | None = None,
        importance_type: str = "gain",
        callbacks: list | None = None,
        params: dict | None = None,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.max_leaves = max_leaves
        self.grow_policy = grow_policy
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.gamma = gamma
        self.min_child_weight = min_child_weight
        self.max_delta_step = max_delta_step
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.colsample_bylevel = colsample_bylevel
        self.colsample_bynode = colsample_bynode
        self.max_bin = max_bin
        self.tree_method = tree_method
        self.objective = objective
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.early_stopping_rounds = early_stopping_rounds
        self.eval_metric = eval_metric
        self.base_score = base_score
        self.importance_type = importance_type
        self.callbacks = callbacks
        self.params = params

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = True
        return tags

    # -- helpers ---------------------------------------------------------------------------
    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return 0
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            if rs < 0:
                raise FusionrecError(f"parameter random_state={rs!r}: must be None, an integer >= 0 or a RandomState")
            return int(rs)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(np.iinfo(np.int32).max))
        raise FusionrecError(f"parameter random_state={rs!r}: must be None, an integer >= 0 or a RandomState")

    def _booster_params(self, objective: str, extra: dict) -> dict:
        if not isinstance(self.n_estimators, numbers.Integral) or isinstance(self.n_estimators, bool) or self.n_estimators < 1:
            raise FusionrecError(f"parameter n_estimators={self.n_estimators!r}: must be an integer >= 1")
        params = {name: getattr(self, name) for name in _BOOSTER_PARAMS}
        params["objective"] = objective
        params["random_state"] = self._seed()
        params.update(extra)
        if self.params:
            params.update(self.params)
        return params

    def _check_X(self, X, reset: bool):
        if not reset:
            check_is_fitted(self, "booster_")
        matrix = to_feature_matrix(X, "X")
        try:
            # scikit-learn's own bookkeeping and wording for names (unseen, missing, order) and counts
            validate_data(self, X, reset=reset, skip_check_array=True)
        except ValueError as exc:
            if reset or isinstance(exc, FusionrecError):
                raise
            detail = ""
            if matrix.n_features != self.n_features_in_:
                detail = f" (expected {self.n_features_in_} features, got {matrix.n_features})"
            raise FusionrecError(f"{exc}{detail}") from None
        return matrix

    def _fit_booster(
        self, matrix, X, y, sample_weight, objective, extra, eval_set, sample_weight_eval_set, xgb_model, verbose,
        group=None, qid=None, eval_group=None, eval_qid=None,
    ):  # fmt: skip
        if sample_weight is not None and group is None and qid is None:  # per row (with groups: per group)
            sample_weight = _check_sample_weight(sample_weight, X if hasattr(X, "shape") else matrix.values, dtype=np.float64)
        params = self._booster_params(objective, extra)
        dtrain = Dataset(matrix, y, sample_weight, max_bin=params["max_bin"], seed=params["random_state"], group=group, qid=qid)
        evals = []
        for i, pair in enumerate(eval_set or []):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise FusionrecError(f"eval_set[{i}]: expected an (X, y) pair")
            Xe, ye = pair
            we = None if sample_weight_eval_set is None else sample_weight_eval_set[i]
            ge = None if eval_group is None else eval_group[i]
            qe = None if eval_qid is None else eval_qid[i]
            data = Dataset(to_feature_matrix(Xe, f"eval_set[{i}] X"), self._encode_eval_y(ye), we, reference=dtrain, group=ge, qid=qe)
            evals.append((data, f"validation_{i}"))
        results: dict = {}
        if isinstance(xgb_model, _GBDTBase):
            xgb_model = xgb_model.get_booster()
        self.booster_ = train(
            params, dtrain, int(self.n_estimators), evals=evals, early_stopping_rounds=self.early_stopping_rounds,
            evals_result=results, verbose_eval=verbose, xgb_model=xgb_model, callbacks=self.callbacks,
        )  # fmt: skip
        self.evals_result_ = results
        self.n_features_in_ = matrix.n_features
        return self

    def _encode_eval_y(self, y):
        return y

    def _iteration_range(self):
        # As in XGBoost: a model that early-stopped predicts with its best round, also after
        # save/load (best_iteration is in the file, early_stopping_rounds is not).
        best = self.booster_.best_iteration
        return None if best is None else (0, best + 1)

    # -- public ------------------------------------------------------------------------------
    def get_booster(self) -> Booster:
        check_is_fitted(self, "booster_")
        return self.booster_

    @property
    def best_iteration(self) -> int | None:
        return self.get_booster().best_iteration

    @property
    def best_score(self) -> float | None:
        return self.get_booster().best_score

    @property
    def feature_importances_(self) -> np.ndarray:
        """Importance per feature (``importance_type``), normalised to sum to 1."""
        values = self.get_booster().feature_importances(self.importance_type)
        total = values.sum()
        return values / total if total > 0 else values

    def apply(self, X) -> np.ndarray:
        """Leaf index of every row in every tree."""
        return self.get_booster().predict(self._check_X(X, reset=False), pred_leaf=True)

    def save_model(self, path: str) -> None:
        booster = self.get_booster()
        booster.attributes = self._attributes()
        booster.save_model(path)

    def load_model(self, path: str):
        booster = Booster.load_model(path)
        self._load_attributes(booster)
        self.booster_ = booster
        self.n_features_in_ = booster.n_features
        if booster.feature_names is not None:
            self.feature_names_in_ = np.asarray(booster.feature_names, dtype=object)
        return self

    def _attributes(self) -> dict:
        return {"estimator": type(self).__name__}

    def _load_attributes(self, booster: Booster) -> None:
        kind = booster.attributes.get("estimator")
        if kind is not None and kind != type(self).__name__:
            raise FusionrecError(f"load_model: the file holds a {kind}, not a {type(self).__name__}")


class GBDTRegressor(RegressorMixin, _GBDTBase):
    """Gradient-boosted trees for regression (default objective ``reg:squarederror``)."""

    def fit(self, X, y, sample_weight=None, eval_set=None, sample_weight_eval_set=None, xgb_model=None, verbose=False):
        matrix = self._check_X(X, reset=True)
        y = column_or_1d(np.asarray(y) if not hasattr(y, "to_numpy") else y.to_numpy(), warn=True)
        objective = self.objective or "reg:squarederror"
        if isinstance(objective, str) and (objective.startswith("binary:") or objective.startswith("multi:")):
            raise FusionrecError(f"parameter objective={objective!r}: GBDTRegressor needs a regression objective; use GBDTClassifier")
        return self._fit_booster(matrix, X, y, sample_weight, objective, {}, eval_set, sample_weight_eval_set, xgb_model, verbose)

    def predict(self, X, output_margin: bool = False) -> np.ndarray:
        matrix = self._check_X(X, reset=False)
        return self.booster_.predict(matrix.values, output_margin=output_margin, iteration_range=self._iteration_range(), validate_features=False)


class GBDTClassifier(ClassifierMixin, _GBDTBase):
    """Gradient-boosted trees for classification: ``binary:logistic`` or ``multi:softprob``."""

    def fit(self, X, y, sample_weight=None, eval_set=None, sample_weight_eval_set=None, xgb_model=None, verbose=False):
        matrix = self._check_X(X, reset=True)
        y = column_or_1d(np.asarray(y) if not hasattr(y, "to_numpy") else y.to_numpy(), warn=True)
        check_classification_targets(y)
        self._label_encoder = LabelEncoder().fit(y)
        objective, extra = self._set_classes(self._label_encoder.classes_)
        encoded = self._label_encoder.transform(y).astype(np.float64)
        return self._fit_booster(matrix, X, encoded, sample_weight, objective, extra, eval_set, sample_weight_eval_set, xgb_model, verbose)

    def _set_classes(self, classes: np.ndarray) -> tuple[Any, dict]:
        """Keep the training classes; the objective (binary:logistic, or multi:softprob with
        num_class, unless one is given) and its extra parameters."""
        self.classes_ = classes
        self.n_classes_ = len(classes)
        if self.n_classes_ < 2:
            raise FusionrecError(f"y: only one class ({classes[0]!r}) is present; a classifier needs at least 2 classes")
        if self.n_classes_ == 2:
            objective, extra = self.objective or "binary:logistic", {}
        else:
            objective, extra = self.objective or "multi:softprob", {"num_class": self.n_classes_}
        name = type(self).__name__
        if isinstance(objective, str) and not (objective.startswith("binary:") or objective.startswith("multi:")):
            raise FusionrecError(f"parameter objective={objective!r}: {name} needs a binary:* or multi:* objective")
        if isinstance(objective, str) and objective.startswith("binary:") and self.n_classes_ > 2:
            raise FusionrecError(f"parameter objective={objective!r}: y has {self.n_classes_} classes; use multi:softprob")
        return objective, extra

    def _encode_eval_y(self, y):
        y = column_or_1d(np.asarray(y))
        unseen = sorted(set(np.unique(y).tolist()) - set(self.classes_.tolist()))
        if unseen:
            raise FusionrecError(f"eval_set y: classes {unseen[:10]} were not in the training labels {self.classes_.tolist()[:10]}")
        return self._label_encoder.transform(y).astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        matrix = self._check_X(X, reset=False)
        margin = self.booster_.predict(matrix.values, output_margin=True, iteration_range=self._iteration_range(), validate_features=False)
        return self.booster_.objective.class_probabilities(margin.reshape(margin.shape[0], -1))

    def decision_function(self, X) -> np.ndarray:
        matrix = self._check_X(X, reset=False)
        return self.booster_.predict(matrix.values, output_margin=True, iteration_range=self._iteration_range(), validate_features=False)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _attributes(self) -> dict:
        return {"estimator": type(self).__name__, "classes": self.classes_.tolist()}

    def _load_attributes(self, booster: Booster) -> None:
        super()._load_attributes(booster)
        classes = booster.attributes.get("classes")
        if classes is None:
            classes = list(range(max(booster.n_groups, 2)))
        self.classes_ = np.asarray(classes)
        self.n_classes_ = len(self.classes_)
        self._label_encoder = LabelEncoder().fit(self.classes_)


class GBDTRanker(_GBDTBase):
    """Gradient-boosted trees for learning to rank (default objective ``rank:ndcg``, LambdaMART).

    ``fit(X, y, group=...)`` or ``fit(X, y, qid=...)`` as in XGBoost's ``XGBRanker``: rows of
    a query together, ``qid`` sorted ascending; ``sample_weight`` then holds one weight per
    query group. Without ``group`` or ``qid`` every row belongs to one query, and
    ``sample_weight`` is per row (a single query's rows then carry their own weights in the
    query's gradients and metrics). ``predict`` returns ranking scores (margins).
    """

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        learning_rate: float = 0.3,
        max_depth: int = 6,
        max_leaves: int = 0,
        grow_policy: str = "depthwise",
        reg_lambda: float = 1.0,
        reg_alpha: float = 0.0,
        gamma: float = 0.0,
        min_child_weight: float = 1.0,
        max_delta_step: float | None = None,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        colsample_bylevel: float = 1.0,
        colsample_bynode: float = 1.0,
        max_bin: int = 256,
        tree_method: str = "hist",
        objective: Any = "rank:ndcg",
        n_jobs: int | None = None,
        random_state: Any = None,
        early_stopping_rounds: int | None = None,
        eval_metric: Any = None,
        base_score: float | None = None,
        importance_type: str = "gain",
        callbacks: list | None = None,
        params: dict | None = None,
        lambdarank_pair_method: str = "topk",
        lambdarank_num_pair_per_sample: int | None = None,
        lambdarank_normalization: bool = True,
        lambdarank_score_normalization: bool = True,
        ndcg_exp_gain: bool = True,
    ):
        super().__init__(
            n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth, max_leaves=max_leaves,
            grow_policy=grow_policy, reg_lambda=reg_lambda, reg_alpha=reg_alpha, gamma=gamma,
            min_child_weight=min_child_weight, max_delta_step=max_delta_step, subsample=subsample,
            colsample_bytree=colsample_bytree, colsample_bylevel=colsample_bylevel, colsample_bynode=colsample_bynode,
            max_bin=max_bin, tree_method=tree_method, objective=objective, n_jobs=n_jobs, random_state=random_state,
            early_stopping_rounds=early_stopping_rounds, eval_metric=eval_metric, base_score=base_score,
            importance_type=importance_type, callbacks=callbacks, params=params,
        )  # fmt: skip
        self.lambdarank_pair_method = lambdarank_pair_method
        self.lambdarank_num_pair_per_sample = lambdarank_num_pair_per_sample
        self.lambdarank_normalization = lambdarank_normalization
        self.lambdarank_score_normalization = lambdarank_score_normalization
        self.ndcg_exp_gain = ndcg_exp_gain

    def _rank_params(self) -> dict:
        return {
            "lambdarank_pair_method": self.lambdarank_pair_method,
            "lambdarank_num_pair_per_sample": self.lambdarank_num_pair_per_sample,
            "lambdarank_normalization": self.lambdarank_normalization,
            "lambdarank_score_normalization": self.lambdarank_score_normalization,
            "ndcg_exp_gain": self.ndcg_exp_gain,
        }

    def fit(
        self, X, y, *, group=None, qid=None, sample_weight=None, eval_set=None, eval_group=None, eval_qid=None,
        sample_weight_eval_set=None, xgb_model=None, verbose=False,
    ):  # fmt: skip
        matrix = self._check_X(X, reset=True)
        y = column_or_1d(np.asarray(y) if not hasattr(y, "to_numpy") else y.to_numpy(), warn=True)
        objective = self.objective or "rank:ndcg"
        if not (isinstance(objective, str) and objective.startswith("rank:")):
            raise FusionrecError(f"parameter objective={objective!r}: GBDTRanker needs a rank:* objective (rank:ndcg, rank:map, rank:pairwise)")
        return self._fit_booster(
            matrix, X, y, sample_weight, objective, self._rank_params(), eval_set, sample_weight_eval_set, xgb_model,
            verbose, group=group, qid=qid, eval_group=eval_group, eval_qid=eval_qid,
        )  # fmt: skip

    def predict(self, X, output_margin: bool = False) -> np.ndarray:
        """Ranking scores (margins: a ranking objective has no link): higher ranks first within a query."""
        matrix = self._check_X(X, reset=False)
        return self.booster_.predict(matrix.values, output_margin=output_margin, iteration_range=self._iteration_range(), validate_features=False)

    def score(self, X, y, *, group=None, qid=None, sample_weight=None) -> float:
        """Mean NDCG over the queries of (X, y) (one query when no group / qid is given)."""
        from fusionrec.gbdt.metric import evaluate

        scores = self.predict(X)
        y = column_or_1d(np.asarray(y, dtype=np.float64))
        data = Dataset(to_feature_matrix(X, "X"), y, sample_weight, reference=self.booster_, group=group, qid=qid)
        return evaluate("ndcg", y, scores, data.weight, data, bool(self.ndcg_exp_gain))
