"""`fusionrec fuse`: prediction files joined on ids, fused, written atomically; errors name file, row, id."""

import re

import numpy as np
import pyarrow.csv as pacsv
import pytest
from sklearn.metrics import roc_auc_score

from fusionrec import FusionrecError
from fusionrec.cli import main
from fusionrec.fusion import average
from fusionrec.fusion.files import fuse_files


def _write(path, ids, preds, header="id,pred"):
    lines = [header] + [f"{i},{p}" for i, p in zip(ids, preds)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path, rng):
    ids = [f"u{i:03d}" for i in range(50)]
    y = rng.integers(0, 2, 50)
    a = np.clip(y * 0.4 + rng.random(50) * 0.6, 0, 1)
    b = np.clip(y * 0.2 + rng.random(50) * 0.8, 0, 1)
    shuffled = rng.permutation(50)  # b lists the same ids in another order
    pa_ = _write(tmp_path / "a.csv", ids, a)
    pb_ = _write(tmp_path / "b.csv", [ids[i] for i in shuffled], b[shuffled])
    return tmp_path, ids, y, a, b, pa_, pb_


def _read(path):
    table = pacsv.read_csv(path)
    return [str(v) for v in table.column("id").to_pylist()], table.column("pred").to_numpy()


def test_files_are_joined_on_ids_and_fused(files, capsys):
    tmp, ids, y, a, b, pa_, pb_ = files
    out = tmp / "fused.csv"
    assert main(["fuse", "--method", "rank", "--weights", "0.3,0.7", "--output", str(out), str(pa_), str(pb_)]) == 0
    got_ids, fused = _read(out)
    assert got_ids == ids
    np.testing.assert_allclose(fused, average([a, b], "rank", [0.3, 0.7]), atol=1e-12)
    assert not list(tmp.glob(".fused.csv.*"))  # no temp file left behind


def test_optimize_fits_weights_on_out_of_fold_files(files, tmp_path, rng):
    tmp, ids, y, a, b, pa_, pb_ = files
    oof_ids = [f"t{i}" for i in range(300)]
    y_oof = rng.integers(0, 2, 300)
    good = np.clip(y_oof * 0.5 + rng.random(300) * 0.5, 0, 1)
    weak = np.clip(y_oof * 0.1 + rng.random(300) * 0.9, 0, 1)
    oa, ob = _write(tmp / "a_oof.csv", oof_ids, good), _write(tmp / "b_oof.csv", oof_ids, weak)
    labels = _write(tmp / "y.csv", oof_ids, y_oof, header="id,label")
    report = fuse_files([pa_, pb_], tmp / "fused.csv", method="weighted", optimize="auc", oof_paths=[oa, ob],
                        labels_path=labels)  # fmt: skip
    assert report["weights"][0] > report["weights"][1]
    assert report["oof_score"] >= max(report["oof_model_scores"])
    assert report["oof_model_scores"][0] == pytest.approx(roc_auc_score(y_oof, good))
    assert main(["fuse", "-o", str(tmp / "cli.csv"), str(pa_), str(pb_), "--method", "weighted", "--optimize", "auc",
                 "--oof", str(oa), str(ob), "--labels", str(labels)]) == 0  # fmt: skip
    np.testing.assert_allclose(_read(tmp / "cli.csv")[1], _read(tmp / "fused.csv")[1])


def test_several_prediction_columns(tmp_path):
    (tmp_path / "a.csv").write_text("id,p0,p1\n1,0.2,0.8\n2,0.6,0.4\n")
    (tmp_path / "b.csv").write_text("id,p0,p1\n2,0.4,0.6\n1,0.4,0.6\n")
    fuse_files([tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "out.csv", pred_cols=["p0", "p1"])
    table = pacsv.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(table.column("p1").to_numpy(), [0.7, 0.5])


@pytest.mark.parametrize(
    "b_text, message",
    [
        ("id,pred\nu000,0.1\nu001,0.2\n", r"b.csv: id 'u002' \(row 3 of .*a.csv\) is missing"),
        ("id,pred\nu000,0.1\nu001,0.2\nu002,0.3\nu999,0.4\n", r"b.csv row 4: id 'u999' is not in .*a.csv \(4 rows against 3\)"),
        ("id,pred\nu000,0.1\nu001,0.2\nu001,0.3\n", r"b.csv row 3: id 'u001' is duplicated \(first at row 2\)"),
        ("id,pred\nu000,0.1\nu001,abc\nu002,0.3\n", r"b.csv row 2 \(id 'u001'\): column 'pred' value 'abc' is not a number"),
        ("id,pred\nu000,0.1\nu001,inf\nu002,0.3\n", r"b.csv row 2 \(id 'u001'\): column 'pred' value inf is not a finite"),
        ("id,score\nu000,0.1\n", r"b.csv: column 'pred' not found in the header"),
    ],
    ids=["missing-id", "extra-id", "duplicate-id", "not-a-number", "infinite", "no-column"],
)
def test_file_errors_name_the_file_row_and_id(tmp_path, b_text, message, capsys):
    _write(tmp_path / "a.csv", ["u000", "u001", "u002"], [0.1, 0.2, 0.3])
    (tmp_path / "b.csv").write_text(b_text)
    out = tmp_path / "out.csv"
    with pytest.raises(FusionrecError, match=message):
        fuse_files([tmp_path / "a.csv", tmp_path / "b.csv"], out)
    assert not out.exists()
    assert main(["fuse", "-o", str(out), str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 2
    assert "b.csv" in capsys.readouterr().err


def test_bad_options(files):
    tmp, *_, pa_, pb_ = files
    with pytest.raises(FusionrecError, match="--weights: 3 values given for 2 models"):
        fuse_files([pa_, pb_], tmp / "o.csv", weights=[1, 1, 1])
    with pytest.raises(FusionrecError, match="--optimize needs --oof files"):
        fuse_files([pa_, pb_], tmp / "o.csv", optimize="auc")
    with pytest.raises(FusionrecError, match="1 --oof files for 2 prediction files"):
        fuse_files([pa_, pb_], tmp / "o.csv", optimize="auc", oof_paths=[pa_], labels_path=pa_)
    with pytest.raises(FusionrecError, match="does not exist"):
        fuse_files([pa_, tmp / "nope.csv"], tmp / "o.csv")
    negative = _write(tmp / "neg.csv", [f"u{i:03d}" for i in range(50)], [-1.0] * 50)
    with pytest.raises(FusionrecError, match=r"neg.csv row 1 \(id 'u000'\): \[-1.\] is outside \[0.0, inf\]"):
        fuse_files([pa_, negative], tmp / "o.csv", method="geometric")


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.ones(40, int), r"y\.csv: column 'label' holds only the class \[1\.0\]; --optimize auc needs labels of at least two"),
        (np.r_[np.zeros(20), np.ones(19), 2], r"y\.csv: column 'label', id 't39': label 2\.0 is not a class in 0\.\.1"),
        (np.r_[np.zeros(20), np.ones(19), 0.5], r"id 't39': label 0\.5 is not a class"),
        (np.r_[np.zeros(20), np.ones(19), -1], r"label -1\.0 is not a class"),
    ],
)
def test_optimize_refuses_labels_it_cannot_fit_on(files, capsys, labels, message):
    tmp, ids, y, a, b, pa_, pb_ = files
    oof_ids = [f"t{i}" for i in range(40)]
    oa = _write(tmp / "a_oof.csv", oof_ids, np.linspace(0, 1, 40))
    ob = _write(tmp / "b_oof.csv", oof_ids, np.linspace(1, 0, 40))
    y_path = _write(tmp / "y.csv", oof_ids, labels, header="id,label")
    code = main(["fuse", "-o", str(tmp / "f.csv"), str(pa_), str(pb_), "--method", "weighted", "--optimize", "auc",
                 "--oof", str(oa), str(ob), "--labels", str(y_path)])  # fmt: skip
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp / "f.csv").exists()
