import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

from fusionrec.cli import main
from fusionrec.gbdt import Booster

ROOT = Path(__file__).resolve().parents[1]


def write_csv(path, X, y):
    header = ",".join([f"x{i}" for i in range(X.shape[1])] + ["y"])
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="")


def test_gbdt_train_and_predict_round_trip(tmp_path, rng):
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] > 0).astype(float)
    write_csv(tmp_path / "train.csv", X, y)
    write_csv(tmp_path / "valid.csv", X[:100], y[:100])
    model = tmp_path / "m.json"
    code = main(["gbdt", "train", "--train", str(tmp_path / "train.csv"), "--label", "y", "--valid", str(tmp_path / "valid.csv"),
                 "--param", "objective=binary:logistic", "--param", "max_depth=3", "--num-rounds", "5", "--model-out", str(model)])  # fmt: skip
    assert code == 0 and model.exists()
    assert main(["gbdt", "predict", "--model", str(model), "--input", str(tmp_path / "valid.csv"), "--output", str(tmp_path / "p.csv")]) == 0
    written = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(written, Booster.load_model(model).predict(X[:100].astype(np.float32)), rtol=1e-6)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["gbdt", "train", "--train", str(tmp_path / "nope.csv"), "--label", "y", "--model-out", str(tmp_path / "m.json")]) == 2
    assert "nope.csv: file does not exist" in capsys.readouterr().err
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    assert main(["gbdt", "train", "--train", str(tmp_path / "t.csv"), "--label", "y", "--model-out", str(tmp_path / "m.json")]) == 2
    assert "label column 'y' not found" in capsys.readouterr().err


def test_a_model_path_that_cannot_be_written_is_found_before_training(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert main(["gbdt", "train", "--train", str(tmp_path / "nope.csv"), "--label", "y", "--model-out",
                 str(tmp_path / "a_file" / "m.json")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"--model-out {str(tmp_path / 'a_file' / 'm.json')!r}: {str(tmp_path / 'a_file')!r} is a file, not a directory" in err
    assert main(["gbdt", "train", "--train", str(tmp_path / "nope.csv"), "--label", "y", "--model-out", "/proc/m.json"]) == 2
    assert "--model-out '/proc/m.json': cannot write in '/proc'" in capsys.readouterr().err


def test_gbdt_text_cell_names_file_line_column_and_value(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,0\n\n3,4,1\n5,abc,0\n")
    out = ["--model-out", str(tmp_path / "m.json")]
    assert main(["gbdt", "train", "--train", str(tmp_path / "t.csv"), "--label", "y", *out]) == 2
    assert "t.csv line 5, column 'b': 'abc' is not a number" in capsys.readouterr().err
    (tmp_path / "ok.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n2,1,1\n")
    assert main(["gbdt", "train", "--train", str(tmp_path / "ok.csv"), "--label", "y", "--num-rounds", "2", *out]) == 0
    (tmp_path / "p.csv").write_text("id,a,b\nrow1,1,2\nrow2,x7,3\n")  # the id column is not a feature: ignored
    assert main(["gbdt", "predict", "--model", str(tmp_path / "m.json"), "--input", str(tmp_path / "p.csv"),
                 "--output", str(tmp_path / "o.csv")]) == 2  # fmt: skip
    assert "p.csv line 3, column 'a': 'x7' is not a number" in capsys.readouterr().err


def test_demo_runs_on_small_data(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--out", str(tmp_path), "--rows", "3000", "--ctr-rows", "3000"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("gbdt_model.json", "gbdt_feature_importance.png", "gbdt_learning_curve.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "AUC" in result.stdout
    # the demo's last part is examples/pipeline/taobao_pipeline.yaml, unchanged, end to end (this is
    # that example config's run on small generated logs): every model and the fusion evaluated,
    # predict scoring the test day through every model, the server agreeing with predict
    evaluated = json.loads((tmp_path / "experiments" / "taobao_pipeline" / "eval_result.json").read_text())
    members = {"trees", "wide_and_deep", "din", "leaf_wide_and_deep"}
    assert set(evaluated["test"]) == members | {"fusion"} and set(evaluated["out_of_fold"]) == members | {"fusion"}
    scored = pacsv.read_csv(tmp_path / "pipeline_predictions.csv")
    assert scored.num_rows == 1000 and {"probs", *(f"probs_{m}" for m in members)} <= set(scored.column_names)
    probs = scored.column("probs").to_numpy()
    assert ((probs > 0) & (probs < 1)).all()
    assert "(equal to predict's)" in result.stdout
