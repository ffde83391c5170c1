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
