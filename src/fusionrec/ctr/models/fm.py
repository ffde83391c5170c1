"""EasyRec's FM (Rendle 2010)."""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import FMConfig
from fusionrec.ctr.models.base import ModelInputs, _Base
from fusionrec.ctr.modules.fm import FactorizationMachine
from fusionrec.errors import FusionrecError


class FM(_Base):
    """Factorization machine (Rendle 2010) as EasyRec's FM: the WIDE groups' first-order terms
    plus the second-order interactions of the DEEP groups' fields (eq. 4), plus a bias."""

    def __init__(self, inputs: ModelInputs, params: FMConfig):
        super().__init__()
        self._set_outputs(inputs)
        if self.n_outputs != 1:
            raise FusionrecError(f"FM: predicts one value per row; num_class {self.n_outputs} is not supported (as in EasyRec)")
        self._wide_and_deep_groups(inputs, 1, "FM")
        dims = {d for g in self.deep_groups for d in g.field_dims}
        if len(dims) != 1:
            raise FusionrecError(f"FM: every DEEP field needs one embedding_dim, found {sorted(dims)}")
        self.fm = FactorizationMachine()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        fields: List[Tensor] = []
        for group in self.deep_groups:
            fields.extend(group.fields(features))
        logits = self.fm(torch.stack(fields, dim=1)).squeeze(1) + self.bias
        for group in self.wide_groups:
            logits = logits + group(features).sum(dim=1)
        return logits
