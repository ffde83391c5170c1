"""Data-parallel training under torchrun: each process's share of a global batch, and two
processes training the model one process trains on the global batch."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from fusionrec.ctr.config import config_from_dict
from fusionrec.ctr.data import TableReader, iter_batches
from fusionrec.ctr.distributed import World, world_from_env
from fusionrec.ctr.trainer import Trainer
from fusionrec.datasets import make_taobao
from fusionrec.errors import FusionrecError
from tests.ctr.test_pipeline import EXAMPLES

DEEPFM = next(p for p in EXAMPLES if p.name == "taobao_deepfm.yaml")


def test_world_comes_from_torchruns_environment():
    assert world_from_env({}) == World(0, 1) and not World().is_distributed
    with pytest.raises(FusionrecError, match=r"WORLD_SIZE 'two'.*must be integers"):
        world_from_env({"WORLD_SIZE": "two", "RANK": "0"})
    with pytest.raises(FusionrecError, match=r"RANK 2 of WORLD_SIZE 2"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2"})


@pytest.mark.parametrize("size", [2, 3])
def test_the_shards_of_a_global_batch_partition_it(size, tmp_path):
    make_taobao(1003, seed=0, path=tmp_path / "t.csv")
    config = config_from_dict(yaml.safe_load(DEEPFM.read_text()))
    reader = TableReader(config.data_config)
    whole = list(iter_batches(reader, [str(tmp_path / "t.csv")], 100 * size, shuffle=True, shuffle_rows=300, seed=4))
    shards = []
    for rank in range(size):
        reader = TableReader(config.data_config)
        shards.append(list(iter_batches(reader, [str(tmp_path / "t.csv")], 100, shuffle=True, shuffle_rows=300, seed=4,
                                        shard=(rank, size), even_shards=True)))  # fmt: skip
        assert reader.report.rows_unsharded == (1003 % (100 * size)) % size  # the last global batch's remainder
    assert len({len(s) for s in shards}) == 1  # every process takes the same number of steps
    for step, batch in enumerate(whole):
        ids = batch.table.column("user_id").to_pylist()
        kept = len(ids) - len(ids) % size
        for rank in range(size):
            if step < len(shards[rank]):
                assert shards[rank][step].table.column("user_id").to_pylist() == ids[rank:kept:size]
                assert len(shards[rank][step].labels) == kept // size


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)


def failure_report(done: subprocess.CompletedProcess, log_dir) -> str:
    """torchrun's own error and the end of every rank's stderr (``--redirects 2`` keeps each in a
    file: torchrun's report names the rank that died, but not why)."""
    parts = [done.stderr[-1500:]]
    for path in sorted(log_dir.rglob("stderr.log")):
        parts.append(f"--- {path.relative_to(log_dir)}\n{path.read_text(errors='replace')[-2500:]}")
    return "\n".join(parts)


def test_two_processes_train_the_model_one_process_trains_on_the_global_batch(tmp_path):
    """With no batch norm and no embedding_regularization (both per process, as in EasyRec's
    workers), two processes of batch_size 64 give the weights of one of batch_size 128."""
    make_taobao(3000, seed=0, path=tmp_path / "train.csv")
    make_taobao(1000, seed=1, path=tmp_path / "test.csv")
    data = yaml.safe_load(DEEPFM.read_text())
    for part in ("dnn", "final_dnn"):
        data["model_config"]["deepfm"][part]["use_bn"] = False
    data["model_config"]["embedding_regularization"] = 0.0
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    edits = {"train_input_path": str(tmp_path / "train.csv"), "eval_input_path": str(tmp_path / "test.csv"),
             "train_config.num_steps": 20, "train_config.save_checkpoints_steps": 10, "data_config.num_epochs": 0}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "--log-dir", str(tmp_path / "ranks"), "--redirects", "2", "-m", "fusionrec.cli", "ctr", "train_eval", "--pipeline_config_path", str(tmp_path / "c.yaml"), "--model_dir", str(tmp_path / "two")]
    done = run(torchrun + ["--edit_config_json", json.dumps({**edits, "data_config.batch_size": 64})])
    assert done.returncode == 0, failure_report(done, tmp_path / "ranks")
    summary = json.loads(done.stdout[done.stdout.index("\n{\n"):])  # rank 0's summary only
    assert summary["world_size"] == 2 and summary["examples"] == 20 * 128 and summary["steps"] == 20
    evaluated = json.loads((tmp_path / "two" / "eval_result.json").read_text())
    assert evaluated["n_rows"] == 1000 and evaluated["step"] == 20  # every row scored, across the two processes
    config = config_from_dict({**data, "model_dir": str(tmp_path / "one")})
    for key, value in {**edits, "data_config.batch_size": 128}.items():
        node = config
        *parents, last = key.split(".")
        for name in parents:
            node = getattr(node, name)
        setattr(node, last, value)
    one = Trainer(config)
    report = one.train(progress=False)
    two = torch.load(tmp_path / "two" / "model.ckpt-20.pt", weights_only=True)["model"]
    for name, value in one.model.state_dict().items():
        torch.testing.assert_close(two[name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert evaluated["auc"] == pytest.approx(report["eval"]["auc"], abs=1e-4)
    # --continue_train under torchrun: 10 more steps from the last checkpoint
    more = run(torchrun + ["--continue_train", "--edit_config_json", json.dumps({**edits, "data_config.batch_size": 64,
                                                                                  "train_config.num_steps": 30})])
    assert more.returncode == 0, failure_report(more, tmp_path / "ranks")
    assert json.loads(more.stdout[more.stdout.index("\n{\n"):])["steps"] == 30
    assert np.isfinite(json.loads((tmp_path / "two" / "eval_result.json").read_text())["auc"])
