"""The model registry (``MODEL_SPECS``): a model is registered once, and everything else follows."""

import importlib
import re
from pathlib import Path

from torch import nn

from fusionrec.ctr.config import EASYREC_MESSAGES, MODEL_SPECS, ModelConfig

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ctr.md"


def test_every_registered_model_resolves_and_has_its_block_and_message():
    names = [name for spec in MODEL_SPECS for name in spec.model_classes]
    blocks = [spec.block for spec in MODEL_SPECS]
    assert len(set(names)) == len(names) and len(set(blocks)) == len(blocks)
    for spec in MODEL_SPECS:
        module, attribute = spec.module.split(":")
        assert issubclass(getattr(importlib.import_module(module), attribute), nn.Module), spec.module
        assert ModelConfig.model_fields[spec.block].default is None
        assert EASYREC_MESSAGES[spec.config] is spec.message


def test_every_registered_model_class_has_a_row_in_the_docs_models_table():
    table = DOCS.read_text().split("## Models", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(\w+)`", "\n".join(line.split("|")[1] for line in table.splitlines() if line.startswith("| `"))))
    for spec in MODEL_SPECS:
        for name in spec.model_classes:
            assert name in documented, f"docs/ctr.md Models table has no row for {name}"


def test_dcn_embeds_a_group_both_towers_read_once(tmp_path):
    """EasyRec's DCN builds its input layer once when cross_tower and deep_tower read the same
    group (its samples): one embedding lookup per step, one embedding_regularization penalty."""
    import json

    import torch

    from fusionrec.ctr.config import load_config
    from fusionrec.ctr.trainer import Trainer
    from fusionrec.datasets import make_taobao

    sample = Path(__file__).resolve().parents[3] / "shared" / "easyrec" / "configs" / "dcn_on_taobao.config"
    make_taobao(64, seed=0, path=tmp_path / "train.csv")
    edits = {"train_input_path": str(tmp_path / "train.csv"), "eval_input_path": None, "model_dir": str(tmp_path / "m"),
             "data_config.batch_size": 32}  # fmt: skip
    trainer = Trainer(load_config(sample, json.dumps(edits)))
    model = trainer.model
    assert model.cross_input is model.deep_input and model.shared_input
    calls = []
    model.cross_input.register_forward_hook(lambda *_: calls.append(1))
    from fusionrec.ctr.data import resolve_paths

    for _, features in trainer._training_batches(trainer._reader(), resolve_paths(str(tmp_path / "train.csv"), "x"), 1):
        with torch.no_grad():
            model.eval()(features)
        break
    assert len(calls) == 1
