"""EasyRec's SimpleMultiTask: a tower per task over the shared input."""

from typing import Dict, List

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import SimpleMultiTaskConfig
from fusionrec.ctr.models.base import ModelInputs
from fusionrec.ctr.models.multitask.base import ALL_GROUP, TaskHead, _MultiTask


class SimpleMultiTask(_MultiTask):
    """EasyRec's SimpleMultiTask: each task tower's DNN over the ``all`` group, no sharing
    beyond the embeddings."""

    def __init__(self, inputs: ModelInputs, params: SimpleMultiTaskConfig):
        super().__init__()
        towers = self._set_towers(inputs)
        self.input = self._input_group(inputs, ALL_GROUP)
        self.heads = nn.ModuleList(TaskHead(self.input.out_dim, t) for t in towers)

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        x = self.input(features)
        logits: List[Tensor] = []
        for head in self.heads:
            logits.append(head(x))
        return self._named(logits)
