"""EasyRec's CMBF: cross-modal based fusion of image, text and other features."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import CMBFConfig
from fusionrec.ctr.models.base import ModelInputs, _mlp
from fusionrec.ctr.models.multimodal import _MultiModalInputs
from fusionrec.ctr.modules.transformer import CrossAttentionTower, EmbeddingPostprocessor, TransformerEncoder, dense, masked_mean
from fusionrec.errors import FusionrecError


class CMBF(_MultiModalInputs):
    """CMBF (Chen et al., "CMBF: Cross-Modal-Based Fusion Recommendation Algorithm", Sensors
    2021) as EasyRec's: an image tower (projection, or image_feature_dim single-value tokens,
    then self-attention layers), a text tower (the general features as tokens and each text
    sequence with token-type and position embeddings, through self-attention layers),
    cross-modal layers between the two, then the image tokens averaged, the general tokens
    kept, each text sequence averaged over its valid positions; ``final_dnn`` and the output."""

    def __init__(self, inputs: ModelInputs, params: CMBFConfig | None, tower=None):
        """``tower``: a CMBFTower to build the fused features only (DBMTL's ``bottom_cmbf``):
        ``fused`` then gives them, width ``out_dim``, and there is no final_dnn or output."""
        super().__init__()
        self._set_outputs(inputs)
        p = tower if tower is not None else params.config
        self._inputs(inputs, "CMBF", p.max_position_embeddings, p.use_position_embeddings, p.other_feature_dnn)
        heads = p.multi_head_num
        # image tower
        self.image_layers = p.image_self_attention_layer_num
        self.image_tokens = max(self.n_image, 1)
        self.image_map_tokens = False
        image_hidden = heads * p.image_cross_head_size if self.image_layers <= 0 else p.image_head_size * p.image_multi_head_num
        token_dim = self.image_dim
        if self.has_image and self.image_layers > 0 and self.n_image == 1 and p.image_feature_patch_num > 1:
            if self.image_dim % p.image_feature_patch_num:
                raise FusionrecError(f"CMBF: image width {self.image_dim} is not a multiple of image_feature_patch_num {p.image_feature_patch_num}")
            self.image_tokens, token_dim = p.image_feature_patch_num, self.image_dim // p.image_feature_patch_num
        elif self.has_image and self.image_layers > 0 and self.n_image == 1:
            if p.image_feature_dim <= 0:
                raise FusionrecError("CMBF: image_feature_dim must be > 0 for one image feature with image self-attention layers")
            self.image_map_tokens, self.image_tokens = True, p.image_feature_dim
        if self.image_map_tokens:  # each of image_feature_dim values becomes a token: value x a learned vector
            self.image_projection = dense(self.image_dim, p.image_feature_dim) if p.image_feature_dim != self.image_dim else nn.Identity()
            self.image_map = nn.Parameter(torch.randn(1, p.image_feature_dim, image_hidden) * 0.02)
        else:
            self.image_projection = dense(token_dim, image_hidden) if token_dim != image_hidden and self.has_image else nn.Identity()
            self.image_map = nn.Parameter(torch.zeros(0))
        self.token_dim = token_dim
        if self.has_image and self.image_layers > 0 and image_hidden % heads:
            raise FusionrecError(f"CMBF: image hidden size {image_hidden} is not a multiple of multi_head_num {heads}")
        self.image_encoder = TransformerEncoder(image_hidden, max(self.image_layers, 0), heads, 4 * image_hidden, "gelu",
                                                p.hidden_dropout_prob, p.attention_probs_dropout_prob)  # fmt: skip
        # text tower
        text_hidden = p.text_head_size * p.text_multi_head_num
        has_text_tower = self.has_general or self.n_text > 0
        if has_text_tower and text_hidden % heads:
            raise FusionrecError(f"CMBF: text hidden size {text_hidden} is not a multiple of multi_head_num {heads}")
        self.general_projection = dense(self.general_dim, text_hidden) if self.general_dim not in (0, text_hidden) else nn.Identity()
        self.text_projections = nn.ModuleList(
            dense(self.text_dim, text_hidden) if self.text_dim != text_hidden else nn.Identity() for _ in range(self.n_text))
        self.text_postprocess = nn.ModuleList(
            EmbeddingPostprocessor(text_hidden, p.max_position_embeddings if p.use_position_embeddings else 0,
                                   p.text_seq_emb_dropout_prob) for _ in range(self.n_text))  # fmt: skip
        self.use_token_type = p.use_token_type
        self.token_types = nn.Parameter(torch.randn(max(self.n_text, 1), text_hidden) * 0.02)
        self.text_encoder = TransformerEncoder(text_hidden, p.text_self_attention_layer_num, heads, 4 * text_hidden, "gelu",
                                               p.hidden_dropout_prob, p.attention_probs_dropout_prob)  # fmt: skip
        # cross-modal layers
        self.cross_modal = self.has_image and has_text_tower
        self.cross = CrossAttentionTower(image_hidden, text_hidden, p.cross_modal_layer_num if self.cross_modal else 0, heads,
                                         p.image_cross_head_size, p.text_cross_head_size, p.hidden_dropout_prob,
                                         p.attention_probs_dropout_prob)  # fmt: skip
        image_width = self.cross.left_dim if self.cross_modal else image_hidden
        text_width = self.cross.right_dim if self.cross_modal else text_hidden
        width = (image_width if self.has_image else 0) + (self.n_general + self.n_text) * text_width * int(has_text_tower)
        self.out_dim = width + self.other_dim
        self.final = _mlp(self.out_dim, params.final_dnn if tower is None else None)
        self.head = nn.Linear(self.final.out_dim, self.n_outputs) if tower is None else nn.Identity()

    def _image_tower(self, features: Dict[str, Tensor]) -> Tensor:
        x = self.image(features)
        batch = x.shape[0]
        if self.image_map_tokens:
            x = self.image_projection(x).unsqueeze(2) * self.image_map
        else:
            x = self.image_projection(x.view(batch, self.image_tokens, self.token_dim))
        return self.image_encoder(x, None)

    def _text_tower(self, features: Dict[str, Tensor]) -> Tuple[Tensor, Optional[Tensor], List[Tensor]]:
        parts: List[Tensor] = []
        masks: List[Tensor] = []
        if self.has_general:
            general = torch.stack(self.general.fields(features), dim=1)
            parts.append(self.general_projection(general))
            masks.append(torch.ones(general.shape[0], general.shape[1], dtype=torch.bool))
        embedded, seq_masks = self._text_sequences(features)
        i = 0
        for projection, post in zip(self.text_projections, self.text_postprocess):
            token_type: Optional[Tensor] = self.token_types[i] if self.use_token_type else None
            parts.append(post(projection(embedded[i]), token_type))
            masks.append(seq_masks[i])
            i += 1
        x = torch.cat(parts, dim=1)
        mask: Optional[Tensor] = torch.cat(masks, dim=1) if self.n_text > 0 else None
        return self.text_encoder(x, mask), mask, masks

    def _merge_text(self, x: Tensor, masks: List[Tensor]) -> Tensor:
        """The general tokens kept, each text sequence averaged over its valid positions, flattened."""
        pieces: List[Tensor] = []
        begin = 0
        if self.has_general:
            pieces.append(x[:, : self.n_general].flatten(1))
            begin = self.n_general
        for j in range(int(self.has_general), len(masks)):
            size = masks[j].shape[1]
            pieces.append(masked_mean(x[:, begin : begin + size], masks[j]))
            begin += size
        return torch.cat(pieces, dim=1)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        return self._logits(self.head(self.final(self.fused(features))))

    def fused(self, features: Dict[str, Tensor]) -> Tensor:
        """The fused image, text and other features, before final_dnn."""
        outputs: List[Tensor] = []
        if self.cross_modal:
            image = self._image_tower(features)
            text, mask, masks = self._text_tower(features)
            image, text = self.cross(image, text, mask)
            outputs.append(image.mean(dim=1))
            outputs.append(self._merge_text(text, masks))
        elif self.has_image:
            outputs.append(self._image_tower(features).mean(dim=1))
        elif self.has_general or self.n_text > 0:
            text, _, masks = self._text_tower(features)
            outputs.append(self._merge_text(text, masks))
        if self.has_other:
            outputs.append(self._other_output(features))
        return torch.cat(outputs, dim=1)
