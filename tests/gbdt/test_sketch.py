"""The weighted quantile sketch (Chen & Guestrin 2016, appendix A) against exact weighted ranks."""

import numpy as np
import pytest

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.sketch import (
    WeightedQuantileSketch,
    merge_summaries,
    prune_summary,
    query_summary,
    summary_error,
    summary_from_sorted,
)


def true_ranks(values, weights, x):
    """(weight strictly below x, weight at most x) of the multiset."""
    return weights[values < x].sum(), weights[values <= x].sum()


def check_valid(summary, values, weights):
    v, rmin, rmax, w = summary
    assert np.all(np.diff(v) > 0)
    for i in range(len(v)):
        below, at_most = true_ranks(values, weights, v[i])
        assert rmin[i] <= below + 1e-6 * weights.sum()
        assert rmax[i] >= at_most - 1e-6 * weights.sum()
        assert w[i] <= weights[values == v[i]].sum() + 1e-9


def adversarial(rng, kind, n):
    if kind == "heavy_tail_weights":  # a few rows carry most of the weight (hessians of confident rows)
        return rng.normal(size=n), rng.pareto(0.7, size=n) + 1e-6
    if kind == "ties":  # few distinct values, huge weight on one of them
        values = rng.integers(0, 7, size=n).astype(float)
        weights = rng.random(n)
        weights[values == 3] *= 100
        return values, weights
    if kind == "sorted_stream":  # data arriving in sorted order, the worst case for merges
        return np.sort(rng.exponential(size=n)), rng.random(n)
    if kind == "tiny_weights":  # hessians p(1-p) near 0 for most rows
        return rng.normal(size=n), np.where(rng.random(n) < 0.95, 1e-9, 1.0)
    raise ValueError(kind)


KINDS = ["heavy_tail_weights", "ties", "sorted_stream", "tiny_weights"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eps", [0.3, 0.05, 0.01])
def test_streamed_sketch_keeps_every_query_within_eps(rng, kind, eps):
    values, weights = adversarial(rng, kind, 20_000)
    sketch = WeightedQuantileSketch(eps=eps, max_rows=len(values))
    for start in range(0, len(values), 1000):  # 20 batches: merges up 5 levels
        sketch.push(values[start : start + 1000], weights[start : start + 1000])
    summary = sketch.summary()
    check_valid(summary, values, weights)
    total = weights.sum()
    assert summary_error(summary[1], summary[2], summary[3], total) <= eps + 1e-9
    for q in np.linspace(0, 1, 41):
        x = query_summary(*summary, q * total)
        below, at_most = true_ranks(values, weights, x)
        # the rank target lies within eps * W of the value's true rank interval [r-, r+]
        assert below - eps * total - 1e-9 <= q * total <= at_most + eps * total + 1e-9, (q, x)


def test_summary_of_sorted_data_is_exact_and_merge_keeps_validity(rng):
    a, b = rng.normal(size=500), rng.normal(size=700)
    a[:50] = b[:50] = 0.25  # shared values merge into one entry
    wa, wb = rng.random(500), rng.random(700)
    sa = summary_from_sorted(np.sort(a), wa[np.argsort(a)])
    sb = summary_from_sorted(np.sort(b), wb[np.argsort(b)])
    assert summary_error(sa[1], sa[2], sa[3], wa.sum()) == pytest.approx(0.0, abs=1e-12)
    merged = merge_summaries(*sa, *sb)
    values, weights = np.concatenate([a, b]), np.concatenate([wa, wb])
    check_valid(merged, values, weights)
    assert summary_error(merged[1], merged[2], merged[3], weights.sum()) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("size", [3, 11, 101])
def test_prune_adds_at_most_one_over_b(rng, size):
    values, weights = adversarial(rng, "heavy_tail_weights", 5000)
    order = np.argsort(values)
    exact = summary_from_sorted(values[order], weights[order])
    pruned = prune_summary(*exact, size)
    assert len(pruned[0]) <= size
    check_valid(pruned, values, weights)
    # Theorem A.2: pruning to b + 1 entries adds at most 1/b (b = size - 1)
    assert summary_error(pruned[1], pruned[2], pruned[3], weights.sum()) <= 1.0 / (size - 1) + 1e-9


def test_bad_sketch_input_is_named():
    with pytest.raises(FusionrecError, match=r"eps=0: must be a number in \(0, 1\)"):
        WeightedQuantileSketch(eps=0)
    with pytest.raises(FusionrecError, match="3 values but 2 weights"):
        WeightedQuantileSketch().push([1, 2, 3], [1, 1])
    with pytest.raises(FusionrecError, match="finite and >= 0"):
        WeightedQuantileSketch().push([1, 2], [1, -1])
