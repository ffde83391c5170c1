"""Learning to rank: LambdaMART gradients, ranking metrics, groups, GBDTRanker."""

import itertools

import numpy as np
import pytest
import scipy.sparse

from fusionrec.datasets import make_ranking
from fusionrec.errors import FusionrecError
from fusionrec.gbdt import Dataset, GBDTRanker, train
from fusionrec.gbdt.metric import evaluate
from fusionrec.gbdt.ranking import MAP, NDCG, PAIRWISE, ideal_dcg_inverses, lambda_gradients, rank_metric, rank_metric_per_query
from tests.conftest import shared_file


def ndcg_of(labels, scores, k=None, exp_gain=True):
    order = np.argsort(-scores, kind="stable")
    gains = 2.0**labels - 1 if exp_gain else labels.astype(float)
    top = order[:k]
    dcg = sum(gains[i] / np.log2(p + 2) for p, i in enumerate(top))
    ideal = sorted(gains, reverse=True)[: len(top)]
    idcg = sum(g / np.log2(p + 2) for p, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 1.0


def ap_of(labels, scores):
    order = np.argsort(-scores, kind="stable")
    rel = labels[order] > 0
    if not rel.any():
        return 1.0
    hits = np.cumsum(rel)
    return float(np.sum(rel * hits / np.arange(1, len(rel) + 1)) / rel.sum())


def one_query_lambdas(scores, labels, kind, topk, n_pairs, normalize, score_normalize, uniform, g, h):
    """The kernel on one query of gains 2^rel - 1."""
    ptr = np.array([0, len(scores)])
    inv_idcgs = ideal_dcg_inverses(labels, ptr, n_pairs, topk, True)
    lambda_gradients(scores, labels, ptr, np.ones(1), inv_idcgs, kind, topk, n_pairs, True, normalize, score_normalize, uniform, g, h)


def naive_lambdas(scores, labels, kind, exp_gain=True, score_gap=False):
    """Every pair of different labels, one query, no normalization (Burges 2010); with score_gap,
    each |Δmetric| over (|s_hi - s_lo| + 0.01) (XGBoost's lambdarank_score_normalization)."""
    n = len(scores)
    g, h = np.zeros(n), np.zeros(n)
    metric = {NDCG: lambda s: ndcg_of(labels, s, exp_gain=exp_gain), MAP: lambda s: ap_of(labels, s)}.get(kind)
    for i, j in itertools.combinations(range(n), 2):
        if labels[i] == labels[j]:
            continue
        hi, lo = (i, j) if labels[i] > labels[j] else (j, i)
        if kind == PAIRWISE:
            delta = 1.0
        else:  # |Δmetric| of swapping the two documents' scores
            swapped = scores.copy()
            swapped[hi], swapped[lo] = scores[lo], scores[hi]
            delta = abs(metric(swapped) - metric(scores))
        if score_gap:
            delta /= abs(scores[hi] - scores[lo]) + 0.01
        with np.errstate(over="ignore"):  # exp(+800) is inf and p is 0: the limit
            p = 1 / (1 + np.exp(-(scores[hi] - scores[lo])))
        g[hi] -= (1 - p) * delta
        g[lo] += (1 - p) * delta
        h[hi] += p * (1 - p) * delta
        h[lo] += p * (1 - p) * delta
    return g, h


@pytest.mark.parametrize("kind", [PAIRWISE, NDCG, MAP])
def test_lambda_gradients_match_every_pair_swapped_by_brute_force(rng, kind):
    n = 12
    scores = rng.normal(size=n)
    labels = rng.integers(0, 2 if kind == MAP else 4, size=n).astype(float)
    g, h = np.empty(n), np.empty(n)
    one_query_lambdas(scores, labels, kind, True, n, False, False, np.zeros((n, 0)), g, h)
    expected_g, expected_h = naive_lambdas(scores, labels, kind)
    np.testing.assert_allclose(g, expected_g, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(h, expected_h, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", [PAIRWISE, NDCG, MAP])
def test_score_normalization_divides_each_pair_by_its_score_gap(rng, kind):
    n = 12
    scores = rng.normal(size=n)
    scores[3] = scores[5] + 1e-4  # a near tie: |Δmetric| / (1e-4 + 0.01)
    labels = rng.integers(0, 2 if kind == MAP else 4, size=n).astype(float)
    labels[3], labels[5] = 1.0, 0.0
    g, h = np.empty(n), np.empty(n)
    one_query_lambdas(scores, labels, kind, True, n, False, True, np.zeros((n, 0)), g, h)
    expected_g, expected_h = naive_lambdas(scores, labels, kind, score_gap=True)
    np.testing.assert_allclose(g, expected_g, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(h, expected_h, rtol=1e-9, atol=1e-12)
    # all scores equal (the first round): no pair has a gap to divide by, and none is divided
    flat = np.zeros(n)
    one_query_lambdas(flat, labels, kind, True, n, False, True, np.zeros((n, 0)), g, h)
    g_plain, h_plain = np.empty(n), np.empty(n)
    one_query_lambdas(flat, labels, kind, True, n, False, False, np.zeros((n, 0)), g_plain, h_plain)
    assert np.any(g != 0)
    np.testing.assert_array_equal(g, g_plain)
    np.testing.assert_array_equal(h, h_plain)


@pytest.mark.parametrize("spread", [30.0, 800.0])
def test_lambda_gradients_hold_for_scores_far_apart(rng, spread):
    """The pair sigmoid comes from exp(s - max s) per document; with scores 800 apart both can
    underflow to 0, and the kernel falls back to the sigmoid of the difference."""
    n = 12
    scores = rng.normal(size=n) * spread
    if spread > 100:  # two far below the top, near each other: both exponentials underflow
        scores[:3] = scores.max() + np.array([1.0, -750.0, -760.0])
    labels = rng.integers(0, 4, size=n).astype(float)
    g, h = np.empty(n), np.empty(n)
    one_query_lambdas(scores, labels, NDCG, True, n, False, False, np.zeros((n, 0)), g, h)
    expected_g, expected_h = naive_lambdas(scores, labels, NDCG)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(h))
    np.testing.assert_allclose(g, expected_g, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(h, expected_h, rtol=1e-9, atol=1e-12)


def test_topk_pairs_only_involve_the_top_k_and_normalization_scales_a_query(rng):
    n, k = 20, 3
    scores = rng.normal(size=n)
    labels = rng.integers(0, 3, size=n).astype(float)
    g_all, h_all = np.empty(n), np.empty(n)
    one_query_lambdas(scores, labels, NDCG, True, k, False, False, np.zeros((n, 0)), g_all, h_all)
    below = np.argsort(-scores)[k:]
    # documents below the top k only receive gradient through pairs with the top k
    top = set(np.argsort(-scores)[:k])
    for i in below:
        if labels[i] == 0 and all(labels[t] == 0 for t in top):
            assert g_all[i] == 0.0
    g_norm, h_norm = np.empty(n), np.empty(n)
    one_query_lambdas(scores, labels, NDCG, True, k, True, False, np.zeros((n, 0)), g_norm, h_norm)
    # one factor log2(1 + S) / S for the whole query (S: the sum of its pair lambdas)
    moved = g_all != 0
    ratio = g_norm[moved] / g_all[moved]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    np.testing.assert_allclose(h_norm[moved] / h_all[moved], ratio[0], rtol=1e-9)
    factor = ratio[0]
    S = np.abs(g_all).sum()  # a lower bound of the pair sum; log2(1 + S) / S falls as S grows
    assert 0 < factor <= np.log2(1 + S) / S


def test_mean_pairs_are_sampled_per_document_with_a_different_label(rng):
    n = 30
    scores, labels = rng.normal(size=n), rng.integers(0, 3, size=n).astype(float)
    uniform = rng.random((n, 4))
    g, h = np.empty(n), np.empty(n)
    one_query_lambdas(scores, labels, PAIRWISE, False, 4, False, False, uniform, g, h)
    # every document is in at least its own 4 pairs: all get a hessian
    assert np.all(h > 0)
    np.testing.assert_allclose(g.sum(), 0.0, atol=1e-9)  # each pair pushes one up, one down
    # normalized, the sampled pairs are averaged: 1 / lambdarank_num_pair_per_sample (XGBoost 3)
    g_norm, h_norm = np.empty(n), np.empty(n)
    one_query_lambdas(scores, labels, PAIRWISE, False, 4, True, False, uniform, g_norm, h_norm)
    np.testing.assert_allclose(g_norm, g / 4, rtol=1e-12)
    np.testing.assert_allclose(h_norm, h / 4, rtol=1e-12)


def test_scaling_every_query_weight_by_one_factor_changes_nothing(rng):
    """XGBoost normalizes query weights to a mean of 1 per document: weights w and 10 w give
    the same model, and so do all-equal weights and none."""
    n_queries, per = 30, 10
    X = rng.normal(size=(n_queries * per, 4)).astype(np.float32)
    relevance = np.clip(np.round(X[:, 0] + 1.5 + rng.normal(size=len(X)) * 0.5), 0, 3)
    weights = rng.uniform(0.5, 2.0, size=n_queries)
    params = {"objective": "rank:ndcg", "max_depth": 3, "learning_rate": 0.3}
    predictions = [train(params, Dataset(X, relevance, weight=w, group=[per] * n_queries), 5).predict(X)
                   for w in (weights, weights * 10, None, np.full(n_queries, 3.0))]  # fmt: skip
    np.testing.assert_allclose(predictions[1], predictions[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictions[3], predictions[2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(predictions[0], predictions[2])  # the weights themselves do matter


def test_metrics_against_direct_formulas(rng):
    y = rng.integers(0, 4, size=40).astype(float)
    p = rng.normal(size=40)
    ptr = np.array([0, 10, 25, 40])
    expected = np.mean([ndcg_of(y[a:b], p[a:b], 5) for a, b in zip(ptr[:-1], ptr[1:])])
    assert rank_metric("ndcg@5", y, p, ptr, None) == pytest.approx(expected)
    yb = (y > 1).astype(float)
    expected_map = np.mean([ap_of(yb[a:b], p[a:b]) for a, b in zip(ptr[:-1], ptr[1:])])
    assert rank_metric("map", yb, p, ptr, None) == pytest.approx(expected_map)
    top3 = [np.sum(yb[a:b][np.argsort(-p[a:b])[:3]] > 0) / 3 for a, b in zip(ptr[:-1], ptr[1:])]
    assert rank_metric("pre@3", yb, p, ptr, None) == pytest.approx(np.mean(top3))
    # a query without relevant documents: 1 by default, 0 with XGBoost's '-' suffix
    zero = np.zeros(5)
    assert rank_metric("ndcg", zero, p[:5], np.array([0, 5]), None) == 1.0
    assert rank_metric("ndcg-", zero, p[:5], np.array([0, 5]), None) == 0.0
    weights = np.array([1.0, 0.0, 3.0])
    per_query = [ndcg_of(y[a:b], p[a:b]) for a, b in zip(ptr[:-1], ptr[1:])]
    assert rank_metric("ndcg", y, p, ptr, weights) == pytest.approx(np.average(per_query, weights=weights))


def test_group_and_qid_errors_name_both_numbers():
    X, y = np.ones((6, 2)), np.zeros(6)
    with pytest.raises(FusionrecError, match=r"group: the 2 query sizes sum to 5 rows but the data has 6 rows"):
        Dataset(X, y, group=[2, 3])
    with pytest.raises(FusionrecError, match=r"qid\[3\] = 1 comes after qid\[2\] = 2: qid must be sorted ascending"):
        Dataset(X, y, qid=[1, 1, 2, 1, 3, 3])
    with pytest.raises(FusionrecError, match=r"weight: has 6 values but there are 2 query groups"):
        Dataset(X, y, weight=np.ones(6), group=[3, 3])
    with pytest.raises(FusionrecError, match=r"qid: has 5 values but the data has 6 rows"):
        Dataset(X, y, qid=[1, 1, 2, 2, 3])
    with pytest.raises(FusionrecError, match="group and qid: give one of them"):
        Dataset(X, y, group=[6], qid=np.zeros(6, int))
    with pytest.raises(FusionrecError, match=r"group\[1\] = 0: every query group needs at least 1 row"):
        Dataset(X, y, group=[6, 0])


def test_label_and_parameter_rules():
    X = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(FusionrecError, match=r"label\[1\] = 2.5: rank:ndcg needs relevance labels that are integers >= 0"):
        train({"objective": "rank:ndcg"}, Dataset(X, [0, 2.5, 1, 0, 1, 0], group=[3, 3]), 1)
    with pytest.raises(FusionrecError, match=r"label\[0\] = 2.0: rank:map needs binary relevance labels"):
        train({"objective": "rank:map"}, Dataset(X, [2, 0, 1, 0, 1, 0], group=[3, 3]), 1)
    with pytest.raises(FusionrecError, match=r"label\[0\] = 40.0: rank:ndcg needs labels <= 31 with ndcg_exp_gain"):
        train({"objective": "rank:ndcg"}, Dataset(X, [40, 0, 1, 0, 1, 0], group=[3, 3]), 1)
    train({"objective": "rank:ndcg", "ndcg_exp_gain": False}, Dataset(X, [40, 0, 1, 0, 1, 0], group=[3, 3]), 1)
    with pytest.raises(FusionrecError, match=r"lambdarank_pair_method='topk'.*only used by rank:\* objectives|lambdarank_num_pair_per_sample=3: only used by rank"):
        train({"objective": "binary:logistic", "lambdarank_num_pair_per_sample": 3}, Dataset(X, [0, 1, 1, 0, 1, 0]), 1)
    with pytest.raises(FusionrecError, match=r"eval_metric='ndcg@x'"):
        train({"objective": "rank:ndcg", "eval_metric": "ndcg@x"}, Dataset(X, [0, 1, 1, 0, 1, 0], group=[3, 3]), 1)


def load_rank(name):
    from sklearn.datasets import load_svmlight_file

    path = shared_file(f"lightgbm/{name}")
    X, y = load_svmlight_file(str(path), n_features=300)
    groups = np.loadtxt(str(path) + ".query", dtype=int)
    return X.astype(np.float32).tocsr(), y, groups


def per_query_ndcg10(y, scores, sizes):
    return rank_metric_per_query("ndcg@10", y, scores, np.r_[0, np.cumsum(sizes)])


def assert_not_worse(ours, theirs, what):
    """Paired over the same queries: a drop of more than 3 standard errors of the mean
    difference is a regression, not noise."""
    diff = ours - theirs
    standard_error = diff.std(ddof=1) / np.sqrt(len(diff))
    assert diff.mean() >= -3 * standard_error, f"{what}: NDCG@10 {ours.mean():.4f} vs {theirs.mean():.4f} (s.e. of the difference {standard_error:.4f})"


def fit_xgboost_ranker(params, X, y, sizes, rounds):
    xgb = pytest.importorskip("xgboost")
    booster = xgb.train({**params, "tree_method": "hist", "nthread": 2}, xgb.DMatrix(X, y, group=sizes), rounds)
    return lambda data: booster.predict(xgb.DMatrix(data))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["rank:ndcg", "rank:pairwise"])
def test_ndcg_on_lightgbm_rank_data_is_at_least_xgboosts(objective):
    """All 251 queries of LightGBM's ranking example, 5 folds of whole queries (its 50 test
    queries alone leave a noise of about 0.02)."""
    X_train, y_train, g_train = load_rank("rank.train")
    X_test, y_test, g_test = load_rank("rank.test")
    X, y, sizes = scipy.sparse.vstack([X_train, X_test]).tocsr(), np.r_[y_train, y_test], np.r_[g_train, g_test]
    starts = np.r_[0, np.cumsum(sizes)]
    fold_of_query = np.random.default_rng(0).permutation(len(sizes)) % 5
    params = {"objective": objective, "learning_rate": 0.1, "max_depth": 6}
    ours, theirs = [], []
    for fold in range(5):
        rows = {held: np.concatenate([np.arange(starts[q], starts[q + 1]) for q in np.flatnonzero((fold_of_query == fold) == held)])
                for held in (False, True)}  # fmt: skip
        fit_rows, test_rows = rows[False], rows[True]
        fit_sizes, test_sizes = sizes[fold_of_query != fold], sizes[fold_of_query == fold]
        booster = train(params, Dataset(X[fit_rows], y[fit_rows], group=fit_sizes), 50)
        ours.append(per_query_ndcg10(y[test_rows], booster.predict(X[test_rows]), test_sizes))
        predict = fit_xgboost_ranker(params, X[fit_rows], y[fit_rows], fit_sizes, 50)
        theirs.append(per_query_ndcg10(y[test_rows], predict(X[test_rows]), test_sizes))
    assert_not_worse(np.concatenate(ours), np.concatenate(theirs), f"{objective} against xgboost")


@pytest.mark.slow
def test_ndcg_on_generated_queries_is_at_least_the_peers():
    """2,000 held-out generated queries: a paired standard error of about 0.002."""
    lgb = pytest.importorskip("lightgbm")
    X, y, sizes = make_ranking(2000, 0)
    X_test, y_test, test_sizes = make_ranking(2000, 1)
    params = {"objective": "rank:ndcg", "learning_rate": 0.1, "max_depth": 6}
    ours = per_query_ndcg10(y_test, train(params, Dataset(X, y, group=sizes), 60).predict(X_test), test_sizes)
    xgboost_scores = fit_xgboost_ranker(params, X, y, sizes, 60)(X_test)
    assert_not_worse(ours, per_query_ndcg10(y_test, xgboost_scores, test_sizes), "rank:ndcg against xgboost")
    lightgbm_params = {"objective": "lambdarank", "learning_rate": 0.1, "max_depth": 6, "num_leaves": 63, "num_threads": 2, "verbose": -1}
    lightgbm_scores = lgb.train(lightgbm_params, lgb.Dataset(X, y, group=sizes), 60).predict(X_test)
    assert_not_worse(ours, per_query_ndcg10(y_test, lightgbm_scores, test_sizes), "rank:ndcg against LightGBM lambdarank")


@pytest.mark.parametrize("binary", [False, True])
def test_metrics_equal_xgboosts_on_the_same_scores(rng, binary):
    xgb = pytest.importorskip("xgboost")
    X = rng.normal(size=(200, 3)).astype(np.float32)
    y = rng.integers(0, 2 if binary else 4, size=200).astype(float)
    groups = [50, 70, 80]
    # explicit @k: XGBoost's bare "ndcg" under rank:ndcg truncates at lambdarank_num_pair_per_sample
    # (32); ours is the whole list, as the name says (docs/gbdt.md)
    names = ["map@5", "map@100", "pre@3", "ndcg@5"] if binary else ["ndcg@5", "ndcg@20", "ndcg@100"]
    objective = "rank:map" if binary else "rank:ndcg"
    booster = xgb.train({"objective": objective, "eval_metric": names}, xgb.DMatrix(X, y, group=groups), 3)
    scores = booster.predict(xgb.DMatrix(X))
    text = booster.eval(xgb.DMatrix(X, y, group=groups))
    reported = {part.split(":")[0].split("-", 1)[1]: float(part.split(":")[1]) for part in text.split("\t")[1:]}
    data = Dataset(X, y, group=groups)
    for name in names:
        assert evaluate(name, y, scores, None, data) == pytest.approx(reported[name], abs=1e-5), name


def test_ranker_fits_with_qid_and_per_group_weights(rng):
    n_queries, per = 40, 15
    X = rng.normal(size=(n_queries * per, 4)).astype(np.float32)
    relevance = np.clip(np.round(X[:, 0] * 1.5 + 1.5 + rng.normal(size=len(X)) * 0.3), 0, 4)
    qid = np.repeat(np.arange(n_queries), per)
    ranker = GBDTRanker(n_estimators=30, learning_rate=0.2, max_depth=3)
    ranker.fit(X, relevance, qid=qid, sample_weight=np.ones(n_queries))
    assert ranker.score(X, relevance, qid=qid) > 0.9  # learns the ordering of feature 0
    with pytest.raises(FusionrecError, match=r"weight: has 600 values but there are 40 query groups"):
        GBDTRanker(n_estimators=2).fit(X, relevance, qid=qid, sample_weight=np.ones(len(X)))
    # eval sets with their own groups, evaluated per query
    ranker = GBDTRanker(n_estimators=5, eval_metric="ndcg@5").fit(X, relevance, group=[per] * n_queries, eval_set=[(X, relevance)], eval_group=[[per] * n_queries])
    assert len(ranker.evals_result_["validation_0"]["ndcg@5"]) == 5


@pytest.mark.parametrize("method", ["hist", "exact", "approx"])
@pytest.mark.parametrize("objective", ["rank:ndcg", "rank:map", "rank:pairwise"])
def test_every_tree_method_learns_to_rank(rng, method, objective):
    n_queries, per = 30, 12
    X = rng.normal(size=(n_queries * per, 3)).astype(np.float32)
    relevance = (X[:, 0] > 0.3).astype(float) if objective == "rank:map" else np.clip(np.round(X[:, 0] + 1.5), 0, 3)
    data = Dataset(X, relevance, group=[per] * n_queries)
    booster = train({"objective": objective, "tree_method": method, "max_depth": 3, "learning_rate": 0.3}, data, 10)
    assert rank_metric("ndcg", relevance, booster.predict(X), np.arange(0, n_queries * per + 1, per), None) > 0.9
