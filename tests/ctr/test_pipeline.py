"""Every shipped example config: train a few steps on tiny generated data, evaluate, export, predict."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fusionrec.cli import main
from fusionrec.ctr.config import load_config
from fusionrec.ctr.export import load_export, predict
from fusionrec.ctr.export import export as export_model
from fusionrec.ctr.trainer import Trainer
from fusionrec.datasets import make_taobao
from fusionrec.errors import FusionrecError

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "ctr").glob("*.*"))
WIDE_AND_DEEP = next(p for p in EXAMPLES if p.name == "taobao_wide_and_deep.config")


@pytest.fixture(scope="module")
def taobao(tmp_path_factory):
    root = tmp_path_factory.mktemp("taobao")
    make_taobao(600, seed=0, path=root / "train.csv")
    make_taobao(300, seed=1, path=root / "test.csv")
    return root


def edits(root: Path, model_dir: Path, **extra) -> str:
    values = {
        "train_input_path": str(root / "train.csv"), "eval_input_path": str(root / "test.csv"),
        "model_dir": str(model_dir), "train_config.num_steps": 4, "train_config.save_checkpoints_steps": 2,
        "train_config.log_step_count_steps": 2, "data_config.batch_size": 128, "data_config.num_epochs": 0,
    }  # fmt: skip
    values.update(extra)
    return json.dumps(values)


def test_examples_are_shipped():
    names = {p.name for p in EXAMPLES}
    assert "taobao_wide_and_deep.config" in names
    assert {"taobao_din.yaml", "taobao_deepfm.yaml", "taobao_dcn.yaml", "taobao_multi_tower.yaml", "taobao_esmm.yaml",
            "taobao_mmoe.yaml"} <= names


@pytest.mark.parametrize("config_path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_trains_evaluates_exports_and_predicts(config_path, taobao, tmp_path):
    config = load_config(config_path, edits(taobao, tmp_path / "model"))
    trainer = Trainer(config)
    report = trainer.train(progress=False)
    assert report["steps"] == 4
    # a multi-task model names its metrics and outputs with its first tower's suffix (auc_ctr, probs_ctr)
    suffix, metric_suffix = config.model_config_.head_suffixes[0], config.metric_groups()[0].suffix  # ESMM: _cvr, _ctcvr
    assert np.isfinite(report["eval"]["logloss" + metric_suffix]) and 0.0 <= report["eval"]["auc" + metric_suffix] <= 1.0
    assert (tmp_path / "model" / "eval_result.json").exists()
    assert len(trainer.checkpoints()) == 2  # steps 2 and 4
    export_dir = tmp_path / "export"
    export_model(trainer, export_dir)
    out = tmp_path / "pred.csv"
    result = predict(str(taobao / "test.csv"), str(out), str(export_dir), reserved_cols="clk,user_id",
                     output_cols=f"probs{suffix} double")  # fmt: skip
    assert (result["rows_read"], result["rows_written"], result["rows_rejected"], result["rejects_path"]) == (300, 300, 0, None)
    lines = out.read_text().splitlines()
    assert len(lines) == 301 and lines[0] == f"probs{suffix}\x01clk\x01user_id"  # EasyRec: output_cols, then reserved_cols
    exported = np.array([float(line.split("\x01")[0]) for line in lines[1:]])
    _, in_memory, _ = trainer.predict_table([str(taobao / "test.csv")], trainer._reader())
    np.testing.assert_allclose(exported, in_memory, atol=1e-5)


def test_continue_train_equals_an_uninterrupted_run(taobao, tmp_path):
    path = WIDE_AND_DEEP
    whole = Trainer(load_config(path, edits(taobao, tmp_path / "whole", **{"train_config.num_steps": 6})))
    whole.train(progress=False)
    # shuffle on; one epoch is 5 batches of 128, so the run crosses an epoch boundary
    first = Trainer(load_config(path, edits(taobao, tmp_path / "parts", **{"train_config.num_steps": 3,
                                                                        "train_config.save_checkpoints_steps": 3})))  # fmt: skip
    first.train(progress=False)
    resumed = Trainer(load_config(path, edits(taobao, tmp_path / "parts", **{"train_config.num_steps": 6})))
    resumed.train(continue_train=True, progress=False)
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_a_fit_without_checkpoints_exports_what_the_last_checkpoint_exports(taobao, tmp_path):
    """save_checkpoints=False writes none; export(current=True) then scores as the export of the
    same run's last checkpoint does (a pipeline's folds train and export this way)."""
    config = load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "with"))
    checkpointed = Trainer(config)
    checkpointed.train(progress=False)
    export_model(checkpointed, tmp_path / "from_checkpoint")
    bare = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "without")))
    bare.train(progress=False, save_checkpoints=False)
    assert bare.checkpoints() == []
    export_model(bare, tmp_path / "from_memory", current=True)
    assert json.loads((tmp_path / "from_memory" / "input_schema.json").read_text())["checkpoint"] == "step 4, not checkpointed"
    scores = {}
    for name in ("from_checkpoint", "from_memory"):
        predict(str(taobao / "test.csv"), str(tmp_path / f"{name}.csv"), str(tmp_path / name), output_cols="probs double")
        scores[name] = np.array([float(line.split("\x01")[0]) for line in (tmp_path / f"{name}.csv").read_text().splitlines()[1:]])
    assert scores["from_memory"].shape == (300,)
    np.testing.assert_array_equal(scores["from_memory"], scores["from_checkpoint"])


def test_existing_checkpoints_need_continue_train(taobao, tmp_path):
    config = load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m"))
    Trainer(config).train(progress=False)
    with pytest.raises(FusionrecError, match="--continue_train"):
        Trainer(config).train(progress=False)


def test_damaged_checkpoint_names_the_file(taobao, tmp_path):
    config = load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m"))
    trainer = Trainer(config)
    trainer.train(progress=False)
    last = trainer.checkpoints()[-1][1]
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(FusionrecError, match=str(last.name)):
        Trainer(config).evaluate(last)


def test_cli_commands(taobao, tmp_path, capsys):
    config = str(WIDE_AND_DEEP)
    edit = edits(taobao, tmp_path / "m")
    assert main(["ctr", "train_eval", "--pipeline_config_path", config, "--edit_config_json", edit]) == 0
    assert main(["ctr", "eval", "--pipeline_config_path", config, "--edit_config_json", edit]) == 0
    assert '"auc"' in capsys.readouterr().out
    assert main(["ctr", "export", "--pipeline_config_path", config, "--edit_config_json", edit,
                 "--export_dir", str(tmp_path / "e")]) == 0  # fmt: skip
    out = tmp_path / "p.txt"
    code = main(["ctr", "predict", "--input_path", str(taobao / "test.csv"), "--output_path", str(out),
                 "--saved_model_dir", str(tmp_path / "e"), "--output_sep", ","])  # fmt: skip
    assert code == 0 and len(out.read_text().splitlines()) == 301
    assert main(["ctr", "predict", "--input_path", str(tmp_path / "nope.csv"), "--output_path", str(out),
                 "--saved_model_dir", str(tmp_path / "e")]) == 2  # fmt: skip
    assert "nope.csv" in capsys.readouterr().err


def test_output_paths_are_checked_before_the_work(taobao, tmp_path, capsys):
    """model_dir, export_dir and output_path under a regular file: one line naming the path,
    before any training or scoring."""
    config = str(WIDE_AND_DEEP)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["ctr", "train_eval", "--pipeline_config_path", config, "--edit_config_json", edits(taobao, blocker / "m")]) == 2
    err = capsys.readouterr().err
    assert f"model_dir {str(blocker / 'm')!r}: {str(blocker)!r} is a file, not a directory" in err and len(err.splitlines()) == 1
    edit = edits(taobao, tmp_path / "m")
    assert main(["ctr", "train_eval", "--pipeline_config_path", config, "--edit_config_json", edit]) == 0
    assert main(["ctr", "export", "--pipeline_config_path", config, "--edit_config_json", edit, "--export_dir", str(blocker / "e")]) == 2
    assert f"export_dir {str(blocker / 'e')!r}: {str(blocker)!r} is a file" in capsys.readouterr().err
    assert main(["ctr", "export", "--pipeline_config_path", config, "--edit_config_json", edit, "--export_dir", str(tmp_path / "e")]) == 0
    code = main(["ctr", "predict", "--input_path", str(taobao / "test.csv"), "--output_path", str(blocker / "p.txt"),
                 "--saved_model_dir", str(tmp_path / "e")])  # fmt: skip
    assert code == 2 and f"--output_path {str(blocker / 'p.txt')!r}: {str(blocker)!r} is a file" in capsys.readouterr().err


def test_predict_writes_rejects_with_line_numbers(taobao, tmp_path):
    config = load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m"))
    trainer = Trainer(config)
    trainer.train(progress=False)
    export_model(trainer, tmp_path / "e")
    lines = (taobao / "test.csv").read_text().splitlines()[:10]
    lines[3] = "1,0,only,three"
    fields = lines[6].split(",")
    fields[-1] = "cheap"  # price is INT32
    lines[6] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    result = predict(str(bad), str(tmp_path / "out.csv"), str(tmp_path / "e"))
    assert result["rows_written"] == 8 and result["rows_rejected"] == 2
    rejects = Path(result["rejects_path"]).read_text()
    assert "\tline 4\t" in rejects and "\tline 7\t" in rejects and "cheap" in rejects


def test_exported_model_runs_without_fusionrec_feature_code(taobao, tmp_path):
    config = load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m"))
    trainer = Trainer(config)
    trainer.train(progress=False)
    export_model(trainer, tmp_path / "e")
    module = torch.jit.load(str(tmp_path / "e" / "model.pt"))
    schema = json.loads((tmp_path / "e" / "input_schema.json").read_text())
    columns = {}
    for field in schema["inputs"]:  # build raw tensors by hand: strings as UTF-8 bytes + offsets
        if field["type"] == "STRING":
            values = [b"1|2|3"] * 2 if field["name"].startswith("tag_") else [b"7", b"12345678901"]
            columns[field["name"] + ".bytes"] = torch.tensor(list(b"".join(values)), dtype=torch.uint8)
            columns[field["name"] + ".offsets"] = torch.tensor([0, len(values[0]), len(values[0]) + len(values[1])])
        else:
            columns[field["name"]] = torch.tensor([3, 4])
    proba = module(columns)
    assert proba.shape == (2,) and bool(((proba > 0) & (proba < 1)).all())
    loaded, loaded_config = load_export(tmp_path / "e")
    assert loaded_config.model_config_.model_class == "WideAndDeep"


def test_every_feature_kind_metric_and_best_exporter(taobao, tmp_path):
    """TagFeature with a vocab_file, ComboFeature, bucketized and dense RawFeature, gauc, best export."""
    import yaml

    (tmp_path / "cates.txt").write_text("\n".join(str(i) for i in range(50)) + "\n")
    base = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "ctr" / "taobao_deepfm.yaml").read_text())
    base["feature_config"]["features"] = [
        {"input_names": ["user_id"], "feature_type": "IdFeature", "embedding_dim": 8, "hash_bucket_size": 1000},
        {"input_names": ["tag_category_list"], "feature_type": "TagFeature", "embedding_dim": 8,
         "vocab_file": str(tmp_path / "cates.txt"), "combiner": "sum"},
        {"feature_name": "age_x_pvalue", "input_names": ["age_level", "pvalue_level"], "feature_type": "ComboFeature",
         "embedding_dim": 8, "hash_bucket_size": 100},
        {"feature_name": "price_bucket", "input_names": ["price"], "feature_type": "RawFeature", "embedding_dim": 8,
         "boundaries": [5, 10, 20, 40]},
        {"input_names": ["price"], "feature_type": "RawFeature", "min_val": 1, "max_val": 49},
    ]  # fmt: skip
    base["model_config"] = {
        "model_class": "WideAndDeep",
        "feature_groups": [
            {"group_name": "wide", "feature_names": ["user_id", "age_x_pvalue", "price_bucket", "price"], "wide_deep": "WIDE"},
            {"group_name": "deep", "feature_names": ["user_id", "tag_category_list", "age_x_pvalue", "price_bucket", "price"]},
        ],
        "wide_and_deep": {"wide_output_dim": 4, "dnn": {"hidden_units": [16, 8], "dropout_ratio": [0.1, 0.1]},
                          "final_dnn": {"hidden_units": [8]}},
    }  # fmt: skip
    base["eval_config"] = {"metrics_set": [{"auc": {}}, {"gauc": {"uid_field": "user_id"}}, {"max_f1": {}},
                                           {"accuracy": {}}, {"root_mean_squared_error": {}}]}  # fmt: skip
    base["export_config"] = {"exporter_type": "best", "best_exporter_metric": "logloss", "metric_bigger": False}
    base["train_config"]["keep_checkpoint_max"] = 1
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(base))
    trainer = Trainer(load_config(path, edits(taobao, tmp_path / "m")))
    report = trainer.train(progress=False)
    assert {"auc", "gauc", "max_f1", "accuracy", "root_mean_squared_error", "logloss"} <= set(report["eval"])
    assert [step for step, _ in trainer.checkpoints()] == [4]  # keep_checkpoint_max 1
    assert (tmp_path / "m" / "best.pt").exists()
    export_model(trainer, tmp_path / "e")
    assert json.loads((tmp_path / "e" / "input_schema.json").read_text())["checkpoint"] == "best.pt"
    result = predict(str(taobao / "test.csv"), str(tmp_path / "p.csv"), str(tmp_path / "e"))
    assert result["rows_written"] == 300


def test_ignore_error_counts_are_written_to_the_model_dir(taobao, tmp_path):
    lines = (taobao / "train.csv").read_text().splitlines()
    lines[5] = "1,0,short"
    lines[9] = ",".join(["x"] + lines[9].split(",")[1:])  # bad label
    bad = tmp_path / "train.csv"
    bad.write_text("\n".join(lines) + "\n")
    config = load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m", train_input_path=str(bad),
                                              **{"data_config.ignore_error": True}))  # fmt: skip
    Trainer(config).train(progress=False)
    report = json.loads((tmp_path / "m" / "train_input_report.json").read_text())
    assert report["rows_skipped"] >= 2  # counted once per epoch pass
    assert any("wrong number of fields" in reason for reason in report["skipped_by_reason"])
    assert any("column clk" in reason for reason in report["skipped_by_reason"])


def test_embedding_name_shares_one_table_and_fine_tune_warm_starts(taobao, tmp_path):
    import yaml

    base = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "ctr" / "taobao_din.yaml").read_text())
    for feature in base["feature_config"]["features"]:
        if feature["input_names"][0] in ("brand", "tag_brand_list"):
            feature["embedding_name"] = "brand_table"
            feature["hash_bucket_size"] = 100000
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(base))
    trainer = Trainer(load_config(path, edits(taobao, tmp_path / "m")))
    tables = {id(m): m for m in trainer.model.modules() if isinstance(m, torch.nn.Embedding)}
    brand_tables = {id(t) for s in trainer.model.modules() if hasattr(s, "hists")
                    for t, n in zip(list(s.key_tables) + list(s.hist_tables), s.keys + s.hists) if "brand" in n}  # fmt: skip
    assert len(brand_tables) == 1 and len(tables) >= 2
    trainer.train(progress=False)
    checkpoint = str(trainer.checkpoints()[-1][1])
    warm = Trainer(load_config(path, edits(taobao, tmp_path / "warm", **{"train_config.fine_tune_checkpoint": checkpoint,
                                                                        "train_config.num_steps": 1})), seed=7)  # fmt: skip
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    warm.train(progress=False)
    assert warm.step == 1  # weights loaded, step counter fresh
    linear = [k for k in before if k.endswith(".weight") and before[k].dim() == 2 and "table" not in k]
    assert linear
    # one Adam step (lr 0.001) from the checkpoint: every linear weight is within a step of it
    assert max(float((warm.model.state_dict()[k] - before[k]).abs().max()) for k in linear) < 0.005


def test_din_history_lists_must_be_parallel(taobao, tmp_path):
    din = next(p for p in EXAMPLES if p.name == "taobao_din.yaml")
    lines = (taobao / "train.csv").read_text().splitlines()
    fields = lines[0].split(",")
    fields[17], fields[18] = "1|2", "3"  # tag_category_list has 2 values, tag_brand_list 1
    lines[0] = ",".join(fields)
    bad = tmp_path / "train.csv"
    bad.write_text("\n".join(lines) + "\n")
    config = load_config(din, edits(taobao, tmp_path / "m", train_input_path=str(bad), **{"data_config.shuffle": False}))
    with pytest.raises(FusionrecError, match=r"train\.csv line 1, column 'tag_category_list': 2 values but 'tag_brand_list' has 1"):
        Trainer(config).train(progress=False)


def test_taobao_config_on_real_prices_sends_ids_beyond_num_buckets_to_bucket_0_and_counts_them(taobao, tmp_path):
    """EasyRec's categorical_column_with_identity(num_buckets=50, default_value=0): a price of
    85 is bucket 0, as are negative ids; fusionrec does the same and counts them everywhere."""
    prices = [int(line.rsplit(",", 1)[1]) for line in (taobao / "train.csv").read_text().splitlines()]
    beyond = sum(p >= 50 for p in prices)
    assert beyond > len(prices) // 2  # make_taobao's prices are real ones
    trainer = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "model", **{"data_config.shuffle": False,
                                                                                      "train_config.num_steps": 5})))  # fmt: skip
    report = trainer.train(progress=False)
    assert report["input"]["features"]["price"]["out_of_range"] == beyond  # one pass over the 600 rows
    info = json.loads((tmp_path / "model" / "eval_input_report.json").read_text())
    test_prices = [int(line.rsplit(",", 1)[1]) for line in (taobao / "test.csv").read_text().splitlines()]
    assert info["features"]["price"]["out_of_range"] == sum(p >= 50 for p in test_prices)
    eval_result = json.loads((tmp_path / "model" / "eval_result.json").read_text())
    assert eval_result["input"]["features"] == info["features"] and "auc" in eval_result
    export_model(trainer, tmp_path / "export")
    lines = (taobao / "test.csv").read_text().splitlines()[:4]
    lines[0] = lines[0].rsplit(",", 1)[0] + ",-7"  # a negative id: bucket 0 too
    (tmp_path / "neg.csv").write_text("\n".join(lines) + "\n")
    result = predict(str(tmp_path / "neg.csv"), str(tmp_path / "p.csv"), str(tmp_path / "export"))
    assert result["rows_written"] == 4
    assert result["features"]["price"]["out_of_range"] == 1 + sum(int(x.rsplit(",", 1)[1]) >= 50 for x in lines[1:])
    scores = {}
    for price in ("0", "85", "-7"):
        (tmp_path / "one.csv").write_text(lines[1].rsplit(",", 1)[0] + f",{price}\n")
        predict(str(tmp_path / "one.csv"), str(tmp_path / "one_p.csv"), str(tmp_path / "export"), output_cols="probs double",
                reserved_cols="user_id")  # fmt: skip
        scores[price] = (tmp_path / "one_p.csv").read_text().splitlines()[-1]
    assert scores["0"] == scores["85"] == scores["-7"]  # all three are bucket 0


def test_predict_writes_what_easyrec_writes(taobao, tmp_path):
    trainer = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "model")))
    trainer.train(progress=False)
    export_model(trainer, tmp_path / "export")
    lines = (taobao / "test.csv").read_text().splitlines()[:3]
    fields = lines[1].split(",")
    fields[2] = 'slot|"7"'  # pid holding the output separator and a quote: the one value quoted
    lines[1] = ",".join(fields)
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "out").mkdir()
    predict(str(tmp_path / "in.csv"), str(tmp_path / "out"), str(tmp_path / "export"), reserved_cols="clk,pid",
            output_cols="probs double,logits float", output_sep="|")  # fmt: skip
    out = (tmp_path / "out" / "part-0.csv").read_text().splitlines()
    assert out[0] == "probs|logits|clk|pid"
    first = lines[0].split(",")
    assert out[1].split("|")[2:] == [first[0], first[2]]  # clk, pid as they were read
    assert out[2].endswith('|"slot|""7"""') and '"' not in out[1] + out[3]
    probs, logits = float(out[1].split("|")[0]), float(out[1].split("|")[1])
    assert abs(np.log(probs / (1 - probs)) - logits) < 1e-4
