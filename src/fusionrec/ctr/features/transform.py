"""``FeatureTransform``: every configured feature, each by the module of its EasyRec type
(``FEATURE_MODULES``: one line per type)."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import PipelineConfig
from fusionrec.ctr.features.combo import ComboFeature
from fusionrec.ctr.features.expr import ExprFeature
from fusionrec.ctr.features.id import IdFeature
from fusionrec.ctr.features.lookup import LookupFeature
from fusionrec.ctr.features.ops import read_vocab_file, tensor_digest
from fusionrec.ctr.features.raw import PassThroughFeature, RawFeature
from fusionrec.ctr.features.sequence import SequenceFeature
from fusionrec.ctr.features.tag import TagFeature

# EasyRec's feature_type -> the module that transforms it (fusionrec.ctr.config.FEATURE_TYPES
# lists the same names; tests/ctr/test_features_layers.py checks that they agree)
FEATURE_MODULES: Dict[str, type] = {
    "IdFeature": IdFeature,
    "RawFeature": RawFeature,
    "TagFeature": TagFeature,
    "ComboFeature": ComboFeature,
    "SequenceFeature": SequenceFeature,
    "ExprFeature": ExprFeature,
    "LookupFeature": LookupFeature,
    "PassThroughFeature": PassThroughFeature,
}


class FeatureTransform(nn.Module):
    """All configured features: raw column tensors -> {feature name: ids or values, name.mask}."""

    def __init__(self, config: PipelineConfig, base_dir: str = "."):
        super().__init__()
        input_types = {f.input_name: f.input_type for f in config.data_config.input_fields}
        modules = {}
        for feature in config.features:
            vocab = list(feature.vocab_list)
            if feature.vocab_file:
                vocab = read_vocab_file(feature.vocab_file, base_dir, feature.name)
            modules[feature.name] = FEATURE_MODULES[feature.feature_type](feature, input_types, vocab)
        self.features = nn.ModuleDict(modules)

    def forward(self, columns: Dict[str, Tensor]) -> Dict[str, Tensor]:
        out: Dict[str, Tensor] = {}
        for feature in self.features.values():
            feature(columns, out)
        return out

    @torch.jit.unused
    def layout(self) -> Dict[str, Dict[str, str]]:
        """What each feature's ids mean: its inputs, kind, id space and a hash of its vocabulary
        or boundaries. Stored in checkpoints and exports; two models with equal layouts read
        the same columns into the same embedding rows."""
        out: Dict[str, Dict[str, str]] = {}
        for name, f in self.features.items():
            out[name] = {
                "inputs": ",".join(f.inputs), "input_type": f.input_type, "ids": str(f.n_ids),
                "kind": "raw" if f.is_raw else ("combo" if f.is_combo else ("expr" if f.is_expr else ("sequence" if f.multi else "id"))),
                "id_space": "vocab" if f.has_vocab else ("hash" if f.hash_bucket_size > 0 else "buckets"),
                "vocab_sha256": tensor_digest(f.vocab_keys) if f.has_vocab else "",
                "boundaries_sha256": tensor_digest(f.boundaries) if len(f.boundaries) > 0 else "",
                "max_seq_len": str(f.max_seq_len),
            }  # fmt: skip
        return out
