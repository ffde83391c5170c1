"""What a trained forest says about its features: importances and a text dump of its trees."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.tree import Tree

IMPORTANCE_TYPES = ("weight", "gain", "cover", "total_gain", "total_cover")


def _check_importance_type(importance_type: str) -> None:
    if importance_type not in IMPORTANCE_TYPES:
        raise FusionrecError(f"importance_type={importance_type!r}: must be one of {IMPORTANCE_TYPES}")


def _names(n_features: int, feature_names: Sequence[str] | None) -> list[str]:
    return list(feature_names) if feature_names else [f"f{i}" for i in range(n_features)]


def feature_importances(trees: Sequence[Tree], n_features: int, importance_type: str = "gain") -> np.ndarray:
    """Dense importance vector over all features (zeros for unused ones), as XGBoost defines
    each type: split count (weight), mean or total gain, mean or total cover."""
    _check_importance_type(importance_type)
    count = np.zeros(n_features)
    gain = np.zeros(n_features)
    cover = np.zeros(n_features)
    for tree in trees:
        internal = tree.feature >= 0
        np.add.at(count, tree.feature[internal], 1.0)
        np.add.at(gain, tree.feature[internal], tree.gain[internal])
        np.add.at(cover, tree.feature[internal], tree.cover[internal])
    if importance_type == "weight":
        return count
    if importance_type == "total_gain":
        return gain
    if importance_type == "total_cover":
        return cover
    total = gain if importance_type == "gain" else cover
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def importance_by_name(trees: Sequence[Tree], n_features: int, feature_names: Sequence[str] | None,
                       importance_type: str = "weight") -> dict[str, float]:  # fmt: skip
    """Importance per used feature name (XGBoost's ``get_score``)."""
    scores = feature_importances(trees, n_features, importance_type)
    names = _names(n_features, feature_names)
    return {names[i]: float(v) for i, v in enumerate(scores) if v > 0}


def dump_trees(trees: Sequence[Tree], n_features: int, feature_names: Sequence[str] | None, path: str | None = None,
               with_stats: bool = False) -> list[str]:  # fmt: skip
    """Text dump, one string per tree (``x <= threshold`` goes to ``yes``), as XGBoost's
    ``dump_model`` lays it out; written atomically to ``path`` when given."""
    names = _names(n_features, feature_names)
    dumps = []
    for t, tree in enumerate(trees):
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
