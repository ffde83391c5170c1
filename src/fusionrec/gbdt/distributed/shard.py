"""One worker's share of the rows in distributed training (``fusionrec.gbdt.dask``).

A ``RowShard`` holds the rows of the partitions one worker was given, in partition order,
and everything per row that training needs: the bin codes (binned with the cuts every worker
shares), label, weight, margins and gradient pairs. Rows never leave it. The client's
grower (``remote.RemoteTreeGrower``) asks it, once per tree level, for the histograms of its
rows at some nodes and tells it the chosen splits; the shard keeps each node's rows as the
single-machine grower does (a ``TreeGrower`` is its row store: segments of a buffer pair,
split stably) and builds histograms with the same kernels.

Nodes are named by keys the client and the shard derive alike: the root is 0, and the
children of the node the client numbers ``i`` are ``2i + 1`` (left) and ``2i + 2`` (right).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numba
import numpy as np

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.data import check_label, check_weight, to_feature_matrix
from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.grower import FeatureSampler, Node, TreeGrower, Workspace
from fusionrec.gbdt.finders.hist import HistogramSplitFinder
from fusionrec.gbdt.objective import Objective, make_objective
from fusionrec.gbdt.sketch import WeightedQuantileSketch
from fusionrec.gbdt.split import Regularization
from fusionrec.gbdt.tree import Tree, add_leaf_values_by_codes_dense, add_leaf_values_from_nodes

ROOT_KEY = 0


def child_keys(node_id: int) -> tuple[int, int]:
    """The shard keys of the children of the client's node ``node_id``."""
    return 2 * node_id + 1, 2 * node_id + 2


class Route(NamedTuple):
    """What a shard needs of a split to send its rows: bin codes <= split_bin go left."""

    feature: int
    split_bin: int
    default_left: bool


class SplitOrder(NamedTuple):
    """Split the rows of node ``key`` (the client's node ``node_id``) by ``route`` and return
    the histogram of the left (``build_left``) or the right child's rows."""

    key: int
    node_id: int
    route: Route
    build_left: bool


class FinishedTree(NamedTuple):
    """A tree the client finished, and where rows are in it: the rows of the client's node j
    (shard key ``keys[j]``) all reach the tree's node ``by_id[j]`` (pruning may have merged
    nodes into an ancestor)."""

    tree: Tree
    group: int
    keys: np.ndarray
    by_id: np.ndarray


class Schema(NamedTuple):
    """What the shards share: the features and the cuts (a ``Dataset`` reference)."""

    n_features: int
    feature_names: list[str] | None
    cuts: list[np.ndarray]
    max_bin: int


def _in_threads(method):
    """Run a kernel-calling method with the shard's thread count (a worker's share of the
    cores: numba's pool would otherwise take every core in every worker process)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.n_threads is not None:
            numba.set_num_threads(max(1, min(self.n_threads, numba.config.NUMBA_NUM_THREADS)))
        return method(self, *args, **kwargs)

    return wrapper


class RowShard:
    """The rows of some partitions on one worker (see the module docstring).

    ``parts``: (X, y, weight) per partition, X anything fusionrec.gbdt reads (dense);
    ``first_rows``: each partition's first row in the whole data set, to name rows in errors;
    ``n_threads``: threads of the kernels (None: numba's setting).
    """

    def __init__(self, parts: list[tuple[Any, Any, Any]], first_rows: list[int], partition_ids: list[int],
                 n_threads: int | None = None):  # fmt: skip
        self.n_threads = n_threads
        if not parts:
            raise FusionrecError("a RowShard needs at least one partition")
        self.partition_ids = [int(p) for p in partition_ids]
        self.first_rows = [int(r) for r in first_rows]
        matrices, labels, weights = [], [], []
        self.n_rows_per_partition = []
        for pid, first, (X, y, w) in zip(self.partition_ids, self.first_rows, parts):
            what = f"partition {pid} (rows {first:,}..)"
            if len(X) == 0:  # an empty partition adds no rows (the reader refuses 0 rows)
                self.n_rows_per_partition.append(0)
                empty_width = X.shape[1]
                continue
            matrix = to_feature_matrix(X, what)
            if matrix.is_sparse:
                raise FusionrecError(f"{what}: sparse partitions are not supported by fusionrec.gbdt.dask; pass dense chunks")
            if matrices and (matrix.n_features != matrices[0].n_features or matrix.feature_names != matrices[0].feature_names):
                raise FusionrecError(f"{what}: {matrix.n_features} features {matrix.feature_names or ''} differ from partition "
                                     f"{self.partition_ids[0]}'s {matrices[0].n_features} {matrices[0].feature_names or ''}")  # fmt: skip
            matrices.append(matrix)
            self.n_rows_per_partition.append(matrix.n_rows)
            labels.append(None if y is None else check_label(np.asarray(y).ravel(), matrix.n_rows, f"{what} label"))
            weights.append(None if w is None else check_weight(np.asarray(w).ravel(), matrix.n_rows, f"{what} weight", part=True))
        if not matrices:
            matrices = [to_feature_matrix(np.zeros((1, empty_width), np.float32), "an empty partition")]
            matrices[0].values = matrices[0].values[:0]
            labels, weights = [np.empty(0) if parts[0][1] is not None else None], [None]
        self.values = matrices[0].values if len(matrices) == 1 else np.concatenate([m.values for m in matrices])
        self.n_features = matrices[0].n_features
        self.feature_names = matrices[0].feature_names
        self.feature_types = matrices[0].feature_types
        self.label = None if any(y is None for y in labels) else np.concatenate(labels)
        self.weight = None if all(w is None for w in weights) else np.concatenate(
            [np.ones(y.shape[0]) if w is None else w for y, w in zip(labels, weights)])  # fmt: skip
        self.data: Dataset | None = None
        self.margin: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    def describe(self) -> dict:
        return {"n_rows": self.n_rows_per_partition, "n_features": self.n_features, "feature_names": self.feature_names,
                "feature_types": self.feature_types, "has_label": self.label is not None}  # fmt: skip

    # -- bin edges ------------------------------------------------------------------------------
    @_in_threads
    def summaries(self, eps: float) -> dict[int, list[tuple]]:
        """Each partition's weighted quantile summary of each feature (rows of weight 0 take no
        part, as in memory); the client merges them in partition order."""
        out, start = {}, 0
        with ThreadPoolExecutor(max_workers=self.n_threads or numba.get_num_threads()) as pool:
            for pid, n in zip(self.partition_ids, self.n_rows_per_partition):
                values = self.values[start : start + n]
                weight = None if self.weight is None else self.weight[start : start + n]
                if weight is not None:
                    values, weight = values[weight > 0], weight[weight > 0]

                def summary(j: int) -> tuple:  # features in parallel: the sort and the kernels release the GIL
                    sketch = WeightedQuantileSketch(eps)
                    sketch.push(values[:, j], weight)
                    return sketch.summary()

                out[pid] = list(pool.map(summary, range(self.n_features)))
                start += n
        return out

    @_in_threads
    def bind(self, schema: Schema, params: dict) -> tuple[float, float]:
        """Bin the rows with the shared cuts and check the labels for ``params``' objective;
        (sum of weights, weighted sum of labels) for the base score."""
        self.data = Dataset(self.values, reference=schema)  # the codes; label and weight stay here
        self.objective = make_objective(params, None)
        self.params = params
        if self.label is None:
            return 0.0, 0.0
        try:
            self.objective.check_label(self.label)
        except FusionrecError as error:
            raise FusionrecError(self._global_rows(str(error))) from None
        w = np.ones(self.n_rows) if self.weight is None else self.weight
        return float(w.sum()), float(np.dot(w, self.label))

    def _global_rows(self, message: str) -> str:
        """A label error of row i of this shard, renamed to the whole data set's row."""
        if message.startswith("label[") and "]" in message:
            local = int(message[len("label[") : message.index("]")])
            bounds = np.cumsum([0, *self.n_rows_per_partition])
            k = int(np.searchsorted(bounds, local, side="right")) - 1
            row = self.first_rows[k] + local - bounds[k]
            return f"label[{row}] (partition {self.partition_ids[k]}){message[message.index(']') + 1:]}"
        return message

    @_in_threads
    def init_margins(self, base_margin: np.ndarray, trees: list[Tree], groups: list[int]) -> None:
        """Margins of the base score plus ``trees`` (continued training: trees of these cuts)."""
        self.margin = np.tile(np.asarray(base_margin, np.float64), (self.n_rows, 1))
        self.add_trees(trees, groups)

    @_in_threads
    def add_trees(self, trees: list[Tree], groups: list[int]) -> None:
        """Add the trees' leaf values to every row's margin (sampled or not)."""
        for tree, group in zip(trees, groups):
            column = np.ascontiguousarray(self.margin[:, group])
            add_leaf_values_by_codes_dense(self.data.codes, tree.code_nodes, tree.value, column)
            self.margin[:, group] = column

    def margins_and_labels(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        return self.margin, self.label, self.weight

    # -- one round ----------------------------------------------------------------------------
    def _begin_round(self, n_groups: int, subsample: float, seed: int) -> None:
        """Gradient pairs of every group from the margins (as ``boosting.BoostingRound``), and
        this round's row sample: each partition draws from its own generator seeded by
        (seed, partition), so the sample does not depend on which worker holds it."""
        n = self.n_rows
        objective: Objective = self.objective
        self.gh = np.empty((n, 2), dtype=np.float32)
        self.fused = n_groups == 1 and objective.fill_pairs(self.margin, self.label, self.weight, self.gh)
        if not self.fused:
            self.gradients, self.hessians = objective.gradients(self.margin, self.label, self.weight)
        if subsample < 1.0:
            draws = [np.random.default_rng([seed, pid]).random(k) for pid, k in zip(self.partition_ids, self.n_rows_per_partition)]
            self.rows = np.flatnonzero(np.concatenate(draws) < subsample).astype(np.int32)
        else:
            self.rows = np.arange(n, dtype=np.int32)
        if getattr(self, "workspace", None) is None or not self.workspace.fits(n):
            self.workspace = Workspace(n)
        if getattr(self, "finder", None) is None:
            data = self.data
            self.finder = HistogramSplitFinder(data.codes, data.codes_by_feature, data.n_bins_per_feature, data.cuts,
                                               Regularization.of(self.params))  # fmt: skip

    @_in_threads
    def begin_tree(self, group: int, features: np.ndarray, round_start: tuple | None,
                   finished: list[FinishedTree]) -> tuple[int, np.ndarray]:  # fmt: skip
        """Add the ``finished`` trees to the margins; with ``round_start``
        (n_groups, subsample, seed) begin a round; then (sampled rows, the root's histogram
        over the tree's ``features``). One call instead of three: each is a round trip."""
        self.add_finished(finished)
        if round_start is not None:
            self._begin_round(*round_start)
        if not self.fused:
            self.gh[:, 0] = self.gradients[group]
            self.gh[:, 1] = self.hessians[group]
        sampler = FeatureSampler(np.random.default_rng(0), self.n_features, 1.0, 1.0, 1.0)
        sampler.tree_features = np.asarray(features, np.int32)
        all_rows = self.rows.shape[0] == self.n_rows
        self.grower = TreeGrower(self.finder, self.gh, self.rows, all_rows, sampler, self.params, self.workspace)
        self.finder.begin_tree(self.grower)
        root = Node(ROOT_KEY, 0, self.grower.n_rows, 0, 0.0, 0.0, 0)
        self.nodes = {ROOT_KEY: root}
        return int(self.rows.shape[0]), self._histogram(root, all_rows)

    @_in_threads
    def split(self, orders: list[SplitOrder]) -> tuple[np.ndarray, np.ndarray]:
        """Split each order's node: (rows gone left per order, the asked child's histogram per
        order, stacked: one array travels much faster than many)."""
        n_left = np.zeros(len(orders), np.int64)
        hists = np.empty((len(orders), self.finder.n_slots, 2))
        for i, order in enumerate(orders):
            node = self.nodes.pop(order.key)
            node.split = order.route
            n_left[i] = self.grower._partition(node) if node.n_rows else 0
            mid = node.start + int(n_left[i])
            left_key, right_key = child_keys(order.node_id)
            left = Node(left_key, node.start, mid, 1 - node.buffer, 0.0, 0.0, node.depth + 1)
            right = Node(right_key, mid, node.stop, 1 - node.buffer, 0.0, 0.0, node.depth + 1)
            self.nodes[left_key], self.nodes[right_key] = left, right
            self._histogram(left if order.build_left else right, False, hists[i])
        return n_left, hists

    @_in_threads
    def histograms(self, keys: list[int]) -> np.ndarray:
        hists = np.empty((len(keys), self.finder.n_slots, 2))
        for i, key in enumerate(keys):
            self._histogram(self.nodes[key], False, hists[i])
        return hists

    @_in_threads
    def add_finished(self, finished: list[FinishedTree]) -> None:
        """Add trees grown on these rows to the margins: each row from the tree node its
        last segment reached (a leaf, or a node whose split no shard applied), rows left out of
        the sample from the root."""
        for tree, group, keys, by_id in finished:
            place = dict(zip(keys.tolist(), by_id.tolist()))
            # a key the client never made: its parent's split was applied here but then not
            # taken (max_leaves, or a lossguide leaf never expanded): its rows reach the node
            # the parent (client id (key - 1) // 2) reached
            frontier = [(node, place[key] if key in place else int(by_id[(key - 1) // 2]))
                        for key, node in self.nodes.items() if node.n_rows]  # fmt: skip
            column = self.margin[:, group]
            arrays = (tree.code_nodes, tree.value, column)
            for buffer in (0, 1):
                segments = [(node, at) for node, at in frontier if node.buffer == buffer]
                if segments:
                    add_leaf_values_from_nodes(
                        self.grower.rows_pair[buffer], np.array([n.start for n, _ in segments], np.int64),
                        np.array([n.stop for n, _ in segments], np.int64), np.array([at for _, at in segments], np.int64),
                        self.data.codes_by_feature, *arrays,
                    )  # fmt: skip
            if self.rows.shape[0] < self.n_rows:
                rest = np.ones(self.n_rows, np.bool_)
                rest[self.rows] = False
                rest_rows = np.flatnonzero(rest).astype(np.int32)
                add_leaf_values_from_nodes(rest_rows, np.zeros(1, np.int64), np.array([rest_rows.shape[0]], np.int64),
                                           np.zeros(1, np.int64), self.data.codes_by_feature, *arrays)  # fmt: skip

    def _histogram(self, node: Node, whole: bool, out: np.ndarray | None = None) -> np.ndarray:
        hist = self.finder._build(node, whole)
        if out is None:
            out = hist.copy()
        else:
            out[:] = hist
        self.finder._give_back(hist)
        return out
