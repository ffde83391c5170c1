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


def test_pairwise_over_graded_labels_and_its_click_pairs_in_matrix_order():
    """Graded labels (0, 1, 2) pair every higher label with every lower one; with clicks the
    positives-by-negatives pairs come in the B x B matrix's row-major order."""
    logits, _, weights = batch(4)
    graded = torch.tensor([0, 2, 1, 0, 2, 1, 1, 0, 0, 2, 0, 1], dtype=torch.float32)
    pairs = [(i, j) for i in range(12) for j in range(12) if graded[i] > graded[j]]
    expected = sum(float(weights[i]) * bce(float(logits[i] - logits[j]), 1.0) for i, j in pairs) / len(pairs)
    assert float(losses.pairwise(logits, graded, weights)) == pytest.approx(expected, rel=1e-5)
    clicks = (graded > 1).float()
    differences, pair_weights = losses._ordered_pairs(logits, clicks, weights)
    order = [(i, j) for i in range(12) for j in range(12) if clicks[i] > clicks[j]]
    assert torch.equal(differences, torch.stack([logits[i] - logits[j] for i, j in order]))
    assert torch.equal(pair_weights, torch.stack([weights[i] for i, _ in order]))


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


# ------------------------------------------------------------------ losses that shape the outputs
def log_softmax_at(values: list[float], index: int) -> float:
    top = max(values)
    return values[index] - top - math.log(sum(math.exp(v - top) for v in values))


def jrc_reference(logits, labels, sessions, weights, alpha, same_label_loss):
    """EasyRec's jrc_loss read literally: a B x B session mask over the two logits, column j
    normalised over the rows i of j's session, the pairwise weight of column j its row's."""
    z, y, s = logits.double().tolist(), [int(v) for v in labels], sessions.tolist()
    w = weights.tolist() if weights is not None else [1.0] * len(y)
    calibration = sum(wi * -log_softmax_at(zi, yi) for zi, yi, wi in zip(z, y, w)) / sum(wi != 0 for wi in w)
    terms = []
    for j in range(len(y)):
        session = [i for i in range(len(y)) if s[i] == s[j]]
        if same_label_loss:
            total = 0.0
            for c in (0, 1):
                column = [z[i][c] for i in session]
                total += sum(-log_softmax_at(column, k) for k, i in enumerate(session) if y[i] == c)
            terms.append(w[j] * total / len(session))
        else:
            candidates = [i for i in session if i == j or y[i] != y[j]]
            column = [z[i][y[j]] for i in candidates]
            terms.append(w[j] * -log_softmax_at(column, candidates.index(j)))
    return alpha * calibration + (1 - alpha) * sum(terms) / len(terms)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("same_label_loss", [True, False])
def test_jrc_is_calibration_plus_the_session_softmax_of_easyrec(weighted, same_label_loss):
    g = torch.Generator().manual_seed(4)
    n = 14
    logits = torch.randn(n, 2, generator=g)
    labels = (torch.rand(n, generator=g) < 0.4).float()
    sessions = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 5, 5])  # a session of one row, sessions of one class
    weights = torch.rand(n, generator=g) + 0.5 if weighted else None
    got = losses.jrc(logits, labels, sessions, weights, alpha=0.3, same_label_loss=same_label_loss)
    expected = jrc_reference(logits, labels, sessions, weights, 0.3, same_label_loss)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_jrc_random_strategies_weigh_the_two_terms_convexly():
    g = torch.Generator().manual_seed(5)
    logits, labels = torch.randn(10, 2, generator=g), (torch.rand(10, generator=g) < 0.5).float()
    sessions = torch.arange(10) // 3
    calibration = losses.jrc(logits, labels, sessions, None, alpha=1.0)
    generative = losses.jrc(logits, labels, sessions, None, alpha=0.0)
    low, high = sorted([float(calibration), float(generative)])
    for strategy in ("random_uniform", "random_normal", "random_bernoulli"):
        for _ in range(5):
            value = float(losses.jrc(logits, labels, sessions, None, strategy=strategy))
            assert low - 1e-6 <= value <= high + 1e-6


def test_ziln_is_the_zero_inflated_lognormal_likelihood():
    from scipy.stats import lognorm

    g = torch.Generator().manual_seed(6)
    n = 16
    logits = torch.randn(n, 3, generator=g)
    labels = torch.where(torch.rand(n, generator=g) < 0.5, torch.zeros(n), torch.rand(n, generator=g) * 50)
    z = logits.double().numpy()
    positive = labels.numpy() > 0
    classification = sum(bce(float(z[i, 0]), float(positive[i])) for i in range(n)) / n
    sigma = [min(max(math.log1p(math.exp(v)), math.sqrt(1e-7)), 5.0) for v in z[:, 2]]
    log_density = [lognorm.logpdf(float(labels[i]), s=sigma[i], scale=math.exp(z[i, 1])) for i in range(n) if positive[i]]
    regression = -sum(log_density) / positive.sum()
    penalty = 0.02 * float((z[:, 1] ** 2).mean()) + 0.03 * float((z[:, 2] ** 2).mean())
    got = losses.ziln(logits, labels, None, mu_regularization=0.02, sigma_regularization=0.03, classification_weight=0.5,
                      regression_weight=2.0)  # fmt: skip
    assert float(got) == pytest.approx(0.5 * classification + 2.0 * regression + penalty, rel=1e-5)


def test_ziln_prediction_is_p_times_the_lognormal_mean():
    from scipy.stats import lognorm

    from fusionrec.ctr.tasks import ziln_prediction

    logits = torch.tensor([[0.3, 1.2, -0.4], [-2.0, 0.1, 3.0], [1.0, 30.0, 2.0]])
    probs, value = ziln_prediction(logits, 5.0, 20.0, 0.0)
    for i, (z0, mu, raw) in enumerate(logits.double().tolist()):
        p = 1 / (1 + math.exp(-z0))
        mean = p * lognorm.mean(s=min(math.log1p(math.exp(raw)), 5.0), scale=math.exp(mu))
        assert float(probs[i]) == pytest.approx(p, rel=1e-6)
        assert float(value[i]) == pytest.approx(min(mean, math.exp(20.0)), rel=1e-4)  # the log of the mean clipped at 20
    _, log_value = ziln_prediction(logits, 5.0, 20.0, 1.0)
    assert float(log_value[2]) > 20.0  # return_log_pred_value: unclipped
