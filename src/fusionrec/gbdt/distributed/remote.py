"""Growing trees on rows held elsewhere: the client side of distributed training.

The rows live in ``shard.RowShard`` objects (one per Dask worker in ``fusionrec.gbdt.dask``;
in-process in tests). The client grows every tree with the single-machine grower's rules
(``grower.TreeGrower``: depthwise or lossguide, max_leaves, gamma pruning, the feature
sampler) and the single-machine split scoring (``finders.hist.HistogramSplitFinder``); only
the histograms come from the shards, summed here in shard order. Per tree level, one call to
every shard: it splits the rows of the level's chosen splits and returns, from the same pass,
the histogram of each split's lighter child (by hessian, known from the split); the heavier
child's is the parent's minus it (the subtraction trick), as the out-of-core finder does.

Every shard receives the same splits, so every shard's rows follow the same tree; the tree's
leaf values come from the summed gradients, and each shard adds them to its rows' margins.

``Shards`` is what the client needs of the rows' holders: ``call(method, *args)`` runs a
``RowShard`` method on every shard and returns the results in shard order. ``ShardedData``
is a data set whose rows are in shards (``dask.DaskDataset``; ``InProcessData`` here, which
the tests use as the reference the Dask path must equal), and ``train_sharded`` the boosting
loop over one.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.booster import Booster
from fusionrec.gbdt.grower import FeatureSampler, Node, SplitFinder, TreeGrower
from fusionrec.gbdt.finders.hist import HistogramSplitFinder
from fusionrec.gbdt.params import n_classes_of
from fusionrec.gbdt.distributed.shard import ROOT_KEY, FinishedTree, Route, RowShard, Schema, SplitOrder, child_keys
from fusionrec.gbdt.sketch import WeightedQuantileSketch, sketch_cuts
from fusionrec.gbdt.split import Regularization
from fusionrec.gbdt.training import run_rounds, start_booster
from fusionrec.gbdt.tree import Tree


class Shards(Protocol):
    def call(self, method: str, *args: Any) -> list: ...


class InProcessShards:
    """Shards in this process."""

    def __init__(self, shards: list[RowShard]):
        self.shards = shards

    def call(self, method: str, *args: Any) -> list:
        return [getattr(shard, method)(*args) for shard in self.shards]


class ShardedData:
    """A data set whose rows are in ``shards``; subclasses set the schema attributes
    (n_rows, n_features, feature_names, feature_types, has_label, max_bin, sketch_eps)."""

    shards: Shards
    _cuts: list[np.ndarray] | None = None

    def _set_reference(self, reference: Any) -> None:
        if reference is None:
            return
        self._cuts = list(reference.cuts)
        self.max_bin = int(reference.max_bin)
        if len(self._cuts) != self.n_features:
            raise FusionrecError(f"reference: has {len(self._cuts)} features, data {self.n_features}")

    @property
    def cuts(self) -> list[np.ndarray]:
        """The bin edges: the partitions' sketch summaries merged in partition order (so they
        depend on the partitions, not on which shard holds which)."""
        if self._cuts is None:
            sketches = [WeightedQuantileSketch(self.sketch_eps) for _ in range(self.n_features)]
            by_partition: dict[int, list] = {}
            for summaries in self.shards.call("summaries", self.sketch_eps):
                by_partition.update(summaries)
            for pid in sorted(by_partition):
                for j, summary in enumerate(by_partition[pid]):
                    sketches[j].push_summary(summary)
            self._cuts = sketch_cuts(sketches, self.max_bin)
        return self._cuts

    def schema(self) -> Schema:
        return Schema(self.n_features, self.feature_names, self.cuts, self.max_bin)


class InProcessData(ShardedData):
    """Rows split into partitions (``bounds``) and the partitions into shards in this process:
    ``shard_of[i]`` holds partition i."""

    def __init__(self, X, y=None, weight=None, *, bounds: Sequence[int], shard_of: Sequence[int], max_bin: int = 256,
                 sketch_eps: float = 0.01, reference: Any = None):  # fmt: skip
        parts = [(X[a:b], None if y is None else y[a:b], None if weight is None else weight[a:b])
                 for a, b in zip(bounds[:-1], bounds[1:])]  # fmt: skip
        shards = []
        for k in sorted(set(shard_of)):
            ids = [i for i, owner in enumerate(shard_of) if owner == k]
            shards.append(RowShard([parts[i] for i in ids], [bounds[i] for i in ids], ids))
        self.shards = InProcessShards(shards)
        first = shards[0]
        self.n_rows = int(bounds[-1] - bounds[0])
        self.n_features, self.feature_names, self.feature_types = first.n_features, first.feature_names, first.feature_types
        self.has_label = y is not None
        self.max_bin, self.sketch_eps = int(max_bin), float(sketch_eps)
        self._set_reference(reference)


def summed(histograms: list[np.ndarray]) -> np.ndarray:
    """The shards' histograms (or counts) added in shard order (a fixed order: the same
    shards give the same bits)."""
    out = histograms[0].copy()
    for hist in histograms[1:]:
        out += hist
    return out


class RemoteHistogramSplitFinder(HistogramSplitFinder):
    """Histogram split finding whose histograms are the shards' sums."""

    tree_bins = True

    def __init__(self, shards: Shards, n_bins: np.ndarray, cuts: list[np.ndarray], reg: Regularization):
        super().__init__(None, None, n_bins, cuts, reg, sparse=False)  # the codes are on the shards
        self.shards = shards
        # what the next tree's first call also carries: its output group, (n_groups,
        # subsample, seed) when it begins a round, and the trees finished since the last call
        self.group = 0
        self.round_start: tuple | None = None
        self.finished: list[FinishedTree] = []

    def begin_tree(self, grower) -> None:
        SplitFinder.begin_tree(self, grower)
        self._begin_layout(grower.features, grower.features.shape[0])
        self._rows_left: dict[int, int] = {}
        # by parent id: (its lighter child is the left one, that child's summed histogram)
        self._child_hists: dict[int, tuple[bool, np.ndarray]] = {}
        started = self.shards.call("begin_tree", self.group, grower.features, self.round_start, self.finished)
        self.round_start, self.finished = None, []
        self.n_rows = sum(n for n, _ in started)
        self._root_hist = summed([hist for _, hist in started])

    def root_sums(self, root: Node) -> tuple[float, float]:
        self.hists[root.id] = self._root_hist
        first = self._root_hist[: self.offsets[1]]  # every row lands in one slot of the first feature
        return float(first[:, 0].sum()), float(first[:, 1].sum())

    @staticmethod
    def _key(node: Node) -> int:
        if node.parent is None:
            return ROOT_KEY
        left, right = child_keys(node.parent.id)
        return left if node is node.parent.left else right

    def find_splits(self, nodes: list[Node], masks: list[np.ndarray]) -> None:
        wanted = {node.id for node in nodes}
        parents = list({node.parent.id: node.parent for node in nodes if node.id not in self.hists}.values())
        missing = [parent for parent in parents if parent.id not in self._child_hists]
        if missing:  # not built while splitting (its split was not known then): one more call
            smaller = [self._smaller_child(parent) for parent in missing]
            hists = summed(self.shards.call("histograms", [self._key(child) for child in smaller]))
            for i, (parent, child) in enumerate(zip(missing, smaller)):
                self._child_hists[parent.id] = (child is parent.left, hists[i])
        for parent in parents:
            is_left, hist = self._child_hists.pop(parent.id)
            self._children_histograms(parent, wanted, (parent.left if is_left else parent.right, hist))
        self._score(nodes, masks)
        self._split_on_shards([node for node in nodes if node.split is not None])

    def _split_on_shards(self, nodes: list[Node]) -> None:
        """Send the level's splits; keep each node's rows gone left and its lighter child's histogram."""
        if not nodes:
            return
        max_depth = self.grower.max_depth
        orders, sent = [], []
        for node in nodes:
            if 0 < max_depth <= node.depth + 1:
                # children at the depth limit never split: their rows need not move (each shard's
                # margins walk the finished tree), and their counts are never read
                self._rows_left[node.id] = 0
                continue
            split = node.split
            route = Route(int(split.feature), int(split.split_bin), bool(split.default_left))
            # the lighter child's histogram (by hessian, known from the split) is built
            orders.append(SplitOrder(self._key(node), node.id, route, split.left_h <= node.sum_h - split.left_h))
            sent.append(node)
        if not orders:
            return
        per_shard = self.shards.call("split", orders)
        n_left = summed([n for n, _ in per_shard])
        hists = summed([h for _, h in per_shard])
        for i, (node, order) in enumerate(zip(sent, orders)):
            self._rows_left[node.id] = int(n_left[i])
            self._child_hists[node.id] = (order.build_left, hists[i])

    def rows_gone_left(self, node: Node) -> int:
        return self._rows_left.pop(node.id)

    def decide(self, node: Node, split, go_left: np.ndarray) -> None:
        raise NotImplementedError("the rows are on the shards: RemoteTreeGrower asks rows_gone_left")

    def forget(self, node: Node) -> None:
        super().forget(node)
        self._rows_left.pop(node.id, None)
        self._give_back(self._child_hists.pop(node.id, (None, None))[1])


class RemoteTreeGrower(TreeGrower):
    """``TreeGrower`` whose rows are on the shards: a node here is its row count only
    (segment [0, n)), and a split's left count comes back from the shards."""

    def __init__(self, finder: RemoteHistogramSplitFinder, sampler: FeatureSampler, params):
        self.finder = finder
        self.all_rows = True
        self._bind(sampler, params)

    @property
    def n_rows(self) -> int:
        """The rows sampled for the tree, over all shards (known once the tree has begun)."""
        return self.finder.n_rows

    def finished(self, tree: Tree, group: int) -> FinishedTree:
        """The grown ``tree`` with the flat-tree node each shard key's rows reach."""
        by_id = np.empty(len(self.nodes), np.int64)
        keys = np.empty(len(self.nodes), np.int64)
        for node in self.nodes:  # parents before children; ids are positions
            at = self.tree_index.get(node.id)
            by_id[node.id] = at if at is not None else by_id[node.parent.id]
            keys[node.id] = self.finder._key(node)
        return FinishedTree(tree, group, keys, by_id)

    def _partition(self, node: Node) -> int:
        return self.finder.rows_gone_left(node)

    def _gather_leaf_rows(self) -> None:
        """Nothing to gather: each shard adds the leaf values to its own rows."""


class RemoteBoostingRound:
    """One boosting round over the shards (``boosting.BoostingRound``'s job, rows elsewhere)."""

    def __init__(self, shards: Shards, params: dict, n_groups: int, n_bins: np.ndarray, cuts: list[np.ndarray]):
        self.shards = shards
        self.params = params
        self.n_groups = n_groups
        self.n_features = len(cuts)
        self.finder = RemoteHistogramSplitFinder(shards, n_bins, cuts, Regularization.of(params))

    def run(self, rng: np.random.Generator) -> list[Tree]:
        p = self.params
        subsample = float(p["subsample"])
        # the single machine draws one number per row; the shards draw per partition from this seed
        seed = int(rng.integers(np.iinfo(np.int64).max)) if subsample < 1.0 else 0
        self.finder.round_start = (self.n_groups, subsample, seed)
        sampler = FeatureSampler(rng, self.n_features, p["colsample_bytree"], p["colsample_bylevel"], p["colsample_bynode"])
        trees = []
        for group in range(self.n_groups):
            sampler.new_tree()
            self.finder.group = group
            grower = RemoteTreeGrower(self.finder, sampler, p)
            tree, _ = grower.grow()
            # the shards add it to their margins with the next tree's first call (or flush())
            self.finder.finished.append(grower.finished(tree, group))
            trees.append(tree)
        return trees

    def flush(self) -> None:
        """Add the finished trees to the shards' margins now (before reading them)."""
        if self.finder.finished:
            self.shards.call("add_finished", self.finder.finished)
            self.finder.finished = []


class _GatheredEval:
    """An evaluation data set's labels and weights, gathered to the client for the metrics."""

    group_ptr = None
    group_weight = None

    def __init__(self, label: np.ndarray, weight: np.ndarray | None):
        self.label, self.weight = label, weight


def check_sharded_params(booster: Booster) -> None:
    """What training on shards does not do, refused by name."""
    p = booster.params
    if p["tree_method"] not in ("hist", "auto"):
        raise FusionrecError(f"parameter tree_method={p['tree_method']!r}: distributed training grows trees with 'hist'")
    objective = booster.objective
    name = objective.name
    if name == "custom" or name.startswith("rank:"):
        raise FusionrecError(f"parameter objective={name!r}: distributed training takes the built-in regression and "
                             "classification objectives (not ranking or custom objectives)")  # fmt: skip
    if objective.leaf_quantile is not None:
        raise FusionrecError(f"parameter objective={name!r}: its leaves are refreshed to quantiles of each leaf's "
                             "residuals, which distributed training does not compute; train it on one machine")  # fmt: skip
    if booster.base_score is None and not objective.base_score_from_mean:
        raise FusionrecError(f"parameter objective={name!r}: set base_score for distributed training (its default is a "
                             "label quantile, which distributed training does not compute)")  # fmt: skip


def train_sharded(
    params: dict[str, Any],
    dtrain: ShardedData,
    num_boost_round: int,
    *,
    evals: Sequence[tuple[ShardedData, str]] | None = None,
    custom_metric: Callable | None = None,
    early_stopping_rounds: int | None = None,
    verbose_eval: bool | int = False,
    xgb_model: Booster | str | None = None,
    callbacks: Sequence | None = None,
) -> tuple[Booster, dict]:
    """``training.train`` over sharded data: (booster, evals_result). Evaluation data sets
    gather their margins to the client each round (8 bytes per row and class)."""
    if not dtrain.has_label:
        raise FusionrecError("dtrain: a training data set needs a label")
    evals = list(evals or [])
    for i, (data, name) in enumerate(evals):
        if not data.has_label:
            raise FusionrecError(f"evals[{i}]: data set {name!r} has no label")
    booster = start_booster(params, xgb_model)
    check_sharded_params(booster)
    if booster.trees and not all(np.array_equal(a, b) for a, b in zip(booster.cuts, dtrain.cuts)):
        raise FusionrecError("xgb_model: continued distributed training needs the model's bin edges: build dtrain with "
                             "reference=model")  # fmt: skip
    booster.bind_schema(dtrain)
    schema = dtrain.schema()
    datasets = [dtrain] + [data for data, _ in evals if data is not dtrain]
    for data in datasets:
        sums = data.shards.call("bind", schema, booster.params)
        if data is dtrain and booster.base_score is None:
            total_weight = sum(s[0] for s in sums)
            if total_weight <= 0:
                raise FusionrecError("dtrain: the weights sum to 0")
            mean = sum(s[1] for s in sums) / total_weight
            booster.base_score = booster.objective.base_score_from(np.array([mean]), None)
    for data in datasets:
        data.shards.call("init_margins", booster.base_margin(), booster.trees, booster.tree_group)
    n_groups = n_classes_of(booster.params)
    n_bins = np.array([cut.shape[0] + 1 for cut in schema.cuts], np.int32)  # value bins per feature
    boosting = RemoteBoostingRound(dtrain.shards, booster.params, n_groups, n_bins, schema.cuts)
    gathered: dict[int, _GatheredEval] = {}

    def update(model: Booster, iteration: int) -> None:
        trees = boosting.run(model.rng)
        model.append_round(trees)
        for data in datasets[1:]:
            data.shards.call("add_trees", trees, list(range(n_groups)))

    def evaluate(model: Booster, iteration: int) -> dict[str, dict[str, float]]:
        results = {}
        for data, name in evals:
            if data is dtrain:
                boosting.flush()
            parts = data.shards.call("margins_and_labels")
            margin = np.concatenate([m for m, _, _ in parts])
            if id(data) not in gathered:
                weights = [w for _, _, w in parts]
                weight = None if all(w is None for w in weights) else np.concatenate(
                    [np.ones(m.shape[0]) if w is None else w for (m, _, _), w in zip(parts, weights)])  # fmt: skip
                gathered[id(data)] = _GatheredEval(np.concatenate([y for _, y, _ in parts]), weight)
            results[name] = model.metrics_of(margin, gathered[id(data)], custom_metric)
        return results

    history: dict = {}
    booster = run_rounds(
        booster, num_boost_round, update=update, evaluate=evaluate if evals else None, callbacks=callbacks,
        verbose_eval=verbose_eval, early_stopping_rounds=early_stopping_rounds, evals_result=history,
    )  # fmt: skip
    return booster, history
