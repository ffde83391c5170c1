"""Evaluation of a booster's margins: every metric of its parameters, and a user's ``feval``."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fusionrec.gbdt.metric import evaluate
from fusionrec.gbdt.objective import Objective
from fusionrec.gbdt.params import metric_names


def metrics_of(objective: Objective, params: dict, margin: np.ndarray, dataset: Any,
               feval: Callable | None = None) -> dict[str, float]:  # fmt: skip
    """Every metric of ``params`` (and ``feval``'s) on ``margin``, the margins of ``dataset``'s
    rows (its label, weight and query groups): metrics read the objective's ``metric_input``
    (probabilities for classifiers), ``feval`` its ``transform`` (XGBoost's custom_metric)."""
    names = metric_names(params)
    row: dict[str, float] = {}
    if names:
        if objective.name != "custom":
            objective.check_label(dataset.label)
        metric_input = objective.metric_input(margin)
        for metric in names:
            row[metric] = evaluate(metric, dataset.label, metric_input, dataset.weight, dataset, bool(params["ndcg_exp_gain"]))
    if feval is not None:
        out = feval(objective.transform(margin), dataset)
        pairs = out if isinstance(out, list) else [out]
        for metric, value in pairs:
            row[str(metric)] = float(value)
    return row
