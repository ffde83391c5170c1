"""Voting, averaging (fixed and fitted weights) and Caruana's ensemble selection."""

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from fusionrec.fusion import (
    AveragingClassifier, AveragingRegressor, EnsembleSelectionClassifier, EnsembleSelectionRegressor, METRICS,
    VotingClassifier, average, greedy_selection, vote,
)  # fmt: skip
from fusionrec.gbdt import GBDTClassifier
from tests.fusion.helpers import ReversedClasses


def test_datawhale_fusion_notes_voting_examples_run():
    X, y = load_iris(return_X_y=True)
    base = [("gbdt", GBDTClassifier(n_estimators=30, max_depth=3, min_child_weight=2, subsample=0.7,
                                    colsample_bytree=0.6, random_state=0)),
            ("rf", RandomForestClassifier(n_estimators=50, max_depth=1, min_samples_split=4, min_samples_leaf=63,
                                          random_state=0)),
            ("svc", CalibratedClassifierCV(SVC(C=0.1), ensemble=False))]  # fmt: skip
    hard = cross_val_score(VotingClassifier(base, voting="hard"), X, y, cv=5).mean()
    soft = cross_val_score(VotingClassifier(base, voting="soft", weights=[2, 1, 1]), X, y, cv=5).mean()
    gbdt_alone = cross_val_score(base[0][1], X, y, cv=5).mean()
    # Datawhale's model-fusion notes report 0.95 (hard) and 0.96 (soft) beside 0.96 for the boosted trees alone
    assert hard >= 0.9 and soft >= gbdt_alone - 0.02


def test_hard_voting_matches_vote_and_soft_voting_matches_weighted_mean():
    X, y = make_classification(300, 5, random_state=0)
    base = [("lr", LogisticRegression()), ("nb", GaussianNB()), ("tree", DecisionTreeClassifier(max_depth=2))]
    hard = VotingClassifier(base, weights=[1, 1, 3]).fit(X, y)
    preds = [m.predict(X) for m in hard.estimators_]
    np.testing.assert_array_equal(hard.predict(X), vote(preds, weights=[1, 1, 3]))
    np.testing.assert_array_equal(hard.predict(X), preds[2])  # weight 3 outvotes 1 + 1
    soft = VotingClassifier(base, voting="soft", weights=[1, 2, 0]).fit(X, y)
    expected = (soft.estimators_[0].predict_proba(X) + 2 * soft.estimators_[1].predict_proba(X)) / 3
    np.testing.assert_allclose(soft.predict_proba(X), expected)
    assert not hasattr(hard, "predict_proba")


def test_probabilities_are_aligned_when_classes_are_ordered_differently():
    X, y = make_classification(200, 4, random_state=0)
    y = np.where(y == 1, "yes", "no")
    plain = VotingClassifier([("a", LogisticRegression()), ("b", GaussianNB())], voting="soft").fit(X, y)
    mixed = VotingClassifier([("a", LogisticRegression()), ("b", ReversedClasses(GaussianNB()))],
                             voting="soft").fit(X, y)  # fmt: skip
    assert list(mixed.named_estimators_["b"].classes_) == ["yes", "no"]
    np.testing.assert_allclose(mixed.predict_proba(X), plain.predict_proba(X))
    averaged = AveragingClassifier([("a", LogisticRegression()), ("b", ReversedClasses(GaussianNB()))]).fit(X, y)
    np.testing.assert_allclose(averaged.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("method", ["mean", "median", "geometric", "harmonic", "rank", "logit", "power"])
def test_averaging_classifier_methods_give_distributions(method):
    X, y = load_iris(return_X_y=True)
    base = [("lr", LogisticRegression(max_iter=500)), ("nb", GaussianNB()), ("tree", DecisionTreeClassifier(max_depth=3))]
    model = AveragingClassifier(base, method=method).fit(X, y)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (model.predict(X) == y).mean() > 0.9


def test_averaging_regressor_fixed_weights_are_the_average_function():
    X, y = make_regression(200, 4, noise=5, random_state=0)
    base = [("lin", LinearRegression()), ("tree", DecisionTreeRegressor(max_depth=4, random_state=0))]
    model = AveragingRegressor(base, method="weighted", weights=[0.7, 0.3]).fit(X, y)
    expected = average([m.predict(X) for m in model.estimators_], "weighted", [0.7, 0.3])
    np.testing.assert_allclose(model.predict(X), expected)


def test_optimized_weights_drop_a_useless_model_and_beat_each_model_out_of_fold(rng):
    X, y = make_regression(400, 5, noise=1.0, random_state=0)
    noise_feature = rng.normal(size=(400, 1))
    X = np.hstack([X, noise_feature])

    class NoiseOnly(LinearRegression):
        def fit(self, X, y):
            return super().fit(X[:, -1:], y)

        def predict(self, X):
            return super().predict(X[:, -1:])

    base = [("lin", LinearRegression()), ("noise", NoiseOnly()), ("tree", DecisionTreeRegressor(max_depth=3))]
    model = AveragingRegressor(base, weights="optimize", metric="mse", cv=5).fit(X, y)
    assert model.weights_.sum() == pytest.approx(1.0)
    assert model.weights_[1] < 0.02 and model.weights_[0] > 0.8
    assert model.oof_score_ <= min(model.oof_scores_.values())


def test_averaging_classifier_optimizes_auc():
    X, y = make_classification(600, 8, flip_y=0.1, random_state=0)
    base = [("lr", LogisticRegression()), ("nb", GaussianNB()), ("tree", DecisionTreeClassifier(max_depth=2))]
    model = AveragingClassifier(base, method="rank", weights="optimize", metric="roc_auc").fit(X, y)
    assert model.oof_score_ >= max(model.oof_scores_.values())
    assert model.metric_ == "roc_auc"


def _naive_selection(library, y, metric, n_iterations):
    counts = np.zeros(len(library), dtype=int)
    best, best_counts = -np.inf, None
    for _ in range(n_iterations):
        trials = []
        for j in range(len(library)):
            trial = counts.copy()
            trial[j] += 1
            trials.append(METRICS[metric].score(y, average(list(library), "weighted", trial)))
        counts[int(np.argmax(trials))] += 1
        if max(trials) > best:
            best, best_counts = max(trials), counts.copy()
    return best_counts, best


def test_greedy_selection_matches_a_plain_reference(rng):
    y = rng.integers(0, 2, 300)
    library = np.stack([np.clip(y + rng.normal(scale=s, size=300), 0.01, 0.99) for s in (0.6, 0.8, 1.0, 1.2)])
    for metric in ("roc_auc", "log_loss"):
        counts, score, trajectory = greedy_selection(library, y, METRICS[metric], n_iterations=15)
        ref_counts, ref_score = _naive_selection(library, y, metric, 15)
        np.testing.assert_array_equal(counts, ref_counts)
        assert score == pytest.approx(ref_score) and len(trajectory) == 15


def test_ensemble_selection_classifier_and_bagging():
    X, y = make_classification(800, 10, flip_y=0.05, random_state=1)
    library = [("lr", LogisticRegression()), ("nb", GaussianNB()), ("shallow", DecisionTreeClassifier(max_depth=2)),
               ("deep", DecisionTreeClassifier(max_depth=8, random_state=0)),
               ("rf", RandomForestClassifier(30, random_state=0))]  # fmt: skip
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    model = EnsembleSelectionClassifier(library, metric="roc_auc", n_iterations=20).fit(X_train, y_train)
    assert model.weights_.sum() == pytest.approx(1.0)
    assert model.oof_score_ >= max(model.oof_scores_.values())
    fused = model.predict_proba(X_test)[:, 1]
    expected = sum(w * m.predict_proba(X_test)[:, 1] for w, m in zip(model.weights_, model.estimators_))
    np.testing.assert_allclose(fused, expected)
    bagged = EnsembleSelectionClassifier(library, metric="roc_auc", n_iterations=20, n_bags=6, n_init=1,
                                         random_state=0).fit(X_train, y_train)  # fmt: skip
    again = EnsembleSelectionClassifier(library, metric="roc_auc", n_iterations=20, n_bags=6, n_init=1,
                                        random_state=0).fit(X_train, y_train)  # fmt: skip
    np.testing.assert_array_equal(bagged.weights_, again.weights_)
    assert len(bagged.trajectory_) == 6 and np.count_nonzero(bagged.weights_) >= 2
    assert roc_auc_score(y_test, bagged.predict_proba(X_test)[:, 1]) > 0.85


def test_ensemble_selection_regressor():
    X, y = make_regression(300, 5, noise=10, random_state=0)
    library = [("ridge", Ridge()), ("tree", DecisionTreeRegressor(max_depth=3, random_state=0))]
    model = EnsembleSelectionRegressor(library, metric="mae", n_iterations=10, test_features="refit").fit(X, y)
    assert model.metric_ == "mae" and model.oof_score_ <= min(model.oof_scores_.values())
    assert model.predict(X).shape == (300,)
