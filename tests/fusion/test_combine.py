"""Prediction-level fusion: the numbers of Datawhale's model-fusion notes (Task 5), each method
against a plain reference, weights."""

import numpy as np
import pytest
from scipy.special import expit, logit
from scipy.stats import rankdata
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, roc_auc_score

from fusionrec import FusionrecError
from fusionrec.fusion import average, optimize_weights, stack, vote

# the toy arrays of Datawhale's model-fusion notes (../shared/seeds/000_0f8dba036977bf45.txt, section 5.1)
TEST_PRE = ([1.2, 3.2, 2.1, 6.2], [0.9, 3.1, 2.0, 5.9], [1.1, 2.9, 2.2, 6.0])
Y_TEST = [1, 3, 2, 6]
TRAIN_REG = ([3.2, 8.2, 9.1, 5.2], [2.9, 8.1, 9.0, 4.9], [3.1, 7.9, 9.2, 5.0])
Y_TRAIN = [3, 8, 9, 5]


def test_datawhale_fusion_notes_numbers():
    assert mean_absolute_error(Y_TEST, average(TEST_PRE, "weighted", [0.3, 0.4, 0.3])) == pytest.approx(0.0575)
    assert mean_absolute_error(Y_TEST, average(TEST_PRE, "mean")) == pytest.approx(0.0667, abs=5e-5)
    assert mean_absolute_error(Y_TEST, average(TEST_PRE, "median")) == pytest.approx(0.0750)
    stacked = stack(TRAIN_REG, Y_TRAIN, TEST_PRE, LinearRegression())
    assert mean_absolute_error(Y_TEST, stacked) == pytest.approx(0.0421, abs=5e-5)


@pytest.fixture
def preds(rng):
    return [rng.uniform(0.01, 0.99, size=50) for _ in range(3)]


def test_each_method_matches_its_definition(preds):
    w = np.array([0.2, 0.5, 0.3])
    p = np.stack(preds)
    np.testing.assert_allclose(average(preds, "weighted", w), w @ p)
    np.testing.assert_allclose(average(preds, "geometric", w), np.exp(w @ np.log(p)))
    np.testing.assert_allclose(average(preds, "harmonic", w), 1 / (w @ (1 / p)))
    np.testing.assert_allclose(average(preds, "power", w, power=3), (w @ p**3) ** (1 / 3))
    np.testing.assert_allclose(average(preds, "logit", w), expit(w @ logit(p)))
    ranks = np.stack([(rankdata(q) - 1) / 49 for q in preds])
    np.testing.assert_allclose(average(preds, "rank", w), w @ ranks)
    np.testing.assert_allclose(average(preds, "median"), np.median(p, axis=0))


def test_weighted_median_and_zero_weights(preds):
    # weight 0.6 on one model of three makes it the median everywhere
    np.testing.assert_allclose(average(preds, "median", [0.2, 0.6, 0.2]), preds[1])
    # a zero weight removes the model: the median of the other two is their midpoint
    np.testing.assert_allclose(average(preds, "median", [1, 0, 1]), (preds[0] + preds[2]) / 2)
    np.testing.assert_allclose(average(preds, "mean", [0, 1, 0]), preds[1])


def test_two_dimensional_predictions(rng):
    probas = [rng.dirichlet(np.ones(3), size=20) for _ in range(2)]
    np.testing.assert_allclose(average(probas), (probas[0] + probas[1]) / 2)
    assert average(probas, "rank").shape == (20, 3)


def test_rank_average_is_invariant_to_monotone_transforms(preds):
    squashed = [preds[0] ** 5, np.log(preds[1]), preds[2]]
    np.testing.assert_allclose(average(preds, "rank"), average(squashed, "rank"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="weighted"), "needs weights"),
        (dict(weights=[1, 2]), "2 values given for 3 models"),
        (dict(weights=[1, -1, 1]), r"weights\[1\] = -1.0: weights must not be negative"),
        (dict(weights=[0, 0, 0]), "all weights are zero"),
        (dict(weights=[1, np.nan, 1]), "must be finite"),
        (dict(method="average"), "not an averaging method"),
        (dict(method="power", power=0), "non-zero exponent"),
    ],
)
def test_bad_arguments_name_the_rule(preds, kwargs, message):
    with pytest.raises(FusionrecError, match=message):
        average(preds, **kwargs)


def test_bad_predictions_name_the_model_and_row(preds):
    bad = [preds[0], preds[1].copy(), preds[2]]
    bad[1][7] = np.nan
    with pytest.raises(FusionrecError, match=r"predictions\[1\] row 7: nan is not finite"):
        average(bad)
    with pytest.raises(FusionrecError, match=r"predictions\[2\] row 3: -0.5 .*needs predictions >= 0"):
        average([preds[0], preds[1], np.where(np.arange(50) == 3, -0.5, preds[2])], "geometric")
    with pytest.raises(FusionrecError, match=r"row 0: 1.5 .*probabilities in \[0, 1\]"):
        average([np.full(50, 1.5), preds[1]], "logit")
    with pytest.raises(FusionrecError, match=r"predictions\[1\]: shape \(49,\) differs"):
        average([preds[0], preds[1][:49]])
    with pytest.raises(FusionrecError, match="non-empty list"):
        average([])


def test_vote_weights_and_ties():
    labels = [np.array(["a", "b", "c"]), np.array(["b", "b", "a"]), np.array(["b", "c", "c"])]
    np.testing.assert_array_equal(vote(labels), ["b", "b", "c"])
    np.testing.assert_array_equal(vote(labels, weights=[5, 1, 1]), ["a", "b", "c"])
    np.testing.assert_array_equal(vote([[1, 2], [2, 1]]), [1, 1])  # ties go to the smallest label
    with pytest.raises(FusionrecError, match="3 values given for 2 models"):
        vote([[1, 2], [2, 1]], weights=[1, 1, 1])


def test_optimize_weights_beats_every_single_model_and_equal_weights(rng):
    y = rng.integers(0, 2, 2000)
    signal = y + rng.normal(scale=1.0, size=2000)
    preds = [expit(signal + rng.normal(scale=s, size=2000)) for s in (0.5, 1.5, 3.0)]
    fit = optimize_weights(preds, y, metric="roc_auc")
    assert fit.weights.sum() == pytest.approx(1.0) and np.all(fit.weights >= 0)
    fused = average(preds, "weighted", fit.weights)
    assert roc_auc_score(y, fused) == pytest.approx(fit.score)
    assert fit.score >= max(fit.model_scores) and fit.score >= roc_auc_score(y, average(preds))
    assert fit.weights[0] > fit.weights[2]  # the least noisy model weighs most
    loss_fit = optimize_weights(preds, y, metric="log_loss", method="logit")
    assert loss_fit.score <= min(loss_fit.model_scores)
