"""``Booster``: the model. ``update()`` adds one boosting round; ``train()`` loops.

A booster holds its validated parameters, the trees (flat arrays), the feature schema
and bin edges of its training data, the base score and the random generator state. The rest
is delegated, one room each: the round to ``boosting``, the data sets' margins across rounds to
``margins.MarginCache``, metrics to ``evaluation``, prediction to ``predictor``, importances and
dumps to ``inspection``, and versioned JSON files to ``model_io``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from fusionrec.errors import FusionrecError
from fusionrec.gbdt._jit import numba_threads
from fusionrec.gbdt.boosting import BoostingRound
from fusionrec.gbdt.data import check_feature_names
from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.evaluation import metrics_of
from fusionrec.gbdt.inspection import dump_trees, feature_importances, importance_by_name
from fusionrec.gbdt.margins import MarginCache
from fusionrec.gbdt.metric import check_metric_fits
from fusionrec.gbdt.model_io import ModelState, read_file, read_state, save, to_json_bytes
from fusionrec.gbdt.objective import Objective, make_objective
from fusionrec.gbdt.outofcore.external import ExternalDataset
from fusionrec.gbdt.params import MAX_BIN, metric_names, n_classes_of, resolve_params
from fusionrec.gbdt.predictor import predict
from fusionrec.gbdt.tree import Forest, Tree


class Booster:
    """A gradient-boosted tree ensemble.

    Build one with :func:`fusionrec.gbdt.train`, ``Booster(params)`` followed by
    ``update()`` calls, or ``Booster.load_model(path)``.
    """

    def __init__(self, params: dict[str, Any] | None = None, model_file: str | None = None):
        self.params = resolve_params(params)
        self.trees: list[Tree] = []
        self.tree_group: list[int] = []
        self.base_score: float | None = self.params["base_score"]
        self.n_features: int | None = None
        self.feature_names: list[str] | None = None
        self.feature_types: list[str] | None = None
        self.cuts: list[np.ndarray] = []
        self.max_bin = int(self.params["max_bin"] or MAX_BIN)  # the training Dataset's, once bound
        self.best_iteration: int | None = None
        self.best_score: float | None = None
        self.rng = np.random.default_rng(int(self.params["random_state"]))
        self.attributes: dict[str, Any] = {}  # JSON-safe metadata of wrappers (e.g. classes_)
        self._custom_objective: Callable | None = None
        self._objective: Objective | None = None
        self._forest: Forest | None = None
        self._margins = MarginCache()  # per data set, across rounds
        self._round: BoostingRound | None = None
        if model_file is not None:
            self._apply_state(read_file(model_file))

    # -- configuration -------------------------------------------------------------------
    @property
    def n_groups(self) -> int:
        return n_classes_of(self.params)

    @property
    def objective(self) -> Objective:
        if self._objective is None:
            self._objective = make_objective(self.params, self._custom_objective)
        return self._objective

    def set_objective(self, function: Callable | None) -> None:
        """Use a custom objective ``function(margin, dataset) -> (grad, hess)``."""
        self._custom_objective = function
        self._objective = None

    def set_best(self, iteration: int, score: float) -> None:
        self.best_iteration = int(iteration)
        self.best_score = float(score)

    def num_boosted_rounds(self) -> int:
        return len(self.trees) // self.n_groups

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_margins"] = MarginCache()
        state["_forest"] = None
        state["_round"] = None
        return state

    def _configure(self, dtrain: Dataset) -> None:
        self.bind_schema(dtrain)
        objective = self.objective
        if dtrain.label is None:
            raise FusionrecError("dtrain: a training Dataset needs a label")
        if objective.name != "custom":
            objective.check_label(dtrain.label)
        if self.base_score is None:
            self.base_score = objective.base_score_from(dtrain.label, dtrain.weight)

    def bind_schema(self, dtrain: Any) -> None:
        """Take the training data's features and bin edges (a first fit), or check that its
        features are this model's (continued training); check that the metrics fit."""
        if self.n_features is None:
            self.n_features = dtrain.n_features
            self.feature_names = None if dtrain.feature_names is None else list(dtrain.feature_names)
            self.feature_types = list(dtrain.feature_types)
        else:
            check_feature_names(self.feature_names, dtrain.feature_names, self.n_features, dtrain.n_features, "dtrain")
        self._bind_max_bin(dtrain.max_bin)
        self.cuts = list(dtrain.cuts)
        for name in metric_names(self.params):
            check_metric_fits(name, self.n_groups, str(self.params["objective"]))

    def _bind_max_bin(self, dataset_max_bin: int) -> None:
        """The Dataset owns max_bin (it bins once, when built). A params max_bin that differs is
        an error where the Dataset's bins are the split candidates (hist), as XGBoost refuses
        an inconsistent max_bin; approx reads it as its candidates per tree; unset, it is the
        Dataset's, so that the saved parameters say what was trained."""
        given = self.params["max_bin"]
        if given is None:
            self.params["max_bin"] = int(dataset_max_bin)
        elif given != dataset_max_bin and self.params["tree_method"] in ("hist", "auto"):
            raise FusionrecError(
                f"parameter max_bin={given} differs from the training Dataset's max_bin={dataset_max_bin}: "
                f"tree_method={self.params['tree_method']!r} splits on the Dataset's bins, made when it was built; "
                f"build it with Dataset(..., max_bin={given}) or leave max_bin out of the parameters"
            )
        self.max_bin = int(dataset_max_bin)

    def base_margin(self) -> np.ndarray:
        return self.objective.base_margin(float(self.base_score if self.base_score is not None else 0.0))

    # -- margins ----------------------------------------------------------------------------
    def forest(self, first_round: int = 0, last_round: int | None = None) -> Forest:
        k = self.n_groups
        last = self.num_boosted_rounds() if last_round is None else last_round
        if first_round == 0 and last == self.num_boosted_rounds():
            if self._forest is None or len(self._forest.trees) != len(self.trees):
                self._forest = Forest.of(self.trees, self.tree_group, k)
            return self._forest
        return Forest.of(self.trees[first_round * k : last * k], self.tree_group[first_round * k : last * k], k)

    def _cached_margin(self, dataset: Dataset) -> np.ndarray:
        """Margins of ``dataset`` for all trees so far, updated incrementally across rounds."""
        return self._margins.current(dataset, self.trees, self.tree_group, self.n_groups, self.base_margin())

    # -- one round ----------------------------------------------------------------------------
    def update(self, dtrain: Dataset, iteration: int | None = None, fobj: Callable | None = None) -> None:
        """Add one boosting round (one tree per class) fitted on ``dtrain``."""
        if not isinstance(dtrain, (Dataset, ExternalDataset)):
            raise FusionrecError(f"dtrain: expected a fusionrec.gbdt.Dataset or ExternalDataset, got {type(dtrain).__name__}")
        if fobj is not None and fobj is not self._custom_objective:
            self.set_objective(fobj)
        if not self._margins.holds(dtrain):
            self._configure(dtrain)
        with numba_threads(self.params["n_jobs"]):
            self._update(dtrain)

    def _update(self, dtrain: Dataset) -> None:
        if self._round is None or self._round.objective is not self.objective or self._round.params is not self.params:
            self._round = BoostingRound(self.params, self.objective, self.n_groups)
        if self._round.fuses_passes(dtrain):
            # the cached margins may lack the last trees: the round's first pass adds them
            margin, n_done = self._margins.entry(dtrain, self.base_margin())
            self.append_round([self._round.run_paged(dtrain, margin, self.rng, self.trees[n_done:])])
            self._margins.store(dtrain, margin, len(self.trees) - 1)  # all but the new tree
            return
        margin = self._cached_margin(dtrain)
        self.append_round(self._round.run(dtrain, margin, self.rng))
        self._margins.store(dtrain, margin, len(self.trees))

    def append_round(self, trees: list[Tree]) -> None:
        """Add one round's trees, one per output group in group order."""
        for group, tree in enumerate(trees):
            self.trees.append(tree)
            self.tree_group.append(group)
        self._forest = None

    # -- evaluation (fusionrec.gbdt.evaluation) --------------------------------------------------------------------------
    def eval_set(
        self,
        evals: Sequence[tuple[Dataset, str]],
        iteration: int = 0,
        feval: Callable | None = None,
    ) -> dict[str, dict[str, float]]:
        """Metric values on each ``(dataset, name)`` for the current trees."""
        results: dict[str, dict[str, float]] = {}
        for dataset, name in evals:
            if dataset.label is None:
                raise FusionrecError(f"evals: data set {name!r} has no label")
            with numba_threads(self.params["n_jobs"]):
                margin = self._cached_margin(dataset)
            results[name] = self.metrics_of(margin, dataset, feval)
        return results

    def metrics_of(self, margin: np.ndarray, dataset: Any, feval: Callable | None = None) -> dict[str, float]:
        """Every metric of the parameters (and ``feval``'s) on ``margin`` (``evaluation.metrics_of``)."""
        return metrics_of(self.objective, self.params, margin, dataset, feval)

    # -- prediction (fusionrec.gbdt.predictor) ------------------------------------------------
    def predict(
        self,
        data: Any,
        output_margin: bool = False,
        pred_leaf: bool = False,
        pred_contribs: bool = False,
        iteration_range: tuple[int, int] | None = None,
        validate_features: bool = True,
    ) -> np.ndarray:
        """Predictions for ``data``: values, margins, leaf indices or SHAP contributions
        (see :func:`fusionrec.gbdt.predictor.predict`)."""
        return predict(self, data, output_margin=output_margin, pred_leaf=pred_leaf, pred_contribs=pred_contribs,
                       iteration_range=iteration_range, validate_features=validate_features)  # fmt: skip

    # -- inspection (fusionrec.gbdt.inspection) ----------------------------------------------
    def get_score(self, importance_type: str = "weight") -> dict[str, float]:
        """Importance per used feature name: split count, mean/total gain or cover."""
        return importance_by_name(self.trees, self.n_features or 0, self.feature_names, importance_type)

    def feature_importances(self, importance_type: str = "gain") -> np.ndarray:
        """Dense importance vector over all features (zeros for unused ones)."""
        return feature_importances(self.trees, self.n_features or 0, importance_type)

    def dump_model(self, path: str | None = None, with_stats: bool = False) -> list[str]:
        """Text dump, one string per tree (``x <= threshold`` goes to ``yes``)."""
        return dump_trees(self.trees, self.n_features or 0, self.feature_names, path, with_stats)

    # -- persistence ---------------------------------------------------------------------------
    def state(self) -> ModelState:
        """The model as plain values (what a model file holds)."""
        return ModelState(
            params=self.params, trees=self.trees, tree_group=self.tree_group, base_score=self.base_score,
            n_features=self.n_features, feature_names=self.feature_names, feature_types=self.feature_types,
            cuts=self.cuts, max_bin=self.max_bin, best_iteration=self.best_iteration, best_score=self.best_score,
            rng_state=self.rng.bit_generator.state, attributes=self.attributes,
            custom_objective=self._custom_objective is not None,
        )  # fmt: skip

    def _apply_state(self, state: ModelState) -> None:
        self.params = state.params
        self.attributes = state.attributes
        self._objective = None
        self._custom_objective = None
        self.trees = state.trees
        self.tree_group = list(state.tree_group)
        self.base_score = state.base_score
        self.n_features = state.n_features
        self.feature_names = state.feature_names
        self.feature_types = state.feature_types
        self.cuts = state.cuts
        self.max_bin = state.max_bin
        self.best_iteration = state.best_iteration
        self.best_score = state.best_score
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state.rng_state
        self._forest = None
        self._margins = MarginCache()
        self._round = None

    @classmethod
    def from_state(cls, state: ModelState) -> "Booster":
        booster = cls()
        booster._apply_state(state)
        return booster

    def save_model(self, path: str) -> None:
        """Write the model as versioned JSON, atomically, with a sha256 sidecar."""
        save(self.state(), path)

    def save_raw(self) -> bytes:
        return to_json_bytes(self.state())

    @classmethod
    def load_model(cls, path: str) -> "Booster":
        return cls(model_file=path)

    def copy(self) -> "Booster":
        return Booster.from_state(read_state(self.save_raw(), "<copy>"))

    def __repr__(self) -> str:
        return f"Booster(objective={self.params['objective']!r}, rounds={self.num_boosted_rounds()}, n_features={self.n_features})"
