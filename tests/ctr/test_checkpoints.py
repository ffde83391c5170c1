"""Runs never mix, finished runs stay finished, checkpoints and exports are checked on load."""

import json

import pytest

from fusionrec._atomic import atomic_write_bytes
from fusionrec.ctr.config import config_from_dict
from fusionrec.ctr.export import export, load_export, predict
from fusionrec.ctr.trainer import Trainer
from fusionrec.errors import FusionrecError
from tests.ctr.test_input_faults import rows, small_config, write


@pytest.fixture
def data(tmp_path):
    return write(tmp_path / "train.csv", rows(48))


def trainer_for(tmp_path, train, model_dir="model", **train_config):
    config = small_config(tmp_path, train)
    config["model_dir"] = str(tmp_path / model_dir)
    config["train_config"].update(train_config)
    return Trainer(config_from_dict(config))


def test_fine_tune_checkpoint_does_not_bypass_the_existing_run_guard(tmp_path, data):
    first = trainer_for(tmp_path, data, "first")
    first.train(progress=False)
    second = trainer_for(tmp_path, data, "second")
    second.train(progress=False)
    mixed = trainer_for(tmp_path, data, "second", fine_tune_checkpoint=str(first.checkpoints()[-1][1]))
    with pytest.raises(FusionrecError, match=r"already holds checkpoints \(latest model\.ckpt-3\.pt\); pass --continue_train"):
        mixed.train(progress=False)
    fresh = trainer_for(tmp_path, data, "third", fine_tune_checkpoint=str(first.checkpoints()[-1][1]))
    assert fresh.train(progress=False)["steps"] == 3  # into an empty model_dir, fine-tuning works


def test_continue_train_on_a_finished_run_trains_nothing(tmp_path, data):
    trainer_for(tmp_path, data).train(progress=False)
    before = sorted(p.name for p in (tmp_path / "model").iterdir())
    for _ in range(2):
        report = trainer_for(tmp_path, data).train(continue_train=True, progress=False)
        assert report["already_finished"] and report["steps"] == 3
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == before
    longer = trainer_for(tmp_path, data, num_steps=5).train(continue_train=True, progress=False)
    assert longer["steps"] == 5 and "already_finished" not in longer


def test_resume_with_changed_features_names_what_changed(tmp_path, data):
    trainer_for(tmp_path, data).train(progress=False)
    # same shapes, other inputs: hist_item now reads the user column
    config = small_config(tmp_path, data)
    config["feature_config"]["features"][4].update(feature_name="hist_item", input_names=["hist_cat"])
    with pytest.raises(FusionrecError, match=r"other features than this config: feature 'hist_item': inputs 'hist_item' -> 'hist_cat'"):
        Trainer(config_from_dict(config)).train(continue_train=True, progress=False)
    # other sizes: named by feature, not by torch's parameter path
    config = small_config(tmp_path, data)
    config["feature_config"]["features"][0]["hash_bucket_size"] = 60
    with pytest.raises(FusionrecError, match=r"feature 'user': ids '50' -> '60'"):
        Trainer(config_from_dict(config)).train(continue_train=True, progress=False)
    config = small_config(tmp_path, data)
    config["model_config"]["multi_tower"]["final_dnn"]["hidden_units"] = [6]
    with pytest.raises(FusionrecError, match=r"does not fit this model config: parameter .*shape \(4, 16\) in the checkpoint, \(6, 16\) here"):
        Trainer(config_from_dict(config)).train(continue_train=True, progress=False)


def test_damaged_checkpoint_is_refused_by_its_sidecar(tmp_path, data):
    trainer = trainer_for(tmp_path, data)
    trainer.train(progress=False)
    path = trainer.checkpoints()[-1][1]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(FusionrecError, match=r"checkpoint .*model\.ckpt-3\.pt: sha256 does not match"):
        trainer_for(tmp_path, data, num_steps=5).train(continue_train=True, progress=False)


def test_export_schema_records_versions_and_vocabularies_and_is_checked(tmp_path, data):
    trainer = trainer_for(tmp_path, data)
    trainer.train(progress=False)
    export(trainer, tmp_path / "export")
    schema = json.loads((tmp_path / "export" / "input_schema.json").read_text())
    assert schema["fusionrec_version"] and schema["torch_version"]
    assert len(schema["features"]["cat"]["vocab_sha256"]) == 16 and schema["features"]["user"]["vocab_sha256"] == ""
    load_export(tmp_path / "export")
    # an export directory whose model and schema come from different exports
    other = small_config(tmp_path, data)
    other["model_dir"] = str(tmp_path / "other")
    other["feature_config"]["features"][2]["vocab_list"] = ["a", "b", "d"]
    other["feature_config"]["features"][3]["vocab_list"] = ["a", "b", "d"]
    other_trainer = Trainer(config_from_dict(other))
    other_trainer.train(progress=False)
    export(other_trainer, tmp_path / "export2")
    for name in ("model.pt", "model.pt.sha256"):
        (tmp_path / "export" / name).write_bytes((tmp_path / "export2" / name).read_bytes())
    with pytest.raises(FusionrecError, match=r"feature 'cat': the vocab_keys of model\.pt do not match the schema"):
        predict(str(data), str(tmp_path / "out.csv"), str(tmp_path / "export"))
    (tmp_path / "export2" / "model.pt").write_bytes(b"garbage")
    with pytest.raises(FusionrecError, match=r"exported file .*model\.pt: sha256 does not match"):
        load_export(tmp_path / "export2")
    schema["version"] = 99  # a newer fusionrec's export, with its sidecar
    atomic_write_bytes(tmp_path / "export" / "input_schema.json", json.dumps(schema).encode())
    with pytest.raises(FusionrecError, match=r"export format version 99 .* is newer"):
        load_export(tmp_path / "export")
    (tmp_path / "export" / "input_schema.json.sha256").unlink()  # a sidecar deleted: nothing can be checked
    with pytest.raises(FusionrecError, match=r"input_schema\.json: no input_schema\.json\.sha256 beside it"):
        load_export(tmp_path / "export")


def test_a_pickled_module_as_checkpoint_is_refused(tmp_path, data):
    import torch

    trainer = trainer_for(tmp_path, data)
    trainer.train(progress=False)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model" / "model.ckpt-9.pt")  # code, not tensors: never unpickled
    with pytest.raises(FusionrecError, match=r"model\.ckpt-9\.pt'?: cannot be loaded \(UnpicklingError"):
        trainer_for(tmp_path, data, num_steps=12).train(continue_train=True, progress=False)


def test_embedding_learning_rate_multiplier_scales_the_tables_learning_rate(tmp_path, data):
    config = small_config(tmp_path, data)
    config["train_config"]["optimizer_config"] = [{
        "adam_optimizer": {"learning_rate": {"exponential_decay_learning_rate": {
            "initial_learning_rate": 0.01, "decay_steps": 1, "decay_factor": 0.5}}},
        "embedding_learning_rate_multiplier": 4.0}]  # fmt: skip
    trainer = Trainer(config_from_dict(config))
    trainer.train(progress=False)
    tables = {id(t.weight) for t in trainer._embedding_tables()}
    rates = {}
    for group in trainer.optimizer.param_groups:
        kind = "embedding" if all(id(p) in tables for p in group["params"]) else "dense"
        rates[kind] = group["lr"]
    # the rate of the last step (step 2, staircase decay 0.01 * 0.5^2), times 4 for the tables
    assert rates["dense"] == pytest.approx(0.0025) and rates["embedding"] == pytest.approx(0.01)
