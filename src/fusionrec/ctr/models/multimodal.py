"""What EasyRec's multi-modal models (CMBF, Uniter) share: image, text and other-feature inputs."""

from __future__ import annotations

from typing import Dict, List, Tuple

from torch import Tensor, nn

from fusionrec.ctr.config import DNN
from fusionrec.ctr.embedding import GroupInput
from fusionrec.ctr.models.base import ModelInputs, _Base, _mlp
from fusionrec.errors import FusionrecError


class _MultiModalInputs(_Base):
    """The feature groups of EasyRec's multi-modal models, by name: ``image`` (RawFeatures of
    raw_input_dim numbers, one width), ``general`` (features of one embedding_dim), ``text``
    (SequenceFeatures of one embedding_dim, kept as sequences), ``other`` (as is, or through
    ``other_feature_dnn``)."""

    def _inputs(self, inputs: ModelInputs, model: str, max_positions: int,
                use_positions: bool, other_dnn: DNN | None) -> None:  # fmt: skip
        tables = inputs.tables()
        by_name = {g.group_name: g for g in inputs.feature_groups}
        known = {"image", "general", "text", "other"}
        if not known & set(by_name):
            raise FusionrecError(f"{model}: needs one of the feature groups {sorted(known)}; found {sorted(by_name)}")
        features = {f.name: f for f in inputs.features}
        self.has_image, self.has_general = "image" in by_name, "general" in by_name
        self.has_text, self.has_other = "text" in by_name, "other" in by_name
        self.image = tables.group(by_name["image"], None) if self.has_image else GroupInput("image", [], False)
        self.general = tables.group(by_name["general"], None) if self.has_general else GroupInput("general", [], False)
        self.text = nn.ModuleList(
            tables.sequence(name, f"{model} group 'text'") for name in (by_name["text"].feature_names if self.has_text else [])
        )
        self.other = tables.group(by_name["other"], None) if self.has_other else GroupInput("other", [], False)
        self.n_image, self.n_general, self.n_text = len(self.image.field_dims), len(self.general.field_dims), len(self.text)
        for group, dims in (("image", self.image.field_dims), ("general", self.general.field_dims),
                            ("text", [t.out_dim for t in self.text])):  # fmt: skip
            if len(set(dims)) > 1:
                raise FusionrecError(f"{model}: every feature of group {group!r} needs one width, found {sorted(set(dims))}")
        self.image_dim = self.image.field_dims[0] if self.n_image else 0
        self.general_dim = self.general.field_dims[0] if self.n_general else 0
        self.text_dim = self.text[0].out_dim if self.n_text else 0
        if use_positions and self.n_text:
            lengths = [features[name].max_seq_len for name in by_name["text"].feature_names]
            if any(n is None or n > max_positions for n in lengths):
                raise FusionrecError(
                    f"{model}: max_position_embeddings ({max_positions}) must be at least every text feature's max_seq_len "
                    f"(set it on each): {dict(zip(by_name['text'].feature_names, lengths))}"
                )
        self.other_dnn = _mlp(self.other.out_dim, other_dnn if self.has_other else None)
        self.other_dim = self.other_dnn.out_dim if self.has_other else 0

    def _text_sequences(self, features: Dict[str, Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        embedded: List[Tensor] = []
        masks: List[Tensor] = []
        for slot in self.text:
            x, mask = slot(features)
            embedded.append(x)
            masks.append(mask)
        return embedded, masks

    def _other_output(self, features: Dict[str, Tensor]) -> Tensor:
        return self.other_dnn(self.other(features))
