"""Prediction with a trained forest: values, margins, leaf indices, SHAP contributions.

A booster predicts through :func:`predict`; the kernels it calls take the forest's node
arrays (``tree.Forest``). Sparse rows are densified a chunk at a time, never whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fusionrec.errors import FusionrecError
from fusionrec.gbdt._jit import numba_threads
from fusionrec.gbdt.data import FeatureMatrix, check_feature_names, dense_with_nan, to_feature_matrix
from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.tree import Forest, add_forest_margin, predict_leaf_dense

if TYPE_CHECKING:
    from fusionrec.gbdt.booster import Booster

LEAF_CHUNK_ROWS = 65536  # sparse rows densified (absent -> NaN) per step of pred_leaf


def feature_matrix(booster: "Booster", data: Any, validate_features: bool = True) -> FeatureMatrix:
    """``data`` as the engine's matrix, its features checked against the booster's."""
    if booster.n_features is None:
        raise FusionrecError("this Booster has no trees yet: train it or load a model first")
    matrix = data.raw if isinstance(data, Dataset) else to_feature_matrix(data, "data")
    expected = booster.feature_names if validate_features else None
    check_feature_names(expected, matrix.feature_names, booster.n_features, matrix.n_features, "data")
    return matrix


def round_range(n_rounds: int, iteration_range: tuple[int, int] | None) -> tuple[int, int]:
    """The boosting rounds [start, end) of XGBoost's ``iteration_range`` ((0, 0) or None: all)."""
    if iteration_range is None or tuple(iteration_range) == (0, 0):
        return 0, n_rounds
    start, end = (int(v) for v in iteration_range)
    if not 0 <= start < end <= n_rounds:
        raise FusionrecError(f"iteration_range={tuple(iteration_range)}: must satisfy 0 <= start < end <= {n_rounds}")
    return start, end


def leaf_indices(matrix: FeatureMatrix, forest: Forest) -> np.ndarray:
    """(n_rows, n_trees) int32: the leaf each row reaches in each tree."""
    out = np.zeros((matrix.n_rows, forest.tree_start.shape[0]), dtype=np.int32)
    step = LEAF_CHUNK_ROWS if matrix.is_sparse else max(matrix.n_rows, 1)
    for start in range(0, matrix.n_rows, step):
        values = dense_with_nan(matrix.values[start : start + step]) if matrix.is_sparse else matrix.values
        predict_leaf_dense(values, forest.nodes, forest.tree_start, out[start : start + values.shape[0]])
    return out


def margins(matrix: FeatureMatrix, forest: Forest, base: np.ndarray) -> np.ndarray:
    """(n_rows, n_groups) margins: ``base`` plus every tree's leaf value."""
    margin = np.tile(base, (matrix.n_rows, 1))
    add_forest_margin(matrix.values, forest, margin)
    return margin


def predict(
    booster: "Booster",
    data: Any,
    *,
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
    matrix = feature_matrix(booster, data, validate_features)
    start, end = round_range(booster.num_boosted_rounds(), iteration_range)
    forest = booster.forest(start, end)
    # the base margin belongs to the first round: a range that starts later leaves it out
    base = booster.base_margin() if start == 0 else np.zeros(booster.n_groups)
    with numba_threads(booster.params["n_jobs"]):
        if pred_leaf:
            return leaf_indices(matrix, forest)
        if pred_contribs:
            from fusionrec.gbdt.shap import tree_shap

            contribs = tree_shap(matrix, forest, booster.n_features, base)
            return contribs[:, 0, :] if booster.n_groups == 1 else contribs
        margin = margins(matrix, forest, base)
    if output_margin:
        return margin[:, 0] if booster.n_groups == 1 else margin
    return booster.objective.transform(margin)
