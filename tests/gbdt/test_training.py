import json

import numpy as np
import pytest

from fusionrec.callbacks import TrainingCallback
from fusionrec.errors import FusionrecError
from fusionrec.gbdt import Booster, Dataset, train
from fusionrec.gbdt.metric import rmse


def make_regression(rng, n=2000, f=6, missing=0.1):
    X = rng.normal(size=(n, f)).astype(np.float32)
    y = X[:, 0] * 2 + np.sin(X[:, 1] * 3) + X[:, 2] * X[:, 3] + rng.normal(scale=0.1, size=n)
    X[rng.random(X.shape) < missing] = np.nan
    return X, y


def make_binary(rng, n=3000, f=6):
    X, y = make_regression(rng, n, f)
    return X, (y > np.median(y)).astype(float)


def test_training_loss_never_increases_for_squared_error(rng):
    X, y = make_regression(rng)
    log = {}
    d = Dataset(X, y)
    train({"learning_rate": 0.3, "max_depth": 4}, d, 30, evals=[(d, "train")], evals_result=log)
    losses = np.array(log["train"]["rmse"])
    assert np.all(np.diff(losses) <= 1e-12) and losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("policy", ["depthwise", "lossguide"])
def test_same_seed_gives_byte_identical_model_for_any_thread_count(rng, policy):
    X, y = make_binary(rng)
    params = {
        "objective": "binary:logistic", "grow_policy": policy, "max_leaves": 15 if policy == "lossguide" else 0,
        "subsample": 0.7, "colsample_bytree": 0.8, "colsample_bylevel": 0.8, "colsample_bynode": 0.8, "random_state": 7,
    }  # fmt: skip
    if policy == "lossguide":
        params["max_depth"] = 0
    models = []
    for n_jobs in (1, 2):
        models.append(train({**params, "n_jobs": n_jobs}, Dataset(X, y), 15).save_raw())
    assert models[0] == models[1]
    other_seed = train({**params, "random_state": 8, "n_jobs": 2}, Dataset(X, y), 15).save_raw()
    assert other_seed != models[0]


def test_depthwise_respects_max_depth_and_lossguide_max_leaves(rng):
    X, y = make_regression(rng)
    b = train({"max_depth": 3}, Dataset(X, y), 5)
    assert max(t.depth() for t in b.trees) <= 3
    b = train({"grow_policy": "lossguide", "max_leaves": 9, "max_depth": 0}, Dataset(X, y), 5)
    assert max(t.n_leaves for t in b.trees) == 9
    assert max(t.depth() for t in b.trees) > 3  # lossguide grows unbalanced trees


def test_continuation_equals_one_run(rng, tmp_path):
    X, y = make_binary(rng)
    params = {"objective": "binary:logistic", "subsample": 0.8, "colsample_bynode": 0.7, "random_state": 3}
    full = train(params, Dataset(X, y), 12)
    first = train(params, Dataset(X, y), 5)
    path = tmp_path / "m.json"
    first.save_model(path)
    resumed = train(params, Dataset(X, y), 7, xgb_model=str(path))
    np.testing.assert_allclose(resumed.predict(X), full.predict(X), rtol=0, atol=1e-12)
    assert resumed.rng.bit_generator.state == full.rng.bit_generator.state
    assert json.loads(resumed.save_raw())["trees"] == json.loads(full.save_raw())["trees"]


def test_early_stopping_and_best_iteration(rng):
    X, y = make_binary(rng, n=1500)
    dtrain, dvalid = Dataset(X[:1000], y[:1000]), Dataset(X[1000:], y[1000:])
    log = {}
    b = train({"objective": "binary:logistic", "learning_rate": 0.8, "max_depth": 6, "eval_metric": "logloss"},
              dtrain, 500, evals=[(dvalid, "valid")], early_stopping_rounds=5, evals_result=log)  # fmt: skip
    n_rounds = b.num_boosted_rounds()
    assert n_rounds < 500
    assert b.best_iteration == n_rounds - 6
    assert b.best_score == pytest.approx(min(log["valid"]["logloss"]))


def test_callback_protocol_sees_every_iteration_and_can_stop(rng):
    X, y = make_regression(rng, n=300)
    seen = []

    class StopAtFour(TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            seen.append(epoch)
            return epoch == 3

    b = train({}, Dataset(X, y), 50, callbacks=[StopAtFour()])
    assert seen == [0, 1, 2, 3] and b.num_boosted_rounds() == 4
    with pytest.raises(FusionrecError, match="callbacks\\[0\\]"):
        train({}, Dataset(X, y), 2, callbacks=[object()])


def test_gamma_prunes_and_min_child_weight_limits(rng):
    X, y = make_regression(rng)
    plain = train({"max_depth": 6}, Dataset(X, y), 3)
    pruned = train({"max_depth": 6, "gamma": 50.0}, Dataset(X, y), 3)
    assert sum(t.n_leaves for t in pruned.trees) < sum(t.n_leaves for t in plain.trees)
    heavy = train({"max_depth": 6, "min_child_weight": 300.0}, Dataset(X, y), 3)
    for tree in heavy.trees:
        assert tree.cover[tree.feature < 0].min() >= 300.0


def test_subsample_and_colsample_change_the_model_but_train(rng):
    X, y = make_regression(rng)
    base = train({}, Dataset(X, y), 10).predict(X)
    sampled = train({"subsample": 0.5, "colsample_bytree": 0.5}, Dataset(X, y), 10).predict(X)
    assert not np.allclose(base, sampled)
    assert rmse(y, sampled, None) < np.std(y) * 0.6


def test_colsample_bytree_restricts_features(rng):
    X, y = make_regression(rng, f=10)
    b = train({"colsample_bytree": 0.3}, Dataset(X, y), 5)
    for tree in b.trees:
        assert len(set(tree.feature[tree.feature >= 0].tolist())) <= 3


def test_missing_values_follow_learned_default_direction(rng):
    n = 4000
    x = rng.normal(size=n).astype(np.float32)
    y = np.where(x > 0, 1.0, 0.0)
    missing = rng.random(n) < 0.3
    y[missing] = 5.0  # missing rows behave unlike either side
    X = np.where(missing, np.nan, x)[:, None].astype(np.float32)
    b = train({"learning_rate": 1.0, "max_depth": 2, "reg_lambda": 0.0}, Dataset(X, y), 1)
    pred = b.predict(np.array([[np.nan], [-1.0], [1.0]], dtype=np.float32))
    np.testing.assert_allclose(pred, [5.0, 0.0, 1.0], atol=0.05)


def test_predict_leaf_and_iteration_range(rng):
    X, y = make_regression(rng, n=500)
    b = train({"max_depth": 3}, Dataset(X, y), 6)
    leaves = b.predict(X, pred_leaf=True)
    assert leaves.shape == (500, 6)
    for t, tree in enumerate(b.trees):
        assert np.all(tree.feature[leaves[:, t]] == -1)
    first_two = b.predict(X, output_margin=True, iteration_range=(0, 2))
    last_four = b.predict(X, output_margin=True, iteration_range=(2, 6))
    np.testing.assert_allclose(first_two + last_four, b.predict(X, output_margin=True), atol=1e-9)
    with pytest.raises(FusionrecError, match="iteration_range"):
        b.predict(X, iteration_range=(0, 7))


def test_feature_importance_types_and_dump(rng):
    X, y = make_regression(rng, n=800)
    b = train({"max_depth": 3}, Dataset(X, y, feature_names=[f"x{i}" for i in range(6)]), 5)
    weight, total_gain, gain = (b.feature_importances(t) for t in ("weight", "total_gain", "gain"))
    np.testing.assert_allclose(total_gain, gain * weight)
    assert np.argmax(total_gain) == 0
    assert set(b.get_score("weight")) <= {f"x{i}" for i in range(6)}
    dump = b.dump_model(with_stats=True)
    assert len(dump) == 5 and "[x" in dump[0] and "leaf=" in dump[0] and "gain=" in dump[0]


def test_multiclass_grows_one_tree_per_class_per_round(rng):
    X = rng.normal(size=(900, 4)).astype(np.float32)
    y = np.digitize(X[:, 0] + 0.3 * X[:, 1], [-0.5, 0.5]).astype(float)
    b = train({"objective": "multi:softprob", "num_class": 3}, Dataset(X, y), 8)
    assert len(b.trees) == 24 and b.tree_group[:3] == [0, 1, 2]
    proba = b.predict(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(1) == y).mean() > 0.9
    hard = train({"objective": "multi:softmax", "num_class": 3}, Dataset(X, y), 8).predict(X)
    np.testing.assert_array_equal(hard, proba.argmax(1))


def test_sample_weight_acts_like_repeated_rows(rng):
    X, y = make_regression(rng, n=400, missing=0.0)
    w = rng.integers(0, 3, size=400).astype(float)
    repeated = np.repeat(np.arange(400), w.astype(int))
    weighted = train({"max_depth": 3}, Dataset(X, y, w), 5).predict(X)
    expanded = train({"max_depth": 3}, Dataset(X[repeated], y[repeated]), 5).predict(X)
    np.testing.assert_allclose(weighted, expanded, rtol=1e-5, atol=1e-5)


def test_one_row_constant_and_all_missing_features_train_and_predict(rng):
    b = train({}, Dataset(np.array([[1.0, 2.0]], np.float32), [3.0]), 3)
    np.testing.assert_allclose(b.predict(np.array([[0.0, 0.0]], np.float32)), [3.0])
    X = np.column_stack([np.full(50, 7.0), np.full(50, np.nan)]).astype(np.float32)
    y = rng.normal(size=50)
    b = train({}, Dataset(X, y), 3)
    assert all(t.n_leaves == 1 for t in b.trees)
    np.testing.assert_allclose(b.predict(X), np.mean(y))


def test_booster_update_loop_equals_train(rng):
    X, y = make_regression(rng, n=600)
    d = Dataset(X, y)
    manual = Booster({"max_depth": 4})
    for i in range(4):
        manual.update(d, i)
    np.testing.assert_array_equal(manual.predict(X), train({"max_depth": 4}, Dataset(X, y), 4).predict(X))


def test_sparse_prediction_paths_match_dense_with_nan(rng):
    import scipy.sparse as sp

    dense = np.where(rng.random((700, 5)) < 0.5, 0.0, rng.normal(size=(700, 5)))
    csr = sp.csr_matrix(dense)
    as_nan = np.where(dense == 0.0, np.nan, dense).astype(np.float32)
    b = train({"max_depth": 4}, Dataset(csr, dense[:, 0] + dense[:, 1]), 6)
    np.testing.assert_array_equal(b.predict(csr, pred_leaf=True), b.predict(as_nan, pred_leaf=True))
    np.testing.assert_allclose(b.predict(csr), b.predict(as_nan), rtol=0, atol=1e-12)


def test_continuation_accepts_aliases_of_saved_parameters(rng):
    X, y = make_regression(rng, n=300)
    first = train({"eta": 0.1}, Dataset(X, y), 2)
    more = train({"eta": 0.05}, Dataset(X, y), 2, xgb_model=first)
    assert more.params["learning_rate"] == 0.05 and more.num_boosted_rounds() == 4


def test_the_dataset_owns_max_bin_and_a_differing_parameter_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((400, 3))
    y = X[:, 0] + 0.1 * rng.random(400)
    # hist splits on the Dataset's bins: another max_bin in the parameters is an error naming both (as XGBoost)
    with pytest.raises(FusionrecError, match=r"max_bin=16 differs from the training Dataset's max_bin=256"):
        train({"max_bin": 16}, Dataset(X, y), 2)
    # unset, the parameters take the Dataset's, so the saved model says what it was trained on
    booster = train({}, Dataset(X, y, max_bin=16), 2)
    booster.save_model(str(tmp_path / "m.json"))
    loaded = Booster.load_model(str(tmp_path / "m.json"))
    assert loaded.params["max_bin"] == loaded.max_bin == 16
    assert all(len(cuts) <= 15 for cuts in loaded.cuts)
    # approx reads max_bin as its candidates per tree, not the Dataset's bins
    assert train({"max_bin": 16, "tree_method": "approx"}, Dataset(X, y), 2).params["max_bin"] == 16
