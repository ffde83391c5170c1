"""The export of a run: one directory scored by predict and the scorer alike; leaves learned out of fold."""

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from fusionrec.cli import main
from fusionrec.errors import FusionrecError
from fusionrec.pipeline import PipelineScorer, predict_pipeline
from fusionrec.pipeline.members import LEAF_FIELD, Rows, TreesModel, score_rows


def read_output(path):
    return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=","))


def test_predict_equals_the_scorer_and_the_run_metrics(trained_pipeline, tmp_path):
    out = tmp_path / "scores.csv"
    report = predict_pipeline(str(trained_pipeline["test"]), str(out), str(trained_pipeline["export"]), model_scores=True,
                              output_sep=",", reserved_cols="user_id,clk")  # fmt: skip
    assert report["rows_read"] == report["rows_written"] == 600 and report["rows_rejected"] == 0
    table = read_output(out)
    assert table.column_names == ["probs", "logits", "probs_trees", "probs_wide_and_deep", "probs_leaf_wide_and_deep", "user_id", "clk"]
    scorer = PipelineScorer(trained_pipeline["export"])
    rows = pq.read_table(trained_pipeline["run"].run_dir / "data" / "train.parquet").slice(0, 0)  # the typed layout
    typed = pacsv.read_csv(trained_pipeline["test"], read_options=pacsv.ReadOptions(column_names=rows.column_names))
    reader = scorer.reader()
    typed = reader.read_text_table(typed.cast(pa.schema([(n, pa.string()) for n in typed.column_names])), "test")
    scores, fused = scorer.score(typed)
    np.testing.assert_allclose(table.column("probs").to_numpy(), fused, rtol=1e-6)
    for j, name in enumerate(scorer.names):
        np.testing.assert_allclose(table.column(f"probs_{name}").to_numpy(), scores[:, j], rtol=1e-6)
    test_metrics = trained_pipeline["result"]["test"]
    y = table.column("clk").to_numpy()
    assert abs(roc_auc_score(y, fused) - test_metrics["fusion"]["auc"]) < 1e-9
    assert abs(roc_auc_score(y, scores[:, 2]) - test_metrics["leaf_wide_and_deep"]["auc"]) < 1e-9
    np.testing.assert_allclose(table.column("logits").to_numpy(), np.log(fused / (1 - fused)), rtol=1e-6)


def test_cli_predict_and_export(trained_pipeline, tmp_path, capsys):
    out = tmp_path / "cli.csv"
    assert main(["predict", "--saved_model_dir", str(trained_pipeline["export"]), "--input_path", str(trained_pipeline["test"]),
                 "--output_path", str(out), "--output_cols", "probs"]) == 0  # fmt: skip
    header, first = out.read_text().splitlines()[:2]
    assert header.split("\x01")[0] == "probs" and 0 < float(first.split("\x01")[0]) < 1
    again = tmp_path / "again"
    assert main(["export", str(trained_pipeline["config"]), "--export_dir", str(again)]) == 0
    assert json.loads((again / "manifest.json").read_text())["models"] == json.loads(
        (trained_pipeline["export"] / "manifest.json").read_text())["models"]
    assert main(["predict", "--saved_model_dir", str(tmp_path / "nothing"), "--input_path", "x", "--output_path", "y"]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_leaves_of_a_row_come_from_trees_fitted_without_it(trained_pipeline):
    """The inner trees' encoders count each value over the rows they were fitted on: those
    counts equal counts over every fit row outside the inner model's own part."""
    run = trained_pipeline["run"]
    table = pq.read_table(run.run_dir / "data" / "train.parquet")
    directory = run.run_dir / "models" / "leaf_wide_and_deep" / "full"
    n = table.num_rows
    part = np.random.default_rng(run.spec.split.seed).permutation(n) % 2
    users = np.asarray(table.column("user_id").to_pylist())
    for j in range(2):
        trees = TreesModel.load(directory, prefix=f"inner{j}_")
        values, numbers = trees.encoder.vocabularies["user_id"]
        expected = Counter(users[part != j])
        assert dict(zip(values, numbers)) == {v: float(c) for v, c in expected.items()}
    config = json.loads((directory / "export" / "pipeline.json").read_text())
    leaf = next(f for f in config["feature_configs"] if f.get("feature_name") == LEAF_FIELD)
    meta = json.loads((directory / "leaf_features.json").read_text())
    models = {int(token) // (meta["n_trees"] * meta["stride"]) for token in leaf["vocab_list"]}
    assert models == {0, 1} and leaf["combiner"] == "mean" and meta["n_trees"] == 8
    wide = next(g for g in config["model_config"]["feature_groups"] if g["wide_deep"] == "WIDE")
    assert LEAF_FIELD in wide["feature_names"]


def test_every_exported_file_is_checked(trained_pipeline, tmp_path):
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(trained_pipeline["export"], copy)
    files = [p for p in copy.rglob("*") if p.is_file() and p.suffix != ".sha256"]
    assert all(p.with_name(p.name + ".sha256").exists() for p in files)
    target = copy / "models" / "trees" / "trees.json"
    target.write_bytes(target.read_bytes().replace(b'"', b"'", 1))
    with pytest.raises(FusionrecError, match="trees.json"):
        PipelineScorer(copy)
    assert not any(p.suffix in (".pkl", ".pickle") for p in files)


def test_predict_rejects_bad_rows_and_scores_the_rest(trained_pipeline, tmp_path):
    lines = trained_pipeline["test"].read_text().splitlines()[:20]
    fields = lines[3].split(",")
    fields[-1] = "cheap"  # price is INT32
    lines[3] = ",".join(fields)
    lines[7] = lines[7] + ",extra"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    report = predict_pipeline(str(bad), str(tmp_path / "out.csv"), str(trained_pipeline["export"]))
    assert (report["rows_read"], report["rows_written"], report["rows_rejected"]) == (20, 18, 2)
    rejects = (tmp_path / "out.csv.rejects").read_text()
    assert "line 4\tcolumn price: value is not an integer (INT32)" in rejects and "line 8\twrong number of fields" in rejects


def test_scored_rows_get_only_known_leaf_tokens(trained_pipeline):
    """The leaf tokens a scored row gets are all in the deep model's vocabulary (none out of vocabulary)."""
    scorer = PipelineScorer(trained_pipeline["export"])
    member = scorer.members[scorer.names.index("leaf_wide_and_deep")]
    reader = scorer.reader()
    typed = pa.concat_tables(list(reader.iter_tables([str(trained_pipeline["test"])])))
    vocabulary = set(json.loads((trained_pipeline["export"] / "models" / "leaf_wide_and_deep" / "export" / "pipeline.json").read_text())
                     ["feature_configs"][-1]["vocab_list"])  # fmt: skip
    for j, trees in enumerate(member.trees):
        tokens = member.coder.tokens(trees.leaves(typed), j).to_pylist()
        assert all(len(row.split("|")) == member.coder.n_trees for row in tokens)
        assert {t for row in tokens for t in row.split("|")} <= vocabulary
    counts = Counter()
    scorer.score(typed, counts)
    assert counts.get("leaf_wide_and_deep.gbdt_leaves.out_of_vocabulary", 0) == 0


def test_scoring_in_batches_equals_scoring_at_once(trained_pipeline):
    """A whole file or fold is scored SCORE_BATCH_ROWS at a time (a DIN over a 1,000,000-row day
    would not fit in memory at once): same probabilities and feature counts as one pass."""
    scorer = PipelineScorer(trained_pipeline["export"])
    typed = pa.concat_tables(list(scorer.reader().iter_tables([str(trained_pipeline["test"])])))
    rows = Rows(typed, scorer.data_config)
    for name, member in zip(scorer.names, scorer.members):
        once, batched = Counter(), Counter()
        whole = member.score(rows, once)
        in_batches = score_rows(member, rows, batched, batch_rows=7)
        assert len(rows.batches(7)) == -(-typed.num_rows // 7)
        np.testing.assert_allclose(in_batches, whole, rtol=1e-6, atol=1e-9, err_msg=name)
        assert batched == once, name
