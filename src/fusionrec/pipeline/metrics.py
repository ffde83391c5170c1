"""The metrics a pipeline reports for every model and the fusion: AUC with its standard
error, GAUC (EasyRec's: per-user AUC averaged, users with one class left out), logloss."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from fusionrec.ctr.metrics import grouped_auc


def auc_standard_error(auc: float, n_positive: int, n_negative: int) -> float:
    """Hanley & McNeil (1982), "The meaning and use of the area under a ROC curve", eq. 2."""
    if n_positive == 0 or n_negative == 0 or math.isnan(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc))
    return math.sqrt(max(variance, 0.0) / (n_positive * n_negative))


def binary_metrics(y: np.ndarray, proba: np.ndarray, groups: np.ndarray | None = None) -> dict:
    positive = y >= 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    auc = float(roc_auc_score(positive, proba)) if n_pos and n_neg else float("nan")
    out = {"auc": auc, "auc_se": auc_standard_error(auc, n_pos, n_neg),
           "logloss": float(log_loss(positive, np.clip(proba, 1e-15, 1 - 1e-15), labels=[False, True])),
           "rows": int(len(y)), "positives": n_pos}  # fmt: skip
    if groups is not None:
        out["gauc"] = float(grouped_auc(y, proba, np.asarray(groups), "mean"))
    return out
