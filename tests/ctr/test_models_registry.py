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
