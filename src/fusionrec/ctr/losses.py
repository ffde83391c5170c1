"""EasyRec's losses for binary ranking models: one per ``loss_type``, summed with ``weight``s
when ``model_config.losses`` lists several.

Each function takes the batch's ``logits`` (B,), ``labels`` (B,) and optional sample
``weights`` (B,) and returns a scalar. The formulas are EasyRec's (easy_rec/python/loss),
cited per function.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from fusionrec.ctr.tasks import sum_by_nonzero_weights


def classification(logits: Tensor, labels: Tensor, weights: Tensor | None) -> Tensor:
    """Sigmoid cross-entropy as EasyRec's tf.losses.sigmoid_cross_entropy reduces it:
    sum(w x loss) / count(w != 0) (the mean without sample weights)."""
    per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return sum_by_nonzero_weights(per_row, weights)


def f1_reweighted(logits: Tensor, labels: Tensor, weights: Tensor | None, beta_square: float,
                  label_smoothing: float = 0.0) -> Tensor:  # fmt: skip
    """Sigmoid cross-entropy with negatives re-weighted to maximize F-beta (Li et al., "Adaptive
    Scaling for Sparse Detection in Information Extraction", ACL 2018), as EasyRec's
    f1_reweight_sigmoid_cross_entropy: with soft true positives tp = sum(p) and tn = B - tp,
    each negative weighs tp / (beta^2 * n_pos + n_neg - tn), each positive 1."""
    probs = torch.sigmoid(logits)
    n = float(labels.shape[0])
    n_pos = labels.sum()
    tp = probs.sum()
    negative_weight = tp / (beta_square * n_pos + (n - n_pos) - (n - tp) + 1e-8)
    row_weights = torch.where(labels >= 1.0, torch.ones_like(labels), negative_weight.expand_as(labels))
    if weights is not None:
        row_weights = row_weights * weights
    targets = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
    per_row = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return sum_by_nonzero_weights(per_row, row_weights)


def binary_focal(logits: Tensor, labels: Tensor, weights: Tensor | None, gamma: float = 2.0,
                 alpha: float | None = None, ohem_ratio: float = 1.0, label_smoothing: float = 0.0) -> Tensor:  # fmt: skip
    """Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, eq. 5) as
    EasyRec's sigmoid_focal_loss_with_logits: each row's sigmoid cross-entropy (against the
    smoothed label) weighed by (1 - p_t)^gamma, by alpha_t when alpha is set, and by its sample
    weight; then the mean of the round(ohem_ratio * B) largest positive losses (online hard
    example mining; all of them at ohem_ratio 1)."""
    probs = torch.sigmoid(logits)
    p_t = labels * probs + (1.0 - labels) * (1.0 - probs)
    row_weights = (1.0 - p_t).pow(gamma)
    if alpha is not None:
        row_weights = row_weights * (labels * alpha + (1.0 - labels) * (1.0 - alpha))
    if weights is not None:
        row_weights = row_weights * weights
    targets = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
    per_row = row_weights * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    k = int(round(per_row.numel() * ohem_ratio))
    hardest = torch.topk(per_row, k).values if k < per_row.numel() else per_row
    positive = hardest[hardest > 0]
    return positive.mean() if positive.numel() else logits.sum() * 0.0


def pairwise(logits: Tensor, labels: Tensor, weights: Tensor | None, margin: float = 0.0,
             temperature: float = 1.0) -> Tensor:  # fmt: skip
    """EasyRec's pairwise_loss (RankNet-style): over every pair (i, j) of the batch with
    label_i > label_j, sigmoid cross-entropy of s_i - s_j - margin against 1, s = logits /
    temperature; each pair weighs the weight of its i; 0 when the batch has no such pair."""
    differences, pair_weights = _ordered_pairs(logits / temperature, labels, weights)
    if differences.numel() == 0:
        return logits.sum() * 0.0
    per_pair = F.binary_cross_entropy_with_logits(differences - margin, torch.ones_like(differences), reduction="none")
    return sum_by_nonzero_weights(per_pair, pair_weights)


def pairwise_logistic(logits: Tensor, labels: Tensor, weights: Tensor | None, temperature: float = 1.0) -> Tensor:
    """EasyRec's pairwise_logistic_loss: sum over pairs with label_i > label_j of
    log(1 + exp(-(s_i - s_j))), s = logits / temperature, as a weighted mean over the pairs."""
    differences, pair_weights = _ordered_pairs(logits / temperature, labels, weights)
    if differences.numel() == 0:
        return logits.sum() * 0.0
    return _weighted_mean(F.softplus(-differences), pair_weights)


def _ordered_pairs(scores: Tensor, labels: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """s_i - s_j over the pairs (i, j) with label_i > label_j, and each pair's weight (its i's)."""
    mask = (labels.unsqueeze(1) - labels.unsqueeze(0)) > 0
    differences = (scores.unsqueeze(1) - scores.unsqueeze(0))[mask]
    pair_weights = weights.unsqueeze(1).expand_as(mask)[mask] if weights is not None else None
    return differences, pair_weights


def _weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)
