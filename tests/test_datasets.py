import pytest

from fusionrec.datasets import TAOBAO_COLUMNS, make_taobao
from fusionrec.errors import FusionrecError


def test_make_taobao_schema_determinism_and_shared_world(tmp_path):
    a = make_taobao(2000, seed=0, path=tmp_path / "a.csv")
    again = make_taobao(2000, seed=0)
    other = make_taobao(2000, seed=1)
    assert a.table.column_names == TAOBAO_COLUMNS and a.table.equals(again.table)
    assert not a.table.equals(other.table)
    assert ((a.click_proba > 0) & (a.click_proba < 1)).all()
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert len(lines) == 2000 and len(lines[0].split(",")) == 20  # no header, lists joined by '|'
    # one world: a user id means the same user in both seeds' rows
    def demographics(data):
        t = data.table
        return dict(zip(t.column("user_id").to_pylist(), t.column("age_level").to_pylist()))
    first, second = demographics(a), demographics(other)
    shared = set(first) & set(second)
    assert shared and all(first[u] == second[u] for u in shared)
    # the click model is learnable: the oracle is far from random
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(a.table.column("clk").to_numpy(), a.click_proba) > 0.7


def test_make_taobao_rejects_bad_sizes():
    with pytest.raises(FusionrecError, match="n_rows 0"):
        make_taobao(0)


def test_make_taobao_is_shaped_like_real_logs():
    import numpy as np

    train, test = make_taobao(20000, seed=0), make_taobao(5000, seed=1)
    price = train.table.column("price").to_numpy()
    # real prices: 1 to thousands, heavy-tailed; most beyond the num_buckets: 50 of EasyRec's taobao config
    assert price.min() >= 1 and price.max() > 2000 and (price >= 50).mean() > 0.5
    assert np.mean(price) > 1.5 * np.median(price)  # right-skewed
    # ids of the test day that training never saw, users and ads alike
    for column, n_established in (("user_id", 20000), ("adgroup_id", 10000)):
        seen = set(train.table.column(column).to_pylist())
        unseen = np.mean([v not in seen for v in test.table.column(column).to_pylist()])
        assert unseen > 0.02, (column, unseen)
        newcomers = test.table.column(column).to_numpy().astype(int) >= n_established  # never in seed 0's rows
        assert 0.01 < newcomers.mean() < 0.06 and train.table.column(column).to_numpy().astype(int).max() < n_established
    assert make_taobao(5000, seed=1, new_id_share=0.0).table.column("user_id").to_numpy().astype(int).max() < 20000
    # Zipf-skewed frequencies: the top 1% of users hold far more than 1% of the rows
    _, counts = np.unique(train.table.column("user_id").to_numpy(), return_counts=True)
    assert np.sort(counts)[::-1][: len(counts) // 100].sum() > 0.1 * len(price)
    # empty history lists and empty fields
    assert 0.05 < np.mean([v == "" for v in train.table.column("tag_category_list").to_pylist()]) < 0.2
    for column in ("pvalue_level", "new_user_class_level", "brand"):
        empty = np.mean([v == "" for v in train.table.column(column).to_pylist()])
        assert 0.005 < empty < 0.2, (column, empty)
    with pytest.raises(FusionrecError, match="new_id_share 2"):
        make_taobao(10, new_id_share=2)
