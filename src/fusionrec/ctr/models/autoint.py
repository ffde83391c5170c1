"""EasyRec's AutoInt (Song et al., CIKM 2019)."""

from __future__ import annotations

from typing import Dict

from torch import Tensor, nn

from fusionrec.ctr.config import AutoIntConfig
from fusionrec.ctr.models.base import ModelInputs, _Base
from fusionrec.ctr.modules.autoint import InteractingLayer
from fusionrec.errors import FusionrecError


class AutoInt(_Base):
    """AutoInt (Song et al., CIKM 2019) as EasyRec's: the first feature group's fields (a DIN
    output, [attended, candidate], counts as two fields per key width) through ``interacting_layer_num`` interacting layers,
    flattened, then one linear layer."""

    def __init__(self, inputs: ModelInputs, params: AutoIntConfig):
        super().__init__()
        self._set_outputs(inputs)
        groups, _ = inputs.groups(None)
        self.input = next(iter(groups.values()))
        dims = {d for d in self.input.field_dims}
        dim = min(dims) if dims else 0
        if not dims or any(d % dim for d in dims):
            raise FusionrecError(f"AutoInt: every field of group {self.input.group_name!r} needs one embedding_dim, found {sorted(dims)}")
        self.dim = dim
        n_fields = self.input.out_dim // dim
        layers = []
        width = dim
        for _ in range(params.interacting_layer_num):
            layers.append(InteractingLayer(width, params.multi_head_num, params.multi_head_size))
            width = layers[-1].out_dim
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(n_fields * width, self.n_outputs)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        x = self.input(features)
        fields = x.view(x.shape[0], -1, self.dim)
        for layer in self.layers:
            fields = layer(fields)
        return self._logits(self.head(fields.flatten(1)))
