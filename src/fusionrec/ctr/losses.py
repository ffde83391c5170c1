"""EasyRec's losses of ``model_config.losses`` (and a task tower's): one per ``loss_type``,
summed with ``weight``s when several are listed.

Each function takes the batch's ``logits`` ((B,); JRC (B, 2), ZILN (B, 3)), ``labels`` (B,)
and optional sample ``weights`` (B,) and returns a scalar. The formulas are EasyRec's
(easy_rec/python/loss), cited per function.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from fusionrec.ctr.tasks import sum_by_nonzero_weights, ziln_sigma


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


def jrc(logits: Tensor, labels: Tensor, sessions: Tensor, weights: Tensor | None, alpha: float = 0.5,
        same_label_loss: bool = True, strategy: str = "fixed") -> Tensor:  # fmt: skip
    """Joint ranking and calibration (Sheng et al., "Joint Optimization of Ranking and
    Calibration with Contextualized Hybrid Model", KDD 2023, eq. 6-8) as EasyRec's jrc_loss:
    alpha x the softmax cross-entropy of the two logits (calibration) + (1 - alpha) x the
    generative loss: for each row j, -log of the softmax, over the rows of j's session, of the
    logit of j's own class. Each row carries its session's total of those terms divided by the
    session's size, weighed by its sample weight (without weights: the mean over rows). Without
    ``same_label_loss`` a row competes only with the session's rows of the other class and
    carries its own term. ``strategy``: EasyRec's random weights between the two terms."""
    targets = labels.long()
    calibration = sum_by_nonzero_weights(F.cross_entropy(logits, targets, reduction="none"), weights)
    same_session = sessions.unsqueeze(1) == sessions.unsqueeze(0)  # (i, j): rows i and j share a session
    own_logit = logits.gather(1, targets.unsqueeze(1)).squeeze(1)  # z_{j, y_j}
    # logits[i, y_j]: every row's logit of the class of j, as the candidates of j's softmax
    candidates = logits[:, targets]
    allowed = same_session
    if not same_label_loss:  # j against itself and the rows of the other class only
        allowed = same_session & ((labels.unsqueeze(1) != labels.unsqueeze(0)) | torch.eye(len(labels), dtype=torch.bool))
    log_partition = torch.logsumexp(candidates.masked_fill(~allowed, -1e9), dim=0)
    per_row = log_partition - own_logit
    if same_label_loss:  # EasyRec's: row j carries its session's whole loss / the session's size
        same = same_session.to(per_row.dtype)
        per_row = (same @ per_row) / same.sum(dim=0)
    generative = (per_row * weights).mean() if weights is not None else per_row.mean()
    if strategy == "fixed":
        return alpha * calibration + (1.0 - alpha) * generative
    if strategy == "random_uniform":
        weight = torch.rand(())
        return weight * calibration + (1.0 - weight) * generative
    if strategy == "random_normal":
        pair = torch.softmax(torch.randn(2), dim=0)
    else:  # random_bernoulli: one of the two terms, or both halved when the draws agree
        draws = torch.bernoulli(torch.full((2,), 0.5))
        pair = draws if float(draws.sum()) == 1.0 else torch.full((2,), 0.5)
    return pair[0] * calibration + pair[1] * generative


def ziln(logits: Tensor, labels: Tensor, weights: Tensor | None, mu_regularization: float = 0.01,
         sigma_regularization: float = 0.01, max_sigma: float = 5.0, classification_weight: float = 1.0,
         regression_weight: float = 1.0) -> Tensor:  # fmt: skip
    """Zero-inflated lognormal loss (Wang, Liu and Miao, "A Deep Probabilistic Model for Customer
    Lifetime Value Prediction", 2019, eq. 2) as EasyRec's zero_inflated_lognormal_loss: the
    sigmoid cross-entropy of value > 0 on logit 0 (a mean over rows), plus the lognormal
    negative log-likelihood of the positive values with mu = logit 1 and sigma = softplus(logit
    2) clipped to [sqrt(1e-7), max_sigma] (a mean over the positive rows), plus
    mu_regularization x mean(mu^2) + sigma_regularization x mean(logit 2 ^ 2). EasyRec's weighs
    the whole loss by a scalar sample weight only; fusionrec weighs each row's terms."""
    positive = (labels > 0).to(logits.dtype)
    row_weights = weights if weights is not None else torch.ones_like(labels)
    classification = _weighted_mean(F.binary_cross_entropy_with_logits(logits[:, 0], positive, reduction="none"), weights)
    mu = logits[:, 1]
    sigma = ziln_sigma(logits[:, 2], max_sigma)
    safe = torch.where(positive > 0, labels, torch.ones_like(labels))
    log_safe = torch.log(safe)
    # log density of LogNormal(mu, sigma) at x: -log x - log sigma - log(2 pi) / 2 - (log x - mu)^2 / (2 sigma^2)
    log_density = -log_safe - torch.log(sigma) - 0.5 * math.log(2 * math.pi) - (log_safe - mu).pow(2) / (2 * sigma.pow(2))
    n_positive = (positive * row_weights).sum() + 1e-8
    regression = -(positive * row_weights * log_density).sum() / n_positive
    penalty = mu_regularization * mu.pow(2).mean() + sigma_regularization * logits[:, 2].pow(2).mean()
    return classification_weight * classification + regression_weight * regression + penalty


def _ordered_pairs(scores: Tensor, labels: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """s_i - s_j over the pairs (i, j) with label_i > label_j, and each pair's weight (its i's),
    in row-major order of (i, j)."""
    if bool(((labels == 0) | (labels == 1)).all()):
        # clicks: the positives against the negatives, the same pairs in the same order without
        # the B x B matrices (a 4096-row batch's made multi_tower_on_taobao's step 4x slower)
        positive = torch.nonzero(labels == 1).squeeze(1)
        negative = torch.nonzero(labels == 0).squeeze(1)
        differences = (scores.index_select(0, positive).unsqueeze(1) - scores.index_select(0, negative).unsqueeze(0)).reshape(-1)
        if weights is None:
            return differences, None
        return differences, weights.index_select(0, positive).unsqueeze(1).expand(-1, negative.numel()).reshape(-1)
    mask = (labels.unsqueeze(1) - labels.unsqueeze(0)) > 0
    differences = (scores.unsqueeze(1) - scores.unsqueeze(0))[mask]
    pair_weights = weights.unsqueeze(1).expand_as(mask)[mask] if weights is not None else None
    return differences, pair_weights


def _weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)
