"""One boosting round: gradients, row and column sampling, one tree per output group.

``Booster.update`` hands the round its margins; the round grows the trees with the split
finder of ``tree_method`` and adds their leaf values to the margins in place. The finder
(and the row buffers) are made once per training data set and reused by every tree: the
exact finder's sorted column block, in particular, is sorted once (section 4.1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.outofcore.external import ExternalDataset
from fusionrec.gbdt.grower import FeatureSampler, SplitFinder, TreeGrower, Workspace, add_leaf_values
from fusionrec.gbdt.objective import Objective, weighted_quantile
from fusionrec.gbdt.split import Regularization
from fusionrec.gbdt.tree import Forest, Tree, add_forest_margin


def make_split_finder(params: dict[str, Any], dtrain: Dataset) -> SplitFinder:
    """The split finder of ``params['tree_method']`` bound to ``dtrain`` and the regularization."""
    reg = Regularization.of(params)
    method = params["tree_method"]
    if isinstance(dtrain, ExternalDataset):
        if method not in ("hist", "auto"):
            raise FusionrecError(f"tree_method={method!r}: out-of-core data (ExternalDataset) trains with tree_method='hist'")
        from fusionrec.gbdt.finders.paged import PagedHistogramSplitFinder

        return PagedHistogramSplitFinder(dtrain, reg)
    if method == "exact":
        from fusionrec.gbdt.finders.exact import ExactSplitFinder

        return ExactSplitFinder(dtrain.column_block, dtrain.values_by_feature, reg)
    if method == "approx":
        from fusionrec.gbdt.finders.approx import make_approx_finder

        return make_approx_finder(dtrain, reg, params)
    from fusionrec.gbdt.finders.hist import HistogramSplitFinder

    return HistogramSplitFinder(dtrain.codes, dtrain.codes_by_feature, dtrain.n_bins_per_feature, dtrain.cuts, reg)


class BoostingRound:
    """Grows the trees of one round; holds what is reused from round to round."""

    def __init__(self, params: dict[str, Any], objective: Objective, n_groups: int):
        self.params = params
        self.objective = objective
        self.n_groups = n_groups
        self._dataset_id: int | None = None
        self._finder: SplitFinder | None = None
        self._workspace: Workspace | None = None
        # run_paged: the last tree left out of the margins, and the node each row reached in it
        self._reached_tree: Tree | None = None
        self._reached: np.ndarray | None = None

    def _bind(self, dtrain: Dataset) -> None:
        if self._dataset_id != id(dtrain) or self._finder is None:
            self._finder = make_split_finder(self.params, dtrain)
            self._dataset_id = id(dtrain)
            self._reached_tree = None
        if self._workspace is None or not self._workspace.fits(dtrain.n_rows):
            self._workspace = Workspace(dtrain.n_rows)

    def fuses_passes(self, dtrain: Dataset) -> bool:
        """Whether rounds on ``dtrain`` join each tree's last page pass to the next tree's first
        (``run_paged``): dense out-of-core pages, every row, one tree per round from an
        objective whose gradient pairs are row by row, a depth limit."""
        p, objective = self.params, self.objective
        return (isinstance(dtrain, ExternalDataset) and not dtrain.is_sparse and self.n_groups == 1
                and p["subsample"] >= 1.0 and int(p["max_depth"]) > 0 and objective.leaf_quantile is None
                and type(objective).fill_pairs is not Objective.fill_pairs)  # fmt: skip

    def run_paged(self, dtrain: ExternalDataset, margin: np.ndarray, rng: np.random.Generator, unapplied: list[Tree]) -> Tree:
        """One round on out-of-core pages with a pass less per tree: the rows of the depth
        limit's leaves are not routed (a page pass), so the round's tree is left out of
        ``margin``; the next round's first pass adds it (and any other ``unapplied`` trees) to
        each page's rows, takes their gradient pairs and builds the root's histogram in one go.
        Each row starts the walk of the round's tree from the node it is known to reach (its
        leaf, or the split into the depth limit: one step), not from the root."""
        p = self.params
        self._bind(dtrain)
        n = dtrain.n_rows
        gh = np.empty((n, 2), dtype=np.float32)
        sampler = FeatureSampler(rng, dtrain.n_features, p["colsample_bytree"], p["colsample_bylevel"], p["colsample_bynode"])
        sampler.new_tree()
        trees = [(tree, self._reached if tree is self._reached_tree else None) for tree in unapplied]
        self._finder.root_pass(sampler.tree_features, trees, margin, dtrain.label, dtrain.weight, self.objective, gh)
        grower = TreeGrower(self._finder, gh, np.arange(n, dtype=np.int32), True, sampler, p, self._workspace)
        grower.route_leaves = False
        tree = grower.grow()[0]
        if self._reached is None or self._reached.shape[0] != n:
            self._reached = np.empty(n, np.int32)
        self._reached[:] = 0  # the root: a full walk for any row no segment holds (none, when every row is grown on)
        grower.reached_nodes(self._reached)
        self._reached_tree = tree
        return tree

    def run(self, dtrain: Dataset, margin: np.ndarray, rng: np.random.Generator) -> list[Tree]:
        """One tree per group (margin[:, group] gains its leaf values, in place)."""
        p = self.params
        objective = self.objective
        objective.prepare(dtrain)
        self._bind(dtrain)
        y, w = dtrain.label, dtrain.weight
        n = dtrain.n_rows
        gh = np.empty((n, 2), dtype=np.float32)
        fused = self.n_groups == 1 and objective.fill_pairs(margin, y, w, gh)
        if not fused:
            gradients, hessians = objective.gradients(margin, y, w)
        if p["subsample"] < 1.0:
            rows = np.flatnonzero(rng.random(n) < p["subsample"]).astype(np.int32)
        else:
            rows = np.arange(n, dtype=np.int32)
        all_rows = rows.shape[0] == n
        sampler = FeatureSampler(rng, dtrain.n_features, p["colsample_bytree"], p["colsample_bylevel"], p["colsample_bynode"])
        trees = []
        for group in range(self.n_groups):
            sampler.new_tree()
            if not fused:
                gh[:, 0] = gradients[group]
                gh[:, 1] = hessians[group]
            if rows.shape[0] == 0:
                tree = Tree.single_leaf(0.0, 0.0)
            else:
                grower = TreeGrower(self._finder, gh, rows, all_rows, sampler, p, self._workspace)
                tree, segments = grower.grow()
                if objective.leaf_quantile is not None:
                    self._refresh_leaves(tree, segments, grower.rows, margin[:, group], y, w)
                if all_rows:
                    leaves = np.array([s[0] for s in segments], dtype=np.int64)
                    add_leaf_values(
                        grower.rows,
                        np.array([s[1] for s in segments], dtype=np.int64),
                        np.array([s[2] for s in segments], dtype=np.int64),
                        tree.value[leaves],
                        margin[:, group],
                    )
            if not all_rows or rows.shape[0] == 0:
                column = np.zeros((n, 1))
                if isinstance(dtrain, ExternalDataset):  # the rows left out: the tree walked on the pages
                    dtrain.add_tree_margins([tree], [0], column)
                else:
                    add_forest_margin(dtrain.raw.values, Forest.of([tree], [0], 1), column)
                margin[:, group] += column[:, 0]
            trees.append(tree)
        return trees

    def _refresh_leaves(self, tree, segments, rows, margin, y, w) -> None:
        """Set each leaf to the weighted quantile of its rows' residuals (L1 / quantile loss)."""
        alpha = self.objective.leaf_quantile
        eta = float(self.params["learning_rate"])
        for leaf, start, stop in segments:
            members = rows[start:stop]
            residual = y[members] - margin[members]
            tree.value[leaf] = eta * weighted_quantile(residual, None if w is None else w[members], alpha)
