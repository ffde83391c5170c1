"""The fusion of a pipeline: fitted on out-of-fold predictions, stored as JSON, applied to scores.

Kinds (``fusion`` in the config): ``average`` (any method of ``fusionrec.fusion.average``,
fixed weights or weights fitted out of fold with ``optimize_weights``), ``stacking`` (a
logistic regression on the models' log-odds) and ``ensemble_selection`` (Caruana's greedy
selection, ``greedy_selection``). ``apply`` is a pure function of one row's scores, so a
served row scores the same alone or in any batch.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from fusionrec.errors import FusionrecError
from fusionrec.fusion.combine import average
from fusionrec.fusion.metrics import get_metric
from fusionrec.fusion.selection import greedy_selection
from fusionrec.fusion.weights import optimize_weights
from fusionrec.pipeline.config import FusionSection

FUSION_FORMAT = "fusionrec.pipeline.fusion"
PROBA_EPS = 1e-7  # log-odds of probabilities clipped to [eps, 1 - eps]


def _log_odds(proba: np.ndarray) -> np.ndarray:
    return logit(np.clip(proba, PROBA_EPS, 1 - PROBA_EPS))


def fit_fusion(section: FusionSection, names: list[str], oof: np.ndarray, y: np.ndarray) -> dict:
    """The fusion's JSON state from out-of-fold probabilities ``oof`` (n, m) and labels ``y``."""
    state: dict = {"format": FUSION_FORMAT, "version": 1, "kind": section.kind, "models": list(names)}
    if section.average is not None:
        a = section.average
        state.update(method=a.method, power=a.power)
        if a.fit_metric is not None:
            fit = optimize_weights(list(oof.T), y, metric=a.fit_metric, method=a.method, power=a.power, classification=True)
            state["weights"] = [float(w) for w in fit.weights]
        else:
            state["weights"] = [float(w) for w in (a.weights or [1.0] * len(names))]
    elif section.stacking is not None:
        meta = LogisticRegression(C=section.stacking.C, max_iter=1000).fit(_log_odds(oof), y.astype(int))
        state.update(coef=[float(c) for c in meta.coef_[0]], intercept=float(meta.intercept_[0]))
    else:
        s = section.ensemble_selection
        scorer = get_metric(s.metric, classification=True)
        counts, _, _ = greedy_selection(oof.T.copy(), y, scorer, n_iterations=s.n_iterations, n_init=min(s.n_init, len(names)))
        state.update(method="mean", power=2.0, weights=[float(c) / float(counts.sum()) for c in counts])
    return state


def apply_fusion(state: dict, scores: np.ndarray) -> np.ndarray:
    """Fused probabilities of model scores (n, m) in ``state['models']`` order."""
    if state["kind"] == "stacking":
        return expit(_log_odds(scores) @ np.asarray(state["coef"]) + state["intercept"])
    return np.asarray(average(list(scores.T), state["method"], np.asarray(state["weights"]), power=state["power"]))


def check_fusion_state(state, names: list[str], source: str) -> dict:
    """A fusion.json read back: its format, its models and its numbers."""
    try:
        if state.get("format") != FUSION_FORMAT or state.get("version") != 1:
            raise ValueError("not a fusionrec pipeline fusion of version 1")
        if state["models"] != names:
            raise ValueError(f"fuses {state['models']}, the export's models are {names}")
        if state["kind"] == "stacking":
            numbers = list(state["coef"]) + [state["intercept"]]
            if len(state["coef"]) != len(names):
                raise ValueError(f"{len(state['coef'])} coefficients for {len(names)} models")
        elif state["kind"] in ("average", "ensemble_selection"):
            numbers = list(state["weights"]) + [state["power"]]
            if len(state["weights"]) != len(names) or min(state["weights"]) < 0 or sum(state["weights"]) <= 0:
                raise ValueError(f"weights {state['weights']}: one non-negative weight per model, not all 0")
            average(np.full((len(names), 1), 0.5), state["method"], np.asarray(state["weights"]), power=state["power"])
        else:
            raise ValueError(f"unknown kind {state['kind']!r}")
        if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in numbers):
            raise ValueError("holds a value that is not a finite number")
    except (KeyError, TypeError, ValueError, AttributeError, FusionrecError) as error:
        raise FusionrecError(f"{source}: not a valid fusion ({error})") from None
    return state
