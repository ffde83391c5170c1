"""EasyRec's MultiTower (and MultiTowerDIN, DIN, MultiTowerBST): a tower per feature group, DIN
and BST towers over sequences."""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import BSTTower, MultiTowerConfig
from fusionrec.ctr.models.base import ModelInputs, _Base, _mlp
from fusionrec.errors import FusionrecError


class MultiTower(_Base):
    """EasyRec's MultiTower, MultiTowerDIN and MultiTowerBST: each of ``towers`` is a batch
    norm over its group, then its DNN; each of ``din_towers`` is DIN target attention over a
    seq_att_group, scored by the tower's dnn (its last unit, 1, linear), giving [attended
    history, candidate]; each of ``bst_towers`` is BST over a seq_att_group. The tower outputs,
    concatenated, go through ``final_dnn`` and the output layer."""

    def __init__(self, model_inputs: ModelInputs, params: MultiTowerConfig):
        super().__init__()
        self._set_outputs(model_inputs)
        groups, tables = model_inputs.groups(None)
        seq_groups = {seq_group.group_name or "seq_att": seq_group for seq_group in model_inputs.seq_att_groups}
        inputs: List[nn.Module] = []
        towers: List[nn.Module] = []
        for tower in params.towers:
            group = self._group(groups, tower.input, "multi_tower.towers")
            inputs.append(group)
            towers.append(nn.Sequential(nn.BatchNorm1d(group.out_dim), _mlp(group.out_dim, tower.dnn)))
        # EasyRec's MultiTower reads `towers` only; din_towers and bst_towers belong to MultiTowerDIN / MultiTowerBST
        kind = model_inputs.model_class
        din_towers = params.din_towers if kind in ("MultiTowerDIN", "DIN") else []
        bst_towers = params.bst_towers if kind == "MultiTowerBST" else []
        for tower in list(din_towers) + list(bst_towers):
            if tower.input not in seq_groups:
                raise FusionrecError(
                    f"multi_tower: tower input {tower.input!r} is not a seq_att_groups group_name; those are {sorted(seq_groups)}"
                )
            where = f"seq_att_groups {tower.input!r}"
            if isinstance(tower, BSTTower):
                slot = tables.bst(seq_groups[tower.input], where, tower.seq_len, tower.multi_head_size)
            else:
                slot = tables.din(seq_groups[tower.input], where, attention_dnn=tower.dnn)
            inputs.append(slot)
            towers.append(nn.Identity())
        if not towers:
            raise FusionrecError(f"multi_tower: {kind} needs at least one tower")
        self.inputs = nn.ModuleList(inputs)
        self.towers = nn.ModuleList(towers)
        width = sum(t[1].out_dim if isinstance(t, nn.Sequential) else i.out_dim for t, i in zip(towers, inputs))
        self.final = _mlp(width, params.final_dnn)
        self.head = nn.Linear(self.final.out_dim, self.n_outputs)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        outputs: List[Tensor] = []
        for group in self.inputs:
            outputs.append(group(features))
        tower_outputs: List[Tensor] = []
        j = 0
        for tower in self.towers:
            tower_outputs.append(tower(outputs[j]))
            j += 1
        return self._logits(self.head(self.final(torch.cat(tower_outputs, dim=1))))
