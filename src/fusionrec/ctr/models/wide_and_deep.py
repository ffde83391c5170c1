"""EasyRec's WideAndDeep (Cheng et al. 2016)."""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor

from fusionrec.ctr.config import WideAndDeepConfig
from fusionrec.ctr.models.base import ModelInputs, _Base, _mlp


class WideAndDeep(_Base):
    """Wide & Deep (Cheng et al. 2016) as EasyRec builds it.

    wide = sum of the WIDE groups' per-feature embeddings of width ``wide_output_dim``;
    deep = ``dnn`` over the concatenated DEEP groups. With ``final_dnn``: logits =
    linear(final_dnn([wide, deep])); without: logits = wide + linear(deep), the wide part one
    weight per output (EasyRec sets wide_output_dim to num_class when there is no final_dnn).
    """

    def __init__(self, inputs: ModelInputs, params: WideAndDeepConfig):
        super().__init__()
        self._set_outputs(inputs)
        wide_dim = params.wide_output_dim if params.final_dnn is not None else self.n_outputs
        self._wide_and_deep_groups(inputs, wide_dim, "WideAndDeep")
        self.wide_dim = wide_dim
        self.dnn = _mlp(sum(g.out_dim for g in self.deep_groups), params.dnn)
        self._output_layers(self.wide_dim + self.dnn.out_dim, params.final_dnn)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        deep_parts: List[Tensor] = []
        for group in self.deep_groups:
            deep_parts.append(group(features))
        deep = self.dnn(torch.cat(deep_parts, dim=1))
        wide = torch.zeros(deep.shape[0], self.wide_dim, dtype=deep.dtype)
        for group in self.wide_groups:
            wide = wide + group(features)
        if self.has_final:
            return self._logits(self.head(self.final(torch.cat([wide, deep], dim=1))))
        return self._logits(wide + self.head(deep))
