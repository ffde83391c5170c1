"""``Booster``: the model. ``update()`` adds one boosting round; ``train()`` loops.

A booster holds its validated parameters, the trees (flat arrays), the feature schema
and bin edges of its training data, the base score and the random generator state, and
round-trips through versioned JSON (see :mod:`fusionrec.gbdt.model_io`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.data import FeatureMatrix, check_feature_names, dense_with_nan as _dense_with_nan, to_feature_matrix
from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.external import ExternalDataset
from fusionrec.gbdt.boosting import BoostingRound
from fusionrec.gbdt.metric import check_metric_fits, evaluate
from fusionrec.gbdt.model_io import ModelState, read_file, read_state, save, to_json_bytes
from fusionrec.gbdt.objective import Objective, make_objective
from fusionrec.gbdt.params import effective_n_threads, metric_names, n_classes_of, resolve_params
from fusionrec.gbdt.tree import Forest, Tree, add_forest_margin, predict_leaf_dense

IMPORTANCE_TYPES = ("weight", "gain", "cover", "total_gain", "total_cover")


class _threads:
    """Run numba kernels with ``n`` threads, restoring the previous count afterwards."""

    def __init__(self, n_jobs):
        self.n = effective_n_threads(n_jobs)

    def __enter__(self):
        import numba

        self.previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(self.n, numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc):
        import numba

        numba.set_num_threads(self.previous)


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
        self.max_bin = int(self.params["max_bin"])
        self.best_iteration: int | None = None
        self.best_score: float | None = None
        self.rng = np.random.default_rng(int(self.params["random_state"]))
        self.attributes: dict[str, Any] = {}  # JSON-safe metadata of wrappers (e.g. classes_)
        self._custom_objective: Callable | None = None
        self._objective: Objective | None = None
        self._forest: Forest | None = None
        self._margin_cache: dict[int, tuple[Any, np.ndarray, int]] = {}
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
        state["_margin_cache"] = {}
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
        self.cuts = list(dtrain.cuts)
        self.max_bin = dtrain.max_bin
        for name in metric_names(self.params):
            check_metric_fits(name, self.n_groups, str(self.params["objective"]))

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
        margin, n_done = self._margin_entry(dataset)
        if n_done < len(self.trees):
            if isinstance(dataset, ExternalDataset):
                dataset.add_tree_margins(self.trees[n_done:], self.tree_group[n_done:], margin)
            else:
                new = Forest.of(self.trees[n_done:], self.tree_group[n_done:], self.n_groups)
                add_forest_margin(dataset.raw.values, new, margin)
        self._margin_cache[id(dataset)] = (dataset, margin, len(self.trees))
        return margin

    def _margin_entry(self, dataset: Any) -> tuple[np.ndarray, int]:
        """The cached margins of ``dataset`` and how many trees they hold (base margins, 0)."""
        cached = self._margin_cache.get(id(dataset))
        if cached is None or cached[0] is not dataset:
            return np.tile(self.base_margin(), (dataset.n_rows, 1)), 0
        return cached[1], cached[2]

    # -- one round ----------------------------------------------------------------------------
    def update(self, dtrain: Dataset, iteration: int | None = None, fobj: Callable | None = None) -> None:
        """Add one boosting round (one tree per class) fitted on ``dtrain``."""
        if not isinstance(dtrain, (Dataset, ExternalDataset)):
            raise FusionrecError(f"dtrain: expected a fusionrec.gbdt.Dataset or ExternalDataset, got {type(dtrain).__name__}")
        if fobj is not None and fobj is not self._custom_objective:
            self.set_objective(fobj)
        if self._margin_cache.get(id(dtrain), (None,))[0] is not dtrain:
            self._configure(dtrain)
        with _threads(self.params["n_jobs"]):
            self._update(dtrain)

    def _update(self, dtrain: Dataset) -> None:
        if self._round is None or self._round.objective is not self.objective or self._round.params is not self.params:
            self._round = BoostingRound(self.params, self.objective, self.n_groups)
        if self._round.fuses_passes(dtrain):
            # the cached margins may lack the last trees: the round's first pass adds them
            margin, n_done = self._margin_entry(dtrain)
            self.append_round([self._round.run_paged(dtrain, margin, self.rng, self.trees[n_done:])])
            self._margin_cache[id(dtrain)] = (dtrain, margin, len(self.trees) - 1)  # all but the new tree
            return
        margin = self._cached_margin(dtrain)
        self.append_round(self._round.run(dtrain, margin, self.rng))
        self._margin_cache[id(dtrain)] = (dtrain, margin, len(self.trees))

    def append_round(self, trees: list[Tree]) -> None:
        """Add one round's trees, one per output group in group order."""
        for group, tree in enumerate(trees):
            self.trees.append(tree)
            self.tree_group.append(group)
        self._forest = None

    # -- evaluation --------------------------------------------------------------------------
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
            with _threads(self.params["n_jobs"]):
                margin = self._cached_margin(dataset)
            results[name] = self.metrics_of(margin, dataset, feval)
        return results

    def metrics_of(self, margin: np.ndarray, dataset: Any, feval: Callable | None = None) -> dict[str, float]:
        """Every metric of the parameters (and ``feval``'s) on ``margin``, the margins of
        ``dataset``'s rows (its label, weight and query groups)."""
        objective = self.objective
        names = metric_names(self.params)
        row: dict[str, float] = {}
        if names:
            if objective.name != "custom":
                objective.check_label(dataset.label)
            metric_input = objective.metric_input(margin)
            for metric in names:
                row[metric] = evaluate(
                    metric, dataset.label, metric_input, dataset.weight, dataset, bool(self.params["ndcg_exp_gain"])
                )
        if feval is not None:
            predt = objective.transform(margin)
            out = feval(predt, dataset)
            pairs = out if isinstance(out, list) else [out]
            for metric, value in pairs:
                row[str(metric)] = float(value)
        return row

    # -- prediction ---------------------------------------------------------------------------
    def _matrix(self, data: Any, validate_features: bool = True) -> FeatureMatrix:
        if self.n_features is None:
            raise FusionrecError("this Booster has no trees yet: train it or load a model first")
        if isinstance(data, Dataset):
            matrix = data.raw
        else:
            matrix = to_feature_matrix(data, "data")
        expected = self.feature_names if validate_features else None
        check_feature_names(expected, matrix.feature_names, self.n_features, matrix.n_features, "data")
        return matrix

    def _round_range(self, iteration_range: tuple[int, int] | None) -> tuple[int, int]:
        n_rounds = self.num_boosted_rounds()
        if iteration_range is None or tuple(iteration_range) == (0, 0):
            return 0, n_rounds
        start, end = (int(v) for v in iteration_range)
        if not 0 <= start < end <= n_rounds:
            raise FusionrecError(f"iteration_range={tuple(iteration_range)}: must satisfy 0 <= start < end <= {n_rounds}")
        return start, end

    def predict(
        self,
        data: Any,
        output_margin: bool = False,
        pred_leaf: bool = False,
        pred_contribs: bool = False,
        iteration_range: tuple[int, int] | None = None,
        validate_features: bool = True,
    ) -> np.ndarray:
        """Predictions for ``data``: values, margins, leaf indices or SHAP contributions.

        ``pred_contribs`` gives exact TreeSHAP contributions of shape (n, n_features + 1)
        (or (n, n_groups, n_features + 1)); the last column is the bias, and each row
        sums to the margin.
        """
        matrix = self._matrix(data, validate_features)
        start, end = self._round_range(iteration_range)
        forest = self.forest(start, end)
        with _threads(self.params["n_jobs"]):
            if pred_leaf:
                out = np.zeros((matrix.n_rows, forest.tree_start.shape[0]), dtype=np.int32)
                chunk = 65536  # sparse rows are densified (absent -> NaN) a chunk at a time, never whole
                for start in range(0, matrix.n_rows, chunk if matrix.is_sparse else max(matrix.n_rows, 1)):
                    part = matrix.values[start : start + chunk] if matrix.is_sparse else matrix.values
                    values = _dense_with_nan(part) if matrix.is_sparse else part
                    predict_leaf_dense(
                        values, forest.feature, forest.threshold, forest.left, forest.right, forest.default_left,
                        forest.tree_start, out[start : start + values.shape[0]],
                    )  # fmt: skip
                return out
            if pred_contribs:
                from fusionrec.gbdt.shap import tree_shap

                contribs = tree_shap(matrix, forest, self.n_features, self.base_margin() if start == 0 else np.zeros(self.n_groups))
                return contribs[:, 0, :] if self.n_groups == 1 else contribs
            base = self.base_margin() if start == 0 else np.zeros(self.n_groups)
            margin = np.tile(base, (matrix.n_rows, 1))
            add_forest_margin(matrix.values, forest, margin)
        if output_margin:
            return margin[:, 0] if self.n_groups == 1 else margin
        return self.objective.transform(margin)

    # -- inspection --------------------------------------------------------------------------
    def get_score(self, importance_type: str = "weight") -> dict[str, float]:
        """Importance per used feature name: split count, mean/total gain or cover."""
        if importance_type not in IMPORTANCE_TYPES:
            raise FusionrecError(f"importance_type={importance_type!r}: must be one of {IMPORTANCE_TYPES}")
        scores = self.feature_importances(importance_type)
        names = self.feature_names or [f"f{i}" for i in range(self.n_features or 0)]
        return {names[i]: float(v) for i, v in enumerate(scores) if v > 0}

    def feature_importances(self, importance_type: str = "gain") -> np.ndarray:
        """Dense importance vector over all features (zeros for unused ones)."""
        if importance_type not in IMPORTANCE_TYPES:
            raise FusionrecError(f"importance_type={importance_type!r}: must be one of {IMPORTANCE_TYPES}")
        n = self.n_features or 0
        count = np.zeros(n)
        gain = np.zeros(n)
        cover = np.zeros(n)
        for tree in self.trees:
            internal = tree.feature >= 0
            np.add.at(count, tree.feature[internal], 1.0)
            np.add.at(gain, tree.feature[internal], tree.gain[internal])
            np.add.at(cover, tree.feature[internal], tree.cover[internal])
        with np.errstate(invalid="ignore", divide="ignore"):
            table = {
                "weight": count,
                "total_gain": gain,
                "total_cover": cover,
                "gain": np.where(count > 0, gain / np.maximum(count, 1), 0.0),
                "cover": np.where(count > 0, cover / np.maximum(count, 1), 0.0),
            }
        return table[importance_type]

    def dump_model(self, path: str | None = None, with_stats: bool = False) -> list[str]:
        """Text dump, one string per tree (``x <= threshold`` goes to ``yes``)."""
        names = self.feature_names or [f"f{i}" for i in range(self.n_features or 0)]
        dumps = []
        for t, tree in enumerate(self.trees):
            lines = [f"booster[{t}]:"]
            depth = np.zeros(tree.n_nodes, dtype=np.int64)
            stack = [0]
            while stack:
                i = stack.pop()
                pad = "\t" * depth[i]
                stats = f",cover={tree.cover[i]:.6g}" if with_stats else ""
                if tree.feature[i] < 0:
                    lines.append(f"{pad}{i}:leaf={tree.value[i]:.9g}{stats}")
                    continue
                missing = tree.left[i] if tree.default_left[i] else tree.right[i]
                gain = f",gain={tree.gain[i]:.6g}" if with_stats else ""
                lines.append(
                    f"{pad}{i}:[{names[tree.feature[i]]}<={tree.threshold[i]:.9g}] "
                    f"yes={tree.left[i]},no={tree.right[i]},missing={missing}{gain}{stats}"
                )
                depth[tree.left[i]] = depth[tree.right[i]] = depth[i] + 1
                stack.extend((tree.right[i], tree.left[i]))
            dumps.append("\n".join(lines))
        if path is not None:
            from fusionrec._atomic import atomic_write_bytes

            atomic_write_bytes(path, ("\n".join(dumps) + "\n").encode(), checksum=False)
        return dumps

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
        self._margin_cache = {}
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
