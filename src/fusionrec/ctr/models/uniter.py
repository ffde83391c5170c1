"""EasyRec's Uniter (Chen et al., ECCV 2020) for ranking: one transformer over image, text and
other features."""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import UniterConfig
from fusionrec.ctr.models.base import ModelInputs, _mlp
from fusionrec.ctr.models.multimodal import _MultiModalInputs
from fusionrec.ctr.modules.transformer import EmbeddingPostprocessor, TransformerEncoder, dense
from fusionrec.errors import FusionrecError


class Uniter(_MultiModalInputs):
    """UNITER (Chen et al., ECCV 2020) as EasyRec's Uniter: the image features, the general
    features and each text sequence become tokens of ``hidden_size`` with token-type (when more
    than one kind of token is present) and position embeddings; a [CLS] token is prepended;
    one transformer encoder over all of them; the [CLS] output (with ``other`` appended) goes
    through ``final_dnn`` and the output."""

    def __init__(self, inputs: ModelInputs, params: UniterConfig | None, tower=None):
        """``tower``: a UniterTower to build the encoded features only (DBMTL's ``bottom_uniter``)."""
        super().__init__()
        self._set_outputs(inputs)
        p = tower if tower is not None else params.config
        self._inputs(inputs, "Uniter", p.max_position_embeddings, p.use_position_embeddings, p.other_feature_dnn)
        hidden = p.hidden_size
        n_towers = int(self.has_image) + int(self.has_general) + int(self.has_text)
        self.use_token_type = n_towers > 1 or self.n_text > 1 or self.n_image > 1
        n_token_types = self.n_text + int(self.has_image) + int(self.has_general)
        self.token_types = nn.Parameter(torch.randn(max(n_token_types, 1), hidden) * p.initializer_range)
        positions = p.max_position_embeddings if p.use_position_embeddings else 0
        if self.has_image and p.use_position_embeddings and self.n_image > p.max_position_embeddings:
            raise FusionrecError(f"Uniter: max_position_embeddings ({p.max_position_embeddings}) is below the {self.n_image} image features")
        self.image_projection = dense(self.image_dim, hidden) if self.image_dim not in (0, hidden) else nn.Identity()
        self.image_post = EmbeddingPostprocessor(hidden, positions, p.hidden_dropout_prob, p.initializer_range)
        self.general_projection = dense(self.general_dim, hidden) if self.general_dim not in (0, hidden) else nn.Identity()
        self.general_post = EmbeddingPostprocessor(hidden, 0, p.hidden_dropout_prob, p.initializer_range)
        self.text_projections = nn.ModuleList(
            dense(self.text_dim, hidden) if self.text_dim != hidden else nn.Identity() for _ in range(self.n_text))
        self.text_post = nn.ModuleList(
            EmbeddingPostprocessor(hidden, positions, p.hidden_dropout_prob, p.initializer_range) for _ in range(self.n_text))
        self.has_tokens = n_towers > 0
        self.cls = nn.Parameter(torch.empty(1, 1, hidden).uniform_(-math.sqrt(6.0 / (1 + hidden)), math.sqrt(6.0 / (1 + hidden))))
        self.encoder = TransformerEncoder(hidden, p.num_hidden_layers, p.num_attention_heads, p.intermediate_size, p.hidden_act,
                                          p.hidden_dropout_prob, p.attention_probs_dropout_prob, p.initializer_range)  # fmt: skip
        self.out_dim = (hidden if self.has_tokens else 0) + self.other_dim
        self.final = _mlp(self.out_dim, params.final_dnn if tower is None else None)
        self.head = nn.Linear(self.final.out_dim, self.n_outputs) if tower is None else nn.Identity()

    def _token_type(self, i: int) -> Optional[Tensor]:
        return self.token_types[i] if self.use_token_type else None

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        return self._logits(self.head(self.final(self.fused(features))))

    def fused(self, features: Dict[str, Tensor]) -> Tensor:
        """[CLS] after the encoder (and the other features), before final_dnn."""
        outputs: List[Tensor] = []
        if self.has_tokens:
            tokens: List[Tensor] = []
            masks: List[Tensor] = []
            type_id = 0
            if self.has_image:  # token type 0
                x = self.image(features)
                x = self.image_projection(x.view(x.shape[0], self.n_image, self.image_dim))
                tokens.append(self.image_post(x, self._token_type(0)))
                masks.append(torch.ones(x.shape[0], x.shape[1], dtype=torch.bool))
                type_id = 1
            if self.has_general:
                x = self.general_projection(torch.stack(self.general.fields(features), dim=1))
                tokens.append(self.general_post(x, self._token_type(type_id)))
                masks.append(torch.ones(x.shape[0], x.shape[1], dtype=torch.bool))
                type_id += 1
            embedded, seq_masks = self._text_sequences(features)
            i = 0
            for projection, post in zip(self.text_projections, self.text_post):
                tokens.append(post(projection(embedded[i]), self._token_type(type_id + i)))
                masks.append(seq_masks[i])
                i += 1
            batch = tokens[0].shape[0]
            tokens.insert(0, self.cls.expand(batch, -1, -1))
            masks.insert(0, torch.ones(batch, 1, dtype=torch.bool))
            encoded = self.encoder(torch.cat(tokens, dim=1), torch.cat(masks, dim=1))
            outputs.append(encoded[:, 0])
        if self.has_other:
            outputs.append(self._other_output(features))
        return torch.cat(outputs, dim=1)
