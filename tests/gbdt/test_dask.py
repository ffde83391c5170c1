"""Trees on sharded rows and on Dask: the same model as one machine, whatever the workers.

In-process shards (``remote.InProcessData``) check the distributed algorithm against
``fusionrec.gbdt.train`` on a Dataset of the same cuts; a real LocalCluster (2 worker
processes) checks the Dask layer: 1 vs 2 workers, dataframes, prediction, estimators, bad
input and a worker killed mid-training.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

from fusionrec.callbacks import TrainingCallback
from fusionrec.errors import FusionrecError
from fusionrec.gbdt import Dataset, train
from fusionrec.gbdt.distributed.remote import InProcessData, train_sharded
from fusionrec.gbdt.sketch import WeightedQuantileSketch, sketch_cuts


def make_data(n=6000, seed=0, n_classes=2):
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        rng.normal(size=n),
        rng.lognormal(size=n),  # skewed
        np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),  # missing values
        rng.integers(0, 5, n).astype(float),  # few distinct values
        rng.normal(size=n),
    ]).astype(np.float32)  # fmt: skip
    signal_ = X[:, 0] + np.nan_to_num(X[:, 2]) * X[:, 3] - 0.5 * np.log(X[:, 1]) + rng.normal(size=n)
    if n_classes == 2:
        y = (signal_ > 0).astype(float)
    else:
        y = np.digitize(signal_, np.quantile(signal_, np.linspace(0, 1, n_classes + 1)[1:-1])).astype(float)
    return X, y, rng.uniform(0.5, 2.0, n)


def same_trees(a, b, atol=0.0):
    assert len(a.trees) == len(b.trees)
    for ta, tb in zip(a.trees, b.trees):
        np.testing.assert_array_equal(ta.feature, tb.feature)
        np.testing.assert_array_equal(ta.split_bin, tb.split_bin)
        np.testing.assert_array_equal(ta.left, tb.left)
        np.testing.assert_array_equal(ta.default_left, tb.default_left)
        np.testing.assert_allclose(ta.value, tb.value, rtol=1e-9, atol=atol)
        np.testing.assert_allclose(ta.cover, tb.cover, rtol=1e-9)


UNEVEN = [0, 1, 1500, 1500, 4200, 6000]  # a one-row and an empty partition


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "binary:logistic", "max_depth": 5},
        {"objective": "binary:logistic", "grow_policy": "lossguide", "max_depth": 0, "max_leaves": 20, "gamma": 0.5},
        {"objective": "reg:squarederror", "max_depth": 4, "colsample_bynode": 0.6, "colsample_bytree": 0.8, "reg_alpha": 0.3},
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "max_leaves": 6},
        {"objective": "count:poisson", "max_depth": 4, "min_child_weight": 5.0},
    ],
    ids=["logistic", "lossguide-gamma", "colsample-l1", "softprob-max_leaves", "poisson"],
)
def test_sharded_training_equals_one_machine(params):
    n_classes = params.get("num_class", 2)
    X, y, w = make_data(n_classes=n_classes)
    if params["objective"] == "count:poisson":
        y = np.floor(np.abs(X[:, 0]) * 2)
    sharded = InProcessData(X, y, w, bounds=UNEVEN, shard_of=[0, 1, 0, 1, 1])
    booster, _ = train_sharded(params, sharded, 12)
    reference = train(params, Dataset(X, y, w, reference=booster), 12)
    assert booster.base_score == pytest.approx(reference.base_score, rel=1e-12)
    same_trees(booster, reference)
    np.testing.assert_allclose(booster.predict(X), reference.predict(X), rtol=1e-9)


def test_partition_sketches_merge_to_the_cuts_of_any_grouping():
    """The cuts come from the partitions' summaries merged in partition order: any
    assignment of partitions to shards gives the same cuts, and few-distinct features get
    the in-memory rule exactly."""
    X, y, w = make_data()
    one = InProcessData(X, y, w, bounds=UNEVEN, shard_of=[0] * 5)
    three = InProcessData(X, y, w, bounds=UNEVEN, shard_of=[2, 0, 1, 0, 2])
    for a, b in zip(one.cuts, three.cuts):
        np.testing.assert_array_equal(a, b)
    in_memory = Dataset(X, y, w).cuts
    np.testing.assert_array_equal(one.cuts[3], in_memory[3])
    # a sketch of the whole column has the same guarantee: every cut's weighted rank is close
    sketch = WeightedQuantileSketch(0.01)
    sketch.push(X[:, 1], w)
    whole = sketch_cuts([sketch], 256)[0]
    ranks = lambda cuts: np.array([w[X[:, 1] <= c].sum() for c in cuts]) / w.sum()  # noqa: E731
    assert np.max(np.abs(np.sort(ranks(one.cuts[1])) - np.sort(ranks(whole)))[: min(len(whole), len(one.cuts[1]))]) < 0.03


def test_subsample_is_per_partition_so_any_grouping_gives_the_same_model():
    X, y, w = make_data()
    params = {"objective": "binary:logistic", "max_depth": 4, "subsample": 0.7, "random_state": 3}
    a, _ = train_sharded(params, InProcessData(X, y, w, bounds=UNEVEN, shard_of=[0] * 5), 8)
    b, _ = train_sharded(params, InProcessData(X, y, w, bounds=UNEVEN, shard_of=[1, 0, 1, 0, 1]), 8)
    same_trees(a, b)
    # and it samples: fewer rows' hessian in the root than without
    full, _ = train_sharded({**params, "subsample": 1.0}, InProcessData(X, y, w, bounds=UNEVEN, shard_of=[0] * 5), 1)
    assert a.trees[0].cover[0] < 0.8 * full.trees[0].cover[0]


def test_sharded_evals_early_stopping_and_continued_training():
    X, y, w = make_data()
    Xv, yv, _ = make_data(2000, seed=1)
    params = {"objective": "binary:logistic", "max_depth": 4, "eval_metric": ["logloss", "auc"], "learning_rate": 0.5}
    dtrain = InProcessData(X, y, w, bounds=UNEVEN, shard_of=[0, 1, 0, 1, 1])
    dvalid = InProcessData(Xv, yv, bounds=[0, 700, 2000], shard_of=[1, 0], reference=dtrain)
    booster, history = train_sharded(params, dtrain, 40, evals=[(dtrain, "train"), (dvalid, "valid")], early_stopping_rounds=3)
    reference_log = {}
    reference = train(params, Dataset(X, y, w, reference=booster), 40,
                      evals=[(Dataset(X, y, w, reference=booster), "train"), (Dataset(Xv, yv, reference=booster), "valid")],
                      early_stopping_rounds=3, evals_result=reference_log)  # fmt: skip
    assert booster.best_iteration == reference.best_iteration < 39
    for name in ("train", "valid"):
        for metric in ("logloss", "auc"):
            np.testing.assert_allclose(history[name][metric], reference_log[name][metric], rtol=1e-9)
    # continued: 5 rounds then 5 more == 10 rounds
    first, _ = train_sharded(params, InProcessData(X, y, w, bounds=UNEVEN, shard_of=[0, 1, 0, 1, 1]), 5)
    more, _ = train_sharded({}, InProcessData(X, y, w, bounds=UNEVEN, shard_of=[0, 1, 0, 1, 1], reference=first), 5, xgb_model=first)
    ten, _ = train_sharded(params, InProcessData(X, y, w, bounds=UNEVEN, shard_of=[0, 1, 0, 1, 1], reference=first), 10)
    same_trees(more, ten)


def test_sharded_bad_input_is_named():
    X, y, w = make_data()
    bad = y.copy()
    bad[4300] = 2.0  # partition 4 (rows 4200..)
    with pytest.raises(FusionrecError, match=r"label\[4300\] \(partition 4\).*labels in \{0, 1\}"):
        train_sharded({"objective": "binary:logistic"}, InProcessData(X, bad, bounds=UNEVEN, shard_of=[0, 1, 0, 1, 1]), 2)
    data = InProcessData(X, y, bounds=UNEVEN, shard_of=[0, 1, 0, 1, 1])
    for params, rule in [
        ({"objective": "rank:ndcg"}, "ranking"),
        ({"tree_method": "exact"}, "'hist'"),
        ({"objective": "reg:absoluteerror"}, "quantiles of each leaf"),
        ({"objective": "reg:pseudohubererror"}, "set base_score"),
    ]:
        with pytest.raises(FusionrecError, match=rule):
            train_sharded(params, data, 1)
    with pytest.raises(FusionrecError, match="needs a label"):
        train_sharded({}, InProcessData(X, None, bounds=UNEVEN, shard_of=[0, 1, 0, 1, 1]), 1)
    with pytest.raises(FusionrecError, match="weights sum to 0"):
        train_sharded({}, InProcessData(X, y, np.zeros_like(w), bounds=UNEVEN, shard_of=[0, 1, 0, 1, 1]), 1)


# ------------------------------------------------------------------ a real Dask cluster
distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def one_worker_client():
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster, set_as_default=False) as c:
        yield c
    cluster.close()


def test_dask_two_workers_one_worker_and_one_machine_agree(client, one_worker_client):
    from fusionrec.gbdt import dask as fgd

    X, y, w = make_data(8000)
    params = {"objective": "binary:logistic", "max_depth": 5, "colsample_bylevel": 0.8, "eval_metric": "auc"}
    chunks = (1, 2999, 0, 3000, 2000)  # uneven, one row, one empty
    models = []
    for c in (client, one_worker_client):
        dX = da.from_array(X, chunks=(chunks, 5))
        dtrain = fgd.DaskDataset(c, dX, da.from_array(y, chunks=(chunks,)), da.from_array(w, chunks=(chunks,)))
        assert dtrain.n_rows == 8000 and dtrain.n_partitions == 5
        result = fgd.train(c, params, dtrain, 15, evals=[(dtrain, "train")])
        models.append(result["booster"])
        assert len(result["history"]["train"]["auc"]) == 15
    assert len(models[0].trees) == 15
    same_trees(models[0], models[1])
    reference = train(params, Dataset(X, y, w, reference=models[0]), 15)
    same_trees(models[0], reference)
    prediction = fgd.predict(client, models[0], da.from_array(X, chunks=(chunks, 5)))
    assert isinstance(prediction, da.Array)
    np.testing.assert_allclose(prediction.compute(), reference.predict(X), rtol=1e-12)


def test_dask_dataframe_with_names_and_multiclass(client):
    from fusionrec.gbdt import dask as fgd

    X, y, _ = make_data(5000, n_classes=3)
    frame = pd.DataFrame(X, columns=[f"c{i}" for i in range(5)])
    ddf = dd.from_pandas(frame, npartitions=3)
    labels = dd.from_pandas(pd.Series(y), npartitions=3)
    dtrain = fgd.DaskDataset(client, ddf, labels)
    assert dtrain.feature_names == [f"c{i}" for i in range(5)]
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 4}
    booster = fgd.train(client, params, dtrain, 6)["booster"]
    assert booster.feature_names == dtrain.feature_names
    reference = train(params, Dataset(frame, y, reference=booster), 6)
    same_trees(booster, reference)
    proba = fgd.predict(client, booster, ddf).compute()
    np.testing.assert_allclose(proba.to_numpy(), reference.predict(frame), rtol=1e-12)


def test_dask_estimators(client):
    from fusionrec.gbdt.dask import DaskGBDTClassifier, DaskGBDTRegressor

    X, y, _ = make_data(6000, n_classes=3)
    names = np.array(["low", "mid", "top"])[y.astype(int)]
    dX, dy = da.from_array(X, chunks=(2000, 5)), da.from_array(names, chunks=2000)
    model = DaskGBDTClassifier(n_estimators=20, max_depth=4, learning_rate=0.3)
    model.client = client
    model.fit(dX, dy, eval_set=[(dX, dy)])
    assert list(model.classes_) == ["low", "mid", "top"]
    proba = model.predict_proba(dX)
    assert isinstance(proba, da.Array)
    proba = proba.compute()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    predicted = model.predict(dX).compute()
    assert (predicted == names).mean() > 0.6
    assert len(model.evals_result_["validation_0"]["mlogloss"]) == 20
    # the booster's own predictions, through the class order
    margin = model.get_booster().predict(X, output_margin=True)
    np.testing.assert_array_equal(predicted, model.classes_[np.argmax(margin, axis=1)])
    regression = DaskGBDTRegressor(n_estimators=10, max_depth=3)
    regression.client = client
    regression.fit(X, X[:, 0] * 2.0)  # numpy input is split over the workers
    assert isinstance(regression.predict(X), np.ndarray)
    assert np.corrcoef(regression.predict(X), X[:, 0])[0, 1] > 0.95
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"dask-model-{os.getpid()}.json")
    regression.save_model(path)
    again = DaskGBDTRegressor()
    again.load_model(path)
    np.testing.assert_array_equal(again.get_booster().predict(X), regression.get_booster().predict(X))


def test_dask_bad_input_is_named(client):
    from fusionrec.gbdt import dask as fgd

    X, y, _ = make_data(3000)
    dX = da.from_array(X, chunks=(1000, 5))
    with pytest.raises(FusionrecError, match="label: 2,000 rows, data 3,000"):
        fgd.DaskDataset(client, dX, da.from_array(y[:2000], chunks=1000))
    frame = dd.from_pandas(pd.DataFrame(X), npartitions=3)
    with pytest.raises(FusionrecError, match="label: partitioned unlike data"):
        fgd.DaskDataset(client, frame, dd.from_pandas(pd.Series(y), npartitions=2))
    bad = y.copy()
    bad[2500] = np.nan
    with pytest.raises(FusionrecError, match=r"partition 2 .*label"):
        fgd.DaskDataset(client, dX, da.from_array(bad, chunks=1000))
    bad = y.copy()
    bad[2500] = 3.0
    with pytest.raises(FusionrecError, match=r"label\[2500\] \(partition 2\)"):
        fgd.train(client, {"objective": "binary:logistic"}, fgd.DaskDataset(client, dX, da.from_array(bad, chunks=1000)), 2)
    with pytest.raises(FusionrecError, match="expected a dask array or dask dataframe"):
        fgd.DaskDataset(client, X, y)
    with pytest.raises(FusionrecError, match="max_bin"):
        fgd.DaskDataset(client, dX, da.from_array(y, chunks=1000), max_bin=1000)


class _KillWorker(TrainingCallback):
    def __init__(self, pid, at):
        self.pid, self.at = pid, at

    def after_iteration(self, model, epoch, evals_log):
        if epoch == self.at:
            os.kill(self.pid, signal.SIGKILL)
        return False


def test_a_dead_worker_stops_training_within_seconds_with_its_name():
    from fusionrec.gbdt import dask as fgd

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster, set_as_default=False) as c:
        X, y, _ = make_data(4000)
        dtrain = fgd.DaskDataset(c, da.from_array(X, chunks=(1000, 5)), da.from_array(y, chunks=1000))
        victim = dtrain.shards.actors[-1][0]
        pid = c.run(os.getpid, workers=[victim])[victim]
        started = time.monotonic()
        with pytest.raises(FusionrecError, match=f"worker {victim}"):
            fgd.train(c, {"objective": "binary:logistic", "max_depth": 3}, dtrain, 1000, callbacks=[_KillWorker(pid, 2)])
        assert time.monotonic() - started < 20.0
    cluster.close()


def _build_in_thread(make, seconds: float = 30.0):
    """(the DaskDataset or the error of ``make()``, seconds taken); fails if it is still waiting
    after ``seconds`` (a thread: a hang must fail the test, not stop the suite)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = make()
        except Exception as error:  # the error is what is checked
            outcome["value"] = error

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"DaskDataset still waiting after {seconds} s"
    return outcome["value"], time.monotonic() - started


def test_a_worker_lost_while_the_dataset_is_built_is_an_error_naming_it():
    """A worker killed while DaskDataset places its rows: the actor pinned to it never starts,
    and waiting on it hung forever; now every wait is bounded. Killed right after its actor was
    submitted (deterministic), then at moments into the build (the dataset is built, or the
    error names the worker within seconds)."""
    from fusionrec.gbdt import dask as fgd

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster) as c:  # the default client, for the building thread
        X, y, _ = make_data(400_000)
        dX, dy = da.from_array(X, chunks=(20_000, 5)), da.from_array(y, chunks=20_000)
        victim = sorted(c.scheduler_info()["workers"])[-1]
        pid = c.run(os.getpid, workers=[victim])[victim]
        submit = distributed.Client.submit

        def submit_then_kill(self, *args, **kwargs):
            future = submit(self, *args, **kwargs)
            if kwargs.get("actor") and kwargs.get("workers") == [victim]:
                os.kill(pid, signal.SIGKILL)
            return future

        distributed.Client.submit = submit_then_kill
        try:
            error, seconds = _build_in_thread(lambda: fgd.DaskDataset(c, dX, dy))
        finally:
            distributed.Client.submit = submit
        assert isinstance(error, FusionrecError) and f"worker {victim} was lost" in str(error), error
        assert seconds < 10.0
        for delay in (0.2, 0.5):
            c.wait_for_workers(2, timeout=60)
            victim = sorted(c.scheduler_info()["workers"])[-1]
            pid = c.run(os.getpid, workers=[victim])[victim]
            threading.Timer(delay, os.kill, (pid, signal.SIGKILL)).start()
            outcome, seconds = _build_in_thread(lambda: fgd.DaskDataset(c, dX, dy))
            assert isinstance(outcome, fgd.DaskDataset) or (isinstance(outcome, FusionrecError) and victim in str(outcome)), outcome
            assert seconds < 20.0
    cluster.close()


def test_an_actor_handle_whose_worker_died_is_an_error_naming_the_worker():
    """dask raises a bare RuntimeError from an actor handle once its creation future erred (the
    worker died after handing out the handle), possibly before the scheduler forgets the worker:
    the call names the worker instead of leaking dask's message."""
    from fusionrec.gbdt.distributed.dask import ActorShards

    class DeadHandle:
        def __getattr__(self, name):
            raise RuntimeError("Worker holding Actor was lost.  Status: error")

    class Other:
        def __getattr__(self, name):
            raise RuntimeError("something else")

    with pytest.raises(FusionrecError, match=r"worker tcp://10\.0\.0\.9:1 was lost while DaskDataset placed its rows \(RowShard\.describe\)"):
        ActorShards(None, [("tcp://10.0.0.9:1", DeadHandle())]).call("describe", when="while DaskDataset placed its rows")
    with pytest.raises(RuntimeError, match="something else"):
        ActorShards(None, [("tcp://10.0.0.9:1", Other())]).call("describe")


@pytest.mark.parametrize("name", ["DaskGBDTRegressor", "DaskGBDTClassifier"])
def test_dask_estimators_pass_the_scikit_learn_checks(client, name):
    """numpy / pandas input goes through the cluster like dask input (and is checked as the
    single-machine estimators check it); the estimator finds the module's client as the default."""
    from sklearn.utils.estimator_checks import check_estimator

    from fusionrec.gbdt import dask as fgd

    check_estimator(getattr(fgd, name)(n_estimators=5, max_depth=3))
