"""EasyRec's losses against element-by-element references of their formulas."""

import math

import pytest
import torch

from fusionrec.ctr import losses


def batch(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g)
    labels = (torch.rand(n, generator=g) < 0.4).float()
    weights = torch.rand(n, generator=g) + 0.5
    return logits, labels, weights


def bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


@pytest.mark.parametrize("weighted", [False, True])
def test_pairwise_is_the_mean_over_ordered_pairs(weighted):
    logits, labels, weights = batch()
    w = weights if weighted else None
    total, norm = 0.0, 0
    for i in range(len(labels)):
        for j in range(len(labels)):
            if labels[i] > labels[j]:
                wi = float(weights[i]) if weighted else 1.0
                total += wi * bce(float(logits[i] - logits[j]) / 2.0 - 0.1, 1.0)
                norm += 1
    got = losses.pairwise(logits, labels, w, margin=0.1, temperature=2.0)
    assert float(got) == pytest.approx(total / norm, rel=1e-5)
    assert float(losses.pairwise(logits, torch.zeros_like(labels), w)) == 0.0  # no pair: 0, not NaN


def test_pairwise_logistic_is_log1p_exp_over_pairs():
    logits, labels, _ = batch(1)
    pairs = [math.log1p(math.exp(-float(logits[i] - logits[j]))) for i in range(12) for j in range(12) if labels[i] > labels[j]]
    assert float(losses.pairwise_logistic(logits, labels, None)) == pytest.approx(sum(pairs) / len(pairs), rel=1e-5)


def test_f1_reweighted_weights_negatives_by_the_soft_counts():
    logits, labels, weights = batch(2)
    probs = torch.sigmoid(logits)
    n, n_pos, tp = len(labels), float(labels.sum()), float(probs.sum())
    negative_weight = tp / (2.25 * n_pos + (n - n_pos) - (n - tp) + 1e-8)
    smooth = 0.1
    per_row = [(1.0 if y == 1 else negative_weight) * float(w) * bce(float(z), float(y) * (1 - smooth) + 0.5 * smooth)
               for z, y, w in zip(logits, labels, weights)]  # fmt: skip
    got = losses.f1_reweighted(logits, labels, weights, beta_square=2.25, label_smoothing=smooth)
    assert float(got) == pytest.approx(sum(per_row) / n, rel=1e-5)


def test_classification_reduces_as_tensorflow_sum_by_nonzero_weights():
    """tf.losses.sigmoid_cross_entropy's default reduction: sum(w x loss) / count(w != 0)."""
    logits, labels, weights = batch(3)
    weights[2] = 0.0
    expected = sum(float(w) * bce(float(z), float(y)) for z, y, w in zip(logits, labels, weights)) / 11
    assert float(losses.classification(logits, labels, weights)) == pytest.approx(expected, rel=1e-5)
    unweighted = sum(bce(float(z), float(y)) for z, y in zip(logits, labels)) / 12
    assert float(losses.classification(logits, labels, None)) == pytest.approx(unweighted, rel=1e-5)


@pytest.mark.parametrize("alpha, ohem_ratio, smooth", [(None, 1.0, 0.0), (0.25, 1.0, 0.1), (None, 0.5, 0.0)])
def test_binary_focal_is_the_modulated_cross_entropy_of_the_hardest_rows(alpha, ohem_ratio, smooth):
    logits, labels, weights = batch(4)
    per_row = []
    for z, y, w in zip(logits.tolist(), labels.tolist(), weights.tolist()):
        p = 1 / (1 + math.exp(-z))
        p_t = p if y == 1 else 1 - p
        a = 1.0 if alpha is None else (alpha if y == 1 else 1 - alpha)
        per_row.append(w * a * (1 - p_t) ** 2.0 * bce(z, y * (1 - smooth) + 0.5 * smooth))
    hardest = sorted(per_row, reverse=True)[: round(len(per_row) * ohem_ratio)]
    got = losses.binary_focal(logits, labels, weights, gamma=2.0, alpha=alpha, ohem_ratio=ohem_ratio, label_smoothing=smooth)
    assert float(got) == pytest.approx(sum(hardest) / len(hardest), rel=1e-5)
