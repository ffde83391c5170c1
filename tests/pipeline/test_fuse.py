"""The pipeline's fusion: fitted as fusionrec.fusion / scikit-learn fit it, applied row by row, stored as checked JSON."""

import json

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from fusionrec.errors import FusionrecError
from fusionrec.fusion import average, optimize_weights
from fusionrec.pipeline.config import FusionSection
from fusionrec.pipeline.fuse import apply_fusion, check_fusion_state, fit_fusion

NAMES = ["a", "b", "c"]


@pytest.fixture
def oof(rng):
    n = 3000
    truth = rng.normal(size=n)
    y = (rng.random(n) < expit(truth - 1)).astype(float)
    scores = np.column_stack([expit(truth + rng.normal(0, s, n) - 1) for s in (0.5, 1.0, 3.0)])
    return scores, y


def test_stacking_is_a_logistic_regression_on_log_odds(oof):
    scores, y = oof
    state = fit_fusion(FusionSection(stacking={"C": 0.5}), NAMES, scores, y)
    reference = LogisticRegression(C=0.5, max_iter=1000).fit(logit(np.clip(scores, 1e-7, 1 - 1e-7)), y.astype(int))
    np.testing.assert_allclose(apply_fusion(state, scores), reference.predict_proba(logit(np.clip(scores, 1e-7, 1 - 1e-7)))[:, 1],
                               rtol=1e-6)  # fmt: skip
    assert state["coef"][0] > state["coef"][2]  # the sharper model weighs more


@pytest.mark.parametrize("method", ["mean", "logit", "geometric", "median", "power"])
def test_fixed_and_fitted_averages_equal_fusionrec_fusion(oof, method):
    scores, y = oof
    fixed = fit_fusion(FusionSection(average={"method": method, "weights": [1, 2, 3]}), NAMES, scores, y)
    np.testing.assert_allclose(apply_fusion(fixed, scores), average(list(scores.T), method, [1, 2, 3]))
    fitted = fit_fusion(FusionSection(average={"method": method, "fit_metric": "auc"}), NAMES, scores, y)
    reference = optimize_weights(list(scores.T), y, metric="auc", method=method, classification=True)
    np.testing.assert_allclose(fitted["weights"], reference.weights)


def test_ensemble_selection_weights_are_counts_of_the_greedy_picks(oof):
    from fusionrec.fusion import get_metric, greedy_selection

    scores, y = oof
    state = fit_fusion(FusionSection(ensemble_selection={"n_iterations": 20, "n_init": 1}), NAMES, scores, y)
    counts, best, _ = greedy_selection(scores.T.copy(), y, get_metric("auc", classification=True), n_iterations=20, n_init=1)
    np.testing.assert_allclose(state["weights"], counts / counts.sum())
    assert state["weights"][0] == max(state["weights"])  # the sharpest model is picked most
    np.testing.assert_allclose(get_metric("auc", classification=True).score(y, apply_fusion(state, scores)), best)


@pytest.mark.parametrize("section", [{"stacking": {}}, {"average": {"method": "logit"}}, {"ensemble_selection": {}}])
def test_a_row_scores_the_same_alone_and_in_any_batch(oof, section):
    scores, y = oof
    state = fit_fusion(FusionSection(**section), NAMES, scores, y)
    batch = apply_fusion(state, scores[:50])
    alone = np.array([apply_fusion(state, scores[i : i + 1])[0] for i in range(50)])
    np.testing.assert_allclose(batch, alone, rtol=1e-12)
    np.testing.assert_allclose(apply_fusion(state, scores[:50][::-1]), batch[::-1], rtol=1e-12)


def test_fusion_json_is_checked_when_read(oof):
    scores, y = oof
    state = json.loads(json.dumps(fit_fusion(FusionSection(stacking={}), NAMES, scores, y)))
    assert check_fusion_state(state, NAMES, "fusion.json") == state
    cases = [({"models": ["a", "b"]}, "fuses"), ({"coef": [1.0, 2.0]}, "2 coefficients for 3 models"),
             ({"intercept": float("nan")}, "not a finite number"), ({"kind": "magic"}, "unknown kind"),
             ({"format": "other"}, "not a fusionrec pipeline fusion")]  # fmt: skip
    for change, message in cases:
        with pytest.raises(FusionrecError, match=f"fusion.json: not a valid fusion .*{message}"):
            check_fusion_state({**state, **change}, NAMES, "fusion.json")
    average_state = fit_fusion(FusionSection(average={"weights": [1, 1, 1]}), NAMES, scores, y)
    with pytest.raises(FusionrecError, match="one non-negative weight per model"):
        check_fusion_state({**average_state, "weights": [1, -1, 1]}, NAMES, "fusion.json")
