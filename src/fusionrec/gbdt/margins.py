"""The margins of each data set a booster trains or evaluates on, kept across rounds.

A round adds one tree per output group; the data sets' margins need only those trees added,
not the whole forest again. ``MarginCache`` holds, per data set (by identity), its margins and
how many trees they include, and brings them up to date on request.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fusionrec.gbdt.outofcore.external import ExternalDataset
from fusionrec.gbdt.tree import Forest, Tree, add_forest_margin


class MarginCache:
    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, np.ndarray, int]] = {}

    def holds(self, dataset: Any) -> bool:
        """Whether margins of this very data set are kept (the booster has seen it)."""
        cached = self._entries.get(id(dataset))
        return cached is not None and cached[0] is dataset

    def entry(self, dataset: Any, base_margin: np.ndarray) -> tuple[np.ndarray, int]:
        """The kept margins of ``dataset`` and how many trees they hold (new: the base margins, 0)."""
        if not self.holds(dataset):
            return np.tile(base_margin, (dataset.n_rows, 1)), 0
        _, margin, n_trees = self._entries[id(dataset)]
        return margin, n_trees

    def store(self, dataset: Any, margin: np.ndarray, n_trees: int) -> None:
        self._entries[id(dataset)] = (dataset, margin, n_trees)

    def current(self, dataset: Any, trees: Sequence[Tree], tree_group: Sequence[int], n_groups: int,
                base_margin: np.ndarray) -> np.ndarray:  # fmt: skip
        """The margins of ``dataset`` for all of ``trees``: the kept ones plus the trees added since."""
        margin, n_done = self.entry(dataset, base_margin)
        if n_done < len(trees):
            if isinstance(dataset, ExternalDataset):
                dataset.add_tree_margins(trees[n_done:], tree_group[n_done:], margin)
            else:
                add_forest_margin(dataset.raw.values, Forest.of(trees[n_done:], tree_group[n_done:], n_groups), margin)
        self.store(dataset, margin, len(trees))
        return margin

    def clear(self) -> None:
        self._entries = {}
