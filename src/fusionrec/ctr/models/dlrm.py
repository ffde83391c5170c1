"""EasyRec's DLRM (Naumov et al. 2019)."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import DLRMConfig
from fusionrec.ctr.models.base import ModelInputs, _Base, _mlp
from fusionrec.errors import FusionrecError


class DLRM(_Base):
    """DLRM (Naumov et al. 2019) as EasyRec's DLRM: the group ``dense`` through ``bot_dnn``
    (the paper's bottom MLP) and the group ``sparse``'s embeddings
    interact by ``arch_interaction_op``: ``cat`` concatenates them; ``dot`` takes the dot
    product of every pair (each with itself too under ``arch_interaction_itself``), then
    appends the sparse embeddings (and the dense vector under ``arch_with_dense_feature``).
    ``top_dnn`` and one linear layer give the logits."""

    def __init__(self, inputs: ModelInputs, params: DLRMConfig):
        super().__init__()
        self._set_outputs(inputs)
        groups, _ = inputs.groups(None)
        self.dense_input = self._group(groups, "dense", "dlrm (EasyRec's DLRM needs a feature group named 'dense')")
        self.sparse_input = self._group(groups, "sparse", "dlrm (EasyRec's DLRM needs a feature group named 'sparse')")
        self.bottom = _mlp(self.dense_input.out_dim, params.bot_dnn)
        self.dot = params.arch_interaction_op == "dot"
        self.with_dense = params.arch_with_dense_feature
        n_fields = 1 + len(self.sparse_input.field_dims)
        if self.dot:
            dims = set(self.sparse_input.field_dims) | {self.bottom.out_dim}
            if len(dims) != 1:
                raise FusionrecError(
                    f"dlrm: arch_interaction_op 'dot' needs bot_dnn's last layer ({self.bottom.out_dim}) and every "
                    f"embedding of group 'sparse' ({sorted(set(self.sparse_input.field_dims))}) to have one width"
                )
            offset = 0 if params.arch_interaction_itself else 1
            rows, cols = torch.triu_indices(n_fields, n_fields, offset)
            self.register_buffer("pair_rows", rows, persistent=False)
            self.register_buffer("pair_cols", cols, persistent=False)
            width = rows.numel() + self.sparse_input.out_dim + (self.bottom.out_dim if self.with_dense else 0)
        else:
            self.register_buffer("pair_rows", torch.zeros(0, dtype=torch.long), persistent=False)
            self.register_buffer("pair_cols", torch.zeros(0, dtype=torch.long), persistent=False)
            width = self.bottom.out_dim + self.sparse_input.out_dim
        self.top = _mlp(width, params.top_dnn)
        self.head = nn.Linear(self.top.out_dim, self.n_outputs)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        dense = self.bottom(self.dense_input(features))
        sparse = self.sparse_input.fields(features)
        if not self.dot:
            return self._logits(self.head(self.top(torch.cat([dense] + sparse, dim=1))))
        stacked = torch.stack([dense] + sparse, dim=1)  # B x n_fields x D
        interactions = torch.bmm(stacked, stacked.transpose(1, 2))[:, self.pair_rows, self.pair_cols]
        parts = [interactions] + sparse
        if self.with_dense:
            parts.append(dense)
        return self._logits(self.head(self.top(torch.cat(parts, dim=1))))
