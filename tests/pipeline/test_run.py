"""fusionrec train on a pipeline config: out-of-fold honesty, time splits, resume, the run directory."""

import copy
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from fusionrec.errors import FusionrecError
from fusionrec.pipeline import PipelineRun
from fusionrec.pipeline.members import MEMBER_KINDS, Rows, TreesModel, load_member
from fusionrec.pipeline.run import FitContext, read_rows

from .helpers import (
    TAOBAO_COLUMNS,
    TREES,
    WIDE_AND_DEEP,
    make_logs,
    pipeline_dict,
    with_field,
    write_yaml,
)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return make_logs(tmp_path_factory.mktemp("logs"), 3000, 1000)


def run_of(tmp_path, document, name="p.yaml"):
    return PipelineRun.from_config(write_yaml(tmp_path / name, document))


def read_oof(run) -> dict:
    table = pacsv.read_csv(run.run_dir / "oof_predictions.csv")
    return {name: table.column(name).to_numpy() for name in table.column_names}


def test_every_row_is_scored_once_by_a_model_that_did_not_fit_it(tmp_path, logs):
    train, test = logs
    run = run_of(tmp_path, pipeline_dict(train, test, tmp_path / "run"))
    result = run.train()
    oof = read_oof(run)
    np.testing.assert_array_equal(np.sort(oof["row"]), np.arange(3000))  # k folds: every row held out once
    folds = json.loads((run.run_dir / "data" / "folds.json").read_text())
    block = np.asarray(folds["block"])
    assert sorted(np.bincount(block)) == [1000, 1000, 1000]
    # refit fold 1 by hand from its rows: the held-out scores are that model's
    table = pq.read_table(run.run_dir / "data" / "train.parquet")
    ctx = FitContext(run.spec, run.base_dir, seed=run.spec.split.seed + 2)
    refit = TreesModel.fit(run.spec.models[0].gbdt, ctx, table.take(pa.array(np.flatnonzero(block != 1))), ctx.seed)
    held = np.flatnonzero(block == 1)
    by_row = dict(zip(oof["row"], oof["trees"]))
    np.testing.assert_allclose([by_row[r] for r in held], refit.proba(table.take(pa.array(held))), rtol=1e-6)
    assert set(result["test"]) == {"trees", "shallow_trees", "fusion"} and set(result["out_of_fold"]) == set(result["test"])
    for metrics in result["test"].values():
        assert 0.5 < metrics["auc"] < 1 and 0 < metrics["auc_se"] < 0.05 and metrics["logloss"] > 0 and 0 < metrics["gauc"] < 1
    for picture in ("oof_correlation.png", "roc.png"):
        assert (run.run_dir / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_memorizing_model_does_not_fool_the_fusion(tmp_path):
    """A model that memorizes its fit rows (deep trees on a unique row id; the labels do not
    depend on it) is perfect in sample and useless out of fold: fitted out of fold, the
    fusion gives it almost no weight and the fused AUC is the honest model's."""
    train, test = make_logs(tmp_path / "logs", 3000, 1000)
    for path in (train, test):  # a unique row id as the last column
        lines = path.read_text().splitlines()
        offset = 0 if path == train else 10**6
        path.write_text("".join(f"{line},{offset + i}\n" for i, line in enumerate(lines)))
    skip_all = {c: "skip" for c in TAOBAO_COLUMNS if c != "clk"}
    memorizer = {"params": {"max_depth": 12, "eta": 1.0, "min_child_weight": 0, "lambda": 0.0, "tree_method": "exact"},
                 "num_boost_round": 40,
                 "columns": {**skip_all, "row_id": "numeric"}}  # fmt: skip
    document = with_field(pipeline_dict(train, test, tmp_path / "run", models=[
        {"name": "honest", "gbdt": TREES}, {"name": "memorizer", "gbdt": memorizer}]), "row_id", "INT64")
    run = run_of(tmp_path, document)
    result = run.train()
    # in sample it is (nearly) perfect ...
    full = run.run_dir / "models" / "memorizer" / "full"
    table = pq.read_table(run.run_dir / "data" / "train.parquet")
    in_sample = roc_auc_score(table.column("clk").to_numpy(), TreesModel.load(full).proba(table))
    assert in_sample > 0.95
    # ... out of fold it is chance, and the fusion knows it
    assert abs(result["out_of_fold"]["memorizer"]["auc"] - 0.5) < 0.05
    coef = dict(zip(result["fusion"]["models"], result["fusion"]["coef"]))
    assert abs(coef["memorizer"]) < 0.25 * coef["honest"]
    assert result["test"]["fusion"]["auc"] > result["test"]["honest"]["auc"] - 0.01


def test_time_split_never_fits_on_a_later_day(tmp_path):
    train, test = make_logs(tmp_path / "logs", 3000, 1000, days=4)
    document = with_field(pipeline_dict(train, test, tmp_path / "run"), "ds", "STRING")
    document["split"] = {"time_split": {"column": "ds", "n_folds": 3}}
    run = run_of(tmp_path, document)
    result = run.train()
    folds = json.loads((run.run_dir / "data" / "folds.json").read_text())
    assert folds["time_values"] == [["2026-11-10"], ["2026-11-11"], ["2026-11-12"], ["2026-11-13"]]
    block = np.asarray(folds["block"])
    oof_rows = read_oof(run)["row"]
    np.testing.assert_array_equal(np.sort(oof_rows), np.flatnonzero(block >= 1))  # the first day is never held out
    for fold in range(3):
        done = json.loads((run.run_dir / "models" / "trees" / f"fold_{fold}" / "oof.json").read_text())
        assert set(block[done["rows"]]) == {fold + 1}
    assert result["split"] == {"kind": "time_split", "n_folds": 3, "seed": 2026}
    document["split"]["time_split"]["n_folds"] = 4
    with pytest.raises(FusionrecError, match="column 'ds' has 4 distinct values; n_folds 4 needs at least 5"):
        run_of(tmp_path, {**document, "run_dir": str(tmp_path / "run2")}).train()


def test_an_interrupted_run_resumes_from_the_fits_that_finished(tmp_path, logs, capsys):
    train, test = logs
    document = pipeline_dict(train, test, tmp_path / "run")
    run = run_of(tmp_path, document)
    first = run.train()
    models = run.run_dir / "models"
    stamps = {p: p.stat().st_mtime_ns for p in models.glob("*/*/done.json")}
    (models / "trees" / "fold_1" / "done.json").unlink()  # as if the run died during this fit
    second = run_of(tmp_path, document).train()
    refit = [p for p in models.glob("*/*/done.json") if p.stat().st_mtime_ns != stamps.get(p)]
    assert refit == [models / "trees" / "fold_1" / "done.json"]
    assert "resuming: 7 of 8 fits already finished" in capsys.readouterr().err
    assert second["fusion"] == first["fusion"] and second["test"] == first["test"]


def test_a_run_dir_belongs_to_one_config(tmp_path, logs):
    train, test = logs
    document = pipeline_dict(train, test, tmp_path / "run")
    run_of(tmp_path, document).train()
    document["models"][0]["gbdt"]["num_boost_round"] = 9
    with pytest.raises(FusionrecError, match="holds a run of a different pipeline config"):
        run_of(tmp_path, document).train()


def test_a_rerun_on_changed_data_stops_naming_the_file(tmp_path):
    """A run_dir records what it was trained on: the same config on changed files stops with the
    file's name instead of resuming (and exporting) the old fits; touching a file changes nothing."""
    train, test = make_logs(tmp_path / "logs", 600, 200)
    document = pipeline_dict(train, test, tmp_path / "run")
    document["split"] = {"k_folds": 2}
    document["data"]["train_input_path"] = str(tmp_path / "logs" / "train*.csv")
    run_of(tmp_path, document).train()
    recorded = json.loads((tmp_path / "run" / "data" / "inputs.json").read_text())
    assert [r["path"] for r in recorded] == [str(train)] and recorded[0]["size"] == train.stat().st_size
    train.touch()  # a newer time, the same bytes: resumes
    assert run_of(tmp_path, document).train()["rows"]["train"] == json.loads((tmp_path / "run" / "eval_result.json").read_text())["rows"]["train"]
    lines = train.read_bytes().splitlines(keepends=True)
    train.write_bytes(b"".join(lines[:-1]))  # a row fewer
    with pytest.raises(FusionrecError, match=rf"was trained on other data: {train} changed \(\d[\d,]* -> \d[\d,]* bytes\)"):
        run_of(tmp_path, document).train()
    flipped = (b"1" if lines[0][:1] == b"0" else b"0") + lines[0][1:]  # the first row's click label
    train.write_bytes(b"".join([flipped] + lines[1:]))  # the same size, another label
    with pytest.raises(FusionrecError, match=r"same size, other content"):
        run_of(tmp_path, document).train()
    train.write_bytes(b"".join(lines))
    (tmp_path / "logs" / "train_more.csv").write_bytes(lines[0])  # one more file the glob takes
    with pytest.raises(FusionrecError, match=r"trained on other files: data.train_input_path now names new \[.*train_more.csv"):
        run_of(tmp_path, document).train()


@pytest.mark.parametrize("where", ["run_dir", "export_dir"])
def test_an_output_path_that_cannot_be_written_is_found_before_training(tmp_path, logs, where, capsys):
    from fusionrec.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    document = pipeline_dict(*logs, tmp_path / "run")
    if where == "run_dir":
        document["run_dir"] = str(blocker / "run")
    else:
        document["export"] = {"export_dir": str(blocker / "export")}
    config = write_yaml(tmp_path / "p.yaml", document)
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    label = "run_dir" if where == "run_dir" else "export.export_dir"
    assert f"fusionrec: error: {label} " in err and f"{str(blocker)!r} is a file, not a directory" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run" / "data").exists()  # one line; nothing read


def test_too_few_rows_of_a_class_for_the_folds_is_an_error(tmp_path):
    train, test = make_logs(tmp_path / "logs", 60, 20)
    lines = train.read_text().splitlines()
    train.write_text("".join(("1" if i == 0 else "0") + line[1:] + "\n" for i, line in enumerate(lines)))
    with pytest.raises(FusionrecError, match="the label has 1 rows of its rarer class; every fold needs one"):
        run_of(tmp_path, pipeline_dict(train, test, tmp_path / "run")).train()


def test_fits_in_two_processes_equal_fits_in_one(tmp_path, logs):
    train, test = logs
    serial_run = run_of(tmp_path, pipeline_dict(train, test, tmp_path / "serial"), "serial.yaml")
    parallel_run = run_of(tmp_path, pipeline_dict(train, test, tmp_path / "parallel", n_jobs=2), "parallel.yaml")
    serial, parallel = serial_run.train(), parallel_run.train()
    assert parallel["fusion"] == serial["fusion"] and parallel["test"] == serial["test"]
    for name in ("row", "trees", "shallow_trees"):
        np.testing.assert_array_equal(read_oof(parallel_run)[name], read_oof(serial_run)[name])


def test_a_bad_training_row_names_the_file_line_and_column(tmp_path, logs):
    train, test = logs
    lines = train.read_text().splitlines()
    fields = lines[41].split(",")
    fields[-1] = "12.5.3"
    lines[41] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(FusionrecError, match=rf"{bad} line 42, column 'price': '12.5.3' is not an integer \(INT32\)"):
        run_of(tmp_path, pipeline_dict(bad, test, tmp_path / "run")).train()


def test_eval_result_is_strict_json_and_the_export_goes_where_the_config_says(tmp_path, logs):
    train, test = logs
    run = run_of(tmp_path, pipeline_dict(train, test, tmp_path / "run", export={"export_dir": str(tmp_path / "served")}))
    run.train()
    assert (tmp_path / "served" / "manifest.json").exists() and not (run.run_dir / "export").exists()
    json.loads((run.run_dir / "eval_result.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in eval_result.json"))


@pytest.mark.parametrize("kind", ["ctr", "leaf_features"])
def test_a_fold_scored_in_memory_scores_as_its_export(tmp_path, logs, kind):
    """A fold's deep model scores its held-out rows eagerly, unexported: the same numbers
    as the TorchScript export of the same fit, so out-of-fold scores are the served model's."""
    train, test = logs
    ctr = {"model_config": copy.deepcopy(WIDE_AND_DEEP["model_config"]), "train_config": copy.deepcopy(WIDE_AND_DEEP["train_config"])}
    leaf = {"trees": "trees", "inner_folds": 2, "ctr": copy.deepcopy(ctr)}
    models = [{"name": "trees", "gbdt": copy.deepcopy(TREES)}, {"name": "deep", kind: ctr if kind == "ctr" else leaf}]
    run = run_of(tmp_path, pipeline_dict(train, test, tmp_path / "run", models=models))
    table, _ = read_rows(run.spec, str(train), "data.train_input_path")
    entry = run.spec.model("deep")
    ctx = FitContext(run.spec, run.base_dir, seed=1)
    fitted = MEMBER_KINDS[kind].fit(entry, ctx, table.slice(0, 2000), tmp_path / "member")
    rows = Rows(table.slice(2000), run.spec.data.data_config)
    eager, exported = Counter(), Counter()
    in_memory = fitted.score(rows, eager)
    loaded = load_member(kind, tmp_path / "member").score(rows, exported)
    np.testing.assert_array_equal(in_memory, loaded)
    assert eager == exported and len(np.unique(in_memory)) > 100
    unsaved = MEMBER_KINDS[kind].fit(entry, ctx, table.slice(0, 2000), tmp_path / "unsaved", save=False)
    np.testing.assert_array_equal(unsaved.score(rows, Counter()), in_memory)  # the same seed: the same model
    assert sorted(p.name for p in (tmp_path / "unsaved").iterdir()) == []  # nothing kept (the work dir removed)


def test_a_deep_model_reads_its_input_in_the_pipeline_as_fusionrec_ctr_does(tmp_path):
    # a multi-value RawFeature (raw_input_dim 2), a weighted TagFeature (key:weight) and a
    # LookupFeature: the pipeline's readers pass what the features need (reader_for), so the
    # vector is parsed (the trees take its two numbers, the deep model its vector) and a bad
    # key:value entry is refused the way `fusionrec ctr` refuses it. Before, the pipeline read the
    # vector as text and the deep model stopped with KeyError: 'vec'.
    from fusionrec.ctr.config import config_from_dict
    from fusionrec.ctr.data import reader_for, resolve_paths
    from fusionrec.pipeline.artifact import PipelineScorer

    train, test = make_logs(tmp_path / "logs", 600, 200)
    rng = np.random.default_rng(0)
    for path in (train, test):
        rows = []
        for line in path.read_text().splitlines():
            tags = "|".join(f"t{rng.integers(5)}:{rng.random():.2f}" for _ in range(rng.integers(0, 3)))
            prices = "|".join(f"k{k}:p{rng.integers(9)}" for k in range(3))
            rows.append(f"{line},{rng.random():.3f}|{rng.random():.3f},{tags},k{rng.integers(3)},{prices}")
        path.write_text("\n".join(rows) + "\n")
    ctr = copy.deepcopy(WIDE_AND_DEEP)
    ctr["model_config"]["feature_groups"][1]["feature_names"] += ["vec", "wtags", "kprice"]
    document = pipeline_dict(train, test, tmp_path / "run", models=[{"name": "trees", "gbdt": copy.deepcopy(TREES)},
                                                                    {"name": "wd", "ctr": ctr}])  # fmt: skip
    for name in ("vec", "wtags", "key", "prices"):
        with_field(document, name, "STRING")
    document["data"]["feature_configs"] += [
        {"input_names": ["vec"], "feature_type": "RawFeature", "raw_input_dim": 2, "separator": "|"},
        {"input_names": ["wtags"], "feature_type": "TagFeature", "embedding_dim": 4, "hash_bucket_size": 50,
         "separator": "|", "kv_separator": ":"},
        {"feature_name": "kprice", "input_names": ["key", "prices"], "feature_type": "LookupFeature",
         "embedding_dim": 4, "hash_bucket_size": 50, "separator": "|", "kv_separator": ":"},
    ]  # fmt: skip
    run = run_of(tmp_path, document)
    result = run.train()
    assert result["rows"]["train"]["rows_used"] == 600 and result["test"]["wd"]["rows"] == 200
    scorer = PipelineScorer(tmp_path / "run" / "export")
    assert {"vec.0", "vec.1"} <= set(scorer.members[0].trees.encoder.feature_names)
    # the export reads a file exactly as `fusionrec ctr` reads it with the deep model's own config
    ctr_config = config_from_dict({**document["data"], **ctr, "model_dir": str(tmp_path / "m")})
    ours = pa.concat_tables(scorer.reader().iter_tables(resolve_paths(str(test))))
    theirs = pa.concat_tables(reader_for(ctr_config, labels=False, optional=("clk",)).iter_tables(resolve_paths(str(test))))
    assert ours.schema.field("vec").type == theirs.schema.field("vec").type == pa.list_(pa.float64(), 2)
    assert ours.equals(theirs)
    # a weighted tag whose weight is not a number: both readers refuse the row, naming it alike
    bad = tmp_path / "bad.csv"
    bad.write_text(test.read_text().splitlines()[0].rsplit(",", 4)[0] + ",0.1|0.2,t1:heavy,k0,k0:p1\n")
    for reader in (scorer.reader(), reader_for(ctr_config, labels=False, optional=("clk",))):
        with pytest.raises(FusionrecError, match="wtags"):
            list(reader.iter_tables([str(bad)]))
