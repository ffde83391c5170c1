"""EasyRec's DeepFM (Guo et al., IJCAI 2017)."""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import DeepFMConfig
from fusionrec.ctr.models.base import ModelInputs, _Base, _mlp
from fusionrec.ctr.modules.fm import FactorizationMachine
from fusionrec.errors import FusionrecError


class DeepFM(_Base):
    """DeepFM (Guo et al., IJCAI 2017) as EasyRec builds it: wide = the sum of every WIDE
    feature's ``wide_output_dim`` embedding (one value per row); fm = the FM interactions per
    embedding dimension over the fields of the group named ``fm`` if there is one, else of the
    DEEP groups; deep = ``dnn`` over the DEEP groups. With ``final_dnn``: logits =
    linear(final_dnn([wide, fm, deep])); without: wide + fm (summed, or a linear layer per
    class) + linear(deep), and wide_output_dim must equal num_class, as EasyRec asserts."""

    def __init__(self, inputs: ModelInputs, params: DeepFMConfig):
        super().__init__()
        self._set_outputs(inputs)
        groups, _ = inputs.groups(params.wide_output_dim)
        self.wide_groups = nn.ModuleList(g for name, g in groups.items() if g.wide)
        self.deep_groups = nn.ModuleList(g for name, g in groups.items() if not g.wide and name != "fm")
        if len(self.deep_groups) == 0:
            raise FusionrecError("DeepFM: needs at least one DEEP feature group")
        self.fm_is_deep = not ("fm" in groups and not groups["fm"].wide)
        fm_groups = list(self.deep_groups) if self.fm_is_deep else [groups["fm"]]
        self.fm_groups = nn.ModuleList([] if self.fm_is_deep else fm_groups)
        dims = {d for g in fm_groups for d in g.field_dims}
        if len(dims) != 1:
            raise FusionrecError(f"DeepFM: the FM needs every field it crosses to have one embedding_dim, found {sorted(dims)}")
        fm_dim = dims.pop()
        if params.final_dnn is None and params.wide_output_dim != self.n_outputs:
            raise FusionrecError(
                f"deepfm: without final_dnn, wide_output_dim ({params.wide_output_dim}) must equal num_class "
                f"({self.n_outputs}), as in EasyRec"
            )
        self.fm = FactorizationMachine(keep_dim=True)
        self.dnn = _mlp(sum(g.out_dim for g in self.deep_groups), params.dnn)
        # without final_dnn and with several classes, the FM interactions get a linear layer per class
        self.fm_head = nn.Linear(fm_dim, self.n_outputs) if params.final_dnn is None and self.n_outputs > 1 else nn.Identity()
        self._output_layers(1 + fm_dim + self.dnn.out_dim, params.final_dnn)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        deep_fields: List[Tensor] = []
        for group in self.deep_groups:
            deep_fields.extend(group.fields(features))
        deep = self.dnn(torch.cat(deep_fields, dim=1))
        fields: List[Tensor] = deep_fields  # the FM crosses the DEEP fields, looked up once, unless a group `fm` is set
        if not self.fm_is_deep:
            fields = []
            for group in self.fm_groups:
                fields.extend(group.fields(features))
        fm = self.fm(torch.stack(fields, dim=1))
        wide = torch.zeros(deep.shape[0], 1, dtype=deep.dtype)
        for group in self.wide_groups:
            wide = wide + group(features).sum(dim=1, keepdim=True)
        if self.has_final:
            return self._logits(self.head(self.final(torch.cat([wide, fm, deep], dim=1))))
        if self.n_outputs > 1:
            return self._logits(wide + self.fm_head(fm) + self.head(deep))
        return self._logits(wide + fm.sum(dim=1, keepdim=True) + self.head(deep))
