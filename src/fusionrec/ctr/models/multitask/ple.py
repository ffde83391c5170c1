"""EasyRec's PLE (Tang et al., RecSys 2020): progressive layered extraction."""

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import PLEConfig
from fusionrec.ctr.models.base import ModelInputs
from fusionrec.ctr.models.multitask.base import ALL_GROUP, Experts, Gate, TaskHead, _MultiTask
from fusionrec.errors import FusionrecError


class ExtractionLayer(nn.Module):
    """One PLE extraction network (Tang et al., RecSys 2020, CGC, equations 2-4): per task,
    ``expert_num_per_task`` experts over the task's input, mixed with the ``share_num`` shared
    experts by a gate on the task's input; unless it is the last layer, a shared gate over
    every expert (on the shared input) gives the next layer's shared input."""

    def __init__(self, in_dim: int, network, n_tasks: int, last: bool):
        super().__init__()
        where = f"ple.extraction_networks {network.network_name!r}"
        self.task_experts = nn.ModuleList(
            Experts(in_dim, [network.task_expert_net] * network.expert_num_per_task, where) for _ in range(n_tasks)
        )
        self.has_shared = network.share_num > 0
        if self.has_shared:
            self.shared_experts = Experts(in_dim, [network.share_expert_net] * network.share_num, where)
            if self.shared_experts.out_dim != self.task_experts[0].out_dim:
                raise FusionrecError(f"{where}: task_expert_net and share_expert_net must end in the same width")
        else:
            self.shared_experts = nn.Identity()
        n_shared = network.share_num
        self.task_gates = nn.ModuleList(Gate(in_dim, network.expert_num_per_task + n_shared) for _ in range(n_tasks))
        self.last = last
        self.shared_gate = Gate(in_dim, n_tasks * network.expert_num_per_task + n_shared)
        self.out_dim = self.task_experts[0].out_dim

    def forward(self, task_inputs: List[Tensor], shared_input: Tensor) -> Tuple[List[Tensor], Tensor]:
        shared = self.shared_experts(shared_input)  # (B, share_num, D); unused without shared experts
        all_experts: List[Tensor] = []
        outputs: List[Tensor] = []
        for i, (experts, gate) in enumerate(zip(self.task_experts, self.task_gates)):
            own = experts(task_inputs[i])
            all_experts.append(own)
            mixed = torch.cat([own, shared], dim=1) if self.has_shared else own
            outputs.append(gate(task_inputs[i], mixed))
        if self.last:
            return outputs, shared_input
        if self.has_shared:
            all_experts.append(shared)
        return outputs, self.shared_gate(shared_input, torch.cat(all_experts, dim=1))


class PLE(_MultiTask):
    """Progressive Layered Extraction (Tang et al., RecSys 2020) as EasyRec builds it: the
    ``extraction_networks`` in order over the ``all`` group, then each task tower."""

    def __init__(self, inputs: ModelInputs, params: PLEConfig):
        super().__init__()
        towers = self._set_towers(inputs)
        self.input = self._input_group(inputs, ALL_GROUP)
        layers: List[nn.Module] = []
        width = self.input.out_dim
        for i, network in enumerate(params.extraction_networks):
            layer = ExtractionLayer(width, network, len(towers), last=i == len(params.extraction_networks) - 1)
            layers.append(layer)
            width = layer.out_dim
        self.layers = nn.ModuleList(layers)
        self.heads = nn.ModuleList(TaskHead(width, t) for t in towers)

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        x = self.input(features)
        task_inputs: List[Tensor] = [x for _ in self.suffixes]
        shared = x
        for layer in self.layers:
            task_inputs, shared = layer(task_inputs, shared)
        logits: List[Tensor] = []
        for i, head in enumerate(self.heads):
            logits.append(head(task_inputs[i]))
        return self._named(logits)
