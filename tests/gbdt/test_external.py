"""Out-of-core data: sketched bin edges against the in-memory ones, pages against in-memory
codes, and what happens when pages go missing, get damaged or the disk fills."""

import errno
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.outofcore import external
from fusionrec.gbdt.binning import compute_cuts
from fusionrec.gbdt.dataset import Dataset
from fusionrec.gbdt.outofcore.external import ExternalDataset


def data(seed=0, n=5000):
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        rng.integers(0, 7, n).astype(float),  # few distinct values: cuts between neighbours
        rng.lognormal(size=n),  # skewed, continuous
        np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),  # missing values
        rng.integers(0, 100, n) * 1.0,
    ]).astype(np.float32)  # fmt: skip
    return X, (rng.random(n) < 0.3).astype(float), rng.uniform(0.5, 2.0, n)


def uneven(X, y, w=None, sizes=(1, 700, 1299, 3000)):
    """A callable source of uneven batches (its total is the data)."""
    bounds = np.cumsum((0,) + tuple(sizes))

    def source():
        for a, b in zip(bounds[:-1], bounds[1:]):
            yield (X[a:b], y[a:b]) if w is None else (X[a:b], y[a:b], w[a:b])

    return source


def all_codes(ds: ExternalDataset) -> np.ndarray:
    parts = []
    for start, codes in ds.iter_codes():
        assert start == sum(p.shape[0] for p in parts)
        parts.append(codes.toarray() if hasattr(codes, "toarray") else codes.copy())  # valid until the next page
    return np.concatenate(parts)


def test_pages_hold_the_codes_a_dataset_with_the_same_edges_has(tmp_path):
    X, y, w = data()
    with ExternalDataset(uneven(X, y, w), page_rows=1024, cache_dirs=tmp_path, max_bin=64) as ds:
        assert ds.n_rows == 5000 and len(ds.pages.pages) == 5 and ds.n_features == 4
        np.testing.assert_array_equal(ds.label, y)
        np.testing.assert_array_equal(ds.weight, w)
        np.testing.assert_array_equal(all_codes(ds), Dataset(X, y, w, reference=ds).codes)
        in_memory = compute_cuts(X, w, 64, 10**9, 0)
        np.testing.assert_array_equal(ds.cuts[0], in_memory[0])  # few distinct values: the same cuts exactly
        for j in (1, 2, 3):  # the sketch's cuts: each bin's weight within eps of an even share
            codes = Dataset(X, y, w, reference=ds).codes[:, j]
            present = ~np.isnan(X[:, j])
            shares = np.bincount(codes[present], weights=w[present]) / w[present].sum()
            assert len(ds.cuts[j]) >= 40 and shares.max() <= 1 / 63 + 2 * 0.01 + (1 / 100 if j == 3 else 0)
    assert not list(tmp_path.iterdir())  # the pages are removed on close


def test_sparse_pages_hold_present_entries_only(tmp_path):
    rng = np.random.default_rng(1)
    X = sp.random(3000, 500, density=0.01, format="csr", random_state=2, dtype=np.float32)
    y = rng.random(3000)
    with ExternalDataset(uneven(X, y, sizes=(1000, 1000, 1000)), page_rows=800, cache_dirs=tmp_path) as ds:
        assert sum(p.n_entries for p in ds.pages.pages) == X.nnz
        np.testing.assert_array_equal(all_codes(ds), Dataset(X, y, reference=ds).codes.toarray())


def test_pages_are_spread_over_the_cache_dirs(tmp_path):
    X, y, _ = data()
    dirs = [tmp_path / "disk0", tmp_path / "disk1"]
    with ExternalDataset(uneven(X, y), page_rows=1000, cache_dirs=dirs) as ds:
        assert [p.path.parent.parent for p in ds.pages.pages] == [dirs[i % 2] for i in range(5)]


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_parquet_and_csv_sources_are_read_in_batches(kind, tmp_path):
    X, y, w = data(n=3000)
    table = pa.table({**{f"f{j}": X[:, j] for j in range(4)}, "clk": y, "w": w})
    paths = []
    for i, part in enumerate((table.slice(0, 1000), table.slice(1000))):
        path = tmp_path / f"part{i}.{kind}"
        if kind == "parquet":
            pq.write_table(part, path)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(part, path)
        paths.append(path)
    with ExternalDataset(paths, label_column="clk", weight_column="w", cache_dirs=tmp_path / "pages") as ds:
        assert ds.feature_names == ["f0", "f1", "f2", "f3"] and ds.n_rows == 3000
        np.testing.assert_allclose(ds.weight, w)
        np.testing.assert_array_equal(all_codes(ds), Dataset(X, y, w, reference=ds).codes)
    with pytest.raises(FusionrecError, match=r"part0\.%s: label_column 'click' is not a column" % kind):
        ExternalDataset(paths, label_column="click", cache_dirs=tmp_path / "pages")


def test_a_page_deleted_or_damaged_while_in_use_is_named(tmp_path):
    X, y, _ = data()
    ds = ExternalDataset(uneven(X, y), page_rows=1000, cache_dirs=tmp_path)
    ds.pages.pages[2].path.unlink()
    with pytest.raises(FusionrecError, match=r"page-000002\.lz4: an out-of-core page is missing"):
        all_codes(ds)
    ds.close()
    ds = ExternalDataset(uneven(X, y), page_rows=1000, cache_dirs=tmp_path)
    path = ds.pages.pages[1].path
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(FusionrecError, match=r"page-000001\.lz4: an out-of-core page is damaged \(digest"):
        all_codes(ds)
    ds.close()
    # a raw page is mapped, not read: a cut page must be refused before it is mapped
    ds = ExternalDataset(uneven(X, y), page_rows=1000, cache_dirs=tmp_path)
    page = ds.pages.pages[0]
    assert not page.compressed
    with open(page.path, "r+b") as handle:
        handle.truncate(page.n_bytes // 2)
    with pytest.raises(FusionrecError, match=r"page-000000\.lz4: an out-of-core page is truncated or grown \(.* bytes, written as"):
        all_codes(ds)
    ds.close()
    assert not list(tmp_path.iterdir())


def test_the_page_digest_changes_with_any_byte_or_word_order():
    rng = np.random.default_rng(3)
    for size in (0, 1, 7, 8, 9, 1000, 4099):
        data = rng.integers(0, 256, size, dtype=np.uint8)
        digest = external.page_digest(data.tobytes())
        assert digest == external.page_digest(bytearray(data.tobytes()))
        for i in range(0, size, max(1, size // 17)):
            changed = data.copy()
            changed[i] ^= 1 << int(rng.integers(8))
            assert external.page_digest(changed.tobytes()) != digest
        if size >= 16:  # two 8-byte words swapped
            swapped = data.copy()
            swapped[:8], swapped[8:16] = data[8:16], data[:8]
            assert (external.page_digest(swapped.tobytes()) != digest) or bytes(data[:8]) == bytes(data[8:16])
    assert external.page_digest(b"\x00") != external.page_digest(b"\x00\x00")  # the length counts


def test_a_full_disk_is_named_and_leaves_no_pages(tmp_path, monkeypatch):
    X, y, _ = data()
    real_replace = external.os.replace
    calls = []

    def full_disk(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(external.os, "replace", full_disk)
    with pytest.raises(FusionrecError, match=r"no space left on the device writing out-of-core page page-000002\.lz4"):
        ExternalDataset(uneven(X, y), page_rows=1000, cache_dirs=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_killed_runs_pages_are_removed_by_the_next_dataset(tmp_path):
    stale = tmp_path / f"{external.PAGE_DIR_PREFIX}999999999-abc"
    stale.mkdir()
    (stale / "page-000000.lz4").write_bytes(b"x")
    X, y, _ = data()
    with ExternalDataset(uneven(X, y), cache_dirs=tmp_path):
        assert not stale.exists()


LIVE_ELSEWHERE = """
import os, sys, time
import numpy as np
os.getpid = lambda: 4_000_000_001  # a PID that names no process here, as from another container's namespace
from fusionrec.gbdt.outofcore.external import ExternalDataset
rng = np.random.default_rng(0)
ds = ExternalDataset([(rng.normal(size=(3000, 4)), rng.integers(0, 2, 3000).astype(float))], page_rows=1000, cache_dirs=sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # until the test has made its own dataset beside ours
for page in ds.pages.pages:
    ds.pages.read(page)  # our pages are all still there
print("read", flush=True)
time.sleep(60)
"""


def test_live_pages_of_another_pid_namespace_are_kept_and_removed_once_it_dies(tmp_path):
    """Two containers on one volume: a live training whose PID means nothing here keeps its
    pages (it holds their lock); killed, its pages go with the next dataset."""
    child = subprocess.Popen([sys.executable, "-c", LIVE_ELSEWHERE, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        theirs = list(tmp_path.glob(f"{external.PAGE_DIR_PREFIX}4000000001-*"))
        assert len(theirs) == 2 and any(p.is_dir() for p in theirs)  # the directory and its lock file
        X, y, _ = data()
        with ExternalDataset(uneven(X, y), cache_dirs=tmp_path):
            assert all(p.exists() for p in theirs)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "read", child.stderr.read()
    finally:
        child.kill()
        child.wait()
    with ExternalDataset(uneven(X, y), cache_dirs=tmp_path):
        assert not any(p.exists() for p in theirs)
    assert not list(tmp_path.iterdir())  # ours went when closed, lock files included


def test_sources_that_cannot_be_read_twice_or_disagree_are_refused(tmp_path):
    X, y, _ = data()
    with pytest.raises(FusionrecError, match=r"read twice.*callable returning a fresh iterable"):
        ExternalDataset(iter([(X, y)]), cache_dirs=tmp_path)
    with pytest.raises(FusionrecError, match=r"batch 1: 3 dense features, but batch 0 has 4 dense"):
        ExternalDataset([(X, y), (X[:, :3], y)], cache_dirs=tmp_path)
    with pytest.raises(FusionrecError, match=r"batch 0 label"):
        ExternalDataset([(X, y[:10])], cache_dirs=tmp_path)
    draws = iter([1000, 2000])

    def shrinking():
        n = next(draws)
        yield X[:n], y[:n]

    with pytest.raises(FusionrecError, match=r"second pass read 2,000 rows, the first 1,000"):
        ExternalDataset(shrinking, cache_dirs=tmp_path)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ training on pages
from fusionrec.gbdt.training import train  # noqa: E402


def trees_match(a, b, atol=1e-6):
    assert len(a.trees) == len(b.trees)
    for ta, tb in zip(a.trees, b.trees):
        np.testing.assert_array_equal(ta.feature, tb.feature)
        np.testing.assert_array_equal(ta.split_bin, tb.split_bin)
        np.testing.assert_array_equal(ta.default_left, tb.default_left)
        np.testing.assert_allclose(ta.value, tb.value, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("params", [
    {"objective": "binary:logistic", "max_depth": 4},
    {"objective": "binary:logistic", "grow_policy": "lossguide", "max_leaves": 12, "max_depth": 0},
    {"objective": "reg:squarederror", "max_depth": 3, "subsample": 0.7, "colsample_bytree": 0.75},
    {"objective": "multi:softprob", "num_class": 3, "max_depth": 3},
])  # fmt: skip
def test_training_on_pages_gives_the_in_memory_trees(params, tmp_path):
    X, y, w = data(3)
    if params["objective"] == "multi:softprob":
        y = np.floor(X[:, 3] / 34.0)
    with ExternalDataset(uneven(X, y, w), page_rows=777, cache_dirs=tmp_path, max_bin=32) as ds:
        in_memory = Dataset(X, y, w, reference=ds)
        settings = {"tree_method": "hist", "eta": 0.3, "seed": 5, **params}
        paged = train(settings, ds, 8, evals=[(ds, "train")])
        memory = train(settings, in_memory, 8)
        trees_match(paged, memory)
        np.testing.assert_allclose(paged.predict(X), memory.predict(X), rtol=1e-5, atol=1e-6)


def test_sparse_pages_train_the_in_memory_trees(tmp_path):
    X = sp.random(4000, 300, density=0.02, format="csr", random_state=7, dtype=np.float32)
    y = (np.asarray(X[:, :20].sum(axis=1)).ravel() > 0.1).astype(float)
    with ExternalDataset(uneven(X, y, sizes=(1500, 2500)), page_rows=1000, cache_dirs=tmp_path) as ds:
        settings = {"tree_method": "hist", "objective": "binary:logistic", "max_depth": 4, "seed": 1}
        trees_match(train(settings, ds, 5), train(settings, Dataset(X, y, reference=ds), 5))


def test_out_of_core_training_refuses_the_other_tree_methods(tmp_path):
    X, y, _ = data()
    with ExternalDataset(uneven(X, y), cache_dirs=tmp_path) as ds:
        with pytest.raises(FusionrecError, match=r"tree_method='exact': out-of-core data .* trains with tree_method='hist'"):
            train({"tree_method": "exact"}, ds, 1)


def test_a_pass_less_per_tree_changes_nothing_a_user_sees(tmp_path):
    """Binary rounds on dense pages leave each tree's depth-limit leaves unrouted and add the
    tree in the next round's first pass (BoostingRound.run_paged): metrics on the training
    pages every round, early stopping and continued training all see every tree."""
    from fusionrec.gbdt.boosting import BoostingRound

    X, y, w = data(4)
    with ExternalDataset(uneven(X, y, w), page_rows=900, cache_dirs=tmp_path, max_bin=64) as ds:
        settings = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.5, "eval_metric": ["logloss", "auc"]}
        booster = train(settings, ds, 1)
        assert BoostingRound(booster.params, booster.objective, 1).fuses_passes(ds)
        in_memory = Dataset(X, y, w, reference=ds)
        paged_log, memory_log = {}, {}
        paged = train(settings, ds, 12, evals=[(ds, "train")], evals_result=paged_log)
        memory = train(settings, in_memory, 12, evals=[(in_memory, "train")], evals_result=memory_log)
        trees_match(paged, memory)
        np.testing.assert_allclose(paged_log["train"]["logloss"], memory_log["train"]["logloss"], rtol=1e-6)
        # without evaluation in between (every tree but the last stays out of the cached margins
        # until the next round's pass), then 6 + 6 rounds
        trees_match(train(settings, ds, 12), memory)
        first = train(settings, ds, 6)
        trees_match(train(settings, ds, 6, xgb_model=first), memory)


@pytest.mark.parametrize("extra", [
    {"max_depth": 5, "gamma": 1.5},  # pruned splits into the depth limit and above it
    {"grow_policy": "lossguide", "max_leaves": 7, "max_depth": 3},
    {"max_depth": 4, "max_leaves": 6, "objective": "reg:squarederror"},
])  # fmt: skip
def test_a_pass_less_per_tree_with_pruning_and_leaf_limits(extra, tmp_path):
    """The next round's pass walks each row from the node it reached (TreeGrower.reached_nodes),
    also when gamma collapsed splits and max_leaves stopped others early."""
    X, y, w = data(6)
    with ExternalDataset(uneven(X, y, w), page_rows=1000, cache_dirs=tmp_path, max_bin=64) as ds:
        settings = {"objective": "binary:logistic", "eta": 0.4, **extra}
        memory = train(settings, Dataset(X, y, w, reference=ds), 10)
        trees_match(train(settings, ds, 10), memory)
