"""EasyRec's DCN (Wang et al., ADKDD 2017)."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import DCNConfig
from fusionrec.ctr.models.base import ModelInputs, _Base, _mlp
from fusionrec.ctr.modules.cross import CrossNet


class DCN(_Base):
    """Deep & Cross Network (Wang et al., ADKDD 2017) as EasyRec's DCN: cross tower (eq. 3, a
    weight vector per layer) || deep tower, then ``final_dnn`` and one output unit."""

    def __init__(self, inputs: ModelInputs, params: DCNConfig):
        super().__init__()
        self._set_outputs(inputs)
        groups, _ = inputs.groups(None)
        self.cross_input = self._group(groups, params.cross_tower.input, "dcn.cross_tower")
        self.deep_input = self._group(groups, params.deep_tower.input, "dcn.deep_tower")
        # both towers on one group (EasyRec's samples): embedded once, as EasyRec's input layer
        # builds it once (and embedding_regularization penalizes it once)
        self.shared_input = params.cross_tower.input == params.deep_tower.input
        self.cross = CrossNet(self.cross_input.out_dim, params.cross_tower.cross_num)
        self.dnn = _mlp(self.deep_input.out_dim, params.deep_tower.dnn)
        width = self.cross.out_dim + self.dnn.out_dim
        self.final = _mlp(width, params.final_dnn)
        self.head = nn.Linear(self.final.out_dim, self.n_outputs)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        cross_input = self.cross_input(features)
        deep_input = cross_input if self.shared_input else self.deep_input(features)
        crossed = self.cross(cross_input)
        deep = self.dnn(deep_input)
        return self._logits(self.head(self.final(torch.cat([crossed, deep], dim=1))))
