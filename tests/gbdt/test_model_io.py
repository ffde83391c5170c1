import json
import subprocess
import sys

import numpy as np
import pytest

from fusionrec.errors import ModelFileError
from fusionrec.gbdt import Booster, Dataset, train


@pytest.fixture
def model(rng):
    X = rng.normal(size=(500, 4)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (X[:, 0] > 0).astype(float)
    b = train({"objective": "binary:logistic", "max_depth": 3}, Dataset(X, y, feature_names=["a", "b", "c", "d"]), 5)
    return b, X


def test_round_trip_predicts_identically(model, tmp_path):
    b, X = model
    path = tmp_path / "model.json"
    b.save_model(path)
    loaded = Booster.load_model(path)
    np.testing.assert_array_equal(loaded.predict(X), b.predict(X))
    assert loaded.feature_names == ["a", "b", "c", "d"] and loaded.save_raw() == b.save_raw()
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 1 and len(doc["bin_edges"]) == 4 and "n_jobs" not in doc["params"]
    assert (tmp_path / "model.json.sha256").read_text().split()[0]


LOAD_SNIPPET = """
import sys
from fusionrec.errors import ModelFileError
from fusionrec.gbdt import Booster
try:
    Booster.load_model(sys.argv[1])
except ModelFileError as exc:
    assert sys.argv[1] in str(exc), str(exc)
    print("ModelFileError")
else:
    print("loaded")
"""


def load_in_subprocess(path):
    """Load in a child process so a crash (abort, segfault) shows up as a failure, not a dead suite."""
    result = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_truncated_files_raise_a_clear_error(model, tmp_path):
    b, _ = model
    raw = b.save_raw()
    paths = []
    for tenth in range(10):
        path = tmp_path / f"cut{tenth}.json"
        path.write_bytes(raw[: len(raw) * tenth // 10])
        paths.append(path)
    script = LOAD_SNIPPET.replace("Booster.load_model(sys.argv[1])", "Booster.load_model(p)").replace("sys.argv[1] in", "p in")
    loop = "import sys\nfor p in sys.argv[1:]:\n" + "\n".join("    " + line for line in script.strip().splitlines() if not line.startswith(("import", "from")))
    header = "from fusionrec.errors import ModelFileError\nfrom fusionrec.gbdt import Booster\n"
    result = subprocess.run([sys.executable, "-c", header + loop, *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ModelFileError"] * 10


def test_byte_flips_never_crash(model, tmp_path, rng):
    b, _ = model
    raw = bytearray(b.save_raw())
    for i, position in enumerate(rng.choice(len(raw), 6, replace=False)):
        damaged = bytearray(raw)
        damaged[position] ^= 0x5A
        path = tmp_path / f"flip{i}.json"
        path.write_bytes(bytes(damaged))  # no sidecar: the structure checks must catch it
        assert load_in_subprocess(path) in ("ModelFileError", "loaded")


def test_checksum_sidecar_detects_changes(model, tmp_path):
    b, _ = model
    path = tmp_path / "m.json"
    b.save_model(path)
    text = path.read_text().replace('"max_bin":256', '"max_bin":255')
    path.write_text(text)
    with pytest.raises(ModelFileError, match="sha256"):
        Booster.load_model(path)


def _first_internal(doc) -> int:
    return next(i for i, f in enumerate(doc["trees"][0]["feature"]) if f >= 0)


def _set(doc, name, value, node=None):
    tree = doc["trees"][0]
    tree[name][_first_internal(doc) if node is None else node] = value


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(format_version=99), "newer fusionrec"),
        (lambda d: d.update(objective="rank:listnet"), "unknown objective"),
        (lambda d: d.update(surprise=1), "unknown keys"),
        (lambda d: d.pop("trees"), "missing keys"),
        (lambda d: d["trees"][0].update(left=[5] * len(d["trees"][0]["left"])), "child ids"),
        (lambda d: d["trees"][0].update(feature=[9] * len(d["trees"][0]["feature"])), "feature ids"),
        (lambda d: d.update(format="something.else"), "not a fusionrec"),
        # hand edits: every field's type and range
        (lambda d: _set(d, "default_left", 2), r"trees\[0\]\.default_left\[0\] = 2; must be 0 or 1"),
        (lambda d: _set(d, "default_left", 200), r"default_left\[0\] = 200; must be 0 or 1"),
        (lambda d: _set(d, "default_left", True), r"default_left\[0\] = True is not an integer"),
        (lambda d: _set(d, "feature", 1.5), r"trees\[0\]\.feature\[0\] = 1\.5 is not an integer"),
        (lambda d: _set(d, "value", "0.1", node=-1), r"value\[\d+\] = '0\.1' is not a number"),
        (lambda d: d["trees"][0]["gain"].pop(), r"node arrays must be non-empty lists of one length"),
        (lambda d: [d["trees"][0][k].extend([d["trees"][0][k][-1]] * 2) for k in d["trees"][0]],
         r"node \d+ is the child of 0 nodes"),  # two extra nodes nothing points to
        (lambda d: _set(d, "split_bin", 300), r"split_bin\[0\] = 300; feature \d has bins"),
        (lambda d: _set(d, "threshold", 0.123456), r"threshold\[0\] = 0\.123456 is not bin edge"),
        (lambda d: _set(d, "left", 0, node=-1), r"a leaf's children must be -1"),
        (lambda d: d.update(max_bin="abc"), r"max_bin 'abc' is not an integer in \[2, 256\]"),
        (lambda d: d.update(max_bin=1000), r"max_bin 1000 is not an integer"),
    ],
)  # fmt: skip
def test_incompatible_documents_are_refused(model, tmp_path, change, message):
    b, _ = model
    doc = json.loads(b.save_raw())
    change(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match=message):
        Booster.load_model(path)


def test_every_model_that_loads_predicts_the_leaf_pred_leaf_names(model, tmp_path):
    """Random single-field edits: whatever loads must agree between predict and pred_leaf."""
    b, X = model
    rng = np.random.default_rng(0)
    base = json.loads(b.save_raw())
    leaves = b.predict(X, pred_leaf=True).astype(int)
    base_margin = (b.predict(X, output_margin=True) - sum(t.value[leaves[:, k]] for k, t in enumerate(b.trees)))[0]
    n_loaded = 0
    for trial in range(200):
        doc = json.loads(json.dumps(base))
        t = int(rng.integers(len(doc["trees"])))
        name = str(rng.choice(["feature", "split_bin", "left", "right", "default_left", "value", "threshold"]))
        node = int(rng.integers(len(doc["trees"][t][name])))
        doc["trees"][t][name][node] = [0, 1, 2, -1, 3, 0.5, 255, 1e308][int(rng.integers(8))]
        path = tmp_path / f"m{trial}.json"
        path.write_text(json.dumps(doc))
        try:
            loaded = Booster.load_model(path)
        except ModelFileError:
            continue
        n_loaded += 1
        leaves = loaded.predict(X, pred_leaf=True).astype(int)
        leaf_sum = sum(tree.value[leaves[:, k]] for k, tree in enumerate(loaded.trees))
        np.testing.assert_allclose(loaded.predict(X, output_margin=True), base_margin + leaf_sum, rtol=1e-9, atol=1e-9,
                                   err_msg=f"{name}[{node}] = {doc['trees'][t][name][node]}")  # fmt: skip
    assert n_loaded > 10  # value edits and no-op edits load


def test_empty_missing_and_non_json_files(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        Booster.load_model(empty)
    with pytest.raises(ModelFileError, match="does not exist"):
        Booster.load_model(tmp_path / "nope.json")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ModelFileError, match="UTF-8|JSON"):
        Booster.load_model(binary)


def test_killed_save_keeps_the_old_file(model, tmp_path):
    b, _ = model
    path = tmp_path / "m.json"
    b.save_model(path)
    before = path.read_bytes()
    script = (
        "import os, sys\n"
        "from fusionrec.gbdt import Booster\n"
        "import fusionrec._atomic as atomic\n"
        "b = Booster.load_model(sys.argv[1])\n"
        "real_replace = os.replace\n"
        "os.replace = lambda *a: os._exit(9)  # die between writing the temp file and renaming it\n"
        "b.save_model(sys.argv[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9
    assert path.read_bytes() == before
    Booster.load_model(path)


def test_dump_model_file(model, tmp_path):
    b, _ = model
    b.dump_model(tmp_path / "dump.txt")
    assert (tmp_path / "dump.txt").read_text().count("booster[") == 5
