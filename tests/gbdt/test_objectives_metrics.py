import numpy as np
import pytest
from scipy.special import expit, gammaln, softmax
from sklearn import metrics as skm

from fusionrec.errors import FusionrecError
from fusionrec.gbdt import Dataset, train
from fusionrec.gbdt.metric import METRIC_FUNCTIONS
from fusionrec.gbdt.objective import make_objective
from fusionrec.gbdt.params import resolve_params

LOSSES = {
    "reg:squarederror": lambda m, y: 0.5 * (m - y) ** 2,
    "reg:pseudohubererror": lambda m, y: np.sqrt(1 + (m - y) ** 2) - 1,
    "binary:logistic": lambda m, y: -(y * np.log(expit(m)) + (1 - y) * np.log(1 - expit(m))),
    "reg:gamma": lambda m, y: y * np.exp(-m) + m,
    "reg:tweedie": lambda m, y: -y * np.exp(-0.5 * m) / -0.5 + np.exp(0.5 * m) / 0.5,
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_and_hessian_match_finite_differences(name, rng):
    objective = make_objective(resolve_params({"objective": name}))
    y = rng.random(50) + 0.5 if name != "binary:logistic" else (rng.random(50) < 0.5).astype(float)
    m = rng.normal(size=(50, 1)) * 0.5
    g, h = objective.gradients(m, y, None)
    eps = 1e-5
    loss = LOSSES[name]
    num_g = (loss(m[:, 0] + eps, y) - loss(m[:, 0] - eps, y)) / (2 * eps)
    num_h = (loss(m[:, 0] + eps, y) - 2 * loss(m[:, 0], y) + loss(m[:, 0] - eps, y)) / eps**2
    np.testing.assert_allclose(g[0], num_g, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h[0], num_h, rtol=1e-3, atol=1e-4)


def test_poisson_gradient_and_softmax_gradient(rng):
    objective = make_objective(resolve_params({"objective": "count:poisson", "max_delta_step": 0.0}))
    m, y = rng.normal(size=(20, 1)), rng.poisson(2.0, 20).astype(float)
    g, h = objective.gradients(m, y, None)
    np.testing.assert_allclose(g[0], np.exp(m[:, 0]) - y, rtol=1e-6)
    soft = make_objective(resolve_params({"objective": "multi:softprob", "num_class": 3}))
    m3, y3 = rng.normal(size=(20, 3)), rng.integers(0, 3, 20).astype(float)
    g3, _ = soft.gradients(m3, y3, None)
    np.testing.assert_allclose(g3.T, softmax(m3, axis=1) - np.eye(3)[y3.astype(int)], rtol=1e-6, atol=1e-7)


OBJECTIVE_DATA = {
    "reg:squarederror": ("rmse", lambda X, r: X[:, 0] * 3 + r.normal(size=len(X))),
    "reg:absoluteerror": ("mae", lambda X, r: X[:, 0] * 3 + r.standard_cauchy(len(X))),
    "reg:pseudohubererror": ("mae", lambda X, r: X[:, 0] * 3 + r.normal(size=len(X))),
    "reg:quantileerror": ("mae", lambda X, r: X[:, 0] * 3 + r.normal(size=len(X))),
    "binary:logistic": ("logloss", lambda X, r: (X[:, 0] + r.normal(size=len(X)) > 0).astype(float)),
    "binary:logitraw": ("auc", lambda X, r: (X[:, 0] + r.normal(size=len(X)) > 0).astype(float)),
    "count:poisson": ("poisson-nloglik", lambda X, r: r.poisson(np.exp(X[:, 0]))),
    "reg:gamma": ("rmse", lambda X, r: r.gamma(2.0, np.exp(X[:, 0]))),
    "reg:tweedie": ("rmse", lambda X, r: r.poisson(np.exp(X[:, 0])) * r.gamma(2.0, 1.0, len(X))),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVE_DATA))
def test_every_objective_learns(name, rng):
    metric, make_y = OBJECTIVE_DATA[name]
    X = rng.normal(size=(2000, 3)).astype(np.float32)
    y = make_y(X, rng)
    log = {}
    d = Dataset(X, y)
    train({"objective": name, "eval_metric": metric, "learning_rate": 0.3}, d, 20, evals=[(d, "train")], evals_result=log)
    values = log["train"][metric]
    improved = values[-1] > values[0] if metric == "auc" else values[-1] < values[0]
    assert improved, values


def test_quantile_objective_hits_its_quantile(rng):
    X = rng.random((4000, 1)).astype(np.float32)
    y = rng.normal(size=4000)
    b = train({"objective": "reg:quantileerror", "quantile_alpha": 0.9, "max_depth": 2}, Dataset(X, y), 30)
    assert np.mean(y <= b.predict(X)) == pytest.approx(0.9, abs=0.03)


def test_custom_objective_equals_builtin(rng):
    X = rng.normal(size=(800, 4)).astype(np.float32)
    y = X[:, 0] + rng.normal(size=800)

    def squared(margin, dataset):
        return margin - dataset.label, np.ones_like(margin)

    builtin = train({"base_score": 0.0}, Dataset(X, y), 5).predict(X)
    custom = train({"base_score": 0.0}, Dataset(X, y), 5, obj=squared).predict(X)
    np.testing.assert_allclose(custom, builtin, rtol=1e-5, atol=1e-6)


def test_custom_metric_is_logged(rng):
    X = rng.normal(size=(300, 2)).astype(np.float32)
    y = X[:, 0]
    d = Dataset(X, y)
    log = {}
    train({}, d, 3, evals=[(d, "train")], custom_metric=lambda p, ds: ("maxerr", float(np.max(np.abs(p - ds.label)))), evals_result=log)
    assert len(log["train"]["maxerr"]) == 3 and len(log["train"]["rmse"]) == 3


def test_base_score_comes_from_labels(rng):
    X = rng.normal(size=(100, 2)).astype(np.float32)
    y = (rng.random(100) < 0.2).astype(float)
    b = train({"objective": "binary:logistic"}, Dataset(X, y), 1)
    assert b.base_score == pytest.approx(y.mean())


def test_metrics_match_scikit_learn(rng):
    y = (rng.random(500) < 0.3).astype(float)
    p = np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1).round(2)  # ties included
    w = rng.random(500)
    assert METRIC_FUNCTIONS["auc"](y, p, w) == pytest.approx(skm.roc_auc_score(y, p, sample_weight=w))
    assert METRIC_FUNCTIONS["aucpr"](y, p, w) == pytest.approx(skm.average_precision_score(y, p, sample_weight=w))
    assert METRIC_FUNCTIONS["logloss"](y, p, w) == pytest.approx(skm.log_loss(y, np.clip(p, 1e-16, 1 - 1e-16), sample_weight=w))
    assert METRIC_FUNCTIONS["error"](y, p, w) == pytest.approx(1 - skm.accuracy_score(y, p > 0.5, sample_weight=w))
    r = rng.normal(size=500)
    assert METRIC_FUNCTIONS["rmse"](r, r * 0.5, w) == pytest.approx(np.sqrt(skm.mean_squared_error(r, r * 0.5, sample_weight=w)))
    assert METRIC_FUNCTIONS["mae"](r, r * 0.5, w) == pytest.approx(skm.mean_absolute_error(r, r * 0.5, sample_weight=w))
    yk = rng.integers(0, 3, 500).astype(float)
    pk = softmax(rng.normal(size=(500, 3)), axis=1)
    assert METRIC_FUNCTIONS["mlogloss"](yk, pk, w) == pytest.approx(skm.log_loss(yk, pk, sample_weight=w))
    assert METRIC_FUNCTIONS["merror"](yk, pk, w) == pytest.approx(1 - skm.accuracy_score(yk, pk.argmax(1), sample_weight=w))
    counts, mean = rng.poisson(2.0, 500).astype(float), rng.random(500) + 0.5
    expected = np.average(mean - counts * np.log(mean) + gammaln(counts + 1), weights=w)
    assert METRIC_FUNCTIONS["poisson-nloglik"](counts, mean, w) == pytest.approx(expected)


def test_metric_that_does_not_fit_the_objective_is_an_error(rng):
    X = rng.normal(size=(50, 2)).astype(np.float32)
    with pytest.raises(FusionrecError, match="eval_metric='mlogloss'"):
        train({"eval_metric": "mlogloss"}, Dataset(X, X[:, 0]), 1)
