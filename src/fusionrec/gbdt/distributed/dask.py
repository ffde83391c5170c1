"""Boosted trees on a Dask cluster, in the style of ``xgboost.dask`` and ``lightgbm.dask``.

``DaskDataset(client, X, y)`` takes a dask array or dask dataframe (and label / weight
collections partitioned alike); each partition stays on the worker that holds it, inside a
``shard.RowShard`` (one Dask actor per worker). ``train(client, params, dtrain)`` returns
``{"booster": Booster, "history": {...}}``; ``predict(client, model, X)`` maps the model
over the partitions; ``DaskGBDTClassifier`` / ``DaskGBDTRegressor`` are the scikit-learn
estimators over them. With no client, a ``LocalCluster`` of this machine is started.

How the work is split:

- **bin edges**: each worker sketches each of its partitions (the weighted quantile sketch,
  ``sketch.py``); the client merges the summaries **in partition order** and derives the cuts
  exactly as ``ExternalDataset`` does, so they depend on the partitions, not on the workers;
- **trees**: the client grows each tree (``remote.RemoteTreeGrower``: the single-machine
  grower and split scoring); once per level every worker builds the histograms of its rows at
  the level's nodes and the client sums them in worker order, then sends every worker the
  chosen splits. The histograms travel through Dask's actor calls (worker -> client ->
  worker), not a worker-to-worker all-reduce: a level's histograms are small (nodes x features
  x 256 x 16 bytes), the client must see the sum to choose the split anyway, and one round
  trip per level keeps a lost worker visible to the one process that can stop the training;
- **rows** (codes, gradients, margins, row positions) never leave their worker.

The same data in the same partitions gives the same model on any number of workers, and the
model of ``fusionrec.gbdt.train`` on a ``Dataset`` built with the same cuts
(``reference=booster``): histograms are float64 sums, so the order in which workers' sums
are added can move a gain in its last bits; the tests check equal tree structures and leaf
values to 1e-9 (they come out bit-identical in practice). ``subsample`` draws rows per
partition (seeded by round and partition), so a subsampled model matches across worker
counts but not the single machine's, which draws one sequence over all rows.

Every wait on the cluster is bounded: a worker that dies or leaves while ``DaskDataset``
places its rows or during training makes it raise ``FusionrecError`` naming the worker within
about a second (the call fails, or the scheduler no longer lists it; ``result_on``); the
partitions' computation, which dask reruns elsewhere when a worker is lost, fails once the
cluster has had no worker for ``NO_WORKER_SECONDS``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, column_or_1d

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.booster import Booster
from fusionrec.gbdt.params import MAX_BIN, check_max_bin
from fusionrec.gbdt.distributed.remote import ShardedData, train_sharded
from fusionrec.gbdt.distributed.shard import RowShard
from fusionrec.gbdt.sklearn import GBDTClassifier, GBDTRegressor

POLL_SECONDS = 0.5  # how often a waiting call checks that its worker is still in the cluster
NO_WORKER_SECONDS = 30.0  # how long partitions may wait for a cluster that has no worker at all

__all__ = ["DaskDataset", "train", "predict", "DaskGBDTClassifier", "DaskGBDTRegressor"]


def _dask():
    try:
        import dask.array as da
        import dask.dataframe as dd
        import distributed
    except ImportError as exc:  # pragma: no cover - a dependency of fusionrec
        raise FusionrecError(f"fusionrec.gbdt.dask needs dask[distributed] ({exc})") from exc
    return da, dd, distributed


def default_client(client: Any = None):
    """``client``, else the current Dask client, else a new LocalCluster on this machine."""
    _, _, distributed = _dask()
    if client is not None:
        if not isinstance(client, distributed.Client):
            raise FusionrecError(f"client: expected a distributed.Client, got {type(client).__name__}")
        return client
    try:
        return distributed.default_client()
    except ValueError:
        return distributed.Client(distributed.LocalCluster(dashboard_address=None))


def _in_cluster(client, address: str) -> bool:
    return address in client.scheduler_info(n_workers=-1)["workers"]


def _lost(address: str, what: str, detail: str = "") -> FusionrecError:
    return FusionrecError(f"worker {address} was lost {what}{f' ({detail})' if detail else ''}; its rows are gone with "
                          "it: restart the training")  # fmt: skip


def _actor_lost(exc: BaseException) -> bool:
    """dask's own word that an actor's worker died (a bare RuntimeError, from the scheduler
    or from the handle), which may arrive before the worker leaves ``scheduler_info``."""
    return isinstance(exc, RuntimeError) and "Actor was lost" in str(exc)


def result_on(client, address: str, future, what: str):
    """The result of work pinned to the worker at ``address``, failing within ``POLL_SECONDS`` of
    that worker leaving the cluster instead of waiting for it forever (a future pinned to a dead
    worker never finishes)."""
    while True:
        try:
            return _result_within(future, POLL_SECONDS)
        except TimeoutError:
            if not _in_cluster(client, address):
                raise _lost(address, what) from None
        except FusionrecError:
            raise  # the work's own error (bad labels, ...), raised where it ran
        except Exception as exc:  # the connection to it broke, or dask gave up on the work
            if isinstance(exc, OSError) or _actor_lost(exc) or not _in_cluster(client, address):
                raise _lost(address, what, f"{type(exc).__name__}: {exc}") from None
            raise


def _result_within(future, seconds: float):
    """``future.result()``, or TimeoutError after ``seconds``. A task future is polled and its
    result taken once done: ``result(timeout=...)`` of an actor's creation returns a handle
    bound to no client when the client is not the default one."""
    _, _, distributed = _dask()
    if not isinstance(future, distributed.Future):
        return future.result(timeout=seconds)  # an actor method's future: woken when done
    deadline = time.monotonic() + seconds
    pause = 0.001
    while not future.done():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(pause)
        pause = min(2 * pause, 0.05)
    return future.result()


def wait_computed(client, futures: list, what: str) -> None:
    """Wait for ``futures`` (partitions computed anywhere: dask recomputes those of a lost worker
    elsewhere), failing when one errs or the cluster has had no worker for ``NO_WORKER_SECONDS``.
    Polls the futures' states (``distributed.wait`` would look for a default client, which a
    thread other than the client's has not)."""
    alone_since, checked = None, time.monotonic()
    pause = 0.01
    while True:
        pending = [f for f in futures if not f.done()]
        failed = [f for f in futures if f.status in ("error", "cancelled")]
        if failed:
            failed[0].result()  # raises the partition's own error
        if not pending:
            return
        time.sleep(pause)
        pause = min(2 * pause, 0.1)
        if time.monotonic() - checked >= POLL_SECONDS:
            checked = time.monotonic()
            if client.scheduler_info(n_workers=-1)["workers"]:
                alone_since = None
            elif alone_since is None:
                alone_since = checked
            elif checked - alone_since > NO_WORKER_SECONDS:
                raise FusionrecError(f"{what}: the cluster has had no worker for {NO_WORKER_SECONDS:.0f} s; start workers "
                                     "or restart the training")  # fmt: skip


class ActorShards:
    """The ``remote.Shards`` of a data set: one RowShard actor per worker, called together."""

    def __init__(self, client, actors: list[tuple[str, Any]]):
        self.client = client
        self.actors = actors

    def call(self, method: str, *args: Any, when: str = "during training") -> list:
        what = f"{when} (RowShard.{method})"
        futures = [(address, self._method(address, actor, method, what)(*args)) for address, actor in self.actors]
        return [result_on(self.client, address, future, what) for address, future in futures]

    @staticmethod
    def _method(address: str, actor: Any, method: str, what: str):
        """The actor's method; dask raises a bare RuntimeError when the handle's worker has
        died since the handle was made (its creation future erred), before any call is sent."""
        try:
            return getattr(actor, method)
        except RuntimeError as exc:
            if _actor_lost(exc):
                raise _lost(address, what, str(exc)) from None
            raise


def _partitions(collection: Any, what: str, da, dd) -> tuple[list, list[int]]:
    """The delayed partitions of a dask array (rows) / dataframe / series and their lengths."""
    if isinstance(collection, da.Array):
        if collection.ndim == 2 and collection.numblocks[1] != 1:
            collection = collection.rechunk({1: -1})  # a partition is whole rows
        if any(np.isnan(c) for c in collection.chunks[0]):
            collection = collection.compute_chunk_sizes()
        return list(collection.to_delayed().ravel()), [int(c) for c in collection.chunks[0]]
    if isinstance(collection, (dd.DataFrame, dd.Series)):
        lengths = [int(n) for n in collection.map_partitions(len).compute()]
        return list(collection.to_delayed()), lengths
    raise FusionrecError(f"{what}: expected a dask array or dask dataframe / series, got {type(collection).__name__}")


class DaskDataset(ShardedData):
    """Training or evaluation data on a Dask cluster (``xgboost.dask.DaskDMatrix``'s role).

    Parameters
    ----------
    client : distributed.Client (None: the current client, else a new LocalCluster)
    data : dask array (rows x features; chunks along features are merged) or dask dataframe
    label, weight : dask arrays / series with the same row partitions as ``data``
    max_bin, sketch_eps : bins per feature (<= 256) and the quantile sketch's accuracy
    reference : a DaskDataset, Dataset or Booster whose cuts to use (evaluation data, and
        continued training, which needs the model's own cuts)
    feature_names : names when ``data`` has none
    """

    def __init__(self, client: Any, data: Any, label: Any = None, weight: Any = None, *, max_bin: int = MAX_BIN,
                 sketch_eps: float = 0.01, reference: Any = None, feature_names: Sequence[str] | None = None):  # fmt: skip
        da, dd, distributed = _dask()
        self.client = default_client(client)
        check_max_bin(max_bin)
        if not (isinstance(sketch_eps, float) and 0.0 < sketch_eps < 1.0):
            raise FusionrecError(f"parameter sketch_eps={sketch_eps!r}: must be a float in (0, 1)")
        if isinstance(data, (da.Array,)) and data.ndim != 2:
            raise FusionrecError(f"data: expected a 2-D dask array, got {data.ndim} dimensions")
        self.data = data
        self.max_bin = int(max_bin)
        self.sketch_eps = sketch_eps
        x_parts, lengths = _partitions(data, "data", da, dd)
        columns = {"label": label, "weight": weight}
        parts: dict[str, list] = {"data": x_parts}
        for name, column in columns.items():
            if column is None:
                parts[name] = [None] * len(x_parts)
                continue
            if isinstance(column, da.Array) and column.ndim == 2 and column.shape[1] == 1:
                column = column[:, 0]
            if isinstance(column, da.Array) and tuple(column.chunks[0]) != tuple(lengths) and not any(np.isnan(column.chunks[0])):
                if column.shape[0] != sum(lengths):
                    raise FusionrecError(f"{name}: {column.shape[0]:,} rows, data {sum(lengths):,}")
                column = column.rechunk({0: tuple(lengths)})  # partitioned as the data
            column_parts, column_lengths = _partitions(column, name, da, dd)
            if column_lengths != lengths:
                bad = next((i for i, (a, b) in enumerate(zip(column_lengths, lengths)) if a != b), min(len(lengths), len(column_lengths)))
                raise FusionrecError(f"{name}: partitioned unlike data: partition {bad} has "
                                     f"{column_lengths[bad] if bad < len(column_lengths) else 'no'} rows, data's "
                                     f"{lengths[bad] if bad < len(lengths) else 'none'} ({len(column_lengths)} vs {len(lengths)} partitions)")  # fmt: skip
            parts[name] = column_parts
        self.n_rows = int(sum(lengths))
        if self.n_rows == 0:
            raise FusionrecError("data: has no rows")
        first_rows = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        futures = {name: self.client.compute(values) if values[0] is not None else values for name, values in parts.items()}
        wait_computed(self.client, futures["data"], "data")
        holders = self.client.who_has(futures["data"])
        by_worker: dict[str, list[int]] = {}
        for i, future in enumerate(futures["data"]):
            workers = holders.get(future.key) or holders.get(str(future.key)) or ()
            if not workers:
                raise FusionrecError(f"data: partition {i} is on no worker (was it lost?)")
            by_worker.setdefault(sorted(workers)[0], []).append(i)
        actors = []
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        for address in sorted(by_worker, key=lambda a: by_worker[a][0]):  # shard order = first partition order
            ids = by_worker[address]
            shard_parts = [(futures["data"][i], futures["label"][i], futures["weight"][i]) for i in ids]
            n_threads = workers.get(address, {}).get("nthreads")
            future = self.client.submit(RowShard, shard_parts, [first_rows[i] for i in ids], ids, n_threads, actor=True,
                                        workers=[address], allow_other_workers=False, pure=False)  # fmt: skip
            actors.append((address, future))
        self._actor_futures = actors  # keeps the actors alive
        self.shards = ActorShards(self.client, [(address, result_on(self.client, address, future, "while DaskDataset placed "
                                                                     "its rows (the RowShard actor)")) for address, future in actors])  # fmt: skip
        described = self.shards.call("describe", when="while DaskDataset placed its rows")
        first = described[0]
        for (address, _), info in zip(self.shards.actors, described):
            if (info["n_features"], info["feature_names"]) != (first["n_features"], first["feature_names"]):
                raise FusionrecError(f"data: the partitions on {address} have {info['n_features']} features "
                                     f"{info['feature_names'] or ''}, those on {self.shards.actors[0][0]} "
                                     f"{first['n_features']} {first['feature_names'] or ''}")  # fmt: skip
        self.n_features = int(first["n_features"])
        self.feature_types = list(first["feature_types"])
        self.feature_names = first["feature_names"]
        if feature_names is not None:
            feature_names = [str(n) for n in feature_names]
            if len(feature_names) != self.n_features:
                raise FusionrecError(f"feature_names: {len(feature_names)} names given for {self.n_features} features")
            self.feature_names = feature_names
        self.has_label = all(info["has_label"] for info in described)
        self.n_partitions = len(lengths)
        self._set_reference(reference)

    def __repr__(self) -> str:
        return (f"DaskDataset({self.n_rows:,} rows x {self.n_features} features, {self.n_partitions} partitions on "
                f"{len(self.shards.actors)} workers)")  # fmt: skip


def train(
    client: Any,
    params: dict[str, Any],
    dtrain: DaskDataset,
    num_boost_round: int = 10,
    *,
    evals: Sequence[tuple[DaskDataset, str]] | None = None,
    custom_metric: Callable | None = None,
    early_stopping_rounds: int | None = None,
    verbose_eval: bool | int = False,
    xgb_model: Booster | str | None = None,
    callbacks: Sequence | None = None,
) -> dict[str, Any]:
    """Train on ``dtrain``'s workers; ``{"booster": Booster, "history": evals_result}`` as
    ``xgboost.dask.train``. Evaluation data sets gather their margins to the client each
    round (8 bytes per row and class) to compute the metrics."""
    if not isinstance(num_boost_round, int) or isinstance(num_boost_round, bool) or num_boost_round < 0:
        raise FusionrecError(f"num_boost_round={num_boost_round!r}: must be an integer >= 0")
    if not isinstance(dtrain, DaskDataset):
        raise FusionrecError(f"dtrain: expected a fusionrec.gbdt.dask.DaskDataset, got {type(dtrain).__name__}")
    if client is not None and client is not dtrain.client:
        raise FusionrecError("client: dtrain was made with another client")
    for i, pair in enumerate(evals or []):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], DaskDataset) and isinstance(pair[1], str)):
            raise FusionrecError(f"evals[{i}]: expected a (DaskDataset, name) pair")
    booster, history = train_sharded(params, dtrain, num_boost_round, evals=evals, custom_metric=custom_metric,
                                     early_stopping_rounds=early_stopping_rounds, verbose_eval=verbose_eval,
                                     xgb_model=xgb_model, callbacks=callbacks)  # fmt: skip
    return {"booster": booster, "history": history}


# ------------------------------------------------------------------ prediction
_MODEL_CACHE: dict[str, Booster] = {}  # per worker process: a model is parsed once, not per partition


def _model_of(model_json: bytes) -> Booster:
    from fusionrec.gbdt.model_io import read_state

    key = hashlib.sha256(model_json).hexdigest()
    booster = _MODEL_CACHE.get(key)
    if booster is None:
        booster = Booster.from_state(read_state(model_json, "<dask model>"))
        if len(_MODEL_CACHE) > 8:
            _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = booster
    return booster


def _predict_partition(part: Any, model_json: bytes, output_margin: bool, iteration_range) -> np.ndarray:
    if len(part) == 0:
        booster = _model_of(model_json)
        return np.empty((0,) if booster.n_groups == 1 or (not output_margin and booster.objective.name == "multi:softmax")
                        else (0, booster.n_groups))  # fmt: skip
    return _model_of(model_json).predict(part, output_margin=output_margin, iteration_range=iteration_range)


def _booster_of(model: Any) -> Booster:
    if isinstance(model, dict) and "booster" in model:
        model = model["booster"]
    if isinstance(model, (GBDTClassifier, GBDTRegressor)):
        model = model.get_booster()
    if not isinstance(model, Booster):
        raise FusionrecError(f"model: expected a Booster, train()'s result or a fitted estimator, got {type(model).__name__}")
    return model


def predict(client: Any, model: Any, data: Any, *, output_margin: bool = False, iteration_range=None):
    """Predictions for a dask array / dataframe (or a DaskDataset's data), computed where the
    partitions are: a dask array (or series) of the same partitions, lazily."""
    da, dd, _ = _dask()
    booster = _booster_of(model)
    if isinstance(data, DaskDataset):
        data = data.data
    model_json = booster.save_raw()
    multi = booster.n_groups > 1 and (output_margin or booster.objective.name != "multi:softmax")
    if isinstance(data, da.Array):
        if data.ndim != 2:
            raise FusionrecError(f"data: expected a 2-D dask array, got {data.ndim} dimensions")
        if data.numblocks[1] != 1:
            data = data.rechunk({1: -1})
        if multi:
            return data.map_blocks(_predict_partition, model_json, output_margin, iteration_range, dtype=np.float64,
                                   chunks=(data.chunks[0], (booster.n_groups,)))  # fmt: skip
        return data.map_blocks(_predict_partition, model_json, output_margin, iteration_range, dtype=np.float64,
                               drop_axis=1)  # fmt: skip
    if isinstance(data, dd.DataFrame):
        import pandas as pd

        if multi:
            meta = pd.DataFrame({i: pd.Series(dtype=np.float64) for i in range(booster.n_groups)})

            def frame(part, *args):
                return pd.DataFrame(_predict_partition(part, *args), index=part.index)

            return data.map_partitions(frame, model_json, output_margin, iteration_range, meta=meta)

        def series(part, *args):
            return pd.Series(_predict_partition(part, *args), index=part.index)

        return data.map_partitions(series, model_json, output_margin, iteration_range, meta=pd.Series(dtype=np.float64))
    raise FusionrecError(f"data: expected a dask array or dask dataframe, got {type(data).__name__}")


# ------------------------------------------------------------------ scikit-learn estimators
class _DaskEstimator:
    """fit / predict over dask collections (numpy / pandas input is split into partitions)."""

    _client = None

    @property
    def client(self):
        """The Dask client (default: the current client, else a LocalCluster of this machine)."""
        return default_client(self._client)

    @client.setter
    def client(self, value) -> None:
        self._client = value

    def _collection(self, X: Any, what: str):
        da, dd, _ = _dask()
        if isinstance(X, (da.Array, dd.DataFrame, dd.Series)):
            return X
        n_parts = max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))  # one partition per worker
        if hasattr(X, "iloc"):
            return dd.from_pandas(X, npartitions=n_parts)
        array = np.asarray(X)
        return da.from_array(array, chunks=(max(1, -(-array.shape[0] // n_parts)),) + array.shape[1:])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # dask partitions are dense here
        return tags

    def _local(self, X, reset: bool):
        """Local (numpy / pandas) X checked as the single-machine estimators check it
        (scikit-learn's feature bookkeeping); dask collections pass through."""
        if hasattr(X, "dask"):
            return X, None
        matrix = self._check_X(X, reset=reset)
        if matrix.is_sparse:
            raise FusionrecError("X: sparse input is not supported by the Dask estimators; pass dense data")
        return matrix.values, matrix.feature_names

    def _dask_fit(self, X, y, sample_weight, eval_set, sample_weight_eval_set, verbose, objective, extra):
        client = self.client
        X, names = self._local(X, reset=True)
        if sample_weight is not None and not hasattr(sample_weight, "dask"):
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        params = self._booster_params(objective, extra)
        dtrain = DaskDataset(client, self._collection(X, "X"), self._collection(y, "y"),
                             None if sample_weight is None else self._collection(sample_weight, "sample_weight"),
                             max_bin=params["max_bin"] or MAX_BIN, feature_names=names)  # fmt: skip
        evals = []
        for i, pair in enumerate(eval_set or []):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise FusionrecError(f"eval_set[{i}]: expected an (X, y) pair")
            we = None if sample_weight_eval_set is None else sample_weight_eval_set[i]
            data = DaskDataset(client, self._collection(pair[0], f"eval_set[{i}] X"), self._encode_dask_y(self._collection(pair[1], "y")),
                               None if we is None else self._collection(we, "weight"), reference=dtrain)  # fmt: skip
            evals.append((data, f"validation_{i}"))
        result = train(client, params, dtrain, int(self.n_estimators), evals=evals, early_stopping_rounds=self.early_stopping_rounds,
                       verbose_eval=verbose, callbacks=self.callbacks)  # fmt: skip
        self.booster_ = result["booster"]
        self.evals_result_ = result["history"]
        self.n_features_in_ = dtrain.n_features
        if dtrain.feature_names is not None and not all(name.startswith("f") and name[1:].isdigit() for name in dtrain.feature_names):
            self.feature_names_in_ = np.asarray(dtrain.feature_names, dtype=object)
        return self

    def _encode_dask_y(self, y):
        return y

    def _dask_predict(self, X, output_margin: bool):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "booster_")
        local = not hasattr(X, "dask")
        if local:  # scored here: no round trip through the cluster
            values, _ = self._local(X, reset=False)
            return self.booster_.predict(values, output_margin=output_margin, iteration_range=self._iteration_range(),
                                         validate_features=False)  # fmt: skip
        return predict(self.client, self.booster_, X, output_margin=output_margin, iteration_range=self._iteration_range())


class DaskGBDTRegressor(_DaskEstimator, GBDTRegressor):
    """``GBDTRegressor`` trained on a Dask cluster; predictions of dask input are lazy dask arrays."""

    def fit(self, X, y, sample_weight=None, eval_set=None, sample_weight_eval_set=None, verbose=False):
        objective = self.objective or "reg:squarederror"
        if isinstance(objective, str) and (objective.startswith("binary:") or objective.startswith("multi:")):
            raise FusionrecError(f"parameter objective={objective!r}: DaskGBDTRegressor needs a regression objective")
        if not hasattr(y, "dask"):
            y = column_or_1d(np.asarray(y) if not hasattr(y, "to_numpy") else y.to_numpy(), warn=True)
        return self._dask_fit(X, y, sample_weight, eval_set, sample_weight_eval_set, verbose, objective, {})

    def predict(self, X, output_margin: bool = False):
        return self._dask_predict(X, output_margin)


class DaskGBDTClassifier(_DaskEstimator, GBDTClassifier):
    """``GBDTClassifier`` trained on a Dask cluster (binary:logistic or multi:softprob)."""

    def fit(self, X, y, sample_weight=None, eval_set=None, sample_weight_eval_set=None, verbose=False):
        self._local(X, reset=True)  # X's errors before y's, as scikit-learn's estimators
        if not hasattr(y, "dask"):
            y = column_or_1d(np.asarray(y) if not hasattr(y, "to_numpy") else y.to_numpy(), warn=True)
            check_classification_targets(y)
        y = self._collection(y, "y")
        objective, extra = self._set_classes(np.unique(np.asarray(y.compute() if not hasattr(y, "unique") else y.unique().compute())))
        return self._dask_fit(X, self._encode_dask_y(y), sample_weight, eval_set, sample_weight_eval_set, verbose, objective, extra)

    def _encode_dask_y(self, y):
        classes = self.classes_

        def encode(part):
            values = np.asarray(part)
            codes = np.searchsorted(classes, values)
            codes = np.minimum(codes, len(classes) - 1)
            unseen = classes[codes] != values
            if unseen.any():
                raise FusionrecError(f"y: class {values[unseen][0]!r} was not in the training labels {classes.tolist()[:10]}")
            return codes.astype(np.float64)

        if hasattr(y, "map_blocks"):
            return y.map_blocks(encode, dtype=np.float64)
        return y.map_partitions(lambda part: part.__class__(encode(part), index=part.index), meta=(y.name, np.float64))

    def predict_proba(self, X):
        margin = self._dask_predict(X, True)
        objective = self.booster_.objective
        if isinstance(margin, np.ndarray):
            return _proba_of_margin(margin, objective)
        return margin.map_blocks(_proba_of_margin, objective, dtype=np.float64, chunks=(margin.chunks[0], (max(2, self.n_classes_),)),
                                 new_axis=1 if margin.ndim == 1 else None)  # fmt: skip

    def decision_function(self, X):
        return self._dask_predict(X, True)

    def predict(self, X):
        margin = self._dask_predict(X, True)
        if isinstance(margin, np.ndarray):
            return _class_of_margin(margin, self.classes_)
        return margin.map_blocks(_class_of_margin, self.classes_, dtype=self.classes_.dtype,
                                 drop_axis=1 if margin.ndim == 2 else None)  # fmt: skip


def _proba_of_margin(margin: np.ndarray, objective) -> np.ndarray:
    """Class probabilities from margins (one column or several), through the objective's link."""
    return objective.class_probabilities(margin.reshape(margin.shape[0], -1))


def _class_of_margin(margin: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return classes[(margin > 0).astype(np.int64) if margin.ndim == 1 else np.argmax(margin, axis=1)]
