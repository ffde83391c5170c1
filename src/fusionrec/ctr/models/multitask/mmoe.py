"""EasyRec's MMoE (Ma et al., KDD 2018)."""

from typing import Dict, List

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import MMoEConfig
from fusionrec.ctr.models.base import ModelInputs
from fusionrec.ctr.models.multitask.base import ALL_GROUP, MixtureOfExperts, TaskHead, _MultiTask


class MMoE(_MultiTask):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018) as EasyRec builds it: ``num_expert``
    copies of ``expert_dnn`` (or the listed ``experts``) over the ``all`` group, a softmax gate
    per task over the same input, then each task tower."""

    def __init__(self, inputs: ModelInputs, params: MMoEConfig):
        super().__init__()
        towers = self._set_towers(inputs)
        self.input = self._input_group(inputs, ALL_GROUP)
        dnns = [params.expert_dnn] * params.num_expert if params.expert_dnn is not None else [e.dnn for e in params.experts]
        self.mixture = MixtureOfExperts(self.input.out_dim, dnns, len(towers), "mmoe.experts")
        self.heads = nn.ModuleList(TaskHead(self.mixture.out_dim, t) for t in towers)

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        mixed = self.mixture(self.input(features))
        logits: List[Tensor] = []
        for i, head in enumerate(self.heads):
            logits.append(head(mixed[i]))
        return self._named(logits)
