"""Multi-task models, as EasyRec builds them: ESMM, MMoE, PLE, DBMTL, SimpleMultiTask.

Each model's ``forward_heads(features)`` returns one logits tensor per task tower, keyed
``_<tower_name>`` (the suffix of EasyRec's output names: ``logits_ctr``, ``probs_ctr``);
``forward`` returns the first tower's (EasyRec's tower order: ESMM's cvr tower first). A
tower's logits are (B,) for one output, (B, num_class) for a multi-class tower.

The towers' losses live in the trainer; ``esmm_loss`` is ESMM's own (CTR and CTCVR over the
whole impression space, Ma et al., SIGIR 2018, equation 3).
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import DNN, PipelineConfig, TaskTowerConfig
from fusionrec.ctr.features import FeatureTransform
from fusionrec.ctr.layers import MLP
from fusionrec.ctr.models import CMBF, Uniter, _Base, _mlp
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

    def _set_towers(self, config: PipelineConfig) -> List[TaskTowerConfig]:
        towers = config.model_config_.towers
        self.suffixes: List[str] = ["_" + t.tower_name for t in towers]
        self.n_outputs = towers[0].task.n_outputs
        return towers

    def _input_group(self, config: PipelineConfig, transform: FeatureTransform, name: str) -> nn.Module:
        groups, _ = self._groups(config, transform, None)
        model = config.model_config_.model_class
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


class SimpleMultiTask(_MultiTask):
    """EasyRec's SimpleMultiTask: each task tower's DNN over the ``all`` group, no sharing
    beyond the embeddings."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        towers = self._set_towers(config)
        self.input = self._input_group(config, transform, ALL_GROUP)
        self.heads = nn.ModuleList(TaskHead(self.input.out_dim, t) for t in towers)

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        x = self.input(features)
        logits: List[Tensor] = []
        for head in self.heads:
            logits.append(head(x))
        return self._named(logits)


class MMoE(_MultiTask):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018) as EasyRec builds it: ``num_expert``
    copies of ``expert_dnn`` (or the listed ``experts``) over the ``all`` group, a softmax gate
    per task over the same input, then each task tower."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        towers = self._set_towers(config)
        params = config.model_config_.mmoe
        self.input = self._input_group(config, transform, ALL_GROUP)
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

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        towers = self._set_towers(config)
        params = config.model_config_.ple
        self.input = self._input_group(config, transform, ALL_GROUP)
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

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        towers = self._set_towers(config)
        params = config.model_config_.dbmtl
        self.multimodal_kind = "cmbf" if params.bottom_cmbf is not None else "uniter" if params.bottom_uniter is not None else ""
        if self.multimodal_kind == "cmbf":
            self.input = FusedFeatures(CMBF(config, transform, params.bottom_cmbf))
            self.bottom = MLP(self.input.out_dim, [])
        elif self.multimodal_kind == "uniter":
            self.input = FusedFeatures(Uniter(config, transform, params.bottom_uniter))
            self.bottom = MLP(self.input.out_dim, [])
        else:
            self.input = self._input_group(config, transform, ALL_GROUP)
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




class ESMM(_MultiTask):
    """Entire Space Multi-task Model (Ma et al., SIGIR 2018) as EasyRec builds it: each of
    ``groups`` through its DNN, concatenated (or the ``all`` group when there are none); a CVR
    tower and a CTR tower over that; pCTCVR = pCTR x pCVR (``derived_outputs``: probs_ctcvr, or
    y_ctcvr for an L2_LOSS cvr tower)."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        towers = self._set_towers(config)
        params = config.model_config_.esmm
        groups, _ = self._groups(config, transform, None)
        inputs: List[nn.Module] = []
        dnns: List[nn.Module] = []
        if params.groups:
            for tower in params.groups:
                group = self._group(groups, tower.input, "esmm.groups")
                inputs.append(group)
                dnns.append(_mlp(group.out_dim, tower.dnn))
        else:
            group = self._input_group(config, transform, ALL_GROUP)
            inputs.append(group)
            dnns.append(MLP(group.out_dim, []))
        self.inputs = nn.ModuleList(inputs)
        self.group_dnns = nn.ModuleList(dnns)
        width = sum(d.out_dim for d in dnns)
        self.heads = nn.ModuleList(TaskHead(width, t) for t in towers)
        self.cvr_is_regression = params.cvr_tower.loss_type == "L2_LOSS"

    @torch.jit.export
    def forward_heads(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        parts: List[Tensor] = []
        for group, dnn in zip(self.inputs, self.group_dnns):
            parts.append(dnn(group(features)))
        shared = torch.cat(parts, dim=1)
        logits: List[Tensor] = []
        for head in self.heads:
            logits.append(head(shared))
        return self._named(logits)

    @torch.jit.export
    def derived_outputs(self, outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """pCTCVR = pCTR x pCVR, from the named outputs of both towers."""
        cvr, ctr = self.suffixes[0], self.suffixes[1]
        out: Dict[str, Tensor] = {}
        if self.cvr_is_regression:
            out["y_ctcvr"] = outputs["y" + cvr] * outputs["probs" + ctr]
        else:
            out["probs_ctcvr"] = outputs["probs" + cvr] * outputs["probs" + ctr]
        return out


KERAS_EPSILON = 1e-7  # Keras' backend epsilon, which its binary_crossentropy clips and adds


def esmm_loss(heads: Dict[str, Tensor], labels: Dict[str, Tensor], config: PipelineConfig,
              weights: Tensor | None, head_labels: Dict[str, str] | None = None) -> Tensor:  # fmt: skip
    """ESMM's loss as EasyRec computes it (Ma et al. 2018, equation 3): the CTR tower's
    sigmoid cross-entropy and the CTCVR cross-entropy of pCTR x pCVR against click x
    conversion, both over every impression and summed over the batch (EasyRec reduces with
    tf.reduce_sum), each times its tower's ``weight``. An L2_LOSS cvr tower: the squared error
    of y_cvr x pCTR against the label x click, weighted by the sample weights (their nonzero
    count divides), as tf.losses.mean_squared_error does."""
    params = config.model_config_.esmm
    head_labels = head_labels if head_labels is not None else config.head_labels()
    ctr_suffix, cvr_suffix = "_" + params.ctr_tower.tower_name, "_" + params.cvr_tower.tower_name
    ctr_labels, cvr_labels = labels[head_labels[ctr_suffix]], labels[head_labels[cvr_suffix]]
    ctr_logits, cvr_logits = heads[ctr_suffix], heads[cvr_suffix]
    ctr_loss = nn.functional.binary_cross_entropy_with_logits(ctr_logits, ctr_labels, reduction="sum")
    ctcvr_labels = cvr_labels * ctr_labels
    if params.cvr_tower.loss_type == "L2_LOSS":
        errors = (cvr_logits * torch.sigmoid(ctr_logits) - ctcvr_labels).pow(2)
        if weights is None:
            cvr_loss = errors.mean()
        else:
            cvr_loss = (errors * weights).sum() / (weights != 0).sum().clamp(min=1)
    else:
        proba = (torch.sigmoid(cvr_logits) * torch.sigmoid(ctr_logits)).clamp(KERAS_EPSILON, 1 - KERAS_EPSILON)
        cvr_loss = -(ctcvr_labels * torch.log(proba + KERAS_EPSILON)
                     + (1 - ctcvr_labels) * torch.log(1 - proba + KERAS_EPSILON)).sum()  # fmt: skip
    return params.ctr_tower.weight * ctr_loss + params.cvr_tower.weight * cvr_loss


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
