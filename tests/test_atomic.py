"""Saves are crash-safe: a process killed at any point of a save leaves a file that loads."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fusionrec._atomic as atomic
from fusionrec.errors import FusionrecError
from fusionrec.gbdt import Booster, Dataset, train


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even ``except Exception``)."""


def boosters():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(float)
    first = train({"objective": "binary:logistic", "max_depth": 2}, Dataset(X, y), 2)
    second = train({"objective": "binary:logistic", "max_depth": 3}, Dataset(X, y), 4)
    return first, second, X


@pytest.mark.parametrize("n_replaces", [0, 1, 2, 3])
def test_save_killed_between_any_two_steps_leaves_the_old_or_the_new_model(tmp_path, monkeypatch, n_replaces):
    old, new, X = boosters()
    path = tmp_path / "model.json"
    old.save_model(path)
    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):
        if len(calls) == n_replaces:
            raise Killed
        calls.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace_then_die)
    if n_replaces < 3:
        with pytest.raises(Killed):
            new.save_model(path)
    else:
        new.save_model(path)
    monkeypatch.undo()
    loaded = Booster.load_model(path)
    expected = new if n_replaces >= 2 else old  # the model file is the second replace
    np.testing.assert_array_equal(loaded.predict(X), expected.predict(X))


def test_a_damaged_file_is_not_vouched_for_by_an_interrupted_save(tmp_path, monkeypatch):
    old, new, _ = boosters()
    path = tmp_path / "model.json"
    old.save_model(path)
    path.write_bytes(path.read_bytes().replace(b'"max_bin":256', b'"max_bin":255'))

    def die(src, dst):
        raise Killed

    monkeypatch.setattr(atomic.os, "replace", die)
    with pytest.raises(Killed):
        new.save_model(path)
    monkeypatch.undo()
    with pytest.raises(FusionrecError, match="sha256 does not match"):
        Booster.load_model(path)


SAVE_LOOP = """
import sys
import numpy as np
from fusionrec.gbdt import Dataset, train
rng = np.random.default_rng(0)
X = rng.normal(size=(300, 4)); y = (X[:, 0] > 0).astype(float)
models = [train({"objective": "binary:logistic", "max_depth": d}, Dataset(X, y), 3) for d in (2, 4)]
print("ready", flush=True)
i = 0
while True:
    models[i % 2].save_model(sys.argv[1]); i += 1
"""


def test_sigkill_during_repeated_saves_always_leaves_a_loadable_model(tmp_path):
    path = tmp_path / "model.json"
    rng = np.random.default_rng(1)
    for _ in range(12):
        child = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(path)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.01, 0.3)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        Booster.load_model(path)  # raises if the kill left a model and a sidecar that disagree


def test_disk_errors_name_the_file(tmp_path, monkeypatch):
    def full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(FusionrecError, match=r"cannot write .*x\.bin: No space left on device; the previous file"):
        atomic.atomic_write_bytes(tmp_path / "x.bin", b"data")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp file left behind
