"""EasyRec's DBMTL (Bai et al. 2019): task towers whose relation towers read the towers before them."""

from typing import Dict, List

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import DNN, DBMTLConfig, TaskTowerConfig
from fusionrec.ctr.models.base import ModelInputs, _mlp
from fusionrec.ctr.models.cmbf import CMBF
from fusionrec.ctr.models.multitask.base import ALL_GROUP, MixtureOfExperts, _MultiTask
from fusionrec.ctr.models.uniter import Uniter
from fusionrec.ctr.modules.mlp import MLP


class RelationTowers(nn.Module):
    """DBMTL's task towers (Wen et al., SIGIR 2019): each tower's ``dnn`` over its input, then
    its ``relation_dnn`` over [that, the relation outputs of ``relation_tower_names``], then
    an output layer of num_class units: the Bayesian chain p(t1) p(t2 | t1) ... realised as
    features passed down the chain. ``forward`` gives each tower's logits."""

    relations: List[List[int]]  # per tower, the indices of its relation towers (TorchScript needs the type)
    squeeze: List[bool]

    def __init__(self, widths: List[int], towers: List[TaskTowerConfig]):
        super().__init__()
        self.tower_dnns = nn.ModuleList(_mlp(width, t.dnn) for width, t in zip(widths, towers))
        index = {t.tower_name: i for i, t in enumerate(towers)}
        relation_dnns: List[nn.Module] = []
        self.relations = []
        out_widths: List[int] = []
        for i, tower in enumerate(towers):
            sources = [index[name] for name in getattr(tower, "relation_tower_names", [])]
            in_dim = self.tower_dnns[i].out_dim + sum(out_widths[j] for j in sources)
            relation = _mlp(in_dim, getattr(tower, "relation_dnn", None))
            relation_dnns.append(relation)
            out_widths.append(relation.out_dim)
            self.relations.append(sources)
        self.relation_dnns = nn.ModuleList(relation_dnns)
        self.outputs = nn.ModuleList(nn.Linear(out_widths[i], t.task.n_outputs) for i, t in enumerate(towers))
        self.squeeze = [t.task.n_outputs == 1 for t in towers]

    def forward(self, task_inputs: List[Tensor]) -> List[Tensor]:
        relation_features: List[Tensor] = []
        logits: List[Tensor] = []
        for i, (tower_dnn, relation_dnn, output) in enumerate(zip(self.tower_dnns, self.relation_dnns, self.outputs)):
            parts: List[Tensor] = [tower_dnn(task_inputs[i])]
            for j in self.relations[i]:
                parts.append(relation_features[j])
            relation = relation_dnn(torch.cat(parts, dim=1))
            relation_features.append(relation)
            value = output(relation)
            logits.append(value.squeeze(1) if self.squeeze[i] else value)
        return logits


class FusedFeatures(nn.Module):
    """A multi-modal model's fused features (``fused``, before its final_dnn) as a module."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.out_dim = model.out_dim

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        return self.model.fused(features)


class DBMTL(_MultiTask):
    """Deep Bayesian Multi-Target Learning (Wen et al., SIGIR 2019) as EasyRec builds it:
    ``bottom_dnn`` over the ``all`` group (or, with ``bottom_cmbf`` / ``bottom_uniter``,
    CMBF's / UNITER's fused features of the image, general, text and other groups, and no
    bottom_dnn), an optional MMoE layer (``expert_dnn``, ``num_expert``), then the relation
    towers (``RelationTowers``)."""

    def __init__(self, inputs: ModelInputs, params: DBMTLConfig):
        super().__init__()
        towers = self._set_towers(inputs)
        self.multimodal_kind = "cmbf" if params.bottom_cmbf is not None else "uniter" if params.bottom_uniter is not None else ""
        if self.multimodal_kind == "cmbf":
            self.input = FusedFeatures(CMBF(inputs, None, params.bottom_cmbf))
            self.bottom = MLP(self.input.out_dim, [])
        elif self.multimodal_kind == "uniter":
            self.input = FusedFeatures(Uniter(inputs, None, params.bottom_uniter))
            self.bottom = MLP(self.input.out_dim, [])
        else:
            self.input = self._input_group(inputs, ALL_GROUP)
            self.bottom = _mlp(self.input.out_dim, params.bottom_dnn)
        width = self.bottom.out_dim
        self.has_mixture = params.expert_dnn is not None
        dnns = [params.expert_dnn] * params.num_expert if self.has_mixture else [DNN()]
        self.mixture = MixtureOfExperts(width, dnns, len(towers), "dbmtl.expert_dnn")
        width = self.mixture.out_dim if self.has_mixture else width
        self.towers = RelationTowers([width] * len(towers), towers)

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        bottom = self.bottom(self.input(features))
        task_inputs: List[Tensor] = self.mixture(bottom) if self.has_mixture else [bottom for _ in self.suffixes]
        return self._named(self.towers(task_inputs))
