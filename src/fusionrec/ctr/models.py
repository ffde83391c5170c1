"""Stage 4: models. Each is a pure ``nn.Module`` whose ``forward(features)`` returns logits (B,).

Loss, optimizer, schedule and checkpoints live in the trainer. ``features`` is the output of
``FeatureTransform`` (ids, masks and dense values by feature name).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from fusionrec.ctr.config import DNN, PipelineConfig
from fusionrec.ctr.embedding import EmbeddingTables, GroupInput
from fusionrec.ctr.features import FeatureTransform, feature_counts
from fusionrec.ctr.layers import MLP, CrossNet, FactorizationMachine, InteractingLayer
from fusionrec.errors import FusionrecError


def _mlp(in_dim: int, dnn: DNN | None) -> MLP:
    if dnn is None:
        return MLP(in_dim, [])
    return MLP(in_dim, list(dnn.hidden_units), dnn.activation, dnn.use_bn, list(dnn.dropout_ratio))


class _Base(nn.Module):
    """Shared bookkeeping: the groups by name, and the weights that take l2_regularization."""

    def _groups(self, config: PipelineConfig, transform: FeatureTransform, wide_dim: int | None):
        tables = EmbeddingTables(config, transform)
        groups = {g.group_name: tables.group(g, wide_dim) for g in config.model_config_.feature_groups}
        return groups, tables

    def _group(self, groups: dict[str, GroupInput], name: str, where: str) -> GroupInput:
        if name not in groups:
            raise FusionrecError(f"{where}: input {name!r} is not a feature group; groups are {sorted(groups)}")
        return groups[name]

    def _wide_and_deep_groups(self, config: PipelineConfig, transform: FeatureTransform, wide_dim: int, model: str) -> None:
        """self.wide_groups (summed, width ``wide_dim``) and self.deep_groups (at least one)."""
        groups, _ = self._groups(config, transform, wide_dim)
        self.wide_groups = nn.ModuleList(g for g in groups.values() if g.wide)
        self.deep_groups = nn.ModuleList(g for g in groups.values() if not g.wide)
        if len(self.deep_groups) == 0:
            raise FusionrecError(f"{model}: needs at least one DEEP feature group")

    def _output_layers(self, final_in_dim: int, final_dnn: DNN | None) -> None:
        """With ``final_dnn``: self.final over the concatenated parts, then self.head; without:
        self.head over the DNN output alone (self.final is an unused identity)."""
        self.has_final = final_dnn is not None
        if self.has_final:
            self.final = _mlp(final_in_dim, final_dnn)
            self.head = nn.Linear(self.final.out_dim, 1)
        else:
            self.final = MLP(1, [])
            self.head = nn.Linear(self.dnn.out_dim, 1)

    def dense_weights(self) -> List[Tensor]:
        """Weights of linear layers (not embeddings, not biases): what l2_regularization penalizes."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Linear)]


class WideAndDeep(_Base):
    """Wide & Deep (Cheng et al. 2016) as EasyRec builds it.

    wide = sum of the WIDE groups' per-feature embeddings of width ``wide_output_dim``;
    deep = ``dnn`` over the concatenated DEEP groups. With ``final_dnn``: logits =
    linear(final_dnn([wide, deep])); without: logits = sum(wide) + linear(deep).
    """

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        params = config.model_config_.wide_and_deep
        self._wide_and_deep_groups(config, transform, params.wide_output_dim, "WideAndDeep")
        self.wide_dim = params.wide_output_dim
        self.dnn = _mlp(sum(g.out_dim for g in self.deep_groups), params.dnn)
        self._output_layers(self.wide_dim + self.dnn.out_dim, params.final_dnn)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        deep_parts: List[Tensor] = []
        for group in self.deep_groups:
            deep_parts.append(group(features))
        deep = self.dnn(torch.cat(deep_parts, dim=1))
        wide = torch.zeros(deep.shape[0], self.wide_dim, dtype=deep.dtype)
        for group in self.wide_groups:
            wide = wide + group(features)
        if self.has_final:
            return self.head(self.final(torch.cat([wide, deep], dim=1))).squeeze(1)
        return wide.sum(dim=1) + self.head(deep).squeeze(1)


class DeepFM(_Base):
    """DeepFM (Guo et al., IJCAI 2017): first-order wide term + FM over the DEEP groups' fields + DNN."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        params = config.model_config_.deepfm
        self._wide_and_deep_groups(config, transform, params.wide_output_dim, "DeepFM")
        dims = {d for g in self.deep_groups for d in g.field_dims}
        if len(dims) != 1:
            raise FusionrecError(f"DeepFM: the FM needs every DEEP field to have one embedding_dim, found {sorted(dims)}")
        self.wide_dim = params.wide_output_dim
        self.fm = FactorizationMachine()
        self.dnn = _mlp(sum(g.out_dim for g in self.deep_groups), params.dnn)
        self._output_layers(self.wide_dim + 1 + self.dnn.out_dim, params.final_dnn)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        fields: List[Tensor] = []
        for group in self.deep_groups:
            fields.extend(group.fields(features))
        deep = self.dnn(torch.cat(fields, dim=1))
        fm = self.fm(torch.stack(fields, dim=1))
        wide = torch.zeros(deep.shape[0], self.wide_dim, dtype=deep.dtype)
        for group in self.wide_groups:
            wide = wide + group(features)
        if self.has_final:
            return self.head(self.final(torch.cat([wide, fm, deep], dim=1))).squeeze(1)
        return wide.sum(dim=1) + fm.squeeze(1) + self.head(deep).squeeze(1)


class FM(_Base):
    """Factorization machine (Rendle 2010) as EasyRec's FM: the WIDE groups' first-order terms
    plus the second-order interactions of the DEEP groups' fields (eq. 4), plus a bias."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        self._wide_and_deep_groups(config, transform, 1, "FM")
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


class AutoInt(_Base):
    """AutoInt (Song et al., CIKM 2019) as EasyRec's: the first feature group's fields (a DIN
    output counts as one field per key) through ``interacting_layer_num`` interacting layers,
    flattened, then one linear layer."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        params = config.model_config_.autoint
        groups, _ = self._groups(config, transform, None)
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
        self.head = nn.Linear(n_fields * width, 1)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        x = self.input(features)
        fields = x.view(x.shape[0], -1, self.dim)
        for layer in self.layers:
            fields = layer(fields)
        return self.head(fields.flatten(1)).squeeze(1)


class DCN(_Base):
    """Deep & Cross Network (Wang et al., ADKDD 2017) as EasyRec's DCN: cross tower (eq. 3, a
    weight vector per layer) || deep tower, then ``final_dnn`` and one output unit."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        params = config.model_config_.dcn
        groups, _ = self._groups(config, transform, None)
        self.cross_input = self._group(groups, params.cross_tower.input, "dcn.cross_tower")
        self.deep_input = self._group(groups, params.deep_tower.input, "dcn.deep_tower")
        self.cross = CrossNet(self.cross_input.out_dim, params.cross_tower.cross_num)
        self.dnn = _mlp(self.deep_input.out_dim, params.deep_tower.dnn)
        width = self.cross.out_dim + self.dnn.out_dim
        self.final = _mlp(width, params.final_dnn)
        self.head = nn.Linear(self.final.out_dim, 1)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        crossed = self.cross(self.cross_input(features))
        deep = self.dnn(self.deep_input(features))
        return self.head(self.final(torch.cat([crossed, deep], dim=1))).squeeze(1)


class MultiTower(_Base):
    """EasyRec's MultiTower / MultiTowerDIN: one DNN tower per group (or per ``seq_att_groups``
    entry, whose DIN outputs feed a ``din_towers`` tower), concatenated into ``final_dnn``."""

    def __init__(self, config: PipelineConfig, transform: FeatureTransform):
        super().__init__()
        params = config.model_config_.multi_tower
        groups, tables = self._groups(config, transform, None)
        din_groups = {}
        for seq_group in config.model_config_.seq_att_groups:
            name = seq_group.group_name or "seq_att"
            din_groups[name] = GroupInput(name, tables.din(seq_group, f"seq_att_groups {name!r}"), False)
        towers, inputs = [], []
        for tower in params.towers:
            group = self._group(groups, tower.input, "multi_tower.towers")
            inputs.append(group)
            towers.append(_mlp(group.out_dim, tower.dnn))
        # EasyRec's MultiTower reads `towers` only; `din_towers` belong to MultiTowerDIN / DIN
        din_towers = params.din_towers if config.model_config_.model_class != "MultiTower" else []
        for tower in din_towers:
            if tower.input not in din_groups:
                raise FusionrecError(
                    f"multi_tower.din_towers: input {tower.input!r} is not a seq_att_groups group_name; "
                    f"those are {sorted(din_groups)}"
                )
            inputs.append(din_groups[tower.input])
            towers.append(_mlp(din_groups[tower.input].out_dim, tower.dnn))
        if not towers:
            raise FusionrecError("multi_tower: needs at least one tower")
        self.inputs = nn.ModuleList(inputs)
        self.towers = nn.ModuleList(towers)
        self.final = _mlp(sum(t.out_dim for t in towers), params.final_dnn)
        self.head = nn.Linear(self.final.out_dim, 1)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        outputs: List[Tensor] = []
        for group in self.inputs:
            outputs.append(group(features))
        j = 0
        tower_outputs: List[Tensor] = []
        for tower in self.towers:
            tower_outputs.append(tower(outputs[j]))
            j += 1
        return self.head(self.final(torch.cat(tower_outputs, dim=1))).squeeze(1)


MODELS = {"WideAndDeep": WideAndDeep, "DeepFM": DeepFM, "DCN": DCN, "MultiTower": MultiTower, "DIN": MultiTower,
          "MultiTowerDIN": MultiTower, "FM": FM, "AutoInt": AutoInt}  # fmt: skip


def build_model(config: PipelineConfig, transform: FeatureTransform) -> nn.Module:
    return MODELS[config.model_config_.model_class](config, transform)


class ScoringModel(nn.Module):
    """What export writes: raw column tensors -> probabilities. Needs no fusionrec code to run."""

    def __init__(self, transform: FeatureTransform, model: nn.Module):
        super().__init__()
        self.transform = transform
        self.model = model

    def forward(self, columns: Dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(self.model(self.transform(columns)))

    @torch.jit.export
    def forward_with_counts(self, columns: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Probabilities and the batch's per-feature counts (out of vocabulary, truncated)."""
        features = self.transform(columns)
        return torch.sigmoid(self.model(features)), feature_counts(features)
