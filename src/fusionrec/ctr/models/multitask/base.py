"""What every multi-task model shares: experts and gates, task heads, the towers' weights and the
forward over heads."""

from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import DNN, TaskTowerConfig
from fusionrec.ctr.models.base import ModelInputs, _Base, _mlp
from fusionrec.errors import FusionrecError

ALL_GROUP = "all"  # the feature group EasyRec's multi-task models read when they name none


class Experts(nn.Module):
    """Expert networks over one input; ``forward`` stacks their outputs (B, n_experts, D)."""

    def __init__(self, in_dim: int, dnns: List[DNN], where: str, experts: Optional[List[nn.Module]] = None):
        super().__init__()
        self.experts = nn.ModuleList(experts if experts is not None else [_mlp(in_dim, dnn) for dnn in dnns])
        widths = sorted({e.out_dim for e in self.experts})
        if len(widths) != 1:
            raise FusionrecError(f"{where}: the experts' outputs are mixed by a gate, so they need one width; got {widths}")
        self.out_dim = widths[0]

    def forward(self, x: Tensor) -> Tensor:
        outputs: List[Tensor] = []
        for expert in self.experts:
            outputs.append(expert(x))
        return torch.stack(outputs, dim=1)


class Gate(nn.Module):
    """A softmax gate: weights over ``n_experts`` from the selector input, then the weighted
    sum of the experts' outputs (Ma et al., KDD 2018, MMoE equation 5)."""

    def __init__(self, selector_dim: int, n_experts: int):
        super().__init__()
        self.linear = nn.Linear(selector_dim, n_experts)

    def forward(self, selector: Tensor, experts: Tensor) -> Tensor:
        weights = torch.softmax(self.linear(selector), dim=1)
        return (experts * weights.unsqueeze(2)).sum(dim=1)


class MixtureOfExperts(nn.Module):
    """MMoE's layer: shared experts, one gate per task; one mixed output per task."""

    def __init__(self, in_dim: int, dnns: List[DNN], n_tasks: int, where: str, experts: Optional[List[nn.Module]] = None):
        super().__init__()
        self.experts = Experts(in_dim, dnns, where, experts)
        self.gates = nn.ModuleList(Gate(in_dim, len(self.experts.experts)) for _ in range(n_tasks))
        self.out_dim = self.experts.out_dim

    def forward(self, x: Tensor) -> List[Tensor]:
        experts = self.experts(x)
        outputs: List[Tensor] = []
        for gate in self.gates:
            outputs.append(gate(x, experts))
        return outputs


class TaskHead(nn.Module):
    """A task tower's ``dnn`` (identity without one) and its output layer of num_class units."""

    def __init__(self, in_dim: int, tower: TaskTowerConfig):
        super().__init__()
        self.dnn = _mlp(in_dim, tower.dnn)
        self.out_dim = tower.task.n_outputs
        self.output = nn.Linear(self.dnn.out_dim, self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.output(self.dnn(x))
        return logits.squeeze(1) if self.out_dim == 1 else logits


class _MultiTask(_Base):
    """Shared bookkeeping: the towers' suffixes, the ``all`` feature group."""

    suffixes: List[str]

    def _set_towers(self, inputs: ModelInputs) -> List[TaskTowerConfig]:
        towers = inputs.towers
        self.suffixes: List[str] = ["_" + t.tower_name for t in towers]
        self.n_outputs = towers[0].task.n_outputs
        return towers

    def _input_group(self, inputs: ModelInputs, name: str) -> nn.Module:
        groups, _ = inputs.groups(None)
        model = inputs.model_class
        if name not in groups:
            raise FusionrecError(
                f"{model}: reads the feature group {name!r}, as EasyRec's {model} does; the groups are {sorted(groups)}"
            )
        return groups[name]

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        return self.forward_heads(features)[self.suffixes[0]]

    def _named(self, logits: List[Tensor]) -> Dict[str, Tensor]:
        out: Dict[str, Tensor] = {}
        for suffix, value in zip(self.suffixes, logits):
            out[suffix] = value
        return out


def tower_weights(tower: TaskTowerConfig, labels: Dict[str, Tensor], weights: Tensor | None, n_rows: int) -> Tensor:
    """A task tower's per-row loss weights, as EasyRec's MultiTaskModel forms them: ``weight``,
    times the sample weights (``use_sample_weight``), times ``in_task_space_weight`` where the
    ``task_space_indicator_label`` is positive and ``out_task_space_weight`` elsewhere."""
    out = torch.full((n_rows,), float(tower.weight))
    if tower.use_sample_weight and weights is not None:
        out = out * weights
    if tower.task_space_indicator_label is not None:
        in_space = (labels[tower.task_space_indicator_label] > 0).float()
        out = out * (tower.in_task_space_weight * in_space + tower.out_task_space_weight * (1 - in_space))
    return out
